"""ObjectState.derived: values computed from an immutable snapshot, once per snapshot."""

from __future__ import annotations

from agent_registry.controller.indexes import ObjectState, state_of


def _state(status: dict[str, object]) -> ObjectState:
    return state_of(
        "BehaviorPolicy", {"metadata": {"namespace": "ns", "name": "p"}, "status": status}
    )


def test_derived_is_computed_once_per_snapshot() -> None:
    calls: list[int] = []

    def count(state: ObjectState) -> int:
        calls.append(1)
        return len(state.status.get("switched") or [])

    first = _state({"switched": [{"agent": "a"}]})
    assert first.derived("n", count) == 1
    assert first.derived("n", count) == 1
    assert len(calls) == 1
    # Another key, another value; a new snapshot of the same object, computed again.
    assert first.derived("other", lambda s: "x") == "x"
    second = _state({"switched": [{"agent": "a"}, {"agent": "b"}]})
    assert second.derived("n", count) == 2
    assert len(calls) == 2


def test_derived_values_do_not_change_equality() -> None:
    one, two = _state({"phase": "Running"}), _state({"phase": "Running"})
    one.derived("n", lambda s: 1)
    assert one == two
