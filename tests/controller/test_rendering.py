"""Rendering of the objects an Agent owns: the behavior ConfigMap and the Deployment."""

from __future__ import annotations

import json

import pytest

from agent_registry.controller.rendering import (
    BEHAVIOR_DIR,
    BehaviorSnapshot,
    Manifest,
    Owner,
    WeightedBehavior,
    render_bundle_configmap,
    render_configmap,
    render_deployment,
)
from agent_registry.runtime.bundle import parse_bundle, script_sha256

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
    own = {**TEMPLATE, "spec": {**TEMPLATE["spec"], "serviceAccountName": "template-sa"}}
    dep = render_deployment(OWNER, own, registry_url="u", service_account_name="coder-sa")
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "template-sa"


def test_pods_run_as_the_agents_own_service_account_by_default() -> None:
    # Not `default`: the registry API accepts reports only from the Agent's own account.
    dep = render_deployment(OWNER, TEMPLATE, registry_url="u")
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "coder-1"


def _snapshot(name: str, revision: int, script: str, **limits: int) -> BehaviorSnapshot:
    return BehaviorSnapshot(
        name=name,
        namespace="team-a",
        revision=revision,
        sha256=script_sha256(script),
        script=script,
        limits=dict(limits),
    )


STABLE = _snapshot("careful", 3, "function on_task() return 'stable' end", timeoutMs=50)
CANARY = _snapshot("careful", 4, "function on_task() return 'canary' end")
ARM = _snapshot("bold", 1, "function on_task() return 'arm' end", maxInstructions=1000)


@pytest.mark.parametrize(
    "entries",
    [
        [WeightedBehavior(STABLE, 1.0)],
        [WeightedBehavior(STABLE, 0.3)],  # alone, it gets every task whatever its weight
        [WeightedBehavior(STABLE, 1.0), WeightedBehavior(CANARY, 0.0)],
    ],
)
def test_a_one_script_bundle_renders_exactly_as_before(entries: list[WeightedBehavior]) -> None:
    assert render_bundle_configmap(OWNER, entries) == render_configmap(OWNER, STABLE)


def test_a_two_script_bundle_lists_its_scripts_under_their_keys() -> None:
    cm = render_bundle_configmap(
        OWNER, [WeightedBehavior(STABLE, 0.9), WeightedBehavior(CANARY, 0.1)]
    )
    assert cm["metadata"] == render_configmap(OWNER, STABLE)["metadata"]
    data = cm["data"]
    assert set(data) == {"behavior.lua", "behavior-1.lua", "behavior.json"}
    assert data["behavior.lua"] == STABLE.script
    assert data["behavior-1.lua"] == CANARY.script
    meta = json.loads(data["behavior.json"])
    scripts = meta.pop("scripts")
    # The top level is the primary's, as a one-script bundle: all an older runtime reads.
    assert meta == json.loads(render_configmap(OWNER, STABLE)["data"]["behavior.json"])
    assert scripts == [
        {
            "key": "behavior.lua",
            "name": "careful",
            "namespace": "team-a",
            "revision": 3,
            "sha256": STABLE.sha256,
            "weight": 0.9,
            "limits": {"timeoutMs": 50},
        },
        {
            "key": "behavior-1.lua",
            "name": "careful",
            "namespace": "team-a",
            "revision": 4,
            "sha256": CANARY.sha256,
            "weight": 0.1,
            "limits": {},
        },
    ]


def test_weights_are_normalized_and_idle_arms_left_out_but_not_the_primary() -> None:
    cm = render_bundle_configmap(
        OWNER,
        [WeightedBehavior(STABLE, 0.0), WeightedBehavior(CANARY, 0.0), WeightedBehavior(ARM, 2)],
    )
    scripts = json.loads(cm["data"]["behavior.json"])["scripts"]
    assert [(s["key"], s["sha256"], s["weight"]) for s in scripts] == [
        ("behavior.lua", STABLE.sha256, 0.0),
        ("behavior-1.lua", ARM.sha256, 1.0),
    ]
    assert set(cm["data"]) == {"behavior.lua", "behavior-1.lua", "behavior.json"}


def test_the_runtime_reads_the_rendered_bundle() -> None:
    cm = render_bundle_configmap(
        OWNER,
        [WeightedBehavior(STABLE, 6), WeightedBehavior(CANARY, 3), WeightedBehavior(ARM, 1)],
    )
    bundle = parse_bundle(cm["data"])
    assert bundle.meta_error is None
    assert [(e.sha256, e.revision, e.name) for e in bundle.entries] == [
        (STABLE.sha256, 3, "careful"),
        (CANARY.sha256, 4, "careful"),
        (ARM.sha256, 1, "bold"),
    ]
    assert [e.weight for e in bundle.entries] == pytest.approx([0.6, 0.3, 0.1])
    assert [dict(e.limits) for e in bundle.entries] == [
        {"timeout_ms": 50},
        {},
        {"max_instructions": 1000},
    ]
    one = parse_bundle(render_bundle_configmap(OWNER, [WeightedBehavior(STABLE, 1)])["data"])
    assert (one.multi, one.sha256, one.revision) == (False, STABLE.sha256, 3)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([], "at least its primary"),
        ([WeightedBehavior(STABLE, 1.0), WeightedBehavior(CANARY, -0.1)], ">= 0"),
        ([WeightedBehavior(STABLE, float("nan")), WeightedBehavior(CANARY, 1)], "finite"),
        ([WeightedBehavior(STABLE, 1.0)] * 17, "at most 16"),
    ],
)
def test_bundles_that_cannot_run_are_refused(entries: list[WeightedBehavior], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_bundle_configmap(OWNER, entries)
