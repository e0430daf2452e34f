"""The verdict at one step of a canary rollout: advance, abort, or keep collecting.

The canary (new revision) is compared with stable on the same agents and time window, tasks
as the units, by an always-valid confidence sequence for the difference d = canary - stable
(the one-sided normal mixture of `sequential`, mixing scale matched to `max_regression`), so
the step may be evaluated after every report:

- Abort when the upper bound of d is below -max_regression: the canary is credibly worse than
  stable by more than the tolerated regression. Allowed at any number of tasks.
- Advance when the lower bound of d is above -max_regression, and the canary ran at least
  `min_tasks` tasks at this step: the canary is credibly NOT worse by more than the margin.
- Otherwise Continue.

Each rule is a one-sided always-valid test at level alpha (abort: of H0 d >= -margin; advance:
of H0 d <= -margin), so a canary that is fine is aborted with probability <= alpha, and one
that is worse than the margin is advanced with probability <= alpha, however often the step
is evaluated. "Not credibly worse" is deliberately read as positive evidence (non-inferiority)
and not as "no evidence of harm yet": after 200 tasks the bound is still ~0.09 wide, so the
absence of evidence would let a canary 5 points worse through every step (docs/statistics.md).

Load failures: a canary that fails to load on every agent it was sent to aborts at once. When
it fails on some of them, each failed agent's share of the tasks counts as failed canary tasks:
the counts become (ceil(tasks * agents / loaded), successes), i.e. the canary is judged by the
success rate the fleet would see if the failed agents could not run it at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from .evidence import Counts
from .sequential import one_sided_halfwidth, rate_interval, smoothed_variance

Action = Literal["Continue", "Advance", "Abort"]

# The mixture is tightest where the deviation it must detect is about its scale; the deviation
# at stake is the margin (an equal canary sits max_regression above the line, a bad one a few
# points below it). The floor keeps a zero margin from asking for a degenerate mixture.
_MIN_MIXING_SD = 0.01


@dataclass(frozen=True)
class CanaryVerdict:
    action: Action
    stable_interval: tuple[float, float]  # always-valid 1 - alpha, stable's success rate
    canary_interval: tuple[float, float]  # the same for the canary (load failures counted)
    reason: str
    difference: float = 0.0  # canary rate - stable rate (load failures counted)
    # Always-valid lower and upper bounds of the difference, each one-sided at 1 - alpha: the
    # advance rule reads the lower one, the abort rule the upper one.
    difference_bounds: tuple[float, float] = (-1.0, 1.0)
    canary_counts: Counts = field(default_factory=Counts)  # as judged (load failures counted)


def counted_with_load_failures(canary: Counts, load_failures: int, agents: int) -> Counts:
    """The canary's counts with each agent that failed to load it charged its share of the
    tasks as failures (rounded up)."""
    if load_failures <= 0:
        return canary
    loaded = agents - load_failures
    tasks = math.ceil(canary.tasks * agents / loaded)
    return Counts(tasks, canary.successes)


def _interval_text(interval: tuple[float, float]) -> str:
    return f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def analyze_canary(
    stable: Counts,
    canary: Counts,
    *,
    min_tasks: int = 200,
    max_regression: float = 0.02,
    alpha: float = 0.05,
    canary_load_failures: int = 0,
    canary_agents: int = 0,
) -> CanaryVerdict:
    if min_tasks < 0:
        raise ValueError(f"min_tasks must be >= 0, got {min_tasks}")
    if not 0.0 <= max_regression < 1.0:
        raise ValueError(f"max_regression must be in [0, 1), got {max_regression}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if canary_load_failures < 0 or canary_agents < 0:
        raise ValueError("canary_load_failures and canary_agents must be >= 0")
    if canary_load_failures > 0 and canary_agents == 0:
        raise ValueError("canary_load_failures needs canary_agents (the agents sent the canary)")

    stable_interval = rate_interval(stable, alpha=alpha)
    if canary_agents > 0 and canary_load_failures >= canary_agents:
        return CanaryVerdict(
            "Abort",
            stable_interval,
            (0.0, 0.0),
            f"canary failed to load on all {canary_agents} agents it was sent to",
            difference=-stable.rate,
            difference_bounds=(-1.0, 0.0),
            canary_counts=canary,
        )
    judged = counted_with_load_failures(canary, canary_load_failures, canary_agents)
    canary_interval = rate_interval(judged, alpha=alpha)
    load_text = (
        f"; failed to load on {canary_load_failures} of {canary_agents} agents, their share"
        f" of tasks counted as failures"
        if canary_load_failures
        else ""
    )
    margin = max_regression
    if stable.tasks == 0 or judged.tasks == 0:
        return CanaryVerdict(
            "Continue",
            stable_interval,
            canary_interval,
            f"waiting for tasks on both revisions (stable {stable.tasks},"
            f" canary {canary.tasks}){load_text}",
            canary_counts=judged,
        )
    difference = judged.rate - stable.rate
    variance = smoothed_variance(judged) + smoothed_variance(stable)
    half = one_sided_halfwidth(variance, alpha=alpha, mixing_sd=max(margin, _MIN_MIXING_SD))
    lower, upper = difference - half, difference + half
    summary = (
        f"canary {judged.rate:.3f} {_interval_text(canary_interval)} vs stable"
        f" {stable.rate:.3f} {_interval_text(stable_interval)}, difference {difference:+.3f}"
        f" in [{lower:+.3f}, {upper:+.3f}] always-valid (n={canary.tasks}/{stable.tasks})"
        f"{load_text}"
    )

    def verdict(action: Action, reason: str) -> CanaryVerdict:
        return CanaryVerdict(
            action,
            stable_interval,
            canary_interval,
            reason,
            difference=difference,
            difference_bounds=(lower, upper),
            canary_counts=judged,
        )

    if upper < -margin:
        return verdict(
            "Abort", f"worse than stable by more than maxRegression {margin:g}: {summary}"
        )
    if lower > -margin:
        if canary.tasks >= min_tasks:
            return verdict("Advance", f"not worse than stable by more than {margin:g}: {summary}")
        return verdict("Continue", f"waiting for minTasks={min_tasks}: {summary}")
    return verdict("Continue", f"not decided yet (margin {margin:g}): {summary}")


__all__ = ["Action", "CanaryVerdict", "analyze_canary", "counted_with_load_failures"]
