"""Cost and error rates of the canary analysis on simulated rollouts (seeded).

A rollout is: setWeight 10, pause, setWeight 50, pause, then 100 % (promoted). At a step, each
fleet task runs the canary with probability weight / 100, else stable; after every batch of 50
fleet tasks the real `analyze_canary` is called on the step's counts (stable and canary tasks of
the same window; they restart at every step): Abort ends the rollout, Advance moves to the next
step, Continue keeps pausing. A step that has not decided after 200,000 fleet tasks is counted
as "still pausing".

- A bad canary 0.05 worse (stable 0.85, canary 0.80): the fraction of fleet tasks that ran it
  before the abort, beside `Immediate` (100 % of the fleet on it over the same tasks).
- A canary equal to stable: false abort rate <= alpha = 0.05, and the tasks it takes to promote.
- A bad canary 0.15 worse (0.85 vs 0.70): canary tasks until the abort.
- A canary exactly maxRegression (0.02) worse, the boundary case of both rules: how often each
  wrong call happens (advance rate <= alpha; abort is right or wrong by a hair there).

Run: .venv/bin/python tests/benchmarks/bench_canary.py [--quick] (exit status 1 when a target
is missed).
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "operator"))

from agent_registry.decisions.canary_analysis import analyze_canary
from agent_registry.decisions.evidence import Counts

ALPHA = 0.05
MIN_TASKS = 200
MAX_REGRESSION = 0.02
STEPS = (10, 50)
BATCH = 50
STEP_CAP = 200_000


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % interval of a rate from n independent runs."""
    if n == 0:
        return (0.0, 1.0)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Rollout:
    outcome: str  # "Aborted", "Promoted", "Pausing"
    step: int  # index of the step where it ended (len(STEPS) when promoted)
    canary_tasks: int  # over the whole rollout until it ended
    fleet_tasks: int
    canary_tasks_per_step: tuple[int, ...]
    fleet_tasks_per_step: tuple[int, ...]


def rollout(seed: int, stable_rate: float, canary_rate: float) -> Rollout:
    rng = random.Random(seed)
    rnd = rng.random
    canary_total = fleet_total = 0
    canary_steps: list[int] = []
    fleet_steps: list[int] = []
    for index, weight in enumerate(STEPS):
        share = weight / 100
        n_s = s_s = n_c = s_c = 0
        action = "Continue"
        while action == "Continue" and n_s + n_c < STEP_CAP:
            for _ in range(BATCH):
                if rnd() < share:
                    n_c += 1
                    s_c += rnd() < canary_rate
                else:
                    n_s += 1
                    s_s += rnd() < stable_rate
            action = analyze_canary(
                Counts(n_s, s_s),
                Counts(n_c, s_c),
                min_tasks=MIN_TASKS,
                max_regression=MAX_REGRESSION,
                alpha=ALPHA,
            ).action
        canary_total += n_c
        fleet_total += n_s + n_c
        canary_steps.append(n_c)
        fleet_steps.append(n_s + n_c)
        if action != "Advance":
            outcome = "Aborted" if action == "Abort" else "Pausing"
            return Rollout(
                outcome, index, canary_total, fleet_total, tuple(canary_steps), tuple(fleet_steps)
            )
    return Rollout(
        "Promoted",
        len(STEPS),
        canary_total,
        fleet_total,
        tuple(canary_steps),
        tuple(fleet_steps),
    )


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def interval_text(hits: int, n: int) -> str:
    low, high = wilson(hits, n)
    return f"{pct(hits / n)} [{pct(low)}, {pct(high)}]"


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))] if ordered else math.nan


