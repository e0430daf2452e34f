"""A script the runtime refuses reaches the Agent's status end to end: the operator validates
the edit (Valid=True: `on_reload` only runs when there is a previous state to hand over), the
runtime refuses it and keeps running the last good script, reports the failure, and the Agent
shows BehaviorLoaded=False / LoadFailed with the Lua error and kstatus' Stalled=True. A fixed
script then loads and clears it.

The runtime is a local process (no kubelet here); the token file stands in for the projected
ServiceAccount token volume.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import (
    EXAMPLES_DIR,
    Kubectl,
    OperatorProcess,
    condition,
    condition_is,
    diagnose,
    wait_for,
)
from e2e.test_operator_examples import converged
from e2e.test_operator_reload import RuntimeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.kube, pytest.mark.postgres]

REFUSING = '\nfunction on_reload(previous_state)\n  error("refuses to take over")\nend\n'


@pytest.fixture
def agent_runtime(tmp_path: Path, kube_cluster: Any) -> Iterator[RuntimeProcess]:
    process = RuntimeProcess(tmp_path, kube_cluster.kubeconfig)
    yield process
    process.stop()


def _patch_script(kubectl: Kubectl, script: str) -> None:
    kubectl(
        "patch",
        "agentbehavior",
        "careful",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"lua": {"script": script}}}),
    )


def test_a_refused_script_is_load_failed_and_stalled_until_fixed(
    kubectl: Kubectl, operator: OperatorProcess, agent_runtime: RuntimeProcess
) -> None:
    kubectl("apply", "-f", str(EXAMPLES_DIR))
    explain = diagnose(kubectl, operator)
    wait_for(lambda: converged(kubectl), timeout=90, what="examples converged", diagnose=explain)
    # The runtime reports as the Agent's own ServiceAccount, named like the Agent.
    kubectl("create", "serviceaccount", "coder-1")
    token = kubectl("create", "token", "coder-1").strip()
    agent_runtime.start(f"{kubectl.namespace}/coder-1", "coder-1-behavior", operator.api_url, token)

    def explain_all() -> str:
        return explain() + "\n" + agent_runtime.log_tail()

    wait_for(
        lambda: condition_is(kubectl.get("agent", "coder-1"), "BehaviorLoaded", "True"),
        timeout=30,
        what="BehaviorLoaded=True",
        diagnose=explain_all,
    )
    good = (kubectl.get("agent", "coder-1") or {})["status"]["loadedBehavior"]["sha256"]
    body = kubectl.get("agentbehavior", "careful")
    assert body is not None
    original = body["spec"]["lua"]["script"]

    _patch_script(kubectl, original + REFUSING)

    def load_failed() -> dict[str, Any] | None:
        agent = kubectl.get("agent", "coder-1")
        loaded = condition(agent, "BehaviorLoaded")
        if loaded is None or loaded.get("reason") != "LoadFailed":
            return None
        return agent

    agent = wait_for(
        load_failed, timeout=30, what="BehaviorLoaded=LoadFailed", diagnose=explain_all
    )
    status = agent["status"]
    loaded = condition(agent, "BehaviorLoaded")
    assert loaded is not None
    assert loaded["status"] == "False"
    assert "refuses to take over" in loaded["message"]
    assert "revision 2" in loaded["message"]
    assert status["loadedBehavior"]["sha256"] == good, "the runtime keeps its last good script"
    assert status["behavior"]["revision"] == 2
    stalled = condition(agent, "Stalled")
    assert stalled is not None
    assert (stalled["status"], stalled["reason"]) == ("True", "LoadFailed")
    assert condition(agent, "Reconciling") is None
    assert condition_is(agent, "Ready", "False")
    assert condition_is(kubectl.get("agentbehavior", "careful"), "Valid", "True")
    assert agent_runtime.health()["sha256"] == good

    # Fixed in Git: the next revision loads, and the failure is gone from status.
    _patch_script(kubectl, original + "\n-- fixed\n")

    def recovered() -> dict[str, Any] | None:
        agent = kubectl.get("agent", "coder-1")
        if not condition_is(agent, "BehaviorLoaded", "True"):
            return None
        return agent

    agent = wait_for(recovered, timeout=30, what="revision 3 loaded", diagnose=explain_all)
    assert agent["status"]["behavior"]["revision"] == 3
    assert condition(agent, "Stalled") is None
    assert condition_is(agent, "Ready", "True")
