"""The synthetic workload of `agentreg runtime --simulate RATE` (demo and benchmarks).

Contract: a task is {id, kind="simulated", difficulty in [0, 1]}; the behavior's on_task
returns {accept: bool, effort: number in [0, 1]}; the task succeeds iff accept and
effort + noise >= difficulty, noise uniform in [-NOISE, NOISE]; duration_ms = 5 + 50 * effort.
So more effort succeeds more often and is slower. A declined task (accept=false) fails fast.
An answer that is not such a table, or an on_task error, is a failed task of
FAILED_DURATION_MS. Each outcome is recorded with the sha256 of the script that decided it
(None when no script could be asked).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

NOISE = 0.05
BASE_DURATION_MS = 5.0
EFFORT_DURATION_MS = 50.0
FAILED_DURATION_MS = BASE_DURATION_MS


def make_task(sequence: int, rng: random.Random) -> dict[str, Any]:
    return {"id": f"sim-{sequence}", "kind": "simulated", "difficulty": rng.random()}


def judge(result: object, difficulty: float, noise: float) -> tuple[bool, float]:
    """(success, duration_ms) for a behavior's answer to a task of `difficulty`."""
    if not isinstance(result, dict):
        return False, FAILED_DURATION_MS
    accept = result.get("accept")
    effort = result.get("effort", 0.0)
    if not isinstance(accept, bool):
        return False, FAILED_DURATION_MS
    if isinstance(effort, bool) or not isinstance(effort, int | float) or not math.isfinite(effort):
        return False, FAILED_DURATION_MS
    effort = min(1.0, max(0.0, float(effort)))
    duration = BASE_DURATION_MS + EFFORT_DURATION_MS * effort
    return accept and effort + noise >= difficulty, duration


class Decision(Protocol):
    """What a decide call gives back: `BehaviorHost.run_task`'s TaskRun fits."""

    @property
    def sha256(self) -> str: ...

    @property
    def result(self) -> object: ...

    @property
    def error(self) -> BaseException | None: ...


Decide = Callable[[dict[str, Any]], Awaitable[Decision]]
Record = Callable[[bool, float, str | None], None]


async def simulate(
    decide: Decide,
    record: Record,
    rate: float,
    *,
    rng: random.Random | None = None,
    limit: int | None = None,
) -> int:
    """Feed tasks to `decide` at `rate` per second and `record` each outcome with the
    sha256 of the script that decided, until cancelled (or `limit` tasks). A decision with
    an error is a failed task; `decide` raising is one no script is credited with. Returns
    tasks run.

    Ticks are scheduled on a fixed grid, so the rate holds on average; after a stall longer
    than a second the grid restarts instead of bursting to catch up."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    rng = rng or random.Random()
    loop = asyncio.get_running_loop()
    period = 1.0 / rate
    next_at = loop.time()
    count = 0
    for sequence in itertools.count(1):
        if limit is not None and count >= limit:
            break
        task = make_task(sequence, rng)
        try:
            decision = await decide(task)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("simulated task %s not decided: %s", task["id"], exc)
            record(False, FAILED_DURATION_MS, None)
        else:
            if decision.error is not None:
                log.debug("simulated task %s failed: %s", task["id"], decision.error)
                record(False, FAILED_DURATION_MS, decision.sha256)
            else:
                success, duration = judge(
                    decision.result, task["difficulty"], rng.uniform(-NOISE, NOISE)
                )
                record(success, duration, decision.sha256)
        count += 1
        next_at += period
        now = loop.time()
        if now - next_at > 1.0:
            next_at = now
        await asyncio.sleep(max(0.0, next_at - now))
    return count
