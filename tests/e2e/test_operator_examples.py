"""The operator end to end: examples applied with kubectl, hot reload, invalid scripts, webhook.

Real kube-apiserver (local control plane), real PostgreSQL, the operator as `agentreg run`.
No kubelet runs here, so the Deployment's pods never start: the tests check what the operator
writes (ConfigMaps, Deployments, status, registry history), not running pods.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.conftest import (
    EXAMPLES_DIR,
    Kubectl,
    OperatorFactory,
    OperatorProcess,
    condition,
    condition_is,
    diagnose,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.kube, pytest.mark.postgres]

AGENTS = ["coder-1", "coder-2", "coder-3"]
BEHAVIORS = ["careful", "balanced", "quick"]

INVALID_SCRIPT = """function on_task(task, ctx)
  local x = 1
  return {accept = true, effort = x +}
end
"""


def history(database_url: str, agent_id: str) -> list[Any]:
    """The agent's assignment history straight from the registry, newest first."""
    from agent_registry.registry import RegistryService

    async def read() -> list[Any]:
        registry = RegistryService.from_url(database_url)
        try:
            return list(await registry.assignment_history(agent_id))
        finally:
            await registry.close()

    return asyncio.run(read())


def apply_examples(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(EXAMPLES_DIR))


def converged(kubectl: Kubectl) -> bool:
    agents = {a["metadata"]["name"]: a for a in kubectl.items("agents")}
    behaviors = {b["metadata"]["name"]: b for b in kubectl.items("agentbehaviors")}
    if sorted(agents) != sorted(AGENTS) or sorted(behaviors) != sorted(BEHAVIORS):
        return False
    for behavior in behaviors.values():
        status = behavior.get("status") or {}
        if not condition_is(behavior, "Valid", "True") or "agentCount" not in status:
            return False
        if status.get("observedGeneration") != behavior["metadata"]["generation"]:
            return False
    for agent in agents.values():
        status = agent.get("status") or {}
        if not condition_is(agent, "BehaviorAssigned", "True"):
            return False
        if "stats" not in status or "phase" not in status:
            return False
        if condition(agent, "BehaviorLoaded") is None:
            return False
    return True


def apply_examples_converged(kubectl: Kubectl, operator: OperatorProcess) -> None:
    """The examples applied, and every Agent converged on them."""
    apply_examples(kubectl)
    wait_for(
        lambda: converged(kubectl),
        timeout=90,
        what="examples converged",
        diagnose=diagnose(kubectl, operator),
    )


def printed_table(kubectl: Kubectl, kind: str) -> list[list[str]]:
    lines = kubectl("get", kind).strip().splitlines()
    return [line.split() for line in lines]


