"""In-memory indexes kopf keeps up to date from its watches (`@kopf.index`).

The handlers use them to find the agents of a behavior without listing the API; the status
write-back loop walks them once per interval instead of running a timer per object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent_registry.resources.common import API_VERSION

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class ObjectState:
    """The parts of an Agent or AgentBehavior the operator needs between events."""

    kind: str
    namespace: str
    name: str
    uid: str
    generation: int | None
    spec: dict[str, Any]
    status: dict[str, Any]
    # What the status was computed from: the write-back loop patches only this version, so
    # a status computed from a stale snapshot never overwrites a handler's newer verdict.
    resource_version: str | None = None

    @property
    def behavior_ref(self) -> str | None:
        ref = self.spec.get("behaviorRef") or {}
        name = ref.get("name")
        return str(name) if name else None

    def event_body(self) -> Any:
        """Enough of the object for kopf to post an Event about it (kopf reads it as a dict)."""
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "metadata": {"namespace": self.namespace, "name": self.name, "uid": self.uid},
        }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def state_of(kind: str, body: Mapping[str, Any]) -> ObjectState:
    metadata = body.get("metadata", {})
    return ObjectState(
        kind=kind,
        namespace=str(metadata.get("namespace")),
        name=str(metadata.get("name")),
        uid=str(metadata.get("uid")),
        generation=metadata.get("generation"),
        spec=_plain(body.get("spec") or {}),
        status=_plain(body.get("status") or {}),
        resource_version=metadata.get("resourceVersion"),
    )


def agent_states(body: Mapping[str, Any], **_: Any) -> dict[Key, ObjectState]:
    state = state_of("Agent", body)
    return {(state.namespace, state.name): state}


def agents_by_behavior(body: Mapping[str, Any], **_: Any) -> dict[Key, str]:
    state = state_of("Agent", body)
    if state.behavior_ref is None:
        return {}
    return {(state.namespace, state.behavior_ref): state.name}


def behavior_states(body: Mapping[str, Any], **_: Any) -> dict[Key, ObjectState]:
    state = state_of("AgentBehavior", body)
    return {(state.namespace, state.name): state}


def one(index: Mapping[Key, Any], key: Key) -> Any | None:
    """The single value of a unique key of a kopf index, or None."""
    store = index.get(key)
    if not store:
        return None
    return next(iter(store), None)