def simulate(base: int, n: int, stable: float, canary: float) -> list[Rollout]:
    return [rollout(base + i, stable, canary) for i in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the rollouts")
    parser.add_argument("--seed", type=int, default=20261204)
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    n_bad, n_equal, n_very_bad, n_margin = (
        1000 // scale,
        1000 // scale,
        1000 // scale,
        300 // scale,
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python"
        f" {platform.python_version()}, seed {args.seed}; steps {STEPS} %, analysis every"
        f" {BATCH} fleet tasks, minTasks {MIN_TASKS}, maxRegression {MAX_REGRESSION}, alpha {ALPHA}"
    )
    ok = True
    start = time.perf_counter()

    bad = simulate(args.seed, n_bad, 0.85, 0.80)
    aborted = [r for r in bad if r.outcome == "Aborted"]
    canary = sum(r.canary_tasks for r in aborted)
    fleet = sum(r.fleet_tasks for r in aborted)
    at_first = sum(r.step == 0 for r in aborted)
    until_abort = [r.canary_tasks for r in aborted]
    ok = ok and len(aborted) == n_bad
    print(
        f"bad canary 0.80 vs stable 0.85, {n_bad} rollouts: aborted {len(aborted)}"
        f" ({at_first} at the 10 % step), promoted {sum(r.outcome == 'Promoted' for r in bad)};"
        f" fleet tasks on the bad canary before abort {pct(canary / fleet)} (median per rollout"
        f" {pct(statistics.median(r.canary_tasks / r.fleet_tasks for r in aborted))}) vs"
        f" Immediate 100 % over the same {fleet / len(aborted):.0f} fleet tasks per rollout;"
        f" canary tasks until abort median {statistics.median(until_abort):.0f},"
        f" 90th percentile {quantile([r.canary_tasks for r in aborted], 0.9):.0f};"
        f" successes lost {0.05 * canary / len(aborted):.0f} vs Immediate"
        f" {0.05 * fleet / len(aborted):.0f} per rollout  [{time.perf_counter() - start:.0f} s]"
    )

    equal = simulate(args.seed + 10**6, n_equal, 0.85, 0.85)
    false_aborts = sum(r.outcome == "Aborted" for r in equal)
    promoted = [r for r in equal if r.outcome == "Promoted"]
    ok = ok and false_aborts / n_equal <= ALPHA
    per_step = [
        statistics.median(r.canary_tasks_per_step[i] for r in promoted) for i in range(len(STEPS))
    ]
    fleet_per_step = [
        statistics.median(r.fleet_tasks_per_step[i] for r in promoted) for i in range(len(STEPS))
    ]
    steps_text = ", ".join(f"{w} %: {c:.0f}" for w, c in zip(STEPS, per_step, strict=True))
    print(
        f"canary equal to stable (0.85), {n_equal} rollouts: false abort rate"
        f" {interval_text(false_aborts, n_equal)} (target <= 5 %); promoted {len(promoted)},"
        f" still pausing {sum(r.outcome == 'Pausing' for r in equal)}; median canary tasks to"
        f" advance per step {steps_text}"
        f" (fleet tasks {', '.join(f'{f:.0f}' for f in fleet_per_step)}); fleet tasks to"
        f" promotion median {statistics.median(r.fleet_tasks for r in promoted):.0f},"
        f" 90th percentile {quantile([r.fleet_tasks for r in promoted], 0.9):.0f}"
        f"  [{time.perf_counter() - start:.0f} s]"
    )

    very_bad = simulate(args.seed + 2 * 10**6, n_very_bad, 0.85, 0.70)
    aborted = [r for r in very_bad if r.outcome == "Aborted"]
    ok = ok and len(aborted) == n_very_bad
    print(
        f"bad canary 0.70 vs stable 0.85, {n_very_bad} rollouts: aborted {len(aborted)}; canary"
        f" tasks until abort median {statistics.median(r.canary_tasks for r in aborted):.0f},"
        f" 90th percentile {quantile([r.canary_tasks for r in aborted], 0.9):.0f}, max"
        f" {max(r.canary_tasks for r in aborted)}; fleet tasks until abort median"
        f" {statistics.median(r.fleet_tasks for r in aborted):.0f}"
        f"  [{time.perf_counter() - start:.0f} s]"
    )

    margin = simulate(args.seed + 3 * 10**6, n_margin, 0.85, 0.83)
    first_advanced = sum(r.step > 0 or r.outcome == "Promoted" for r in margin)
    first_aborted = sum(r.step == 0 and r.outcome == "Aborted" for r in margin)
    ok = ok and first_advanced / n_margin <= ALPHA
    print(
        f"canary exactly maxRegression worse (0.83 vs 0.85), {n_margin} rollouts: advanced past"
        f" the 10 % step {interval_text(first_advanced, n_margin)} (target <= 5 %), aborted there"
        f" {first_aborted}, still pausing after {STEP_CAP} fleet tasks"
        f" {sum(r.step == 0 and r.outcome == 'Pausing' for r in margin)}; promoted"
        f" {sum(r.outcome == 'Promoted' for r in margin)}  [{time.perf_counter() - start:.0f} s]"
    )
    print(f"total {time.perf_counter() - start:.0f} s; targets {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
