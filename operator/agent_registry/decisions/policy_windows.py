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

from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass

from agent_registry.decisions.evidence import Counts

# (agent, behavior, revision, script sha256): one script row of one agent.
ScriptKey = tuple[str, Hashable, int, str]
# (behavior, revision): a candidate's current revision.
RevisionKey = tuple[Hashable, int]


# Stored as (tasks, successes): a Counts costs about six times the memory of a tuple.
Pair = tuple[int, int]


def _pair(counts: Counts) -> Pair:
    return (counts.tasks, counts.successes)


def delta(now: Counts, before: Counts | None) -> Counts:
    """What was counted between two readings of one cumulative count. A key absent from the
    earlier reading started after it (counts whole); a count that went down was reset (the
    agent or its row was recreated), and counts whole from the reset."""
    if before is None:
        return now
    tasks = now.tasks - before.tasks
    successes = now.successes - before.successes
    if tasks < 0 or successes < 0 or successes > tasks:
        return now
    return Counts(tasks, successes)


@dataclass(frozen=True)
class Snapshot:
    at: float
    scripts: Mapping[ScriptKey, Pair]
    # agent -> (identity of its open assignment, that assignment's (tasks, successes))
    assignments: Mapping[str, tuple[Hashable, Pair]]

    def keeping(self, scripts: Collection[ScriptKey], agents: Collection[str]) -> Snapshot:
        """The same snapshot without the keys no longer read (bounded memory)."""
        return Snapshot(
            self.at,
            {k: v for k, v in self.scripts.items() if k in scripts},
            {k: v for k, v in self.assignments.items() if k in agents},
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
        current = self.now.assignments.get(agent)
        if current is None:
            return None
        identity, counts = current
        before = self.base.assignments.get(agent)
        if before is None or before[0] != identity:
            return Counts(*counts)  # opened after the baseline: all of it is recent
        return delta(Counts(*counts), Counts(*before[1]))

    def candidate(self, behavior: Hashable, revision: int) -> tuple[Counts, int] | None:
        """A candidate revision's counts over its last window of use over the policy's role,
        and the distinct agents behind them; None when nothing is known of it."""
        return self.last_use.get((behavior, revision))


def _pair_delta(now: Pair, before: Pair | None) -> Pair:
    """`delta` on stored pairs (the hot loop: no Counts built per row)."""
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
    for key, counts in now.scripts.items():
        agent, behavior, revision, _ = key
        if agent not in role:
            continue
        tasks, successes = _pair_delta(counts, earlier.get(key))
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
        # One key object per script row, shared by every snapshot (the readings build new
        # ones each time): a snapshot then costs a dict slot and a pair per row.
        self.keys: dict[ScriptKey, ScriptKey] = {}

    def _reading(
        self,
        at: float,
        scripts: Mapping[ScriptKey, Counts],
        assignments: Mapping[str, tuple[Hashable, Counts]],
    ) -> Snapshot:
        keys = {key: self.keys.get(key, key) for key in scripts}
        self.keys = {key: key for key in keys.values()}
        return Snapshot(
            at,
            {keys[key]: _pair(counts) for key, counts in scripts.items()},
            {agent: (identity, _pair(counts)) for agent, (identity, counts) in assignments.items()},
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
        live_scripts, live_agents = now.scripts.keys(), now.assignments.keys()

        def usable(s: Snapshot) -> bool:
            # A clock that went back (or a replayed reading) invalidates the later snapshots.
            return s.at < at and at - s.at <= self.max_age

        kept = [s for s in self.kept if usable(s)]
        # Every snapshot holds only keys the previous reading had: pruned when one went.
        last = self.latest
        if last is not None and not (
            last.scripts.keys() <= live_scripts and last.assignments.keys() <= live_agents
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
        present = {(behavior, revision) for _, behavior, revision, _ in now.scripts}
        for slot, stored in self.last_use.items():
            if slot not in last_use and slot in present:
                last_use[slot] = stored  # nothing since: kept as it was when last used
        for slot, counts in window.items():
            last_use.setdefault(slot, counts)  # winding down and never stored: what is left
        self.last_use = last_use
        return Recent(at, base.at, now, base, dict(last_use))


__all__ = ["PolicyWindows", "Recent", "RevisionKey", "ScriptKey", "Snapshot", "delta"]
