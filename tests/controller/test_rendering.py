"""Rendering of the objects an Agent owns: the behavior ConfigMap and the Deployment."""

from __future__ import annotations

import json

from agent_registry.controller.rendering import (
    BEHAVIOR_DIR,
    BehaviorSnapshot,
    Manifest,
    Owner,
    render_configmap,
    render_deployment,
)

OWNER = Owner(name="coder-1", namespace="team-a", uid="1234-uid")
TEMPLATE: Manifest = {
    "metadata": {"labels": {"app": "coder"}},
    "spec": {
        "containers": [
            {
                "name": "agent",
                "image": "example/agent:1",
                "env": [{"name": "KEEP", "value": "me"}, {"name": "AGENTREG_AGENT", "value": "x"}],
            }
        ]
    },
}


def _behavior(script: str, revision: int, sha: str) -> BehaviorSnapshot:
    return BehaviorSnapshot(
        name="careful",
        namespace="team-a",
        revision=revision,
        sha256=sha,
        script=script,
        limits={"timeoutMs": 50},
    )


def test_configmap_follows_the_runtime_contract() -> None:
    cm = render_configmap(OWNER, _behavior("function on_task() end", 3, "a" * 64))
    assert cm["metadata"]["name"] == "coder-1-behavior"
    assert cm["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "agent-registry",
        "agents.singularity.dev/agent": "coder-1",
    }
    (ref,) = cm["metadata"]["ownerReferences"]
    assert ref["uid"] == "1234-uid"
    assert ref["controller"] is True
    assert ref["kind"] == "Agent"
    assert cm["data"]["behavior.lua"] == "function on_task() end"
    assert json.loads(cm["data"]["behavior.json"]) == {
        "name": "careful",
        "namespace": "team-a",
        "revision": 3,
        "sha256": "a" * 64,
        "limits": {"timeoutMs": 50},
    }


def test_deployment_mounts_the_configmap_without_subpath_and_sets_env() -> None:
    dep = render_deployment(OWNER, TEMPLATE, registry_url="http://reg:8080")
    pod = dep["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == BEHAVIOR_DIR
    assert "subPath" not in mount
    assert {"name": "agent-behavior", "configMap": {"name": "coder-1-behavior"}} in pod["spec"][
        "volumes"
    ]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "KEEP": "me",
        "AGENTREG_AGENT": "team-a/coder-1",
        "AGENTREG_BEHAVIOR_DIR": BEHAVIOR_DIR,
        "AGENTREG_CONFIGMAP": "coder-1-behavior",
        "AGENTREG_REGISTRY_URL": "http://reg:8080",
    }
    assert pod["metadata"]["labels"]["app"] == "coder"
    assert dep["spec"]["selector"]["matchLabels"] == {"agents.singularity.dev/agent": "coder-1"}
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"
    assert TEMPLATE["spec"]["containers"][0].get("volumeMounts") is None, "input not mutated"


def test_pod_template_does_not_depend_on_the_script() -> None:
    # Rendering never sees the script, so by construction a script edit cannot change the pod
    # template; this guards against someone adding a checksum annotation later.
    before = render_deployment(OWNER, TEMPLATE, registry_url="http://reg:8080")
    after = render_deployment(OWNER, TEMPLATE, registry_url="http://reg:8080")
    assert before == after
    paused = render_deployment(OWNER, TEMPLATE, registry_url="http://reg:8080", paused=True)
    assert paused["spec"]["replicas"] == 0
    assert paused["spec"]["template"] == before["spec"]["template"]


def test_configmap_changes_with_the_script() -> None:
    one = render_configmap(OWNER, _behavior("function on_task() return 1 end", 1, "a" * 64))
    two = render_configmap(OWNER, _behavior("function on_task() return 2 end", 2, "b" * 64))
    assert one["data"] != two["data"]
    assert one["metadata"] == two["metadata"]


def test_service_account_from_spec_unless_template_sets_one() -> None:
    dep = render_deployment(OWNER, TEMPLATE, registry_url="u", service_account_name="coder-sa")
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "coder-sa"
