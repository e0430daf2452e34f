"""Pure stats math: what a batch of task outcomes does to the counters, and the rates derived
from them. No I/O: the service turns a `BatchEffect` into one atomic UPDATE.

The database stores only integers and a sum (tasks, successes, timed tasks, total response
time); rates are derived on read, so concurrent writers never lose an update to rounding or
to a read-modify-write race.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

# An agent (or assignment) that has run no task yet is not failing: it keeps the seed's
# default success rate of 1.0. Underperformance is judged only with min_tasks >= 1 anyway.
EMPTY_SUCCESS_RATE = 1.0
EMPTY_AVG_RESPONSE_TIME_MS = 0.0


@runtime_checkable
class OutcomeLike(Protocol):
    """What record_tasks accepts per task (agent_registry.reports.TaskOutcome fits). Also
    read when present: `finished_at` (datetime | None) and `behavior_sha256` (str | None,
    the script that ran the task; see `attribute` for what an outcome without it counts for).
    A (success, duration_ms) tuple is an outcome without either."""

    @property
    def success(self) -> bool: ...

    @property
    def duration_ms(self) -> float | None: ...


Outcome = OutcomeLike | tuple[bool, float | None]

NO_SCRIPT = (
    "no script known for this outcome: it has no behavior_sha256, the report names no loaded "
    "script, and the agent has no assignment"
)


@dataclass(frozen=True, slots=True)
class BatchEffect:
    """The effect of one batch of outcomes, in the order they happened."""

    tasks: int
    successes: int
    timed_tasks: int
    total_response_time_ms: float
    # Failures after the batch's last success (all of them if it had no success).
    trailing_failures: int
    last_task_at: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None

    @property
    def failures(self) -> int:
        return self.tasks - self.successes

    @property
    def resets_failures(self) -> bool:
        """A success in the batch resets the streak of consecutive failures."""
        return self.successes > 0

    @property
    def keep_failures(self) -> int:
        """Multiplier for the previous streak: consecutive = previous * keep + trailing."""
        return 0 if self.resets_failures else 1


def consecutive_failures_after(previous: int, effect: BatchEffect) -> int:
    return previous * effect.keep_failures + effect.trailing_failures


def behavior_sha256(outcome: Outcome) -> str | None:
    return None if isinstance(outcome, tuple) else getattr(outcome, "behavior_sha256", None)


def _unpack(outcome: Outcome) -> tuple[bool, float | None, datetime | None]:
    if isinstance(outcome, tuple):
        success, duration = outcome
        return bool(success), duration, None
    finished = getattr(outcome, "finished_at", None)
    if finished is not None and finished.tzinfo is None:
        finished = finished.replace(tzinfo=UTC)  # naive: taken as UTC
    return bool(outcome.success), outcome.duration_ms, finished


def batch_effect(outcomes: Iterable[Outcome], now: datetime) -> BatchEffect:
    """Summarize a batch. Timestamps are each outcome's `finished_at` (capped at `now`, so a
    runtime with a clock ahead cannot push last_task_at into the future) or `now`."""
    tasks = successes = timed = trailing = 0
    total_ms = 0.0
    last_task: datetime | None = None
    last_success: datetime | None = None
    last_failure: datetime | None = None
    for outcome in outcomes:
        success, duration, finished = _unpack(outcome)
        at = now if finished is None or finished > now else finished
        tasks += 1
        if duration is not None:
            if duration < 0:
                raise ValueError(f"duration_ms must be >= 0, got {duration}")
            timed += 1
            total_ms += float(duration)
        if last_task is None or at > last_task:
            last_task = at
        if success:
            successes += 1
            trailing = 0
            if last_success is None or at > last_success:
                last_success = at
        else:
            trailing += 1
            if last_failure is None or at > last_failure:
                last_failure = at
    return BatchEffect(
        tasks=tasks,
        successes=successes,
        timed_tasks=timed,
        total_response_time_ms=total_ms,
        trailing_failures=trailing,
        last_task_at=last_task,
        last_success_at=last_success,
        last_failure_at=last_failure,
    )


@dataclass(slots=True)
class ScriptGroup:
    """The accepted outcomes of one script in a batch. `sha256` None: the agent's current
    script, whichever it is when the write holds the agent row's lock."""

    sha256: str | None
    tasks: int = 0
    successes: int = 0
    timed_tasks: int = 0
    total_response_time_ms: float = 0.0
    first_task_at: datetime | None = None
    last_task_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Attribution:
    """A batch split by script: what counts (`effect` on the agent's lifetime counters, in
    batch order; `groups` per script) and what is refused: (index, sha256, reason)."""

    effect: BatchEffect
    groups: tuple[ScriptGroup, ...]
    refused: tuple[tuple[int, str | None, str], ...]

    @property
    def recorded(self) -> int:
        return self.effect.tasks


