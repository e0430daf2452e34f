"""Error rates and cost of the A/B experiment analysis on simulated outcome streams (seeded).

Every look calls the real `analyze_experiment` on the counts so far, exactly as the
controller would after a report; an experiment stops at its first Concluded or Inconclusive
verdict. A batch is 10 tasks per arm on average: each task goes to an arm at random with the
arm's weight, and the analysis runs after every batch, up to 10,000 tasks per arm.

- A/A, unit Task: 0.80 vs 0.80. False-positive rate (any winner) <= alpha = 0.05, beside a naive
  z-test at 1.96 applied at the same looks (what repeated looking does to a fixed-sample test).
- A/A, unit Agent: 20 agents with skills from Beta(16, 4), randomized 10/10 to the arms, each task
  served by a uniformly random agent. False-positive rate <= 0.05, beside the unit-Task analysis
  of the same clustered streams (what ignoring the clustering does).
- Power: 0.80 vs 0.85, unit Task: >= 90 % conclude for the better arm within 10,000 tasks per arm;
  median tasks per arm at decision beside the fixed-horizon size for 90 % power (goal <= 2.5x).
- Thompson vs Fixed on 0.70 / 0.80 / 0.85: the fraction of tasks spent on the worse arms until the
  decision. Both see the same per-arm outcome streams (the k-th task of an arm has the same
  outcome under either allocation); Thompson weights are recomputed every 300 tasks, with the
  default floor 0.05 and with 0.10.

Run: .venv/bin/python tests/benchmarks/bench_experiments.py [--quick] [--jobs 2] [--thompson-aa N]
(exit status 1 when a target is missed).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "operator"))

from agent_registry.decisions.allocation import thompson_weights
from agent_registry.decisions.evidence import Counts
from agent_registry.decisions.experiment_analysis import (
    ArmEvidence,
    ExperimentVerdict,
    analyze_experiment,
)
from agent_registry.decisions.srm import SRM_THRESHOLD, sequential_srm_p_value

ALPHA = 0.05
MIN_TASKS = 100
MAX_TASKS = 10_000
BATCH_PER_ARM = 10
AGENTS = 20
SKILL = (16.0, 4.0)
THOMPSON_EVERY = 300


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % interval of a rate from n independent runs (fixed n: the classical one is right)."""
    if n == 0:
        return (0.0, 1.0)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def naive_z_rejects(a: Counts, b: Counts) -> bool:
    """The fixed-sample two-proportion z-test (pooled variance) at 1.96."""
    pooled = (a.successes + b.successes) / (a.tasks + b.tasks)
    variance = pooled * (1 - pooled) * (1 / a.tasks + 1 / b.tasks)
    return variance > 0 and abs(a.rate - b.rate) / math.sqrt(variance) > 1.96


@dataclass(frozen=True)
class TwoArmRun:
    winner: int | None
    outcome: str
    tasks: tuple[int, int]
    naive_false_positive: bool  # the naive z-test rejected at some look
    srm_flagged: bool  # SampleRatioMismatch (chi-square, the default) at some look
    sequential_srm_flagged: bool  # the always-valid SRM p-value < 0.001 at some look


def two_arm_task_run(seed: int, rates: tuple[float, float], with_naive: bool) -> TwoArmRun:
    rng = random.Random(seed)
    rnd = rng.random
    tasks, wins = [0, 0], [0, 0]
    naive = srm = seq_srm = False
    while True:
        for _ in range(2 * BATCH_PER_ARM):
            arm = 0 if rnd() < 0.5 else 1
            tasks[arm] += 1
            wins[arm] += rnd() < rates[arm]
        a, b = Counts(tasks[0], wins[0]), Counts(tasks[1], wins[1])
        verdict = analyze_experiment(
            [ArmEvidence(a, weight=0.5), ArmEvidence(b, weight=0.5)],
            alpha=ALPHA,
            min_tasks_per_arm=MIN_TASKS,
            max_tasks_per_arm=MAX_TASKS,
        )
        srm = srm or verdict.sample_ratio_mismatch
        seq_srm = seq_srm or sequential_srm_p_value(tasks, (0.5, 0.5)) < SRM_THRESHOLD
        if with_naive and not naive and min(tasks) >= MIN_TASKS:
            naive = naive_z_rejects(a, b)
        if verdict.outcome != "Running":
            # The naive test keeps looking to the same horizon the real one would have had.
            while with_naive and not naive and max(tasks) < MAX_TASKS:
                for _ in range(2 * BATCH_PER_ARM):
                    arm = 0 if rnd() < 0.5 else 1
                    tasks[arm] += 1
                    wins[arm] += rnd() < rates[arm]
                naive = naive_z_rejects(Counts(tasks[0], wins[0]), Counts(tasks[1], wins[1]))
            n = (a.tasks, b.tasks)
            return TwoArmRun(verdict.winner, verdict.outcome, n, naive, srm, seq_srm)


