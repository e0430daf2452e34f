"""The operator survives crashes and database outages: it converges, history stays exact."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from agent_registry.runtime.backoff import Backoff
from e2e.conftest import (
    EXAMPLES_DIR,
    Kubectl,
    OperatorFactory,
    condition_is,
    diagnose,
    wait_for,
)
from e2e.crash_loop import converge, crash_round, problems, setup
from e2e.report_load import ReportLoad, deploy_agents, discrepancies, registry_counts
from e2e.test_operator_examples import (
    AGENTS,
    BEHAVIORS,
    apply_examples_converged,
    converged,
    history,
)

pytestmark = [pytest.mark.e2e, pytest.mark.kube, pytest.mark.postgres]


def registry_status(database_url: str, agent_id: str) -> str:
    from agent_registry.registry import RegistryService

    async def read() -> str:
        registry = RegistryService.from_url(database_url)
        try:
            record: Any = await registry.get_by_agent_id(agent_id)
            return str(record.status)
        finally:
            await registry.close()

    return asyncio.run(read())


def configmap_revision(kubectl: Kubectl, agent: str) -> int | None:
    cm = kubectl.get("configmap", f"{agent}-behavior")
    if cm is None:
        return None
    revision: int = json.loads(cm["data"]["behavior.json"])["revision"]
    return revision


def edit_script(kubectl: Kubectl, behavior: str, old: str, new: str) -> None:
    body = kubectl.get("agentbehavior", behavior)
    assert body is not None
    script = body["spec"]["lua"]["script"]
    assert old in script
    patch = {"spec": {"lua": {"script": script.replace(old, new)}}}
    kubectl("patch", "agentbehavior", behavior, "--type=merge", "-p", json.dumps(patch))


def assert_history_exact(database_url: str, namespace: str, expected: dict[str, list[int]]) -> None:
    """Each agent has exactly these revisions in history (newest first), one open row."""
    for agent, revisions in expected.items():
        rows = history(database_url, f"{namespace}/{agent}")
        assert [r.behavior_revision for r in rows] == revisions, (agent, rows)
        assert sum(1 for r in rows if r.unassigned_at is None) == 1, (agent, rows)


def test_killed_operator_restarts_and_converges_without_duplicate_history(
    kubectl: Kubectl, operator_factory: OperatorFactory, postgres_url: str
) -> None:
    operator = operator_factory(postgres_url)
    kubectl("apply", "-f", str(EXAMPLES_DIR))
    # Kill it as soon as it has started writing: some objects are handled, some are not.
    wait_for(
        lambda: any(configmap_revision(kubectl, a) for a in AGENTS),
        timeout=60,
        interval=0.05,
        what="first ConfigMap",
        diagnose=diagnose(kubectl, operator),
    )
    operator.kill()
    # While it is down, a script changes.
    edit_script(kubectl, "careful", "effort = 0.95", "effort = 0.9")
    operator.start()
    wait_for(
        lambda: converged(kubectl),
        timeout=90,
        what="convergence after restart",
        diagnose=diagnose(kubectl, operator),
    )
    wait_for(
        lambda: configmap_revision(kubectl, "coder-1") == 2,
        timeout=30,
        what="coder-1 at revision 2",
        diagnose=diagnose(kubectl, operator),
    )
    expected = {"coder-1": [2], "coder-2": [1], "coder-3": [1]}
    # coder-1 may have been assigned revision 1 before the kill, or only revision 2 after.
    rows = history(postgres_url, f"{kubectl.namespace}/coder-1")
    expected["coder-1"] = [2, 1] if len(rows) == 2 else [2]
    assert_history_exact(postgres_url, kubectl.namespace, expected)

    # A second crash and restart with nothing changed adds nothing.
    operator.kill()
    operator.start()
    time.sleep(3)
    wait_for(
        lambda: converged(kubectl),
        timeout=60,
        what="convergence after second restart",
        diagnose=diagnose(kubectl, operator),
    )
    assert_history_exact(postgres_url, kubectl.namespace, expected)


def test_operator_sigkilled_three_times_mid_work_converges_with_exact_history(
    kubectl: Kubectl, operator_factory: OperatorFactory, postgres_url: str
) -> None:
    """Three rounds of work (a script edit fanned out to its agents, behaviorRef switches, new
    and deleted Agents), each cut by a SIGKILL of the operator at a random moment, then a
    restart: each converges, and the history has exactly one row per change (see
    e2e/crash_loop.py; bench_crashes.py does 20 kills on 50 Agents)."""
    operator = operator_factory(postgres_url)
    model = setup(kubectl, str(EXAMPLES_DIR), 9)
    explain = diagnose(kubectl, operator)
    initial, left = converge(kubectl, postgres_url, model, timeout=90, since=time.monotonic())
    assert initial is not None, f"initial reconcile: {left}\n{explain()}"
    rng = random.Random(14)
    for number in (1, 2, 3):
        record = crash_round(
            kubectl,
            postgres_url,
            operator,
            model,
            number,
            rng,
            max_delay=1.0,
            timeout=60,
            mode="fanout" if number == 2 else "request",
        )
        assert record.converge_s is not None, f"kill {number}: {record.left}\n{explain()}"
    time.sleep(3)
    assert problems(kubectl, postgres_url, model) == []


def test_database_outage_is_retried_and_recovered(
    kubectl: Kubectl,
    operator_factory: OperatorFactory,
    postgres_url: str,
    postgres_server: Any,
) -> None:
    operator = operator_factory(postgres_url)
    apply_examples_converged(kubectl, operator)

    postgres_server.stop()
    try:
        edit_script(kubectl, "balanced", "difficulty + 0.1", "difficulty + 0.2")
        kubectl(
            "apply",
            "-f",
            "-",
            input=(
                "apiVersion: agents.singularity.dev/v1alpha1\nkind: Agent\n"
                "metadata: {name: coder-4}\n"
                "spec: {role: code_developer, behaviorRef: {name: careful}}\n"
            ),
        )
        time.sleep(4)  # handlers meet the outage and schedule retries
        assert configmap_revision(kubectl, "coder-2") == 1, "nothing can change without the db"
        assert operator.proc is not None
        assert operator.proc.poll() is None, "the operator survives the outage"
    finally:
        postgres_server.start()

    wait_for(
        lambda: configmap_revision(kubectl, "coder-2") == 2,
        timeout=60,
        what="coder-2 reloaded after the outage",
        diagnose=diagnose(kubectl, operator),
    )

    def coder_4_ready() -> bool:
        agent = kubectl.get("agent", "coder-4")
        return bool(agent and condition_is(agent, "BehaviorAssigned", "True"))

    wait_for(
        coder_4_ready,
        timeout=60,
        what="coder-4 assigned after the outage",
        diagnose=diagnose(kubectl, operator),
    )
    assert_history_exact(
        postgres_url,
        kubectl.namespace,
        {"coder-1": [1], "coder-2": [2, 1], "coder-3": [1], "coder-4": [1]},
    )


def test_reports_through_a_database_outage_lose_nothing_and_count_nothing_twice(
    kubectl: Kubectl,
    operator_factory: OperatorFactory,
    postgres_url: str,
    postgres_server: Any,
    tmp_path: Path,
) -> None:
    """Three agents report 50 outcomes/s each while PostgreSQL is down for 5 s (fast
    shutdown, then a start on the same data dir and port). Simulated: the agents' work, as
    threads (e2e/report_load.py); real: their reporters (buffer, batch ids, retries), the
    operator's registry API with TokenReview, PostgreSQL. Every outcome produced is counted
    exactly once: on the agent, on its script's row, on its open assignment.
    (bench_outage.py is the 30 s version, with figures.)"""
    operator = operator_factory(postgres_url)
    kubectl("apply", "-f", str(EXAMPLES_DIR / "behaviors.yaml"))
    names = [f"load-{i}" for i in range(3)]
    agents = deploy_agents(kubectl, names, BEHAVIORS, tmp_path / "tokens")
    load = ReportLoad(
        kubectl.namespace,
        agents,
        operator.api_url,
        rate=50,
        interval=0.5,
        backoff=Backoff(base=0.1, cap=2.0),
    )
    load.start()
    try:
        time.sleep(2)
        postgres_server.stop()
        try:
            time.sleep(5)
        finally:
            postgres_server.start()
        marks = load.marks()
        wait_for(
            lambda: load.delivered(marks),
            timeout=60,
            what="the outage's backlog delivered",
            diagnose=diagnose(kubectl, operator),
        )
        time.sleep(1)
    finally:
        load.stop()
    totals = load.totals()
    print(f"5 s outage under report load: {totals}")
    assert totals.unavailable + totals.failed > 0, f"the reporters never saw the outage: {totals}"
    assert totals.dropped == 0, totals
    assert totals.rejected_batches == 0, totals
    assert totals.acked == totals.produced, totals
    counted = registry_counts(postgres_url, kubectl.namespace, names)
    assert discrepancies(agents, counted) == []
    assert operator.proc is not None
    assert operator.proc.poll() is None, "the operator survives the outage"


def test_agent_deletion_marks_it_stopped_and_keeps_history(
    kubectl: Kubectl, operator_factory: OperatorFactory, postgres_url: str
) -> None:
    operator = operator_factory(postgres_url)
    apply_examples_converged(kubectl, operator)
    kubectl("delete", "agent", "coder-1", "--timeout=30s")
    assert kubectl.get("agent", "coder-1") is None

    wait_for(
        lambda: registry_status(postgres_url, f"{kubectl.namespace}/coder-1") == "stopped",
        timeout=30,
        what="coder-1 stopped in the registry",
        diagnose=diagnose(kubectl, operator),
    )
    rows = history(postgres_url, f"{kubectl.namespace}/coder-1")
    assert len(rows) == 1
    # Deleting its behavior: the agents using it lose the assignment (condition with a reason).
    kubectl("delete", "agentbehavior", "quick", "--timeout=30s")

    def unassigned() -> bool:
        agent = kubectl.get("agent", "coder-3")
        return bool(agent and condition_is(agent, "BehaviorAssigned", "False"))

    wait_for(
        unassigned,
        timeout=30,
        what="coder-3 BehaviorAssigned=False",
        diagnose=diagnose(kubectl, operator),
    )
    agent = kubectl.get("agent", "coder-3")
    assert agent is not None
    reasons = {c["type"]: c["reason"] for c in agent["status"]["conditions"]}
    assert reasons["BehaviorAssigned"] == "BehaviorDeleted"


def test_paused_agent_is_paused_in_registry_and_scaled_to_zero(
    kubectl: Kubectl, operator_factory: OperatorFactory, postgres_url: str
) -> None:
    operator = operator_factory(postgres_url)
    apply_examples_converged(kubectl, operator)
    kubectl("patch", "agent", "coder-3", "--type=merge", "-p", '{"spec": {"paused": true}}')

    def paused() -> bool:
        agent = kubectl.get("agent", "coder-3")
        deployment = kubectl.get("deployment", "coder-3")
        return bool(
            agent
            and deployment
            and agent["status"].get("phase") == "Paused"
            and agent["status"].get("observedGeneration") == agent["metadata"]["generation"]
            and deployment["spec"]["replicas"] == 0
        )

    wait_for(paused, timeout=30, what="coder-3 paused", diagnose=diagnose(kubectl, operator))
    agent = kubectl.get("agent", "coder-3")
    assert agent is not None
    ready = {c["type"]: (c["status"], c["reason"]) for c in agent["status"]["conditions"]}
    assert ready["Ready"] == ("False", "Paused")
    assert registry_status(postgres_url, f"{kubectl.namespace}/coder-3") == "paused"


def test_deletion_never_waits_for_the_database_and_is_recorded_once_it_is_back(
    kubectl: Kubectl,
    operator_factory: OperatorFactory,
    postgres_url: str,
    postgres_server: Any,
) -> None:
    """Agents carry no finalizer: deleting one while the database is down is immediate, and
    the operator records it (stopped, history kept) when the database returns."""
    operator = operator_factory(postgres_url)
    apply_examples_converged(kubectl, operator)
    agent = kubectl.get("agent", "coder-1")
    assert agent is not None
    assert not agent["metadata"].get("finalizers"), "Agents carry no finalizer"
    postgres_server.stop()
    try:
        kubectl("delete", "agent", "coder-1", "--timeout=15s")
        assert kubectl.get("agent", "coder-1") is None
        time.sleep(2)  # the operator sees the deletion and fails to record it meanwhile
    finally:
        postgres_server.start()
    wait_for(
        lambda: registry_status(postgres_url, f"{kubectl.namespace}/coder-1") == "stopped",
        timeout=60,
        what="coder-1 stopped once the database is back",
        diagnose=diagnose(kubectl, operator),
    )
    assert len(history(postgres_url, f"{kubectl.namespace}/coder-1")) == 1
    assert registry_status(postgres_url, f"{kubectl.namespace}/coder-2") == "active"


def test_agents_deleted_while_no_operator_ran_are_recorded_at_the_next_start(
    kubectl: Kubectl, operator_factory: OperatorFactory, postgres_url: str
) -> None:
    """The start's list is compared with the registry's live agents of the operator."""
    operator = operator_factory(postgres_url)
    apply_examples_converged(kubectl, operator)
    operator.stop()
    kubectl("delete", "agent", "coder-1", "coder-2", "--timeout=15s")
    operator.start()

    def stopped() -> bool:
        return all(
            registry_status(postgres_url, f"{kubectl.namespace}/{name}") == "stopped"
            for name in ("coder-1", "coder-2")
        )

    wait_for(
        stopped,
        timeout=60,
        what="both stopped after the restart",
        diagnose=diagnose(kubectl, operator),
    )
    assert registry_status(postgres_url, f"{kubectl.namespace}/coder-3") == "active"


def test_the_finalizer_of_earlier_versions_is_removed(
    kubectl: Kubectl, operator_factory: OperatorFactory, postgres_url: str
) -> None:
    """An Agent created by an earlier version carries its finalizer: the operator removes
    it (else the Agent could never be deleted), and keeps other finalizers."""
    operator = operator_factory(postgres_url)
    kubectl("apply", "-f", str(EXAMPLES_DIR / "behaviors.yaml"))
    legacy = {
        "apiVersion": "agents.singularity.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {
            "name": "legacy",
            "finalizers": ["example.com/keep", "agents.singularity.dev/registry"],
        },
        "spec": {"role": "coder", "behaviorRef": {"name": "careful"}},
    }
    kubectl("apply", "-f", "-", input=json.dumps(legacy))

    def stripped() -> bool:
        agent = kubectl.get("agent", "legacy")
        return bool(agent and agent["metadata"].get("finalizers") == ["example.com/keep"])

    wait_for(
        stripped, timeout=30, what="old finalizer removed", diagnose=diagnose(kubectl, operator)
    )
    kubectl("patch", "agent", "legacy", "--type=merge", "-p", '{"metadata":{"finalizers":null}}')


def test_a_configmap_deleted_or_edited_by_hand_is_applied_again(
    kubectl: Kubectl, operator_factory: OperatorFactory, postgres_url: str
) -> None:
    """The operator skips applies of ConfigMaps it applied unchanged; its resync (here every
    second) finds the ones changed behind its back."""
    operator = operator_factory(postgres_url, extra=("--configmap-resync", "1"))
    apply_examples_converged(kubectl, operator)
    original = kubectl.get("configmap", "coder-1-behavior")
    assert original is not None

    kubectl("delete", "configmap", "coder-1-behavior")
    restored = wait_for(
        lambda: kubectl.get("configmap", "coder-1-behavior"),
        timeout=30,
        what="deleted ConfigMap re-created",
        diagnose=diagnose(kubectl, operator),
    )
    assert restored["data"] == original["data"]

    patch = {"data": {"behavior.lua": "-- edited by hand"}}
    kubectl("patch", "configmap", "coder-1-behavior", "--type=merge", "-p", json.dumps(patch))

    def repaired() -> bool:
        cm = kubectl.get("configmap", "coder-1-behavior")
        return cm is not None and cm["data"] == original["data"]

    wait_for(
        repaired, timeout=30, what="edited ConfigMap repaired", diagnose=diagnose(kubectl, operator)
    )
    assert "ConfigMap resync" in operator.log_tail()
