"""Recent windows for BehaviorPolicy from cumulative counts: no time buckets needed.

The registry keeps lifetime counts per (agent, script) and the open assignment's counts on
the agent row; the policy controller reads both at every evaluation anyway. `PolicyWindows`
keeps, per policy and in memory, a short ring of those readings (snapshots), and a window is
the difference between the counts now and the youngest snapshot taken at least
`window_seconds` ago (the oldest one while the ring is younger than that; nothing before
there are two readings). Memory is bounded: at most `resolution + 2` snapshots, each holding
only the keys still present (a key that disappears, an agent deleted or out of the role, is
dropped from every snapshot at the next reading).

What the rule needs (docs/policy.md, "The evidence the controller must give"):

- an agent's open assignment over the window (`Recent.agent`): keyed by the assignment's
  identity, so an assignment opened after the baseline counts whole, and the previous one's
  tasks never leak in;
- a candidate's counts over its *last window of use* (`Recent.candidate`): the sum of its
  role's script rows over the window while agents run it; once nobody runs it any more
  (nothing arrived since the previous reading) the window taken at its last use is kept,
  so a behavior that degraded and was abandoned keeps showing how it ended.

Pure: no clock (the caller passes `at`), no I/O. After a restart or a leader failover the
ring is empty and refills within one window; until then the rule works without windows.
"""

from __future__ import annotations

from array import array
from collections.abc import Collection, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Generic, TypeVar

from agent_registry.decisions.evidence import Counts

# (agent, behavior, revision, script sha256): one script row of one agent.
ScriptKey = tuple[str, Hashable, int, str]
# (behavior, revision): a candidate's current revision.
RevisionKey = tuple[Hashable, int]


# (tasks, successes) of one reading.
Pair = tuple[int, int]


def delta(now: Counts, before: Counts | None) -> Counts:
    """What was counted between two readings of one cumulative count. A key absent from the
    earlier reading started after it (counts whole); a count that went down was reset (the
    agent or its row was recreated), and counts whole from the reset."""
    if before is None:
        return now
    tasks, successes = _pair_delta((now.tasks, now.successes), (before.tasks, before.successes))
    return Counts(tasks, successes)


K = TypeVar("K", bound=Hashable)
# (agent, identity of its open assignment)
AssignmentKey = tuple[str, Hashable]


@dataclass(frozen=True, eq=False)
class Layout(Generic[K]):
    """The keys of a reading, in order, and each one's slot. Consecutive readings of an
    unchanged fleet share one Layout, so that a snapshot costs two arrays of counts: 16 bytes
    a row (a dict of pairs cost about 250 at 10,000 agents x 3 scripts)."""

    keys: tuple[K, ...]
    slot: Mapping[K, int]

    @classmethod
    def of(cls, keys: tuple[K, ...]) -> Layout[K]:
        return cls(keys, {key: i for i, key in enumerate(keys)})


@dataclass(frozen=True, eq=False)
class AssignmentLayout(Layout[AssignmentKey]):
    @cached_property
    def by_agent(self) -> Mapping[str, AssignmentKey]:
        """Each agent's key."""
        return {key[0]: key for key in self.keys}


@dataclass(frozen=True, eq=False)
class Column(Generic[K]):
    """One cumulative count per key of `layout`, as read at one time."""

    layout: Layout[K]
    tasks: array[int]
    successes: array[int]

    @classmethod
    def of(cls, layout: Layout[K], pairs: Iterable[tuple[K, Pair]]) -> Column[K]:
        """`pairs` holds every key of `layout` once, in any order."""
        tasks, successes = array("q", bytes(8 * len(layout.keys))), array("q")
        successes.extend(tasks)
        slot = layout.slot
        for key, (t, w) in pairs:
            i = slot[key]
            tasks[i] = t
            successes[i] = w
        return cls(layout, tasks, successes)

    def __contains__(self, key: object) -> bool:
        return key in self.layout.slot

    def get(self, key: K) -> Pair | None:
        i = self.layout.slot.get(key)
        return None if i is None else (self.tasks[i], self.successes[i])

    def items(self) -> Iterator[tuple[K, Pair]]:
        return zip(self.layout.keys, zip(self.tasks, self.successes, strict=True), strict=True)

    def keeping(self, live: Collection[K], layout: type[Layout[K]] = Layout) -> Column[K]:
        """The same counts without the keys no longer read (bounded memory)."""
        kept = [(key, pair) for key, pair in self.items() if key in live]
        return Column.of(layout.of(tuple(key for key, _ in kept)), kept)


