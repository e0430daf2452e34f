"""The verdict of an A/B experiment between scripts, from each arm's outcome counts.

Safe to call after every report: every test here is always-valid (`sequential`), so looking
often does not inflate the false-positive rate. The rules, in order (docs/statistics.md):

1. Sample ratio mismatch (Fixed allocation only): a broken split stops any promotion.
2. Every pair of arms is compared by a normal-mixture SPRT on the difference of their rates,
   at alpha / m for m = k (k - 1) / 2 pairs (Bonferroni), so the chance of declaring ANY
   winner among equal arms stays <= alpha. The winner is the arm that beats every other one;
   its p-value is the largest of its (adjusted) pairwise p-values.
3. A winner is declared only once every arm has `min_tasks_per_arm` tasks; when an arm reaches
   `max_tasks_per_arm` without one, the experiment is Inconclusive.

unit Task: tasks are the independent units; an arm's variance is the binomial one.
unit Agent: agents are randomized, so tasks of one agent share its skill and are NOT
independent. An arm's rate is the ratio estimate sum(successes) / sum(tasks) over its agents,
its variance the cluster-robust (sandwich) one over agents with the G / (G - 1) correction,
never below the binomial one, and the boundary is Student's t with Welch-Satterthwaite degrees
of freedom from the agent counts: with 10 agents per arm the skill spread between agents is
estimated from 10 numbers, and treating that estimate as exact would make the test too eager.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .evidence import Counts
from .sequential import (
    DEFAULT_MIXING_SD,
    mixture_halfwidth,
    mixture_p_value,
    rate_interval,
    smoothed_variance,
)
from .srm import SRM_THRESHOLD, normalized, sample_ratio_check, sequential_srm_p_value

Unit = Literal["Task", "Agent"]
Allocation = Literal["Fixed", "Thompson"]
Outcome = Literal["Running", "Concluded", "Inconclusive"]
SrmTest = Literal["ChiSquare", "Sequential"]

MIN_ARMS = 2
MAX_ARMS = 5


@dataclass(frozen=True)
class ArmEvidence:
    counts: Counts  # the arm's total
    per_agent: tuple[Counts, ...] = ()  # for unit Agent: one entry per agent in the arm
    weight: float = 1.0  # the declared weight (normalized over the arms here)
    name: str = ""  # for the reason; "arm <index>" when empty


@dataclass(frozen=True)
class ExperimentVerdict:
    outcome: Outcome
    winner: int | None  # index into arms
    # Always-valid p-value of the test the winner rests on (for a running experiment: of the
    # current leader); 1.0 when nothing can be tested yet.
    p_value: float
    intervals: tuple[tuple[float, float], ...]  # per arm, always-valid 1 - alpha
    sample_ratio_mismatch: bool
    srm_p_value: float | None
    reason: str
    # Per arm: always-valid p-value of "this arm beats every other" (1.0 for an arm that is
    # not ahead of all others).
    arm_p_values: tuple[float, ...] = ()


@dataclass(frozen=True)
class _Estimate:
    rate: float
    variance: float | None  # None: no test possible (no task, or < 2 agents for unit Agent)
    clusters: int  # agents with tasks (unit Agent); 0 for unit Task
    interval: tuple[float, float]


def _task_estimate(counts: Counts, alpha: float) -> _Estimate:
    if counts.tasks == 0:
        return _Estimate(0.0, None, 0, (0.0, 1.0))
    return _Estimate(counts.rate, smoothed_variance(counts), 0, rate_interval(counts, alpha=alpha))


def _agent_estimate(per_agent: Sequence[Counts], alpha: float) -> _Estimate:
    active = [c for c in per_agent if c.tasks > 0]
    total = Counts.total(active)
    if total.tasks == 0:
        return _Estimate(0.0, None, 0, (0.0, 1.0))
    rate = total.rate
    clusters = len(active)
    if clusters < 2:
        # One agent says nothing about how agents differ: no agent-level interval or test.
        return _Estimate(rate, None, clusters, (0.0, 1.0))
    residuals = sum((c.successes - rate * c.tasks) ** 2 for c in active)
    robust = clusters / (clusters - 1) * residuals / (total.tasks * total.tasks)
    # Agents differing in skill only add variance; the binomial floor keeps a lucky run of
    # near-identical agents from claiming more precision than independent tasks would have.
    variance = max(robust, smoothed_variance(total))
    half = mixture_halfwidth(variance, alpha=alpha, mixing_sd=DEFAULT_MIXING_SD, df=clusters - 1)
    return _Estimate(rate, variance, clusters, (max(0.0, rate - half), min(1.0, rate + half)))


def _pair_p_value(a: _Estimate, b: _Estimate, unit: Unit) -> float:
    if a.variance is None or b.variance is None:
        return 1.0
    variance = a.variance + b.variance
    df: float | None = None
    if unit == "Agent":
        # Welch-Satterthwaite: the variance sum is estimated from (G_a - 1) + (G_b - 1)
        # agent-level degrees of freedom at most, fewer when one arm dominates it.
        df = (
            variance
            * variance
            / (a.variance**2 / (a.clusters - 1) + b.variance**2 / (b.clusters - 1))
        )
    return mixture_p_value(a.rate - b.rate, variance, mixing_sd=DEFAULT_MIXING_SD, df=df)


def _fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def _validate(
    arms: Sequence[ArmEvidence],
    alpha: float,
    min_tasks_per_arm: int,
    max_tasks_per_arm: int,
    unit: str,
    allocation: str,
) -> None:
    if not MIN_ARMS <= len(arms) <= MAX_ARMS:
        raise ValueError(f"an experiment has {MIN_ARMS}..{MAX_ARMS} arms, got {len(arms)}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if min_tasks_per_arm < 0:
        raise ValueError(f"min_tasks_per_arm must be >= 0, got {min_tasks_per_arm}")
    if max_tasks_per_arm < max(1, min_tasks_per_arm):
        raise ValueError(
            f"max_tasks_per_arm ({max_tasks_per_arm}) must be >= 1 and >= min_tasks_per_arm"
            f" ({min_tasks_per_arm})"
        )
    if unit not in ("Task", "Agent"):
        raise ValueError(f"unit must be Task or Agent, got {unit!r}")
    if allocation not in ("Fixed", "Thompson"):
        raise ValueError(f"allocation must be Fixed or Thompson, got {allocation!r}")
    normalized([arm.weight for arm in arms])
    if unit == "Agent":
        for index, arm in enumerate(arms):
            if Counts.total(arm.per_agent) != arm.counts:
                raise ValueError(
                    f"arm {index}: unit Agent needs per_agent counts summing to the arm's"
                    f" counts ({Counts.total(arm.per_agent)} != {arm.counts})"
                )


def analyze_experiment(
    arms: Sequence[ArmEvidence],
    *,
    alpha: float = 0.05,
    min_tasks_per_arm: int = 100,
    max_tasks_per_arm: int = 10_000,
    unit: Unit = "Task",
    allocation: Allocation = "Fixed",
    srm_test: SrmTest = "ChiSquare",
) -> ExperimentVerdict:
    """`srm_test`: ChiSquare is the check as specified (Pearson, p < 0.001 at this look);
    Sequential is its always-valid counterpart, whose false alarms stay <= 0.001 however often
    the experiment is evaluated (srm.py)."""
    _validate(arms, alpha, min_tasks_per_arm, max_tasks_per_arm, unit, allocation)
    if srm_test not in ("ChiSquare", "Sequential"):
        raise ValueError(f"srm_test must be ChiSquare or Sequential, got {srm_test!r}")
    k = len(arms)
    names = [arm.name or f"arm {i}" for i, arm in enumerate(arms)]
    if unit == "Agent":
        estimates = [_agent_estimate(arm.per_agent, alpha) for arm in arms]
    else:
        estimates = [_task_estimate(arm.counts, alpha) for arm in arms]
    intervals = tuple(e.interval for e in estimates)
    tasks = [arm.counts.tasks for arm in arms]

    def describe(i: int) -> str:
        low, high = intervals[i]
        return f"{names[i]} {estimates[i].rate:.3f} [{low:.3f}, {high:.3f}]"

    srm_p: float | None = None
    mismatch = False
    srm_text = ""
    if allocation == "Fixed":
        # unit Agent randomizes agents, so agents are the units whose split is checked; tasks
        # per arm then depend on how busy each agent is, which the split does not control.
        units = [len(arm.per_agent) for arm in arms] if unit == "Agent" else tasks
        weights = [arm.weight for arm in arms]
        if srm_test == "Sequential":
            srm_p = sequential_srm_p_value(units, weights)
            test_name = "always-valid"
        else:
            check = sample_ratio_check(units, weights, threshold=SRM_THRESHOLD)
            srm_p = None if check is None else check.p_value
            test_name = "chi-square"
        if srm_p is not None:
            mismatch = srm_p < SRM_THRESHOLD
            if mismatch:
                shares = normalized([arm.weight for arm in arms])
                srm_text = (
                    f"sample ratio mismatch: {'agents' if unit == 'Agent' else 'tasks'} per arm"
                    f" {'/'.join(str(u) for u in units)} vs weights"
                    f" {'/'.join(f'{w:.2f}' for w in shares)} ({test_name} p={_fmt_p(srm_p)}"
                    f" < {SRM_THRESHOLD}): the split is broken, no winner is declared"
                )

    m = k * (k - 1) // 2
    adjusted = [[1.0] * k for _ in range(k)]
    for i in range(k):
        for j in range(i + 1, k):
            p = min(1.0, m * _pair_p_value(estimates[i], estimates[j], unit))
            adjusted[i][j] = adjusted[j][i] = p
    arm_p = tuple(
        max(
            adjusted[i][j] if estimates[i].rate > estimates[j].rate else 1.0
            for j in range(k)
            if j != i
        )
        for i in range(k)
    )
    leader = max(range(k), key=lambda i: (estimates[i].rate, -i))
    others = [j for j in range(k) if j != leader]
    n_text = "n=" + "/".join(str(tasks[i]) for i in (leader, *others))
    p_value = arm_p[leader]
    horizon = max(tasks) >= max_tasks_per_arm

    def verdict(outcome: Outcome, winner: int | None, reason: str) -> ExperimentVerdict:
        return ExperimentVerdict(
            outcome, winner, p_value, intervals, mismatch, srm_p, reason, arm_p
        )

    if min(tasks) == 0:
        p_value = 1.0
        idle = ", ".join(names[i] for i in range(k) if tasks[i] == 0)
        return verdict("Running", None, f"waiting for tasks on every arm (none yet: {idle})")
    comparison = (
        f"{describe(leader)} vs {' and '.join(describe(j) for j in others)}"
        f" (p={_fmt_p(p_value)} always-valid, {n_text})"
    )
    if mismatch:
        if horizon:
            return verdict("Inconclusive", None, f"{srm_text}; maxTasksPerArm reached")
        return verdict("Running", None, srm_text)
    few_agents = [names[i] for i, e in enumerate(estimates) if unit == "Agent" and e.clusters < 2]
    if few_agents:
        gate = (
            f"unit Agent needs >= 2 agents with tasks in every arm to estimate how agents"
            f" differ ({', '.join(few_agents)} has fewer)"
        )
    elif min(tasks) < min_tasks_per_arm:
        gate = f"waiting for minTasksPerArm={min_tasks_per_arm}"
    elif p_value <= alpha:
        return verdict(
            "Concluded",
            leader,
            f"{describe(leader)} beats {' and '.join(describe(j) for j in others)}"
            f" (p={_fmt_p(p_value)} always-valid, {n_text})",
        )
    else:
        gate = f"no winner yet (needs p <= {alpha:g})"
    if horizon:
        return verdict(
            "Inconclusive",
            None,
            f"maxTasksPerArm={max_tasks_per_arm} reached without a winner: {comparison}",
        )
    return verdict("Running", None, f"{gate}: {comparison}")


__all__ = [
    "MAX_ARMS",
    "MIN_ARMS",
    "Allocation",
    "ArmEvidence",
    "ExperimentVerdict",
    "Outcome",
    "SrmTest",
    "Unit",
    "analyze_experiment",
]