@dataclass(frozen=True, slots=True)
class Needs:
    """What attributing a batch needs to know about the agent: whether these scripts were
    delivered to it, and (`current`) whether it has a current script."""

    shas: frozenset[str]
    current: bool


def needs(outcomes: Sequence[Outcome], loaded_sha256: str | None) -> Needs:
    shas: set[str] = set()
    unnamed = False
    for outcome in outcomes:
        sha = behavior_sha256(outcome)
        if sha is None:
            unnamed = True
        else:
            shas.add(sha)
    if unnamed and loaded_sha256 is not None:
        shas.add(loaded_sha256)
    return Needs(frozenset(shas), unnamed and loaded_sha256 is None)


def attribute(
    outcomes: Sequence[Outcome],
    now: datetime,
    *,
    loaded_sha256: str | None,
    delivered: Container[str],
    has_current: bool,
) -> Attribution:
    """Which script each outcome counts for: its own `behavior_sha256`; without one (older
    runtimes), the batch's loaded script; without that, the agent's current script. Only a
    script the registry delivered to the agent counts: anything else is refused, so a
    runtime cannot make up stats for a script it never ran."""
    accepted: list[Outcome] = []
    keys: list[str | None] = []
    refused: list[tuple[int, str | None, str]] = []
    for index, outcome in enumerate(outcomes):
        sha = behavior_sha256(outcome)
        if sha is not None:
            if sha not in delivered:
                refused.append((index, sha, f"script {sha} was never delivered to this agent"))
                continue
        elif loaded_sha256 is not None:
            sha = loaded_sha256
            if sha not in delivered:
                refused.append(
                    (
                        index,
                        sha,
                        f"no behavior_sha256, and the loaded script {sha} was never "
                        "delivered to this agent",
                    )
                )
                continue
        elif not has_current:
            refused.append((index, None, NO_SCRIPT))
            continue
        accepted.append(outcome)
        keys.append(sha)
    groups: dict[str | None, ScriptGroup] = {}
    for outcome, key in zip(accepted, keys, strict=True):
        success, duration, finished = _unpack(outcome)
        at = now if finished is None or finished > now else finished
        group = groups.get(key)
        if group is None:
            group = groups[key] = ScriptGroup(key, first_task_at=at, last_task_at=at)
        group.tasks += 1
        group.successes += int(success)
        if duration is not None:
            group.timed_tasks += 1
            group.total_response_time_ms += float(duration)
        if group.first_task_at is not None and at < group.first_task_at:
            group.first_task_at = at
        if group.last_task_at is not None and at > group.last_task_at:
            group.last_task_at = at
    return Attribution(batch_effect(accepted, now), tuple(groups.values()), tuple(refused))


def success_rate(successes: int, tasks: int) -> float:
    return successes / tasks if tasks > 0 else EMPTY_SUCCESS_RATE


def avg_response_time_ms(total_response_time_ms: float, timed_tasks: int) -> float:
    return total_response_time_ms / timed_tasks if timed_tasks > 0 else EMPTY_AVG_RESPONSE_TIME_MS


def outcome_notes(
    *, tasks: int, successes: int, total_response_time_ms: float, timed_tasks: int, replaced_by: str
) -> str:
    """The text stored in a closed assignment's outcome_notes."""
    rate = success_rate(successes, tasks)
    avg = avg_response_time_ms(total_response_time_ms, timed_tasks)
    return (
        f"{tasks} tasks, {successes} succeeded ({rate:.1%}), avg {avg:.1f} ms; "
        f"replaced by {replaced_by}"
    )


__all__ = [
    "EMPTY_AVG_RESPONSE_TIME_MS",
    "EMPTY_SUCCESS_RATE",
    "NO_SCRIPT",
    "Attribution",
    "BatchEffect",
    "Needs",
    "Outcome",
    "OutcomeLike",
    "ScriptGroup",
    "attribute",
    "avg_response_time_ms",
    "batch_effect",
    "behavior_sha256",
    "consecutive_failures_after",
    "needs",
    "outcome_notes",
    "success_rate",
]