@dataclass(frozen=True, eq=False)
class Snapshot:
    at: float
    scripts: Column[ScriptKey]
    # The open assignments' counts (their layout is an AssignmentLayout).
    assignments: Column[AssignmentKey]

    @property
    def agents(self) -> Mapping[str, AssignmentKey]:
        """Each agent's key in `assignments`."""
        layout = self.assignments.layout
        assert isinstance(layout, AssignmentLayout)
        return layout.by_agent

    def keeping(self, scripts: Collection[ScriptKey], agents: Collection[str]) -> Snapshot:
        live = {key for agent, key in self.agents.items() if agent in agents}
        return Snapshot(
            self.at,
            self.scripts.keeping(scripts),
            self.assignments.keeping(live, AssignmentLayout),
        )


@dataclass(frozen=True)
class Recent:
    """The windows at one reading: `since` is the baseline's time (the window spans
    `at - since` seconds, about window_seconds once the ring has filled)."""

    at: float
    since: float
    now: Snapshot
    base: Snapshot
    last_use: Mapping[RevisionKey, tuple[Counts, int]]

    def agent(self, agent: str) -> Counts | None:
        """The agent's open assignment's counts within the window; None when it has none."""
        key = self.now.agents.get(agent)
        if key is None:
            return None
        counts = self.now.assignments.get(key)
        assert counts is not None
        # A key absent from the baseline: opened after it, all of it is recent.
        return Counts(*_pair_delta(counts, self.base.assignments.get(key)))

    def candidate(self, behavior: Hashable, revision: int) -> tuple[Counts, int] | None:
        """A candidate revision's counts over its last window of use over the policy's role,
        and the distinct agents behind them; None when nothing is known of it."""
        return self.last_use.get((behavior, revision))


def _pair_delta(now: Pair, before: Pair | None) -> Pair:
    if before is None:
        return now
    tasks, successes = now[0] - before[0], now[1] - before[1]
    if tasks < 0 or successes < 0 or successes > tasks:
        return now
    return (tasks, successes)


def _window_of(
    now: Snapshot, base: Snapshot, role: Collection[str]
) -> dict[RevisionKey, tuple[Counts, int]]:
    sums: dict[RevisionKey, list[int]] = {}
    agents: dict[RevisionKey, set[str]] = {}
    earlier = base.scripts
    same = earlier.layout is now.scripts.layout  # the common case: slot for slot
    keys = now.scripts.layout.keys
    for i, (t_now, w_now) in enumerate(zip(now.scripts.tasks, now.scripts.successes, strict=True)):
        key = keys[i]
        agent, behavior, revision, _ = key
        if agent not in role:
            continue
        before = (earlier.tasks[i], earlier.successes[i]) if same else earlier.get(key)
        tasks, successes = _pair_delta((t_now, w_now), before)
        if tasks == 0:
            continue
        slot = (behavior, revision)
        total = sums.get(slot)
        if total is None:
            sums[slot] = [tasks, successes]
            agents[slot] = {agent}
        else:
            total[0] += tasks
            total[1] += successes
            agents[slot].add(agent)
    return {slot: (Counts(t, w), len(agents[slot])) for slot, (t, w) in sums.items()}