@dataclass(frozen=True)
class AgentRun:
    winner: int | None  # the unit-Agent analysis
    task_unit_winner: int | None  # the unit-Task analysis of the same stream
    tasks: tuple[int, int]


def _arms(per_agent: Sequence[Sequence[Counts]]) -> list[ArmEvidence]:
    return [ArmEvidence(Counts.total(agents), tuple(agents), 0.5) for agents in per_agent]


def two_arm_agent_run(seed: int, with_task_unit: bool) -> AgentRun:
    rng = random.Random(seed)
    rnd = rng.random
    skills = [rng.betavariate(*SKILL) for _ in range(AGENTS)]
    order = list(range(AGENTS))
    rng.shuffle(order)
    members = [sorted(order[: AGENTS // 2]), sorted(order[AGENTS // 2 :])]
    tasks, wins = [0] * AGENTS, [0] * AGENTS
    agent_verdict: ExperimentVerdict | None = None
    task_verdict: ExperimentVerdict | None = None
    decided_at = (0, 0)
    while agent_verdict is None or (with_task_unit and task_verdict is None):
        for _ in range(2 * BATCH_PER_ARM):
            agent = int(rnd() * AGENTS)
            tasks[agent] += 1
            wins[agent] += rnd() < skills[agent]
        arms = _arms([[Counts(tasks[g], wins[g]) for g in group] for group in members])
        for unit in ("Agent", "Task"):
            if unit == "Agent" and agent_verdict is not None:
                continue
            if unit == "Task" and (task_verdict is not None or not with_task_unit):
                continue
            verdict = analyze_experiment(
                arms,
                alpha=ALPHA,
                min_tasks_per_arm=MIN_TASKS,
                max_tasks_per_arm=MAX_TASKS,
                unit="Agent" if unit == "Agent" else "Task",
            )
            if verdict.outcome == "Running":
                continue
            if unit == "Agent":
                agent_verdict = verdict
                decided_at = (arms[0].counts.tasks, arms[1].counts.tasks)
            else:
                task_verdict = verdict
    return AgentRun(agent_verdict.winner, task_verdict.winner if task_verdict else None, decided_at)


@dataclass(frozen=True)
class MultiArmRun:
    winner: int | None
    outcome: str
    tasks: tuple[int, ...]


def multi_arm_run(
    seed: int, rates: Sequence[float], allocation: str, floor: float = 0.05
) -> MultiArmRun:
    k = len(rates)
    # Per-arm outcome streams: the k-th task of an arm succeeds or not whatever the allocation.
    streams = [random.Random(seed * 16 + arm).random for arm in range(k)]
    chooser = random.Random(seed * 16 + 15)
    weights: tuple[float, ...] = tuple(1 / k for _ in range(k))
    tasks, wins = [0] * k, [0] * k
    since_update = 0
    while True:
        for _ in range(k * BATCH_PER_ARM):
            u, arm, acc = chooser.random(), 0, weights[0]
            while u >= acc and arm < k - 1:
                arm += 1
                acc += weights[arm]
            tasks[arm] += 1
            wins[arm] += streams[arm]() < rates[arm]
        counts = [Counts(n, s) for n, s in zip(tasks, wins, strict=True)]
        verdict = analyze_experiment(
            [ArmEvidence(c, weight=1 / k) for c in counts],
            alpha=ALPHA,
            min_tasks_per_arm=MIN_TASKS,
            max_tasks_per_arm=MAX_TASKS,
            allocation="Thompson" if allocation == "Thompson" else "Fixed",
        )
        if verdict.outcome != "Running":
            return MultiArmRun(verdict.winner, verdict.outcome, tuple(tasks))
        since_update += k * BATCH_PER_ARM
        if allocation == "Thompson" and since_update >= THOMPSON_EVERY:
            since_update = 0
            weights = thompson_weights(counts, rng=chooser, floor=floor)


def broken_split_run(seed: int, share: float, srm_test: str) -> tuple[int | None, bool]:
    """Arms declared 50/50, but arm 0 gets `share` of the tasks (equal rates, 0.80): the
    tasks until SampleRatioMismatch is raised (None: never, up to the horizon), and whether a
    winner was declared first."""
    rng = random.Random(seed)
    rnd = rng.random
    tasks, wins = [0, 0], [0, 0]
    while max(tasks) < MAX_TASKS:
        for _ in range(2 * BATCH_PER_ARM):
            arm = 0 if rnd() < share else 1
            tasks[arm] += 1
            wins[arm] += rnd() < 0.8
        verdict = analyze_experiment(
            [ArmEvidence(Counts(n, s), weight=0.5) for n, s in zip(tasks, wins, strict=True)],
            alpha=ALPHA,
            min_tasks_per_arm=MIN_TASKS,
            max_tasks_per_arm=MAX_TASKS,
            srm_test="Sequential" if srm_test == "Sequential" else "ChiSquare",
        )
        if verdict.sample_ratio_mismatch:
            return sum(tasks), False
        if verdict.winner is not None:
            return None, True
    return None, False


def _call(job: tuple[Callable[..., object], tuple[object, ...]]) -> object:
    function, args = job
    return function(*args)


def run_all(
    jobs: int, function: Callable[..., object], argument_lists: Iterable[tuple[object, ...]]
) -> list[object]:
    work = [(function, args) for args in argument_lists]
    if jobs <= 1:
        return [_call(job) for job in work]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(_call, work, chunksize=max(1, len(work) // (jobs * 8))))


def fixed_horizon_size(p1: float, p2: float, alpha: float, power: float) -> int:
    """Tasks per arm of the two-sided two-proportion z-test (pooled under H0) with `power`."""
    from statistics import NormalDist

    z_a = NormalDist().inv_cdf(1 - alpha / 2)
    z_b = NormalDist().inv_cdf(power)
    p_bar = (p1 + p2) / 2
    numerator = z_a * math.sqrt(2 * p_bar * (1 - p_bar)) + z_b * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2)
    )
    return math.ceil((numerator / (p2 - p1)) ** 2)


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def interval_text(hits: int, n: int) -> str:
    low, high = wilson(hits, n)
    return f"{pct(hits / n)} [{pct(low)}, {pct(high)}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the experiments")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument(
        "--thompson-aa",
        type=int,
        default=0,
        metavar="N",
        help="also run N A/A experiments (0.80 x 3) under Thompson allocation (about 1 s each)",
    )
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    n_aa, n_agent, n_agent_task = 2000 // scale, 2000 // scale, 100 // scale
    n_power, n_thompson, n_broken = 1000 // scale, 100 // scale, 200 // scale
    seed = args.seed
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python"
        f" {platform.python_version()}, {args.jobs} worker process(es), seed {seed}"
    )
    ok = True
    start = time.perf_counter()

    aa = [
        r
        for r in run_all(
            args.jobs, two_arm_task_run, ((seed + i, (0.8, 0.8), True) for i in range(n_aa))
        )
        if isinstance(r, TwoArmRun)
    ]
    fp = sum(r.winner is not None for r in aa)
    naive = sum(r.naive_false_positive for r in aa)
    srm = sum(r.srm_flagged for r in aa)
    seq_srm = sum(r.sequential_srm_flagged for r in aa)
    ok = ok and fp / n_aa <= ALPHA
    print(
        f"A/A unit Task, 0.80 vs 0.80, {n_aa} experiments: false-positive rate"
        f" {interval_text(fp, n_aa)} (target <= 5 %); naive z-test at every look"
        f" {interval_text(naive, n_aa)}; SampleRatioMismatch raised at some look: chi-square"
        f" {interval_text(srm, n_aa)}, always-valid {interval_text(seq_srm, n_aa)}"
        f"  [{time.perf_counter() - start:.0f} s]"
    )

    agent_seeds = [(seed + 10**6 + i, i < n_agent_task) for i in range(n_agent)]
    agent = [
        r for r in run_all(args.jobs, two_arm_agent_run, agent_seeds) if isinstance(r, AgentRun)
    ]
    fp = sum(r.winner is not None for r in agent)
    fp_task = sum(r.task_unit_winner is not None for r in agent[:n_agent_task])
    ok = ok and fp / n_agent <= ALPHA
    print(
        f"A/A unit Agent, {AGENTS} agents with skills ~ Beta(16, 4), {n_agent} experiments:"
        f" false-positive rate {interval_text(fp, n_agent)} (target <= 5 %); the unit-Task"
        f" analysis of the same streams ({n_agent_task}) {interval_text(fp_task, n_agent_task)}"
        f"  [{time.perf_counter() - start:.0f} s]"
    )

    power = [
        r
        for r in run_all(
            args.jobs,
            two_arm_task_run,
            ((seed + 2 * 10**6 + i, (0.8, 0.85), False) for i in range(n_power)),
        )
        if isinstance(r, TwoArmRun)
    ]
    right = [r for r in power if r.winner == 1]
    wrong = sum(r.winner == 0 for r in power)
    per_arm = sorted(sum(r.tasks) / 2 for r in right)
    median = statistics.median(per_arm) if per_arm else math.inf
    p90 = per_arm[int(0.9 * (len(per_arm) - 1))] if per_arm else math.inf
    fixed = fixed_horizon_size(0.80, 0.85, ALPHA, 0.90)
    ok = ok and len(right) / n_power >= 0.90 and median <= 2.5 * fixed
    print(
        f"power, 0.80 vs 0.85, {n_power} experiments: concluded for the better arm"
        f" {interval_text(len(right), n_power)} (target >= 90 %), for the worse {wrong};"
        f" tasks per arm at decision median {median:.0f}, 90th percentile {p90:.0f};"
        f" fixed horizon for 90 % power {fixed} per arm: median / fixed = {median / fixed:.2f}"
        f" (goal <= 2.5)  [{time.perf_counter() - start:.0f} s]"
    )

    for srm_test in ("ChiSquare", "Sequential"):
        broken = [
            r
            for r in run_all(
                args.jobs,
                broken_split_run,
                ((seed + 4 * 10**6 + i, 0.55, srm_test) for i in range(n_broken)),
            )
            if isinstance(r, tuple)
        ]
        flagged = sorted(r[0] for r in broken if r[0] is not None)
        print(
            f"broken split (55/45 declared 50/50), SRM test {srm_test}, {n_broken} experiments:"
            f" flagged {len(flagged)}, median tasks until flagged"
            f" {statistics.median(flagged) if flagged else math.inf:.0f}, winner declared first"
            f" {sum(r[1] for r in broken)}  [{time.perf_counter() - start:.0f} s]"
        )

    rates = (0.70, 0.80, 0.85)
    best = rates.index(max(rates))
    # Thompson at its default floor, and at a larger one that buys the test evidence on the
    # runner-up (the default starves it, and the leading arm reaches the horizon first).
    for allocation, floor in (("Fixed", 0.0), ("Thompson", 0.05), ("Thompson", 0.10)):
        runs = [
            r
            for r in run_all(
                args.jobs,
                multi_arm_run,
                ((seed + 3 * 10**6 + i, rates, allocation, floor) for i in range(n_thompson)),
            )
            if isinstance(r, MultiArmRun)
        ]
        label = allocation if allocation == "Fixed" else f"{allocation} (floor {floor:.2f})"
        total = sum(sum(r.tasks) for r in runs)
        worse = sum(sum(r.tasks) - r.tasks[best] for r in runs)
        lost = sum(
            sum((max(rates) - p) * n for p, n in zip(rates, r.tasks, strict=True)) for r in runs
        )
        per_run = statistics.mean((sum(r.tasks) - r.tasks[best]) / sum(r.tasks) for r in runs)
        correct = sum(r.winner == best for r in runs)
        wrong = sum(r.winner is not None and r.winner != best for r in runs)
        inconclusive = sum(r.outcome == "Inconclusive" for r in runs)
        print(
            f"{label:22s} on 0.70/0.80/0.85, {n_thompson} experiments: tasks on worse arms"
            f" {pct(worse / total)} (mean per experiment {pct(per_run)}); median tasks to decision"
            f" {statistics.median(sum(r.tasks) for r in runs):.0f}; successes lost vs always-best"
            f" {lost / len(runs):.0f} per experiment; winner 0.85 {correct}, other winner {wrong},"
            f" inconclusive {inconclusive}  [{time.perf_counter() - start:.0f} s]"
        )
    if args.thompson_aa:
        n = args.thompson_aa
        runs = [
            r
            for r in run_all(
                args.jobs,
                multi_arm_run,
                ((seed + 5 * 10**6 + i, (0.8, 0.8, 0.8), "Thompson") for i in range(n)),
            )
            if isinstance(r, MultiArmRun)
        ]
        fp = sum(r.winner is not None for r in runs)
        print(
            f"A/A under Thompson, 0.80 x 3, {n} experiments: false-positive rate"
            f" {interval_text(fp, n)}  [{time.perf_counter() - start:.0f} s]"
        )
    print(f"total {time.perf_counter() - start:.0f} s; targets {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
