"""In-memory indexes: kopf's of AgentBehaviors, policies and experiments (`@kopf.index`), and
the AgentIndex the operator's own Agent watch keeps (controller/agent_watch.py).

The handlers use them to find the agents of a behavior without listing the API; the status
write-back loop walks them once per interval instead of running a timer per object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from agent_registry.resources.common import API_VERSION, GROUP

PIN_ANNOTATION = f"{GROUP}/pin"
PIN_REASON_ANNOTATION = f"{GROUP}/pin-reason"
PROMOTE_ANNOTATION = f"{GROUP}/promote"
ABORT_ANNOTATION = f"{GROUP}/abort"
# The annotations users act with. Only these are kept: kopf's progress records and kubectl's
# last-applied configuration would make every index entry large and change on every run.
USER_ANNOTATIONS = frozenset(
    {PIN_ANNOTATION, PIN_REASON_ANNOTATION, PROMOTE_ANNOTATION, ABORT_ANNOTATION}
)

Key = tuple[str, str]  # (namespace, name)
T = TypeVar("T")


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
    # Where users and plugins speak without touching the Git-managed spec (pins, actions).
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def behavior_ref(self) -> str | None:
        ref = self.spec.get("behaviorRef") or {}
        name = ref.get("name")
        return str(name) if name else None

    def derived(self, key: str, compute: Callable[[ObjectState], T]) -> T:
        """compute(self), once per snapshot. A state is never changed in place (every watch
        event makes a new one), so what is derived from it can be kept with it: an
        experiment's participants by agent are looked up once per agent per tick, and
        rebuilding them for each made a tick quadratic in the fleet. The result is shared:
        callers must not change it."""
        memo: dict[str, Any] = self.__dict__.setdefault("_derived", {})
        if key not in memo:
            memo[key] = compute(self)
        value: T = memo[key]
        return value

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
        annotations=_ours(metadata.get("annotations")),
        labels={str(k): str(v) for k, v in (metadata.get("labels") or {}).items()},
    )


def _ours(annotations: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (annotations or {}).items() if k in USER_ANNOTATIONS}


def agent_states(body: Mapping[str, Any], **_: Any) -> dict[Key, ObjectState]:
    state = state_of("Agent", body)
    return {(state.namespace, state.name): state}


def agents_by_behavior(body: Mapping[str, Any], **_: Any) -> dict[Key, str]:
    """The agents a behavior's new revision may concern: by spec.behaviorRef, by pin, and
    the behavior they run now (a policy's or an experiment's choice lives only in status)."""
    state = state_of("Agent", body)
    running = (state.status.get("behavior") or {}).get("name")
    names = [state.behavior_ref, pinned_behavior(state), running]
    return {(state.namespace, name): state.name for name in names if name}


def pinned_behavior(state: ObjectState) -> str | None:
    value = state.annotations.get(PIN_ANNOTATION, "").strip()
    return value.partition("@")[0].strip() or None


def behavior_states(body: Mapping[str, Any], **_: Any) -> dict[Key, ObjectState]:
    state = state_of("AgentBehavior", body)
    return {(state.namespace, state.name): state}


def one(index: Mapping[Key, Any], key: Key) -> Any | None:
    """The single value of a unique key of a kopf index, or None."""
    store = index.get(key)
    if not store:
        return None
    return next(iter(store), None)


class AgentIndex:
    """The Agents as last seen, kept by the operator's own list and watch (not a
    `@kopf.index`): kopf blocks every worker until each indexed object is indexed, with one
    readiness toggle per object whose every change wakes every waiting worker, which made a
    start with 10,000 Agents quadratic (no handler ran within 15 minutes, issue 14).

    `states` and `by_behavior` have the shape of kopf indexes (key -> collection of values),
    with the values of `agent_states` and `agents_by_behavior` above."""

    def __init__(self) -> None:
        self.states: dict[Key, list[ObjectState]] = {}
        self.by_behavior: dict[Key, set[str]] = {}
        self._behaviors_of: dict[Key, list[Key]] = {}

    def put(self, body: Mapping[str, Any]) -> ObjectState:
        ((key, state),) = agent_states(body).items()
        self.remove(key)
        self.states[key] = [state]
        behaviors = list(agents_by_behavior(body))
        for behavior in behaviors:
            self.by_behavior.setdefault(behavior, set()).add(state.name)
        self._behaviors_of[key] = behaviors
        return state

    def remove(self, key: Key) -> None:
        self.states.pop(key, None)
        for behavior in self._behaviors_of.pop(key, []):
            names = self.by_behavior.get(behavior)
            if names is not None:
                names.discard(key[1])
                if not names:
                    del self.by_behavior[behavior]
