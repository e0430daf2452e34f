"""Canary step verdicts (canary_analysis.py)."""

from __future__ import annotations

import random

import pytest

from agent_registry.decisions.canary_analysis import analyze_canary, counted_with_load_failures
from agent_registry.decisions.evidence import Counts


def test_a_clearly_worse_canary_aborts() -> None:
    verdict = analyze_canary(Counts(18_000, 15_300), Counts(2000, 1600))
    assert verdict.action == "Abort"
    assert verdict.difference == pytest.approx(-0.05)
    low, high = verdict.difference_bounds
    assert low < -0.05 < high < -0.02
    assert verdict.reason.startswith("worse than stable by more than maxRegression 0.02")
    assert "canary 0.800 [" in verdict.reason
    assert "stable 0.850 [" in verdict.reason
    assert "(n=2000/18000)" in verdict.reason


def test_abort_needs_no_min_tasks() -> None:
    verdict = analyze_canary(Counts(2000, 1700), Counts(150, 60), min_tasks=200)
    assert verdict.action == "Abort"


def test_an_equal_canary_advances_once_credibly_within_the_margin() -> None:
    verdict = analyze_canary(Counts(27_000, 22_950), Counts(3000, 2550))
    assert verdict.action == "Advance"
    assert verdict.difference_bounds[0] > -0.02
    assert verdict.reason.startswith("not worse than stable by more than 0.02")
    low, high = verdict.canary_interval
    assert low < 0.85 < high


def test_not_enough_evidence_is_continue_not_advance() -> None:
    """200 canary tasks at the stable rate: no evidence of harm, but no evidence of safety
    either (the lower bound is ~0.09 below): the step keeps collecting."""
    verdict = analyze_canary(Counts(1800, 1530), Counts(200, 170))
    assert verdict.action == "Continue"
    assert verdict.difference_bounds[0] < -0.05
    assert verdict.reason.startswith("not decided yet")


def test_min_tasks_gates_advance() -> None:
    # 190 canary tasks that are far better than stable: credibly fine, but below minTasks.
    held = analyze_canary(Counts(1900, 1140), Counts(190, 188), min_tasks=200)
    assert held.action == "Continue"
    assert held.difference_bounds[0] > -0.02
    assert held.reason.startswith("waiting for minTasks=200")
    assert analyze_canary(Counts(1900, 1140), Counts(190, 188), min_tasks=150).action == "Advance"


def test_waits_for_tasks_on_both_revisions() -> None:
    verdict = analyze_canary(Counts(100, 85), Counts())
    assert verdict.action == "Continue"
    assert verdict.canary_interval == (0.0, 1.0)
    assert verdict.reason.startswith("waiting for tasks on both revisions")


def test_a_canary_that_fails_to_load_everywhere_aborts_at_once() -> None:
    verdict = analyze_canary(Counts(), Counts(), canary_load_failures=4, canary_agents=4)
    assert verdict.action == "Abort"
    assert verdict.reason == "canary failed to load on all 4 agents it was sent to"
    # Even with perfect tasks reported somewhere, and more failures than agents.
    assert (
        analyze_canary(
            Counts(900, 765), Counts(100, 100), canary_load_failures=5, canary_agents=3
        ).action
        == "Abort"
    )


def test_partial_load_failures_count_as_failed_tasks() -> None:
    assert counted_with_load_failures(Counts(900, 765), 1, 10) == Counts(1000, 765)
    assert counted_with_load_failures(Counts(901, 765), 1, 10) == Counts(1002, 765)  # rounds up
    assert counted_with_load_failures(Counts(900, 765), 0, 0) == Counts(900, 765)
    # An equal canary that advances on its own counts aborts when 1 agent in 10 cannot load it:
    # the fleet would lose a tenth of that agent share's successes.
    stable, canary = Counts(27_000, 22_950), Counts(3000, 2550)
    assert analyze_canary(stable, canary, canary_agents=10).action == "Advance"
    failed = analyze_canary(stable, canary, canary_load_failures=1, canary_agents=10)
    assert failed.action == "Abort"
    assert failed.canary_counts == Counts(3334, 2550)
    assert "failed to load on 1 of 10 agents" in failed.reason
    assert failed.canary_interval[1] < 0.8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_tasks": -1}, "min_tasks"),
        ({"max_regression": -0.01}, "max_regression"),
        ({"max_regression": 1.0}, "max_regression"),
        ({"alpha": 0.0}, "alpha"),
        ({"canary_load_failures": -1}, ">= 0"),
        ({"canary_load_failures": 2}, "needs canary_agents"),
    ],
)
def test_input_errors(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        analyze_canary(Counts(100, 80), Counts(10, 8), **kwargs)  # type: ignore[arg-type]


def _step(rng: random.Random, stable_rate: float, canary_rate: float) -> tuple[str, str]:
    """One rollout step at 50 % weight analysed after every 20 tasks, up to 40,000 tasks: the
    rule's first decision, and that of the naive reading of "not credibly worse" (advance at
    minTasks unless the upper bound already shows a regression beyond the margin)."""
    n_s = s_s = n_c = s_c = 0
    ours = naive = "Continue"
    while n_s + n_c < 40_000 and ours == "Continue":
        for _ in range(20):
            if rng.random() < 0.5:
                n_c += 1
                s_c += rng.random() < canary_rate
            else:
                n_s += 1
                s_s += rng.random() < stable_rate
        verdict = analyze_canary(Counts(n_s, s_s), Counts(n_c, s_c))
        ours = verdict.action
        if naive == "Continue":
            if verdict.difference_bounds[1] < -0.02:
                naive = "Abort"
            elif n_c >= 200:
                naive = "Advance"
    return ours, naive


def test_repeated_looks_keep_both_errors_rare() -> None:
    """A canary equal to stable is aborted in <= alpha of the steps (never, here) and mostly
    advances; one 0.05 worse is advanced in <= alpha of them (never) and always aborts. The
    naive reading of the advance rule lets that bad canary through at 200 tasks (in all 60
    steps here)."""
    rng = random.Random(77)
    equal = [_step(rng, 0.85, 0.85) for _ in range(60)]
    bad = [_step(rng, 0.85, 0.80) for _ in range(60)]
    assert [ours for ours, _ in equal].count("Abort") <= 6
    assert [ours for ours, _ in equal].count("Advance") >= 50
    assert [ours for ours, _ in bad].count("Advance") <= 6
    assert [ours for ours, _ in bad].count("Abort") >= 54
    assert [naive for _, naive in bad].count("Advance") > 30
