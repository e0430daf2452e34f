"""kstatus' Reconciling and Stalled conditions (abnormal-true: present only while True) on
Agents and AgentBehaviors, from the pure status computation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from agent_registry.controller.conditions import Cond, find
from agent_registry.controller.kstatus import kstatus_updates
from agent_registry.controller.status import (
    AgentView,
    AssignmentView,
    LoadFailureView,
    desired_agent_status,
    desired_behavior_status,
    status_patch,
    validity_condition,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
SHA_A = "a" * 64
SHA_B = "b" * 64


def _view(
    loaded: str | None, *, status: str = "active", failure: LoadFailureView | None = None
) -> AgentView:
    return AgentView(
        status=status,
        assignment=AssignmentView(name="careful", revision=2, sha256=SHA_A),
        loaded_sha256=loaded,
        load_failure=failure,
    )


def _types(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def _agent(current: dict[str, Any], view: AgentView, **kw: Any) -> dict[str, Any]:
    return desired_agent_status(current, behavior_ref="careful", view=view, now=T0, **kw)


def test_reload_pending_is_reconciling_until_confirmed() -> None:
    pending = _agent({}, _view(SHA_B), observed_generation=4, generation=4)
    reconciling = find(pending["conditions"], "Reconciling")
    assert reconciling is not None
    assert (reconciling["status"], reconciling["reason"]) == ("True", "ReloadPending")
    assert "Stalled" not in _types(pending)

    never = _agent({}, _view(None), observed_generation=4, generation=4)
    assert find(never["conditions"], "Reconciling")["reason"] == "NotLoaded"  # type: ignore[index]

    done = desired_agent_status(
        pending, behavior_ref="careful", view=_view(SHA_A), now=T1, generation=4
    )
    assert "Reconciling" not in _types(done), "removed, not set to False"
    assert "Stalled" not in _types(done)
    assert _types(done)["Ready"] == "True"


def test_lagging_observed_generation_is_reconciling() -> None:
    # The write-back loop keeps observedGeneration (3) while the spec is at generation 5.
    lagging = _agent({"observedGeneration": 3}, _view(SHA_A), generation=5)
    reconciling = find(lagging["conditions"], "Reconciling")
    assert reconciling is not None
    assert (reconciling["status"], reconciling["reason"]) == ("True", "GenerationPending")
    caught_up = _agent(lagging, _view(SHA_A), observed_generation=5, generation=5)
    assert "Reconciling" not in _types(caught_up)


def test_refused_script_is_stalled_not_reconciling() -> None:
    refused = LoadFailureView(SHA_A, "behavior:3: unexpected symbol", 3)
    stuck = _agent({}, _view(SHA_B, failure=refused), observed_generation=2, generation=2)
    stalled = find(stuck["conditions"], "Stalled")
    assert stalled is not None
    assert (stalled["status"], stalled["reason"]) == ("True", "LoadFailed")
    assert "line 3: unexpected symbol" in stalled["message"]
    assert "Reconciling" not in _types(stuck), "kstatus reads Reconciling first: fail fast"
    # A fixed script, loaded: no longer stalled.
    fixed = desired_agent_status(
        stuck, behavior_ref="careful", view=_view(SHA_A), now=T1, generation=2
    )
    assert "Stalled" not in _types(fixed)


def test_paused_agent_is_not_reconciling() -> None:
    paused = _agent({}, _view(SHA_B, status="paused"), observed_generation=1, generation=1)
    assert "Reconciling" not in _types(paused)
    assert "Stalled" not in _types(paused)


def test_unchanged_kstatus_conditions_make_no_patch() -> None:
    first = _agent({}, _view(SHA_B), observed_generation=1, generation=1)
    again = desired_agent_status(
        first, behavior_ref="careful", view=_view(SHA_B), now=T1, generation=1
    )
    assert status_patch(first, again) is None


def test_invalid_behavior_is_stalled_and_valid_one_is_not() -> None:
    invalid = validity_condition(False, "behavior:3: unexpected symbol near 'end'", 3)
    bad = desired_behavior_status({}, observed_generation=2, valid=invalid, now=T0, generation=2)
    stalled = find(bad["conditions"], "Stalled")
    assert stalled is not None
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidScript")
    assert stalled["message"] == "line 3: unexpected symbol near 'end'"
    assert "Reconciling" not in _types(bad)

    # The write-back loop (no verdict of its own) keeps it stalled, without a new patch.
    counted = desired_behavior_status(
        bad, observed_generation=None, agent_count=0, tasks=0, successes=0, now=T1, generation=2
    )
    assert counted["conditions"] == bad["conditions"]

    # A new generation in flight: Reconciling, and the old verdict is no longer Stalled.
    edited = desired_behavior_status(bad, observed_generation=None, now=T1, generation=3)
    assert _types(edited).get("Reconciling") == "True"
    assert "Stalled" not in _types(edited)

    good = desired_behavior_status(
        edited,
        observed_generation=3,
        valid=validity_condition(True, None, None),
        now=T1,
        revision=1,
        generation=3,
    )
    assert "Stalled" not in _types(good)
    assert "Reconciling" not in _types(good)
    assert _types(good)["Valid"] == "True"


def test_kstatus_updates_sets_at_most_one_and_removes_the_rest() -> None:
    stuck = Cond("Valid", "False", "InvalidScript", "bad")
    moving = Cond("BehaviorLoaded", "False", "ReloadPending", "soon")
    updates, absent = kstatus_updates(
        generation=1, observed_generation=1, stalled=stuck, progressing=moving
    )
    assert [(c.type, c.reason) for c in updates] == [("Stalled", "InvalidScript")]
    assert absent == ["Reconciling"]
    updates, absent = kstatus_updates(
        generation=None, observed_generation=None, stalled=None, progressing=None
    )
    assert (updates, absent) == ([], ["Reconciling", "Stalled"])
