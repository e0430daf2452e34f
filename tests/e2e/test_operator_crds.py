"""The generated CRDs as the real apiserver enforces them: validation, CEL rules, explain."""

from __future__ import annotations

import pytest
import yaml

from e2e.conftest import Kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.kube]


def _apply(kubectl: Kubectl, manifest: dict[str, object]) -> tuple[int, str]:
    result = kubectl.run("apply", "-f", "-", input=yaml.safe_dump(manifest))
    return result.returncode, result.stderr


def _behavior(name: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "agents.singularity.dev/v1alpha1",
        "kind": "AgentBehavior",
        "metadata": {"name": name},
        "spec": spec,
    }


def _agent(name: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "agents.singularity.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_schema_refuses_what_the_models_refuse(kubectl: Kubectl) -> None:
    code, err = _apply(kubectl, _behavior("no-script", roleType="coder"))
    assert code != 0
    assert "spec.lua: Required value" in err

    code, err = _apply(
        kubectl, _behavior("slow", roleType="coder", lua={"script": "x"}, limits={"timeoutMs": 0})
    )
    assert code != 0
    assert "spec.limits.timeoutMs" in err

    code, err = _apply(kubectl, _agent("bad-role", role="Not A Role"))
    assert code != 0
    assert "spec.role" in err

    code, err = _apply(kubectl, _agent("no-role"))
    assert code != 0
    assert "spec.role: Required value" in err


def test_cel_rules(kubectl: Kubectl) -> None:
    script = {"script": "function on_task(t, c) return {accept = true, effort = 1} end"}
    code, err = _apply(
        kubectl, _behavior("loop", roleType="coder", lua=script, parentRef={"name": "loop"})
    )
    assert code != 0
    assert "cannot be its own parent" in err

    code, err = _apply(kubectl, _agent("a1", role="coder"))
    assert code == 0, err
    code, err = _apply(kubectl, _agent("a1", role="reviewer"))
    assert code != 0
    assert "spec.role is immutable" in err


def test_template_keeps_unknown_fields_and_explain_documents_fields(kubectl: Kubectl) -> None:
    template = {"spec": {"containers": [{"name": "x", "image": "busybox:1", "someFutureField": 1}]}}
    code, err = _apply(kubectl, _agent("templated", role="coder", template=template))
    assert code == 0, err
    agent = kubectl.get("agent", "templated")
    assert agent is not None
    assert agent["spec"]["template"] == template

    explained = kubectl("explain", "agentbehavior.spec.lua.script")
    assert "on_task(task, ctx)" in explained
    assert "hot-reloads" in kubectl("explain", "agentbehavior")
