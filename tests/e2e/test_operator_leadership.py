"""Leader election end to end: two `agentreg run --leader-elect` processes on one registry,
against the real apiserver and PostgreSQL.

Only the Lease holder reconciles (the follower's log has no handler at all), both serve the
registry API, a SIGKILLed leader is replaced within leaseDuration + retryPeriod (with jitter),
the new leader reconciles a new Agent, and a leader that finds another holder in its Lease
exits at once with status 1.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from typing import Any

import pytest

from e2e.conftest import Kubectl, OperatorFactory, OperatorProcess, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.kube, pytest.mark.postgres]

LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 4.0, 3.0, 0.5
LEASE = "agent-registry"
SCRIPT = "function on_task(task, ctx) return {accept = true, effort = 0.8} end\n"


def _objects(namespace: str, *agents: str) -> str:
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "agents.singularity.dev/v1alpha1",
            "kind": "AgentBehavior",
            "metadata": {"name": "steady", "namespace": namespace},
            "spec": {"roleType": "tester", "lua": {"script": SCRIPT}},
        }
    ]
    objects += [
        {
            "apiVersion": "agents.singularity.dev/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"role": "tester", "behaviorRef": {"name": "steady"}},
        }
        for name in agents
    ]
    return "\n---\n".join(json.dumps(o) for o in objects)


def _replica(factory: OperatorFactory, database_url: str, namespace: str) -> OperatorProcess:
    return factory(
        database_url,
        extra=(
            "--leader-elect",
            "--leader-election-namespace",
            namespace,
            "--lease-duration",
            str(LEASE_DURATION),
            "--renew-deadline",
            str(RENEW_DEADLINE),
            "--retry-period",
            str(RETRY_PERIOD),
        ),
    )


def _log(operator: OperatorProcess) -> str:
    return operator.log_path.read_text(errors="replace")


def _leads(operator: OperatorProcess) -> bool:
    return "became the leader" in _log(operator)


def _holder(kubectl: Kubectl) -> str | None:
    lease = kubectl.get("lease", LEASE)
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


def _reconciled(kubectl: Kubectl, agent: str) -> bool:
    status = (kubectl.get("agent", agent) or {}).get("status") or {}
    return bool((status.get("behavior") or {}).get("sha256"))


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return int(answer.status)


def _report(operator: OperatorProcess, namespace: str, agent: str, token: str) -> int:
    body = {"batch_id": str(uuid.uuid4()), "outcomes": [{"success": True}], "cycles": 1}
    request = urllib.request.Request(
        f"{operator.api_url}/v1/agents/{namespace}/{agent}/reports",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.status)


def test_one_leader_reconciles_both_serve_and_a_killed_leader_is_replaced(
    kubectl: Kubectl, operator_factory: OperatorFactory, postgres_url: str
) -> None:
    namespace = kubectl.namespace
    first = _replica(operator_factory, postgres_url, namespace)
    wait_for(lambda: _leads(first), timeout=30, what="the first replica leads")
    second = _replica(operator_factory, postgres_url, namespace)

    def explain() -> str:
        return f"{first.log_tail()}\n{second.log_tail()}\nlease: {kubectl.get('lease', LEASE)}"

    kubectl("apply", "-f", "-", input=_objects(namespace, "one"))
    wait_for(
        lambda: _reconciled(kubectl, "one"), timeout=60, what="one reconciled", diagnose=explain
    )
    holder = _holder(kubectl)
    assert holder is not None
    assert holder in _log(first)
    # The follower waits: no kopf handler ran there, and it is not the holder.
    assert "waiting for the leader lease" in _log(second)
    assert not _leads(second)
    assert "Handler " not in _log(second), explain()
    assert "Handler 'reconcile' succeeded" in _log(first)

    # Both replicas serve the API: health, the document, and reports (the follower's too).
    kubectl("create", "serviceaccount", "one")
    token = kubectl("create", "token", "one").strip()
    for replica in (first, second):
        assert _get(replica.api_url + "/healthz") == 200
        assert _get(replica.api_url + "/openapi.json") == 200
        assert _get(replica.health_url) == 200
        assert _report(replica, namespace, "one", token) == 202

    first.kill()
    killed = time.monotonic()
    wait_for(lambda: _leads(second), timeout=30, what="the follower takes over", diagnose=explain)
    took = time.monotonic() - killed
    # A follower takes over once the record stopped changing for a lease duration, at its
    # next retry (jittered up to 2.2 retry periods); 2 s more for this test's polling.
    assert took <= LEASE_DURATION + 2.2 * RETRY_PERIOD + 2.0, (took, explain())
    lease = kubectl.get("lease", LEASE) or {}
    assert lease["spec"]["holderIdentity"] != holder
    assert lease["spec"]["holderIdentity"] in _log(second)
    assert lease["spec"]["leaseTransitions"] >= 1

    kubectl("apply", "-f", "-", input=_objects(namespace, "two"))
    wait_for(
        lambda: _reconciled(kubectl, "two"), timeout=60, what="two reconciled", diagnose=explain
    )
    assert "Handler 'reconcile' succeeded" in _log(second)


def test_a_leader_that_finds_another_holder_exits_at_once(
    kubectl: Kubectl, operator_factory: OperatorFactory, postgres_url: str
) -> None:
    leader = _replica(operator_factory, postgres_url, kubectl.namespace)
    wait_for(lambda: _leads(leader), timeout=30, what="the replica leads")
    assert leader.proc is not None

    # As if another replica had taken the Lease (e.g. this one was paused past its deadline).
    patch = {"spec": {"holderIdentity": "intruder", "renewTime": None}}
    kubectl("patch", "lease", LEASE, "--type=merge", "-p", json.dumps(patch))

    code = leader.proc.wait(timeout=RENEW_DEADLINE + 10)
    assert code == 1, leader.log_tail()
    assert "lost the leader lease" in _log(leader)
    assert "leadership lost: exiting" in _log(leader)
    assert _holder(kubectl) == "intruder"
