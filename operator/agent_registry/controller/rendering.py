"""Render the objects the operator owns for an Agent: its behavior ConfigMap and Deployment.

Pure functions, no I/O. The contract with the runtime (ConfigMap keys, mount path, env) is
written down in docs/runtime.md; the important property is that the Deployment's pod template
carries nothing derived from the script, so editing a behavior changes only the ConfigMap and
never restarts a pod.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent_registry.resources.common import API_VERSION

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "agent-registry"
AGENT_LABEL = "agents.singularity.dev/agent"
BEHAVIOR_DIR = "/etc/agent-behavior"
BEHAVIOR_VOLUME = "agent-behavior"
SCRIPT_KEY = "behavior.lua"
METADATA_KEY = "behavior.json"
# The runtime holds each script of a bundle in a sandbox of its own and reports at most this
# many (reports.LoadedBehavior.scripts).
MAX_BUNDLE_SCRIPTS = 16

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Owner:
    """The Agent that owns the rendered objects."""

    name: str
    namespace: str
    uid: str
    kind: str = "Agent"
    api_version: str = API_VERSION

    def reference(self) -> Manifest:
        # No blockOwnerDeletion: where OwnerReferencesPermissionEnforcement is on, setting it
        # needs `update` on agents/finalizers, which the operator otherwise never uses.
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
        }


@dataclass(frozen=True)
class BehaviorSnapshot:
    """One revision of a behavior as the registry stores it, plus the spec's limits."""

    name: str
    namespace: str
    revision: int
    sha256: str
    script: str
    limits: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class WeightedBehavior:
    """One script of a bundle and the share of the agent's tasks drawn for it."""

    snapshot: BehaviorSnapshot
    weight: float


def configmap_name(agent_name: str) -> str:
    return f"{agent_name}-behavior"


def deployment_name(agent_name: str) -> str:
    return agent_name


def agent_labels(agent_name: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, AGENT_LABEL: agent_name}


def _metadata_document(behavior: BehaviorSnapshot) -> dict[str, Any]:
    return {
        "name": behavior.name,
        "namespace": behavior.namespace,
        "revision": behavior.revision,
        "sha256": behavior.sha256,
        "limits": {k: v for k, v in sorted(behavior.limits.items()) if v is not None},
    }


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def behavior_metadata(behavior: BehaviorSnapshot) -> str:
    """behavior.json: what the runtime reports back, and the limits it runs the script under."""
    return _dump(_metadata_document(behavior))


def bundle_script_key(index: int) -> str:
    """The ConfigMap key of a bundle's `index`-th script: behavior.lua for the primary, then
    behavior-1.lua, behavior-2.lua... (a ConfigMap key cannot hold a '/')."""
    return SCRIPT_KEY if index == 0 else f"behavior-{index}.lua"


def _configmap(owner: Owner, data: dict[str, str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(owner.name),
            "namespace": owner.namespace,
            "labels": agent_labels(owner.name),
            "ownerReferences": [owner.reference()],
        },
        "data": data,
    }


def render_configmap(owner: Owner, behavior: BehaviorSnapshot) -> Manifest:
    return _configmap(
        owner, {SCRIPT_KEY: behavior.script, METADATA_KEY: behavior_metadata(behavior)}
    )


