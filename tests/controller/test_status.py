"""Conditions and status computation for the handlers and the write-back loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from agent_registry.controller.conditions import Cond, ConditionDict, find, merge_conditions
from agent_registry.controller.status import (
    AgentView,
    AssignmentView,
    LoadFailureView,
    UnderperformingPolicy,
    desired_agent_status,
    desired_behavior_status,
    status_patch,
    validity_condition,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
SHA_A = "a" * 64
SHA_B = "b" * 64


def test_transition_time_kept_while_status_unchanged() -> None:
    first = merge_conditions(
        [], [Cond("Valid", "True", "Ok", "fine")], now=T0, observed_generation=1
    )
    again = merge_conditions(
        first, [Cond("Valid", "True", "Ok", "still fine")], now=T1, observed_generation=2
    )
    assert again[0]["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert again[0]["message"] == "still fine"
    assert again[0]["observedGeneration"] == 2
    flipped = merge_conditions(
        again, [Cond("Valid", "False", "Bad")], now=T1, observed_generation=2
    )
    assert flipped[0]["lastTransitionTime"] == "2026-01-01T12:05:00Z"


def test_other_condition_types_are_kept() -> None:
    base = merge_conditions(
        [], [Cond("Underperforming", "True", "Low")], now=T0, observed_generation=None
    )
    merged = merge_conditions(
        base, [Cond("Ready", "True", "Ready")], now=T1, observed_generation=None
    )
    assert [c["type"] for c in merged] == ["Underperforming", "Ready"]
    assert "observedGeneration" not in merged[1]
    # An update keeps its position (recomputing never reorders: no patch per tick).
    again = merge_conditions(
        merged, [Cond("Underperforming", "False", "Ok")], now=T1, observed_generation=None
    )
    assert [c["type"] for c in again] == ["Underperforming", "Ready"]
    assert again[0]["status"] == "False"
    removed = merge_conditions(
        again, [], now=T1, observed_generation=None, remove=["Underperforming", "Absent"]
    )
    assert [c["type"] for c in removed] == ["Ready"]


def _condition(status: dict[str, Any], type_: str) -> ConditionDict:
    """The condition of that type in `status`; the test fails when there is none."""
    found = find(status["conditions"], type_)
    assert found is not None, f"no {type_} condition in {status.get('conditions')}"
    return found


def _view(
    loaded: str | None,
    *,
    status: str = "active",
    deleted: bool = False,
    failure: LoadFailureView | None = None,
) -> AgentView:
    return AgentView(
        status=status,
        assignment=AssignmentView(
            name="careful",
            revision=2,
            sha256=SHA_A,
            assigned_at=T0,
            assigned_by="op",
            reason="spec",
            behavior_deleted=deleted,
        ),
        loaded_sha256=loaded,
        loaded_at=T1 if loaded else None,
        stats={"tasksCompleted": 3, "successRate": 0.6667},
        load_failure=failure,
    )


def test_ready_only_when_assigned_sha_is_loaded() -> None:
    pending = desired_agent_status(
        {}, behavior_ref="careful", view=_view(SHA_B), now=T0, observed_generation=4
    )
    assert _condition(pending, "BehaviorAssigned")["status"] == "True"
    loaded = _condition(pending, "BehaviorLoaded")
    assert loaded["status"] == "False"
    assert loaded["reason"] == "ReloadPending"
    assert _condition(pending, "Ready")["status"] == "False"
    assert pending["observedGeneration"] == 4
    assert pending["behavior"]["sha256"] == SHA_A
    assert pending["behavior"]["assignedAt"] == "2026-01-01T12:00:00Z"

    done = desired_agent_status(pending, behavior_ref="careful", view=_view(SHA_A), now=T1)
    assert _condition(done, "BehaviorLoaded")["status"] == "True"
    assert _condition(done, "Ready")["status"] == "True"
    assert done["observedGeneration"] == 4, "the loop never moves observedGeneration"
    assert done["loadedBehavior"] == {"sha256": SHA_A, "loadedAt": "2026-01-01T12:05:00Z"}


def test_deleted_behavior_unassigns_and_paused_is_not_ready() -> None:
    gone = desired_agent_status({}, behavior_ref="careful", view=_view(SHA_A, deleted=True), now=T0)
    assigned = _condition(gone, "BehaviorAssigned")
    assert (assigned["status"], assigned["reason"]) == ("False", "BehaviorDeleted")
    paused = desired_agent_status(
        {}, behavior_ref="careful", view=_view(SHA_A, status="paused"), now=T0
    )
    assert paused["phase"] == "Paused"
    ready = _condition(paused, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Paused")


def test_no_patch_when_nothing_changed() -> None:
    first = desired_agent_status(
        {}, behavior_ref="careful", view=_view(SHA_A), now=T0, observed_generation=1
    )
    second = desired_agent_status(first, behavior_ref="careful", view=_view(SHA_A), now=T1)
    assert status_patch(first, second) is None
    more = AgentView(**{**_view(SHA_A).__dict__, "stats": {"tasksCompleted": 4}})
    third = desired_agent_status(first, behavior_ref="careful", view=more, now=T1)
    assert status_patch(first, third) == {"stats": {"tasksCompleted": 4}}


def test_invalid_script_condition_quotes_line() -> None:
    cond = validity_condition(False, "behavior:3: unexpected symbol near 'end'", 3)
    status = desired_behavior_status({}, observed_generation=2, valid=cond, now=T0)
    valid = _condition(status, "Valid")
    assert valid["status"] == "False"
    assert valid["message"] == "line 3: unexpected symbol near 'end'"
    assert status["revision"] is None
    counted = desired_behavior_status(
        status, observed_generation=None, agent_count=2, tasks=4, successes=3, now=T1
    )
    assert counted["stats"] == {"tasksCompleted": 4, "successRate": 0.75}
    assert counted["conditions"] == status["conditions"]
    assert counted["observedGeneration"] == 2


def test_refused_assigned_script_is_load_failed_with_lua_error_and_line() -> None:
    refused = LoadFailureView(SHA_A, "behavior:3: unexpected symbol near 'end'", 3)
    status = desired_agent_status(
        {}, behavior_ref="careful", view=_view(SHA_B, failure=refused), now=T0
    )
    loaded = _condition(status, "BehaviorLoaded")
    assert (loaded["status"], loaded["reason"]) == ("False", "LoadFailed")
    assert "line 3: unexpected symbol near 'end'" in loaded["message"]
    assert "revision 2" in loaded["message"]
    assert f"keeps running {SHA_B[:12]}" in loaded["message"]
    ready = _condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "LoadFailed")
    assert status["loadedBehavior"]["sha256"] == SHA_B, "the last good script still runs"


def test_a_failure_of_another_script_is_not_a_load_failure_of_this_one() -> None:
    # The runtime refused an older script; the assigned one is merely not confirmed yet.
    stale = LoadFailureView(SHA_B, "boom", None)
    pending = desired_agent_status(
        {}, behavior_ref="careful", view=_view(None, failure=stale), now=T0
    )
    assert _condition(pending, "BehaviorLoaded")["reason"] == "NotLoaded"
    # A confirmed load of the assigned script wins over any failure record.
    done = desired_agent_status(
        {},
        behavior_ref="careful",
        view=_view(SHA_A, failure=LoadFailureView(SHA_A, "boom", 1)),
        now=T0,
    )
    assert _condition(done, "BehaviorLoaded")["status"] == "True"


def test_load_failure_message_without_line_or_loaded_script() -> None:
    refused = LoadFailureView(SHA_A, "memory limit exceeded", None)
    status = desired_agent_status(
        {}, behavior_ref="careful", view=_view(None, failure=refused), now=T0
    )
    loaded = _condition(status, "BehaviorLoaded")
    assert loaded["reason"] == "LoadFailed"
    assert loaded["message"].endswith(": memory limit exceeded")


def _judged(tasks: int, successes: int, *, status: str = "active") -> AgentView:
    return AgentView(
        **{
            **_view(SHA_A, status=status).__dict__,
            "current_tasks": tasks,
            "current_successes": successes,
        }
    )


def _underperforming(view: AgentView, policy: UnderperformingPolicy) -> ConditionDict:
    status = desired_agent_status({}, behavior_ref="careful", view=view, now=T0, policy=policy)
    return _condition(status, "Underperforming")


def test_underperforming_needs_min_tasks_and_a_rate_below_threshold() -> None:
    default = UnderperformingPolicy()
    assert (default.threshold, default.min_tasks) == (0.7, 10)
    few = _underperforming(_judged(9, 0), default)
    assert (few["status"], few["reason"]) == ("False", "TooFewTasks")
    low = _underperforming(_judged(10, 6), default)
    assert (low["status"], low["reason"]) == ("True", "LowSuccessRate")
    assert low["message"] == "success rate 0.60 over 10 tasks of careful revision 2, below 0.7"
    at = _underperforming(_judged(10, 7), default)
    assert (at["status"], at["reason"]) == ("False", "SuccessRateOk"), "strict: 0.7 is fine"
    strict = _underperforming(_judged(10, 7), UnderperformingPolicy(threshold=0.8, min_tasks=5))
    assert strict["status"] == "True"
    lenient = _underperforming(_judged(4, 0), UnderperformingPolicy(threshold=0.8, min_tasks=5))
    assert lenient["status"] == "False"


def test_underperforming_does_not_touch_ready_and_skips_unjudgeable_agents() -> None:
    status = desired_agent_status(
        {}, behavior_ref="careful", view=_judged(20, 0), now=T0, policy=UnderperformingPolicy()
    )
    assert _condition(status, "Underperforming")["status"] == "True"
    assert _condition(status, "Ready")["status"] == "True"
    paused = _underperforming(_judged(20, 0, status="paused"), UnderperformingPolicy())
    assert (paused["status"], paused["reason"]) == ("False", "NotActive")
    unassigned = AgentView(status="active", assignment=None, current_tasks=20)
    nothing = _underperforming(unassigned, UnderperformingPolicy())
    assert (nothing["status"], nothing["reason"]) == ("False", "NothingAssigned")


def test_a_healthy_agents_underperforming_condition_is_stable() -> None:
    first = desired_agent_status({}, behavior_ref="careful", view=_judged(10, 10), now=T0)
    more = desired_agent_status(first, behavior_ref="careful", view=_judged(50, 49), now=T1)
    assert find(more["conditions"], "Underperforming") == find(
        first["conditions"], "Underperforming"
    )
