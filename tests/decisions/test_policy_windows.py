"""Recent windows from snapshots of cumulative counts (pure: no clock, no servers)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from agent_registry.decisions.evidence import Counts
from agent_registry.decisions.policy_windows import PolicyWindows, Recent, ScriptKey, delta

W = 1200.0
ROLE = {"ns/a", "ns/b"}


def _row(agent: str, behavior: str = "fast", revision: int = 1) -> ScriptKey:
    return (agent, behavior, revision, f"sha-{behavior}-{revision}")


def _observe(
    ring: PolicyWindows,
    at: float,
    scripts: Mapping[ScriptKey, Counts],
    assignments: Mapping[str, tuple[object, Counts]] | None = None,
    role: set[str] | None = None,
) -> Recent | None:
    return ring.observe(at, scripts=scripts, assignments=assignments or {}, role=role or ROLE)


def test_delta_of_cumulative_counts() -> None:
    assert delta(Counts(100, 90), Counts(60, 55)) == Counts(40, 35)
    assert delta(Counts(100, 90), None) == Counts(100, 90)  # the key appeared since
    assert delta(Counts(10, 9), Counts(60, 55)) == Counts(10, 9)  # reset: counts from it
    assert delta(Counts(100, 90), Counts(60, 30)) == Counts(100, 90)  # failures went down


def test_nothing_before_a_second_reading() -> None:
    ring = PolicyWindows(W)
    assert _observe(ring, 0.0, {_row("ns/a"): Counts(10, 9)}) is None
    recent = _observe(ring, 15.0, {_row("ns/a"): Counts(15, 13)})
    assert recent is not None
    # Younger than a window: from the oldest reading.
    assert (recent.since, recent.candidate("fast", 1)) == (0.0, (Counts(5, 4), 1))


def test_window_is_from_the_youngest_snapshot_at_least_a_window_old() -> None:
    ring = PolicyWindows(W, resolution=8)
    recent = None
    for step in range(0, 200):
        at = 15.0 * step
        recent = _observe(ring, at, {_row("ns/a"): Counts(step * 10, step * 9)})
        assert len(ring.kept) <= 8 + 2  # bounded, whatever the number of readings
        if recent is not None and at >= W + 150:
            assert W <= at - recent.since <= W + W / 8 + 15.0
    assert recent is not None
    counts, agents = recent.candidate("fast", 1) or (Counts(), 0)
    span_steps = round((recent.at - recent.since) / 15.0)
    assert (counts, agents) == (Counts(span_steps * 10, span_steps * 9), 1)


def test_open_assignment_window_never_mixes_assignments() -> None:
    ring = PolicyWindows(W)
    first = ("fast", "t0", "sha-fast-1")
    _observe(ring, 0.0, {}, {"ns/a": (first, Counts(300, 270))})
    recent = _observe(ring, W, {}, {"ns/a": (first, Counts(500, 400))})
    assert recent is not None
    assert recent.agent("ns/a") == Counts(200, 130)
    second = ("slow", "t1", "sha-slow-1")
    recent = _observe(ring, W + 10, {}, {"ns/a": (second, Counts(20, 19))})
    # Opened after the baseline: all of it is recent, none of the first assignment's tasks.
    assert recent is not None
    assert recent.agent("ns/a") == Counts(20, 19)
    assert recent.agent("ns/unknown") is None


def test_candidate_window_sums_the_role_and_counts_its_agents() -> None:
    ring = PolicyWindows(W)
    before = {
        _row("ns/a"): Counts(100, 90),
        _row("ns/b"): Counts(100, 80),
        _row("ns/other-role"): Counts(100, 10),
        _row("ns/a", "slow"): Counts(50, 25),
    }
    _observe(ring, 0.0, before)
    after = {**before, _row("ns/a"): Counts(150, 130), _row("ns/b"): Counts(140, 110)}
    after[_row("ns/other-role")] = Counts(200, 20)
    after[_row("ns/c", "new")] = Counts(5, 5)  # a row that appeared: counts whole
    recent = _observe(ring, W, after, role={"ns/a", "ns/b", "ns/c"})
    assert recent is not None
    assert recent.candidate("fast", 1) == (Counts(90, 70), 2)
    assert recent.candidate("new", 1) == (Counts(5, 5), 1)
    assert recent.candidate("slow", 1) is None  # nothing in the window


def test_an_abandoned_behavior_keeps_its_last_window_of_use() -> None:
    ring = PolicyWindows(W)
    rows = {_row("ns/a"): Counts(0, 0)}
    tasks = successes = 0
    at = 0.0
    for step in range(120):  # runs 10 tasks per 15 s, 9 then 3 successes
        at = 15.0 * step
        if step < 100:
            tasks, successes = tasks + 10, successes + (9 if step < 5 else 3)
        rows = {_row("ns/a"): Counts(tasks, successes)}
        recent = _observe(ring, at, rows)
    assert recent is not None
    # Stopped at step 99: the window taken then (its last 20 min, the bad end) is kept,
    # not the shrinking tail the current window holds.
    counts, agents = recent.candidate("fast", 1) or (Counts(), 0)
    assert agents == 1
    assert counts.tasks >= W / 15 * 10
    assert counts.rate == pytest.approx(0.3)


def test_rows_that_disappear_are_evicted() -> None:
    ring = PolicyWindows(W)
    _observe(
        ring,
        0.0,
        {_row("ns/a"): Counts(1, 1), _row("ns/b"): Counts(1, 1)},
        {"ns/b": (1, Counts(1, 1))},
    )
    _observe(ring, 200.0, {_row("ns/a"): Counts(2, 2)})
    assert all(_row("ns/b") not in s.scripts for s in ring.kept)
    assert all("ns/b" not in s.agents for s in ring.kept)


def test_a_pause_in_readings_empties_the_ring() -> None:
    ring = PolicyWindows(W)
    _observe(ring, 0.0, {_row("ns/a"): Counts(1, 1)})
    assert _observe(ring, 5 * W, {_row("ns/a"): Counts(9, 9)}) is None
    # A clock that went back does not difference against the future either.
    assert _observe(ring, 4 * W, {_row("ns/a"): Counts(9, 9)}) is None


def test_rejects_a_bad_window() -> None:
    with pytest.raises(ValueError, match="window_seconds"):
        PolicyWindows(0.0)
    with pytest.raises(ValueError, match="resolution"):
        PolicyWindows(W, resolution=0)