def render_bundle_configmap(owner: Owner, entries: Sequence[WeightedBehavior]) -> Manifest:
    """The ConfigMap of a bundle: entries[0] is the primary (behavior.lua, and behavior.json's
    top level, all a runtime without multi-script support reads), each other entry a
    behavior-N.lua listed with its weight in behavior.json's `scripts`.

    Weights are normalized to sum to 1. Other entries of weight 0 are left out; the primary
    stays at weight 0 (an allocation may drive an arm to nothing while its agents keep it as
    their assignment). A bundle left with the primary alone renders exactly as
    `render_configmap`, whatever its weight. Raises ValueError for no entries, a negative or
    non-finite weight, or more than MAX_BUNDLE_SCRIPTS scripts.
    """
    if not entries:
        raise ValueError("a bundle needs at least its primary script")
    for entry in entries:
        if not math.isfinite(entry.weight) or entry.weight < 0:
            raise ValueError(
                f"weight of {entry.snapshot.name}@{entry.snapshot.revision} must be a finite "
                f"number >= 0, not {entry.weight!r}"
            )
    kept = [entries[0], *(entry for entry in entries[1:] if entry.weight > 0)]
    if len(kept) == 1:
        return render_configmap(owner, kept[0].snapshot)
    if len(kept) > MAX_BUNDLE_SCRIPTS:
        raise ValueError(f"a bundle holds at most {MAX_BUNDLE_SCRIPTS} scripts, not {len(kept)}")
    # Positive: at least one entry past the primary has a positive weight.
    total = math.fsum(entry.weight for entry in kept)
    data: dict[str, str] = {}
    scripts: list[dict[str, Any]] = []
    for index, entry in enumerate(kept):
        key = bundle_script_key(index)
        data[key] = entry.snapshot.script
        scripts.append(
            {"key": key, "weight": entry.weight / total, **_metadata_document(entry.snapshot)}
        )
    document = {**_metadata_document(kept[0].snapshot), "scripts": scripts}
    return _configmap(owner, {**data, METADATA_KEY: _dump(document)})


def runtime_env(owner: Owner, registry_url: str) -> list[Manifest]:
    return [
        {"name": "AGENTREG_AGENT", "value": f"{owner.namespace}/{owner.name}"},
        {"name": "AGENTREG_BEHAVIOR_DIR", "value": BEHAVIOR_DIR},
        {"name": "AGENTREG_CONFIGMAP", "value": configmap_name(owner.name)},
        {"name": "AGENTREG_REGISTRY_URL", "value": registry_url},
    ]


def _with_env(container: Manifest, env: list[Manifest]) -> list[Manifest]:
    ours = {item["name"] for item in env}
    kept = [item for item in container.get("env", []) if item.get("name") not in ours]
    return kept + env


def _with_mount(container: Manifest) -> list[Manifest]:
    mounts = [m for m in container.get("volumeMounts", []) if m.get("name") != BEHAVIOR_VOLUME]
    # A whole-volume mount, never subPath: kubelet never updates subPath mounts.
    return [*mounts, {"name": BEHAVIOR_VOLUME, "mountPath": BEHAVIOR_DIR, "readOnly": True}]


def render_pod_template(
    owner: Owner,
    template: Manifest,
    *,
    registry_url: str,
    service_account_name: str | None = None,
) -> Manifest:
    """The user's pod template plus the behavior volume, mount and runtime environment."""
    rendered = copy.deepcopy(template)
    metadata = rendered.setdefault("metadata", {})
    metadata["labels"] = {**metadata.get("labels", {}), **agent_labels(owner.name)}
    spec = rendered.setdefault("spec", {})
    env = runtime_env(owner, registry_url)
    for key in ("containers", "initContainers"):
        if key in spec:
            spec[key] = [
                {**c, "env": _with_env(c, env), "volumeMounts": _with_mount(c)} for c in spec[key]
            ]
    volumes = [v for v in spec.get("volumes", []) if v.get("name") != BEHAVIOR_VOLUME]
    spec["volumes"] = [
        *volumes,
        {"name": BEHAVIOR_VOLUME, "configMap": {"name": configmap_name(owner.name)}},
    ]
    if "serviceAccountName" not in spec:
        # Without one the pods would run as `default`, which the registry API refuses reports
        # from: the Agent's own ServiceAccount is named like the Agent (api/access.py).
        spec["serviceAccountName"] = service_account_name or owner.name
    return rendered


def render_deployment(
    owner: Owner,
    template: Manifest,
    *,
    registry_url: str,
    paused: bool = False,
    service_account_name: str | None = None,
) -> Manifest:
    """A one-replica Deployment running the agent (zero replicas while the agent is paused)."""
    pod_template = render_pod_template(
        owner, template, registry_url=registry_url, service_account_name=service_account_name
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(owner.name),
            "namespace": owner.namespace,
            "labels": agent_labels(owner.name),
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "replicas": 0 if paused else 1,
            "selector": {"matchLabels": {AGENT_LABEL: owner.name}},
            "template": pod_template,
        },
    }
