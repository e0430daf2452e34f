"""The pure stats math (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent_registry.registry import stats
from agent_registry.reports import TaskOutcome

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_empty_batch_changes_nothing() -> None:
    effect = stats.batch_effect([], NOW)
    assert (effect.tasks, effect.successes, effect.timed_tasks) == (0, 0, 0)
    assert effect.last_task_at is None
    assert stats.consecutive_failures_after(7, effect) == 7


def test_failures_only_add_to_the_streak() -> None:
    effect = stats.batch_effect([(False, None), (False, 3.0)], NOW)
    assert effect.failures == 2
    assert not effect.resets_failures
    assert stats.consecutive_failures_after(5, effect) == 7
    assert effect.last_success_at is None
    assert effect.last_failure_at == NOW


def test_a_success_resets_the_streak_to_trailing_failures() -> None:
    effect = stats.batch_effect([(False, 1.0), (True, 2.0), (False, 3.0), (False, None)], NOW)
    assert effect.successes == 1
    assert effect.trailing_failures == 2
    assert stats.consecutive_failures_after(100, effect) == 2
    ends_with_success = stats.batch_effect([(False, 1.0), (True, 2.0)], NOW)
    assert stats.consecutive_failures_after(100, ends_with_success) == 0


def test_durations_count_only_when_given() -> None:
    effect = stats.batch_effect([(True, 10.0), (True, None), (False, 20.0)], NOW)
    assert effect.timed_tasks == 2
    assert effect.total_response_time_ms == 30.0
    assert stats.avg_response_time_ms(effect.total_response_time_ms, effect.timed_tasks) == 15.0


def test_negative_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="duration_ms"):
        stats.batch_effect([(True, -1.0)], NOW)


def test_finished_at_is_used_and_capped_at_now() -> None:
    early = NOW - timedelta(minutes=5)
    future = NOW + timedelta(hours=1)
    effect = stats.batch_effect(
        [
            TaskOutcome(success=True, duration_ms=1.0, finished_at=early),
            TaskOutcome(success=False, duration_ms=1.0, finished_at=future),
        ],
        NOW,
    )
    assert effect.last_success_at == early
    assert effect.last_failure_at == NOW
    assert effect.last_task_at == NOW


def test_rates_have_documented_defaults() -> None:
    assert stats.success_rate(0, 0) == 1.0
    assert stats.success_rate(3, 4) == 0.75
    assert stats.avg_response_time_ms(0.0, 0) == 0.0


def test_outcome_notes_summarize() -> None:
    text = stats.outcome_notes(
        tasks=4, successes=3, total_response_time_ms=40.0, timed_tasks=4, replaced_by="ns/b"
    )
    assert "4 tasks" in text
    assert "75.0%" in text
    assert "avg 10.0 ms" in text
    assert "ns/b" in text


def test_naive_finished_at_is_taken_as_utc() -> None:
    naive = datetime(2026, 1, 1, 11, 0)
    effect = stats.batch_effect([TaskOutcome(success=True, finished_at=naive)], NOW)
    assert effect.last_success_at == naive.replace(tzinfo=UTC)


A, B, C = "a" * 64, "b" * 64, "c" * 64


def test_attribute_groups_by_script_in_fallback_order() -> None:
    earlier = NOW - timedelta(minutes=2)
    outcomes: list[stats.Outcome] = [
        TaskOutcome(success=True, duration_ms=2.0, finished_at=earlier, behavior_sha256=A),
        (False, None),  # no sha256: the loaded script, B
        TaskOutcome(success=False, duration_ms=4.0, behavior_sha256=A),
        TaskOutcome(success=True, behavior_sha256=C),  # never delivered
    ]
    assert stats.needs(outcomes, B) == stats.Needs(frozenset({A, B, C}), current=False)
    result = stats.attribute(outcomes, NOW, loaded_sha256=B, delivered={A, B}, has_current=False)
    assert result.recorded == 3
    assert [(i, sha) for i, sha, _ in result.refused] == [(3, C)]
    groups = {g.sha256: g for g in result.groups}
    assert set(groups) == {A, B}
    a = groups[A]
    assert (a.tasks, a.successes, a.timed_tasks, a.total_response_time_ms) == (2, 1, 2, 6.0)
    assert (a.first_task_at, a.last_task_at) == (earlier, NOW)
    assert (groups[B].tasks, groups[B].successes) == (1, 0)
    # The lifetime effect covers the accepted outcomes only, in order: the refused success
    # does not end the streak.
    assert (result.effect.tasks, result.effect.trailing_failures) == (3, 2)


def test_attribute_without_any_script_known() -> None:
    outcomes: list[stats.Outcome] = [(True, 1.0), (True, 1.0)]
    assert stats.needs(outcomes, None) == stats.Needs(frozenset(), current=True)
    current = stats.attribute(outcomes, NOW, loaded_sha256=None, delivered=(), has_current=True)
    assert [(g.sha256, g.tasks) for g in current.groups] == [(None, 2)]
    assert current.refused == ()
    nothing = stats.attribute(outcomes, NOW, loaded_sha256=None, delivered=(), has_current=False)
    assert (nothing.recorded, nothing.groups) == (0, ())
    assert [(i, sha, why) for i, sha, why in nothing.refused] == [
        (0, None, stats.NO_SCRIPT),
        (1, None, stats.NO_SCRIPT),
    ]
