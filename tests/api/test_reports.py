"""POST /v1/agents/{ns}/{name}/reports against a real registry and a real kube-apiserver."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

from agent_registry.api import ReportAuth
from agent_registry.registry import BehaviorRecord, RegistryService
from api.harness import Api, Kube, report_body, serve

SCRIPT = "function on_task(task, ctx) return {accept = true, effort = 0.5} end\n"
SPEC_SCRIPT = "function on_task(task, ctx) return {accept = true, effort = 0.1} end\n"


async def _agent(api: Api, kube: Kube, namespace: str, name: str, **kw: str) -> BehaviorRecord:
    """An Agent in Kubernetes, registered and assigned a behavior (its outcomes count)."""
    kube.agent(namespace, name, **kw)
    agent_id = f"{namespace}/{name}"
    await api.registry.register_agent(agent_id, "tester")
    spec = await api.registry.create_behavior("spec", "tester", SPEC_SCRIPT, namespace=namespace)
    await api.registry.assign_behavior(agent_id, spec.id)
    return spec


async def test_accepted_report_updates_the_agent_stats(
    api: Api, kube: Kube, namespace: str
) -> None:
    await _agent(api, kube, namespace, "a1")
    token = kube.token(namespace, "a1")

    status, body, _ = await api.report(namespace, "a1", report_body(2, 1, cycles=4), token)

    assert status == 202, body
    assert body["recorded"] == 3
    assert body["duplicate"] is False
    agent = await api.registry.get_by_agent_id(f"{namespace}/a1")
    assert agent.tasks_completed == 3
    assert abs(agent.success_rate - 2 / 3) < 1e-9
    assert agent.cycles_completed == 4
    assert api.metric("reports_ingested_total", {"result": "accepted"}) == 1
    assert api.metric("outcomes_ingested_total") == 3


async def test_a_retried_batch_is_counted_once(api: Api, kube: Kube, namespace: str) -> None:
    await _agent(api, kube, namespace, "a1")
    token = kube.token(namespace, "a1")
    body = report_body(3, 0, batch_id=uuid.uuid4())

    first = await api.report(namespace, "a1", body, token)
    second = await api.report(namespace, "a1", body, token)

    assert first[0] == second[0] == 202
    assert second[1] == {
        "batch_id": body["batch_id"],
        "recorded": 0,
        "duplicate": True,
        "refused": [],
    }
    agent = await api.registry.get_by_agent_id(f"{namespace}/a1")
    assert agent.tasks_completed == 3
    assert api.metric("reports_ingested_total", {"result": "duplicate"}) == 1
    assert api.metric("outcomes_ingested_total") == 3


async def test_outcomes_of_scripts_never_delivered_are_refused_one_by_one(
    api: Api, kube: Kube, namespace: str
) -> None:
    spec = await _agent(api, kube, namespace, "a1")
    token = kube.token(namespace, "a1")
    unknown = "e" * 64
    body = report_body(0, 0)
    body["outcomes"] = [
        {"success": True, "duration_ms": 5.0, "behavior_sha256": spec.script_sha256},
        {"success": True, "duration_ms": 5.0, "behavior_sha256": unknown},
        {"success": False, "duration_ms": 7.0},  # an older runtime: the loaded script's
    ]
    # The runtime claims to run a bundle of two scripts; the registry delivered one.
    body["loaded"] = {
        "sha256": spec.script_sha256,
        "loaded_at": datetime.now(UTC).isoformat(),
        "scripts": [
            {"sha256": spec.script_sha256, "weight": 0.5},
            {"sha256": unknown, "weight": 0.5},
        ],
    }

    status, accepted, _ = await api.report(namespace, "a1", body, token)

    assert status == 202, accepted
    assert (accepted["recorded"], accepted["duplicate"]) == (2, False)
    assert [(r["index"], r["behavior_sha256"]) for r in accepted["refused"]] == [(1, unknown)]
    assert "never delivered" in accepted["refused"][0]["reason"]
    assert api.metric("outcomes_ingested_total") == 2
    stats = await api.registry.agent_revision_stats(agent_ids=[f"{namespace}/a1"])
    assert [(r.script_sha256, r.tasks, r.successes) for r in stats] == [(spec.script_sha256, 2, 1)]
    # Retried: counted once; the answer still says what was refused.
    status, again, _ = await api.report(namespace, "a1", body, token)
    assert (status, again["recorded"], again["duplicate"]) == (202, 0, True)
    assert [r["index"] for r in again["refused"]] == [1]


async def test_no_token_or_a_bad_token_is_401(api: Api, kube: Kube, namespace: str) -> None:
    await _agent(api, kube, namespace, "a1")
    for token in (None, "not-a-token"):
        status, body, headers = await api.report(namespace, "a1", report_body(), token)
        assert status == 401, body
        assert headers["Content-Type"].startswith("application/problem+json")
        assert headers["WWW-Authenticate"].startswith("Bearer")
    assert api.metric("reports_ingested_total", {"result": "unauthenticated"}) == 2
    assert (await api.registry.get_by_agent_id(f"{namespace}/a1")).tasks_completed == 0


async def test_a_token_of_another_namespace_is_403(
    api: Api, kube: Kube, namespace: str, other_namespace: str
) -> None:
    await _agent(api, kube, namespace, "a1")
    token = kube.token(other_namespace, "runner")

    status, body, _ = await api.report(namespace, "a1", report_body(), token)

    assert status == 403, body
    assert other_namespace in body["detail"]
    assert (await api.registry.get_by_agent_id(f"{namespace}/a1")).tasks_completed == 0


async def test_only_the_agents_service_account_may_report(
    api: Api, kube: Kube, namespace: str
) -> None:
    await _agent(api, kube, namespace, "a1", service_account="runner-a")
    wrong = kube.token(namespace, "runner-b")
    right = kube.token(namespace, "runner-a")

    refused = await api.report(namespace, "a1", report_body(), wrong)
    accepted = await api.report(namespace, "a1", report_body(), right)

    assert refused[0] == 403, refused[1]
    assert "runner-a" in refused[1]["detail"]
    assert accepted[0] == 202, accepted[1]
    assert api.metric("reports_ingested_total", {"result": "forbidden"}) == 1


async def test_by_default_only_the_service_account_named_like_the_agent_may_report(
    api: Api, kube: Kube, namespace: str
) -> None:
    await _agent(api, kube, namespace, "a1")
    neighbour = kube.token(namespace, "neighbour")
    default = kube.token(namespace, "default")

    for token in (neighbour, default):
        status, body, headers = await api.report(namespace, "a1", report_body(), token)
        assert status == 403, body
        assert headers["Content-Type"].startswith("application/problem+json")
        # The refusal says which identity is expected, and why that one.
        assert f"ServiceAccount {namespace}/a1 (the Agent's name" in body["detail"]
    accepted = await api.report(namespace, "a1", report_body(), kube.token(namespace, "a1"))

    assert accepted[0] == 202, accepted[1]
    assert (await api.registry.get_by_agent_id(f"{namespace}/a1")).tasks_completed == 3


async def test_the_pod_templates_service_account_may_report(
    api: Api, kube: Kube, namespace: str
) -> None:
    # The rendered Deployment's pods run as the template's ServiceAccount when it names one.
    await _agent(api, kube, namespace, "a1", template_service_account="pod-sa")

    refused = await api.report(namespace, "a1", report_body(), kube.token(namespace, "a1"))
    accepted = await api.report(namespace, "a1", report_body(), kube.token(namespace, "pod-sa"))

    assert refused[0] == 403, refused[1]
    assert "spec.template.spec.serviceAccountName" in refused[1]["detail"]
    assert accepted[0] == 202, accepted[1]


async def test_namespace_mode_is_the_explicit_opt_out(
    postgres_url: str, kube: Kube, namespace: str
) -> None:
    registry = RegistryService.from_url(postgres_url)
    api = await serve(registry, kube.cluster.kubeconfig, report_auth=ReportAuth.NAMESPACE)
    try:
        await _agent(api, kube, namespace, "a1")
        await _agent(api, kube, namespace, "a2", service_account="runner-a2")
        neighbour = kube.token(namespace, "neighbour")

        anyone = await api.report(namespace, "a1", report_body(), neighbour)
        named = await api.report(namespace, "a2", report_body(), neighbour)

        assert anyone[0] == 202, anyone[1]
        # spec.serviceAccountName still binds an Agent to its ServiceAccount in this mode.
        assert named[0] == 403, named[1]
        assert "runner-a2" in named[1]["detail"]
    finally:
        await api.client.close()
        await registry.close()


async def test_an_unknown_agent_is_404(api: Api, kube: Kube, namespace: str) -> None:
    token = kube.token(namespace, "runner")
    status, body, _ = await api.report(namespace, "ghost", report_body(), token)
    assert status == 404, body
    assert api.metric("reports_ingested_total", {"result": "not_found"}) == 1


async def test_an_agent_not_yet_registered_is_retried_later(
    api: Api, kube: Kube, namespace: str
) -> None:
    kube.agent(namespace, "a1")  # in Kubernetes, the controller has not registered it yet
    token = kube.token(namespace, "a1")
    status, body, headers = await api.report(namespace, "a1", report_body(), token)
    assert status == 503, body
    assert int(headers["Retry-After"]) > 0


async def test_an_invalid_body_is_422_with_locations(api: Api, kube: Kube, namespace: str) -> None:
    await _agent(api, kube, namespace, "a1")
    token = kube.token(namespace, "a1")
    body = report_body()
    body["outcomes"][1] = {"success": "maybe"}
    body["cycles"] = -1

    status, problem, _ = await api.report(namespace, "a1", body, token)

    assert status == 422, problem
    locations = [error["loc"] for error in problem["errors"]]
    assert ["body", "outcomes", 1, "success"] in locations
    assert ["body", "cycles"] in locations
    status, problem, _ = await api.report(namespace, "a1", "{not json", token)
    assert status == 422
    assert problem["errors"][0]["loc"] == ["body"]
    assert api.metric("reports_ingested_total", {"result": "invalid"}) == 2


async def test_a_body_over_the_limit_is_413(api: Api, kube: Kube, namespace: str) -> None:
    await _agent(api, kube, namespace, "a1")
    token = kube.token(namespace, "a1")
    status, problem, _ = await api.report(namespace, "a1", " " * (3 * 1024 * 1024), token)
    assert status == 413, problem
    assert problem["status"] == 413


async def test_registry_down_is_503_with_retry_after(kube: Kube, namespace: str) -> None:
    # A real PostgreSQL driver against a port nothing listens on: the outage as the
    # registry sees it, without stopping the session's shared server.
    registry = RegistryService.from_url("postgresql+psycopg://agentreg:x@127.0.0.1:9/agentreg")
    api = await serve(registry, kube.cluster.kubeconfig)
    try:
        kube.agent(namespace, "a1")
        token = kube.token(namespace, "a1")
        status, problem, headers = await api.report(namespace, "a1", report_body(), token)
        assert status == 503, problem
        assert int(headers["Retry-After"]) > 0
        assert api.metric("registry_errors_total", {"operation": "record_tasks"}) == 1
        assert api.metric("reports_ingested_total", {"result": "unavailable"}) == 1
    finally:
        await api.client.close()
        await registry.close()


async def test_a_new_load_confirmation_observes_reload_latency(
    api: Api, kube: Kube, namespace: str
) -> None:
    await _agent(api, kube, namespace, "a1")
    behavior = await api.registry.create_behavior("b1", "tester", SCRIPT, namespace=namespace)
    await api.registry.assign_behavior(f"{namespace}/a1", behavior.id)
    token = kube.token(namespace, "a1")
    sha = hashlib.sha256(SCRIPT.encode()).hexdigest()
    assert behavior.script_sha256 == sha
    body = report_body(1, 0)
    body["loaded"] = {
        "sha256": sha,
        "loaded_at": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(),
        "revision": 1,
    }

    assert (await api.report(namespace, "a1", body, token))[0] == 202
    body["batch_id"] = str(uuid.uuid4())
    assert (await api.report(namespace, "a1", body, token))[0] == 202

    # Observed once: the second report repeats a confirmation already known.
    assert api.metric("reload_latency_seconds_count") == 1
    assert api.metric("reload_latency_seconds_sum") >= 0.5
    agent = await api.registry.get_by_agent_id(f"{namespace}/a1")
    assert agent.loaded_sha256 == sha


async def test_a_load_failure_is_stored_and_logged(
    api: Api, kube: Kube, namespace: str, caplog: object
) -> None:
    await _agent(api, kube, namespace, "a1")
    behavior = await api.registry.create_behavior("b1", "tester", SCRIPT, namespace=namespace)
    await api.registry.assign_behavior(f"{namespace}/a1", behavior.id)
    token = kube.token(namespace, "a1")
    now = datetime.now(UTC)
    good = behavior.script_sha256
    # The runtime still runs the good script (loaded before) and refused a newer one.
    body = report_body(0, 0)
    body["loaded"] = {"sha256": good, "loaded_at": (now - timedelta(seconds=5)).isoformat()}
    body["load_failure"] = {
        "sha256": "0" * 64,
        "error": "attempt to call a nil value",
        "line": 7,
        "failed_at": now.isoformat(),
    }
    status, accepted, _ = await api.report(namespace, "a1", body, token)
    assert status == 202, accepted
    assert accepted["recorded"] == 0
    assert "line 7" in caplog.text  # type: ignore[attr-defined]
    agent = await api.registry.get_by_agent_id(f"{namespace}/a1")
    assert (agent.load_failed_sha256, agent.load_error, agent.load_error_line) == (
        "0" * 64,
        "attempt to call a nil value",
        7,
    )
    assert agent.loaded_sha256 == good
    code, shown = await api.get(f"/v1/agents/{namespace}/a1", kube.reader(namespace))
    assert code == 200, shown
    assert (shown["load_error"], shown["load_error_line"]) == ("attempt to call a nil value", 7)
    assert shown["load_failed_sha256"] == "0" * 64

    # A later report confirming a load after the failure clears it.
    cleared = report_body(0, 0)
    cleared["loaded"] = {"sha256": good, "loaded_at": (now + timedelta(seconds=1)).isoformat()}
    assert (await api.report(namespace, "a1", cleared, token))[0] == 202
    agent = await api.registry.get_by_agent_id(f"{namespace}/a1")
    assert (agent.load_error, agent.load_failed_sha256) == (None, None)