class PolicyWindows:
    """One policy's ring of snapshots (see the module's docstring)."""

    def __init__(
        self, window_seconds: float, *, resolution: int = 8, max_age: float | None = None
    ) -> None:
        if not window_seconds > 0.0:
            raise ValueError(f"window_seconds must be > 0, got {window_seconds}")
        if resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        self.window = float(window_seconds)
        # A snapshot is kept when this much younger than the last kept one: the window then
        # spans between window and window + spacing (+ one evaluation interval).
        self.spacing = self.window / resolution
        # Older snapshots are dropped: after a pause in readings (leadership lost, say) a
        # baseline hours old would make "recent" mean "all time".
        self.max_age = max(2.0 * self.window, max_age or 0.0)
        self.kept: list[Snapshot] = []
        self.latest: Snapshot | None = None
        self.last_use: dict[RevisionKey, tuple[Counts, int]] = {}
        # The latest layouts, reused while the keys stay the same (see Layout).
        self._scripts_layout: Layout[ScriptKey] = Layout.of(())
        self._assignments_layout: Layout[AssignmentKey] = AssignmentLayout.of(())

    @staticmethod
    def _layout(current: Layout[K], keys: Iterable[K]) -> Layout[K]:
        """`current` when the reading has the same keys (in any order), else a new layout
        of the same kind."""
        read = tuple(keys)
        same = len(read) == len(current.keys) and all(key in current.slot for key in read)
        return current if same else type(current).of(read)

    def _reading(
        self,
        at: float,
        scripts: Mapping[ScriptKey, Counts],
        assignments: Mapping[str, tuple[Hashable, Counts]],
    ) -> Snapshot:
        self._scripts_layout = self._layout(self._scripts_layout, scripts)
        opened = [
            ((agent, identity), (c.tasks, c.successes))
            for agent, (identity, c) in assignments.items()
        ]
        self._assignments_layout = self._layout(self._assignments_layout, (k for k, _ in opened))
        rows = ((key, (c.tasks, c.successes)) for key, c in scripts.items())
        return Snapshot(
            at,
            Column.of(self._scripts_layout, rows),
            Column.of(self._assignments_layout, opened),
        )

    def observe(
        self,
        at: float,
        *,
        scripts: Mapping[ScriptKey, Counts],
        assignments: Mapping[str, tuple[Hashable, Counts]],
        role: Collection[str],
    ) -> Recent | None:
        """Record a reading and return the windows it gives (None: no earlier reading yet).
        `role`: the agents whose script rows make up the candidates' fleet counts."""
        now = self._reading(at, scripts, assignments)
        live_scripts, live_agents = now.scripts.layout.slot.keys(), now.agents.keys()

        def usable(s: Snapshot) -> bool:
            # A clock that went back (or a replayed reading) invalidates the later snapshots.
            return s.at < at and at - s.at <= self.max_age

        kept = [s for s in self.kept if usable(s)]
        # Every snapshot holds only keys the previous reading had: pruned when one went.
        last = self.latest
        if last is not None and not (
            last.scripts.layout.slot.keys() <= live_scripts and last.agents.keys() <= live_agents
        ):
            kept = [s.keeping(live_scripts, live_agents) for s in kept]
        previous = self.latest if self.latest is not None and usable(self.latest) else None
        old_enough = [i for i, s in enumerate(kept) if s.at <= at - self.window]
        # The youngest snapshot at least a window old; the older ones are never a baseline
        # again. While the ring is younger than a window: its oldest.
        kept = kept[old_enough[-1] :] if old_enough else kept
        base = kept[0] if kept else None
        if not kept or at - kept[-1].at >= self.spacing:
            kept.append(now)
        self.kept = kept
        self.latest = now
        if base is None or previous is None:
            self.last_use = {}  # nothing to difference against: no stale windows kept either
            return None
        window = _window_of(now, base, role)
        ran = _window_of(now, previous, role)
        # In use since the previous reading: its last window of use is simply the window.
        last_use = {slot: counts for slot, counts in window.items() if slot in ran}
        present = {(key[1], key[2]) for key in now.scripts.layout.keys}
        for slot, stored in self.last_use.items():
            if slot not in last_use and slot in present:
                last_use[slot] = stored  # nothing since: kept as it was when last used
        for slot, counts in window.items():
            last_use.setdefault(slot, counts)  # winding down and never stored: what is left
        self.last_use = last_use
        return Recent(at, base.at, now, base, dict(last_use))


__all__ = ["PolicyWindows", "Recent", "RevisionKey", "ScriptKey", "Snapshot", "delta"]
