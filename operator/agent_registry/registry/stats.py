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


# One outcome as the registry counts it: success, duration, when (capped), its sha256.
Item = tuple[bool, float | None, datetime, str | None]


class _Sums:
    """What a run of outcomes adds up to, accumulated in their order."""

    __slots__ = (
        "first",
        "last",
        "last_failure",
        "last_success",
        "successes",
        "tasks",
        "timed",
        "total_ms",
        "trailing",
    )

    def __init__(self) -> None:
        self.tasks = self.successes = self.timed = self.trailing = 0
        self.total_ms = 0.0
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.last_success: datetime | None = None
        self.last_failure: datetime | None = None

    def add(self, success: bool, duration: float | None, at: datetime) -> None:
        self.tasks += 1
        if duration is not None:
            self.timed += 1
            self.total_ms += duration
        if self.first is None or at < self.first:
            self.first = at
        if self.last is None or at > self.last:
            self.last = at
        if success:
            self.successes += 1
            self.trailing = 0
            if self.last_success is None or at > self.last_success:
                self.last_success = at
        else:
            self.trailing += 1
            if self.last_failure is None or at > self.last_failure:
                self.last_failure = at

    def effect(self) -> BatchEffect:
        return BatchEffect(
            tasks=self.tasks,
            successes=self.successes,
            timed_tasks=self.timed,
            total_response_time_ms=self.total_ms,
            trailing_failures=self.trailing,
            last_task_at=self.last,
            last_success_at=self.last_success,
            last_failure_at=self.last_failure,
        )

    def group(self, sha256: str | None) -> ScriptGroup:
        return ScriptGroup(
            sha256, self.tasks, self.successes, self.timed, self.total_ms, self.first, self.last
        )


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch read once: its sums, and which scripts its outcomes name. (attribute reads
    the outcomes again only for a batch that is not all one script's and all accepted.)"""

    outcomes: Sequence[Outcome]
    now: datetime
    sums: _Sums
    named: frozenset[str]
    unnamed: bool


def _item(outcome: Outcome, now: datetime) -> Item:
    """An outcome as counted: its timestamp is `finished_at` (a naive one taken as UTC,
    capped at `now`, so a runtime with a clock ahead cannot push last_task_at into the
    future) or `now`. A negative duration is an error."""
    if isinstance(outcome, tuple):
        success, duration = outcome
        finished = sha = None
    else:
        success, duration = outcome.success, outcome.duration_ms
        finished = getattr(outcome, "finished_at", None)
        sha = getattr(outcome, "behavior_sha256", None)
    if duration is not None:
        if duration < 0:
            raise ValueError(f"duration_ms must be >= 0, got {duration}")
        duration = float(duration)
    if finished is None:
        at = now
    else:
        if finished.tzinfo is None:
            finished = finished.replace(tzinfo=UTC)
        at = now if finished > now else finished
    return bool(success), duration, at, sha


def prepare(outcomes: Iterable[Outcome], now: datetime) -> Prepared:
    """Read every outcome once (see _item) and sum them. The sums are inlined (not
    _Sums.add): this loop is most of the client's CPU for a batch."""
    batch = outcomes if isinstance(outcomes, Sequence) else list(outcomes)
    tasks = successes = timed = trailing = 0
    total_ms = 0.0
    first = last = last_success = last_failure = None
    named: set[str] = set()
    unnamed = False
    for outcome in batch:
        success, duration, at, sha = _item(outcome, now)
        if sha is None:
            unnamed = True
        else:
            named.add(sha)
        tasks += 1
        if duration is not None:
            timed += 1
            total_ms += duration
        if first is None or at < first:
            first = at
        if last is None or at > last:
            last = at
        if success:
            successes += 1
            trailing = 0
            if last_success is None or at > last_success:
                last_success = at
        else:
            trailing += 1
            if last_failure is None or at > last_failure:
                last_failure = at
    sums = _Sums()
    sums.tasks, sums.successes, sums.timed, sums.trailing = tasks, successes, timed, trailing
    sums.total_ms, sums.first, sums.last = total_ms, first, last
    sums.last_success, sums.last_failure = last_success, last_failure
    return Prepared(batch, now, sums, frozenset(named), unnamed)


def batch_effect(outcomes: Iterable[Outcome], now: datetime) -> BatchEffect:
    """Summarize a batch (see prepare for the timestamps)."""
    return prepare(outcomes, now).sums.effect()


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


def needs(batch: Prepared | Sequence[Outcome], loaded_sha256: str | None) -> Needs:
    if not isinstance(batch, Prepared):
        batch = prepare(batch, datetime.now(UTC))
    shas = set(batch.named)
    if batch.unnamed and loaded_sha256 is not None:
        shas.add(loaded_sha256)
    return Needs(frozenset(shas), batch.unnamed and loaded_sha256 is None)


def attribute(
    batch: Prepared | Sequence[Outcome],
    now: datetime | None = None,
    *,
    loaded_sha256: str | None,
    delivered: Container[str],
    has_current: bool,
) -> Attribution:
    """Which script each outcome counts for: its own `behavior_sha256`; without one (older
    runtimes), the batch's loaded script; without that, the agent's current script. Only a
    script the registry delivered to the agent counts: anything else is refused, so a
    runtime cannot make up stats for a script it never ran. (`now`: for outcomes not yet
    prepared.)"""
    if not isinstance(batch, Prepared):
        batch = prepare(batch, now or datetime.now(UTC))
    # Where an outcome without a sha256 goes: (its key, or None with why it is refused).
    if loaded_sha256 is not None:
        unnamed_key: str | None = loaded_sha256
        unnamed_refusal = (
            None
            if loaded_sha256 in delivered
            else f"no behavior_sha256, and the loaded script {loaded_sha256} was never "
            "delivered to this agent"
        )
    else:
        unnamed_key = None
        unnamed_refusal = None if has_current else NO_SCRIPT
    unknown = {sha for sha in batch.named if sha not in delivered}
    keys = {unnamed_key} if batch.unnamed and unnamed_refusal is None else set()
    keys |= batch.named - unknown
    if not unknown and (unnamed_refusal is None or not batch.unnamed) and len(keys) <= 1:
        # The common batch: everything counts, for one script. Its sums are the group's.
        groups = (batch.sums.group(keys.pop()),) if keys else ()
        return Attribution(batch.sums.effect(), groups, ())
    accepted = _Sums()
    groups_by_key: dict[str | None, _Sums] = {}
    refused: list[tuple[int, str | None, str]] = []
    for index, outcome in enumerate(batch.outcomes):
        success, duration, at, sha = _item(outcome, batch.now)
        if sha is None:
            if unnamed_refusal is not None:
                refused.append((index, unnamed_key, unnamed_refusal))
                continue
            key = unnamed_key
        elif sha in unknown:
            refused.append((index, sha, f"script {sha} was never delivered to this agent"))
            continue
        else:
            key = sha
        accepted.add(success, duration, at)
        group = groups_by_key.get(key)
        if group is None:
            group = groups_by_key[key] = _Sums()
        group.add(success, duration, at)
    return Attribution(
        accepted.effect(),
        tuple(sums.group(key) for key, sums in groups_by_key.items()),
        tuple(refused),
    )


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
    "Item",
    "Needs",
    "Outcome",
    "OutcomeLike",
    "Prepared",
    "ScriptGroup",
    "attribute",
    "avg_response_time_ms",
    "batch_effect",
    "behavior_sha256",
    "consecutive_failures_after",
    "needs",
    "outcome_notes",
    "prepare",
    "success_rate",
]