def test_examples_fill_every_printer_column(
    kubectl: Kubectl, operator: OperatorProcess, postgres_url: str
) -> None:
    apply_examples_converged(kubectl, operator)

    agents = printed_table(kubectl, "agents")
    assert agents[0] == [
        "NAME",
        "ROLE",
        "BEHAVIOR",
        "SOURCE",
        "PHASE",
        "TASKS",
        "SUCCESS",
        "LOADED",
        "AGE",
    ]
    assert len(agents) == 1 + len(AGENTS)
    for row in agents[1:]:
        assert len(row) == 9, row
        assert "<none>" not in row, row
    behaviors = printed_table(kubectl, "agentbehaviors")
    assert behaviors[0] == [
        "NAME",
        "ROLE",
        "REVISION",
        "VALID",
        "AGENTS",
        "SUCCESS",
        "ROLLOUT",
        "AGE",
    ]
    for row in behaviors[1:]:
        # The examples have no spec.rollout: ROLLOUT is blank, the only column that may be.
        assert len(row) == 7, row
        assert "<none>" not in row, row
        assert row[2:5] == ["1", "True", "1"], row
    # Short names and the category work too.
    assert "coder-1" in kubectl("get", "ag")
    assert "careful" in kubectl("get", "agb")
    assert "coder-1" in kubectl("get", "singularity")

    # One ConfigMap per agent, owned by it, with the runtime contract's keys.
    for name in AGENTS:
        agent = kubectl.get("agent", name)
        assert agent is not None
        cm = kubectl.get("configmap", f"{name}-behavior")
        assert cm is not None, f"{name}-behavior missing"
        (owner,) = cm["metadata"]["ownerReferences"]
        assert owner["uid"] == agent["metadata"]["uid"]
        assert owner["controller"] is True
        meta = json.loads(cm["data"]["behavior.json"])
        assert meta["name"] == agent["spec"]["behaviorRef"]["name"]
        assert meta["revision"] == 1
        assert meta["sha256"] == agent["status"]["behavior"]["sha256"]
        assert "on_task" in cm["data"]["behavior.lua"]

    # Only the agent with a template gets a Deployment, mounting the ConfigMap (no subPath).
    assert kubectl.get("deployment", "coder-1") is None
    deployment = kubectl.get("deployment", "coder-3")
    assert deployment is not None
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/agent-behavior"]
    assert len(mounts) == 1
    assert "subPath" not in mounts[0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AGENTREG_AGENT"] == f"{kubectl.namespace}/coder-3"
    assert env["AGENTREG_CONFIGMAP"] == "coder-3-behavior"

    # The registry has the agents, their assignments and the lineage.
    rows = history(postgres_url, f"{kubectl.namespace}/coder-2")
    assert [(r.behavior_revision, r.assigned_by) for r in rows] == [(1, "agent-registry-operator")]


def test_script_edit_hot_reloads_only_the_configmap(
    kubectl: Kubectl, operator: OperatorProcess, postgres_url: str
) -> None:
    apply_examples_converged(kubectl, operator)
    deployment_before = kubectl.get("deployment", "coder-3")
    assert deployment_before is not None
    cm_before = kubectl.get("configmap", "coder-3-behavior")
    assert cm_before is not None

    behavior = kubectl.get("agentbehavior", "quick")
    assert behavior is not None
    script = behavior["spec"]["lua"]["script"].replace("effort = 0.4", "effort = 0.6")
    patch = {"spec": {"lua": {"script": script}}}
    kubectl("patch", "agentbehavior", "quick", "--type=merge", "-p", json.dumps(patch))

    def reloaded() -> dict[str, Any] | None:
        cm = kubectl.get("configmap", "coder-3-behavior")
        if cm and json.loads(cm["data"]["behavior.json"])["revision"] == 2:
            return cm
        return None

    cm_after = wait_for(
        reloaded, timeout=10, what="ConfigMap at revision 2", diagnose=diagnose(kubectl, operator)
    )
    assert "effort = 0.6" in cm_after["data"]["behavior.lua"]
    assert cm_after["metadata"]["uid"] == cm_before["metadata"]["uid"]

    deployment_after = kubectl.get("deployment", "coder-3")
    assert deployment_after is not None
    assert deployment_after["spec"]["template"] == deployment_before["spec"]["template"]
    assert deployment_after["metadata"]["generation"] == deployment_before["metadata"]["generation"]

    def status_at_revision_2() -> bool:
        agent = kubectl.get("agent", "coder-3")
        behavior = kubectl.get("agentbehavior", "quick")
        return bool(
            agent
            and behavior
            and agent["status"]["behavior"]["revision"] == 2
            and behavior["status"]["revision"] == 2
            and behavior["status"]["observedGeneration"] == behavior["metadata"]["generation"]
        )

    wait_for(
        status_at_revision_2,
        timeout=15,
        what="status at revision 2",
        diagnose=diagnose(kubectl, operator),
    )
    rows = history(postgres_url, f"{kubectl.namespace}/coder-3")
    assert [(r.behavior_revision, r.source, r.reason, r.unassigned_at is None) for r in rows] == [
        (2, "Spec", "spec.behaviorRef (hot reload: revision 1 -> 2)", True),
        (1, "Spec", "spec.behaviorRef", False),
    ]
    # The other agents did not move.
    assert len(history(postgres_url, f"{kubectl.namespace}/coder-1")) == 1
    wait_for(
        lambda: (
            "BehaviorReloaded"
            in kubectl("get", "events", "--field-selector", "involvedObject.name=coder-3")
        ),
        timeout=15,
        what="a BehaviorReloaded Event",
        diagnose=diagnose(kubectl, operator),
    )


def test_invalid_lua_is_marked_with_the_line(
    kubectl: Kubectl, operator: OperatorProcess, tmp_path: Path
) -> None:
    manifest = {
        "apiVersion": "agents.singularity.dev/v1alpha1",
        "kind": "AgentBehavior",
        "metadata": {"name": "broken"},
        "spec": {"roleType": "code_developer", "lua": {"script": INVALID_SCRIPT}},
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    def invalid() -> dict[str, Any] | None:
        found = condition(kubectl.get("agentbehavior", "broken"), "Valid")
        return found if found and found["status"] == "False" else None

    valid = wait_for(invalid, timeout=30, what="Valid=False", diagnose=diagnose(kubectl, operator))
    assert valid["reason"] == "InvalidScript"
    assert "line 3" in valid["message"], valid
    behavior = kubectl.get("agentbehavior", "broken")
    assert behavior is not None
    assert "revision" not in behavior["status"]
    events = kubectl("get", "events", "--field-selector", "involvedObject.name=broken")
    assert "InvalidScript" in events

    # Fixing the script makes it valid, revision 1.
    fixed = {"spec": {"lua": {"script": INVALID_SCRIPT.replace("x +}", "x}")}}}
    kubectl("patch", "agentbehavior", "broken", "--type=merge", "-p", json.dumps(fixed))
    wait_for(
        lambda: (
            (b := kubectl.get("agentbehavior", "broken"))
            and condition_is(b, "Valid", "True")
            and b["status"].get("revision") == 1
        ),
        timeout=30,
        what="Valid=True after the fix",
        diagnose=diagnose(kubectl, operator),
    )


def test_webhook_refuses_invalid_lua(
    kubectl: Kubectl, operator_factory: OperatorFactory, postgres_url: str
) -> None:
    operator = operator_factory(postgres_url, webhook=True)
    manifest = {
        "apiVersion": "agents.singularity.dev/v1alpha1",
        "kind": "AgentBehavior",
        "metadata": {"name": "refused"},
        "spec": {"roleType": "code_developer", "lua": {"script": INVALID_SCRIPT}},
    }

    def refused() -> str | None:
        result = kubectl.run("apply", "-f", "-", input=yaml.safe_dump(manifest))
        if result.returncode == 0:
            # Applied before kopf registered the webhook: take it back and try again.
            kubectl("delete", "agentbehavior", "refused", "--wait=false", check=False)
            return None
        return result.stderr if "denied the request" in result.stderr else None

    message = wait_for(
        refused,
        timeout=60,
        interval=1,
        what="webhook refusal",
        diagnose=diagnose(kubectl, operator),
    )
    assert "line 3" in message, message
    assert "spec.lua.script" in message, message

    # A valid behavior still goes through.
    apply_examples(kubectl)
    assert kubectl.get("agentbehavior", "careful") is not None
