"""BehaviorPolicy end to end (real apiserver, real PostgreSQL, the operator as a process, one
local agent runtime per Agent with the simulated workload: no kubelet here, so runtimes are
processes with TokenRequest tokens).

The examples' `quick` fails about half of its tasks where `balanced` and `careful` succeed
nearly always: a policy in Recommend mode only says so; in Auto it moves coder-3 off `quick`
once, with the evidence in its reason, never flaps back, and deleting the policy returns it to
its spec. The candidates' recent windows (the controller's snapshots) show in the status.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import (
    Kubectl,
    OperatorFactory,
    OperatorProcess,
    diagnose,
    wait_for,
)
from e2e.test_operator_examples import AGENTS, apply_examples, converged, history
from e2e.test_operator_reload import RuntimeProcess, runtime_processes

pytestmark = [pytest.mark.e2e, pytest.mark.kube, pytest.mark.postgres]

POLICY = "coders"


def policy_manifest(mode: str) -> str:
    return json.dumps(
        {
            "apiVersion": "agents.singularity.dev/v1alpha1",
            "kind": "BehaviorPolicy",
            "metadata": {"name": POLICY},
            "spec": {
                "role": "code_developer",
                "mode": mode,
                "minTasks": 50,
                "confidence": 0.95,
                "cooldown": "10m",
                "maxSwitchFraction": 0.34,
            },
        }
    )


@pytest.fixture
def fleet(tmp_path: Path, kube_cluster: Any) -> Iterator[list[RuntimeProcess]]:
    with runtime_processes(tmp_path, kube_cluster.kubeconfig, AGENTS) as runtimes:
        yield runtimes


@pytest.fixture
def fast_operator(operator_factory: OperatorFactory, postgres_url: str) -> OperatorProcess:
    return operator_factory(postgres_url, extra=("--policy-interval", "1"))


def source_of(kubectl: Kubectl, agent: str) -> tuple[str | None, str | None]:
    behavior = ((kubectl.get("agent", agent) or {}).get("status") or {}).get("behavior") or {}
    return behavior.get("source"), behavior.get("name")


def test_policy_recommends_then_switches_once_and_lets_go(
    kubectl: Kubectl,
    fast_operator: OperatorProcess,
    fleet: list[RuntimeProcess],
    postgres_url: str,
) -> None:
    apply_examples(kubectl)
    explain = diagnose(kubectl, fast_operator)
    wait_for(lambda: converged(kubectl), timeout=90, what="examples converged", diagnose=explain)
    for name, runtime in zip(AGENTS, fleet, strict=True):
        # Each agent reports with its own ServiceAccount (named like the Agent: the default).
        kubectl("create", "serviceaccount", name)
        token = kubectl("create", "token", name).strip()
        agent_id = f"{kubectl.namespace}/{name}"
        runtime.start(agent_id, f"{name}-behavior", fast_operator.api_url, token)

    def explain_all() -> str:
        policy = kubectl("get", "bp", POLICY, "-o", "yaml", check=False)
        return explain() + "\n" + policy + "\n" + "\n".join(r.log_tail() for r in fleet)

    kubectl("apply", "-f", "-", input=policy_manifest("Recommend"))
    recommended = wait_for(
        lambda: [
            r
            for r in (kubectl.get("bp", POLICY) or {}).get("status", {}).get("recommendations", [])
            if r["agent"] == "coder-3"
        ],
        timeout=90,
        what="a recommendation for coder-3",
        diagnose=explain_all,
    )
    assert recommended[0]["from"] == "quick"
    assert recommended[0]["to"] in ("balanced", "careful")
    assert "quick" in recommended[0]["reason"]
    # Recommend changes nothing but the policy's status and Events.
    assert source_of(kubectl, "coder-3") == ("Spec", "quick")
    assert [r.source for r in history(postgres_url, f"{kubectl.namespace}/coder-3")] == ["Spec"]
    events = kubectl("get", "events", "--field-selector", f"involvedObject.name={POLICY}")
    assert "Recommendation" in events
    # The recent windows (from the controller's snapshots of the counts) are in use.
    windows = wait_for(
        lambda: {
            c["name"]: c["recentTasks"]
            for c in (kubectl.get("bp", POLICY) or {}).get("status", {}).get("candidates", [])
            if c.get("recentTasks")
        },
        timeout=30,
        what="recent windows in the policy's candidates",
        diagnose=explain_all,
    )
    assert set(windows) == {"quick", "balanced", "careful"}

    kubectl("apply", "-f", "-", input=policy_manifest("Auto"))
    wait_for(
        lambda: source_of(kubectl, "coder-3")[0] == "Policy",
        timeout=60,
        what="coder-3 switched by the policy",
        diagnose=explain_all,
    )
    target = source_of(kubectl, "coder-3")[1]
    assert target in ("balanced", "careful")
    agent = kubectl.get("agent", "coder-3")
    assert agent is not None
    assert agent["spec"]["behaviorRef"] == {"name": "quick"}  # spec untouched
    reason = agent["status"]["behavior"]["reason"]
    assert reason.startswith(f"BehaviorPolicy {POLICY}: ")
    assert "quick" in reason
    rows = history(postgres_url, f"{kubectl.namespace}/coder-3")
    assert (rows[0].source, rows[0].unassigned_at) == ("Policy", None)
    assert rows[0].evidence is not None
    assert rows[0].evidence["policy"] == POLICY

    # No flapping: several evaluations later, still one switch and the same behavior.
    time.sleep(8)
    status = (kubectl.get("bp", POLICY) or {})["status"]
    assert status["switches"] == 1
    assert [s["agent"] for s in status["switched"]] == ["coder-3"]
    assert source_of(kubectl, "coder-3") == ("Policy", target)
    assert source_of(kubectl, "coder-1")[0] == "Spec"
    assert source_of(kubectl, "coder-2")[0] == "Spec"
    table = kubectl("get", "bp").splitlines()
    assert table[0].split()[:6] == ["NAME", "ROLE", "MODE", "AGENTS", "SWITCHES", "LAST-SWITCH"]
    assert table[1].split()[:5] == [POLICY, "code_developer", "Auto", "3", "1"]

    kubectl("delete", "bp", POLICY)
    wait_for(
        lambda: source_of(kubectl, "coder-3") == ("Spec", "quick"),
        timeout=30,
        what="coder-3 back on its spec",
        diagnose=explain_all,
    )
