"""What the whole fleet says, for BehaviorPolicy: pooled effects from current evidence,
the record fit from every agent's history, the variance components, and which behaviors
changed recently (whose old records no longer count)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from agent_registry.decisions.evidence import Counts
from agent_registry.decisions.policy_fit import RecordFit
from agent_registry.decisions.policy_model import (
    CHANGE_Z,
    FLAT,
    Components,
    Normal,
    Pair,
    between_variance,
    change_z,
    changed,
    effect,
    interaction_variance,
    log_odds,
)

if TYPE_CHECKING:
    from agent_registry.decisions.policy import AgentEvidence, CandidateEvidence


def _minus(total: Counts, part: Counts) -> Counts | None:
    left = total.tasks - part.tasks
    wins = total.successes - part.successes
    if left < 0 or wins < 0 or wins > left:
        return None  # inconsistent inputs (counts read at different moments)
    return Counts(left, wins)


def _recent_if_changed(whole: Counts, recent: Counts | None, min_tasks: int) -> bool:
    if recent is None:
        return False
    before = _minus(whole, recent)
    return before is not None and changed(before, recent, min_tasks)


def judged_cell(agent: AgentEvidence, min_tasks: int) -> Counts:
    """What the agent is judged on: its whole current assignment, or only its recent window
    when that window differs from the tasks before it (the script, or the world, changed)."""
    if _recent_if_changed(agent.current_counts, agent.recent_counts, min_tasks):
        assert agent.recent_counts is not None
        return agent.recent_counts
    return agent.current_counts


def before_change(name: str) -> str:
    """The name under which a changed behavior's older records enter the record fit: as a
    behavior of its own (the script before its change), so they still place the agents'
    skill without passing for evidence about the behavior as it is now."""
    return f"{name} (before its change)"


def own_cells(agent: AgentEvidence, cell: Counts, changed: frozenset[str]) -> dict[str, Normal]:
    """The agent's cells besides its judged one, for the record: its history per behavior
    (a changed behavior's under `before_change`), and when it is judged on its recent window,
    the tasks of the assignment before that window (under `before_change` of its current
    behavior: they are from before the change the window shows)."""
    cells: dict[str, Normal] = {}
    for name, past in sorted(agent.history.items()):
        if name == agent.current or past.tasks == 0:
            continue
        cells[before_change(name) if name in changed else name] = log_odds(past)
    if cell is not agent.current_counts:
        earlier = _minus(agent.current_counts, cell)
        if earlier is not None and earlier.tasks > 0:
            cells[before_change(agent.current)] = log_odds(earlier)
    return cells


def _changed_behaviors(agents: Sequence[AgentEvidence], min_tasks: int) -> frozenset[str]:
    """Behaviors whose runners do differently in their window than each did before it: the
    window's successes against what each runner's own earlier rate predicts, summed over
    the runners. Comparing the same agents matters: the fleet's recent counts against its
    all-time ones also differ when agents come and go (those a behavior does not suit leave
    it), and pooled counts of runners with different shares of old and new tasks differ by
    composition alone; neither is a change of the behavior."""
    observed: dict[str, float] = {}
    expected: dict[str, float] = {}
    variance: dict[str, float] = {}
    for a in agents:
        recent = a.recent_counts
        if recent is None or recent.tasks == 0:
            continue
        older = _minus(a.current_counts, recent)
        if older is None or older.tasks < min_tasks:
            continue
        # The +1/2 keeps a runner with no earlier failure (or success) from having no variance.
        p = (older.successes + 0.5) / (older.tasks + 1.0)
        n = recent.tasks
        name = a.current
        observed[name] = observed.get(name, 0.0) + recent.successes
        expected[name] = expected.get(name, 0.0) + n * p
        # Binomial noise of the window, plus the uncertainty of the earlier rate itself.
        variance[name] = variance.get(name, 0.0) + n * p * (1 - p) * (1 + n / older.tasks)
    return frozenset(
        name
        for name, v in variance.items()
        if abs(observed[name] - expected[name]) >= CHANGE_Z * math.sqrt(v)
    )


def _degraded_when_last_run(candidate: CandidateEvidence, min_tasks: int) -> bool:
    """For a behavior no judged agent runs, whether its last window of use (what
    recent_counts holds for it) was worse than the tasks before it. Only worse counts: the
    last agents to leave a behavior are the ones it suited best (the policy moves the clearest
    cases first), so a better last window is no evidence the behavior improved."""
    recent = candidate.recent_counts
    if recent is None:
        return False
    before = _minus(candidate.counts, recent)
    return before is not None and change_z(before, recent, min_tasks) <= -CHANGE_Z


def _before_effects(
    candidates: Sequence[CandidateEvidence],
    agents: Sequence[AgentEvidence],
    changed: set[str],
    between: float,
) -> dict[str, Normal]:
    """The effect of each changed behavior before its recent window, from its fleet counts
    outside the window and the judged agents that ran it (their history)."""
    found: dict[str, Normal] = {}
    for c in candidates:
        if c.name not in changed or c.recent_counts is None:
            continue
        older = _minus(c.counts, c.recent_counts)
        if older is None or older.tasks == 0:
            continue
        k = sum(1 for a in agents if a.history.get(c.name, Counts()).tasks > 0)
        found[c.name] = effect(older, max(k, 1), between)
    return found


def _shifts(
    agents: Sequence[AgentEvidence], earlier: Mapping[str, Normal], min_tasks: int
) -> dict[str, Normal]:
    """The change of each changed behavior, as its runners show it, each against its own
    earlier tasks of the assignment (log-odds, precision-weighted). A changed behavior's effect
    now is its effect before the window plus this: its pooled window alone is its survivors'
    (those it suits best stay longest)."""
    weighted: dict[str, float] = {}
    weights: dict[str, float] = {}
    for a in agents:
        if a.current not in earlier or a.recent_counts is None:
            continue
        older = _minus(a.current_counts, a.recent_counts)
        if older is None or older.tasks < min_tasks or a.recent_counts.tasks < min_tasks:
            continue
        new, old = log_odds(a.recent_counts), log_odds(older)
        w = 1.0 / (new.variance + old.variance)
        weighted[a.current] = weighted.get(a.current, 0.0) + w * (new.mean - old.mean)
        weights[a.current] = weights.get(a.current, 0.0) + w
    return {name: Normal(weighted[name] / w, 1.0 / w) for name, w in weights.items()}


def _shifted(before: Normal, shift: Normal) -> Normal:
    return Normal(before.mean + shift.mean, before.variance + shift.variance)


@dataclass(frozen=True)
class Pool:
    counts: Counts
    agents: int
    # Which of an agent's own counts are inside `counts`: "recent" (a candidate's window),
    # "all" (a candidate's all-time counts hold the whole current assignment) or "cells" (a
    # pool of judged cells). They are taken out when that agent is judged, so its tasks do not
    # count twice, as evidence about itself and about the behavior's typical agent.
    holds: Literal["recent", "all", "cells"]
    eligible: bool  # a candidate with enough current evidence to switch to


@dataclass(frozen=True)
class Fleet:
    pools: Mapping[str, Pool]
    effects: Mapping[str, Normal]  # from the pools: current evidence
    components: Components
    candidates: tuple[str, ...]
    min_tasks: int
    record: RecordFit  # from every judged agent's cells: current and history
    slots: Mapping[str, int]  # agent -> its row in `record`
    # Behaviors whose current runners do differently in the window than before it: every
    # record of them is from before the change, so none is used.
    changed: frozenset[str]
    # Changed behaviors whose effect is their earlier one plus their runners' change: that
    # change (in the record fit too, from the effect of "before its change").
    shifts: Mapping[str, Normal] = field(default_factory=dict)

    @staticmethod
    def build(
        agents: Sequence[AgentEvidence], candidates: Sequence[CandidateEvidence], min_tasks: int
    ) -> Fleet:
        cells = {a.agent: judged_cell(a, min_tasks) for a in agents}
        running: dict[str, list[Counts]] = {}
        for a in agents:
            running.setdefault(a.current, []).append(cells[a.agent])
        changed_now = set(_changed_behaviors(agents, min_tasks))
        pools: dict[str, Pool] = {}
        for c in candidates:
            if c.name not in running and _degraded_when_last_run(c, min_tasks):
                changed_now.add(c.name)
            recent = c.name in changed_now and c.recent_counts is not None
            counts = c.recent_counts if recent and c.recent_counts is not None else c.counts
            k = c.agents if c.agents is not None else len(running.get(c.name, ()))
            # Counts without a known runner still come from at least one agent.
            k = max(k, 1) if counts.tasks else 0
            pools[c.name] = Pool(
                counts, k, "recent" if recent else "all", counts.tasks >= min_tasks
            )
        for name, own in running.items():
            if name not in pools:
                pools[name] = Pool(Counts.total(own), len(own), "cells", False)
        between = between_variance(
            [log_odds(c) for c in running_cells if c.tasks >= min_tasks]
            for running_cells in running.values()
        )
        effects = {name: effect(p.counts, p.agents, between) for name, p in pools.items()}
        # A changed behavior before its window, for the pairs: its agents' skill shows there
        # as on any other behavior (the agents that left it after the change are the pairs
        # that say how much of the spread follows an agent to its next behavior).
        earlier = _before_effects(candidates, agents, changed_now, between)
        shifts = _shifts(agents, earlier, min_tasks)
        effects.update({name: _shifted(earlier[name], d) for name, d in shifts.items()})
        pairs = []
        for a in agents:
            cell = cells[a.agent]
            now = effects[a.current]
            if cell.tasks < min_tasks or now.variance >= FLAT:
                continue
            for name, past in sorted(a.history.items()):
                if name == a.current or past.tasks < min_tasks:
                    continue
                before = earlier.get(name) if name in changed_now else effects.get(name)
                if before is None or before.variance >= FLAT:
                    continue
                y_before, y_now = log_odds(past), log_odds(cell)
                pairs.append(
                    Pair(
                        before=y_before.mean - before.mean,
                        now=y_now.mean - now.mean,
                        noise=y_before.variance + before.variance,
                    )
                )
        components = Components(between, interaction_variance(between, pairs))
        frozen = frozenset(changed_now)
        records = [
            {a.current: log_odds(cells[a.agent]), **own_cells(a, cells[a.agent], frozen)}
            for a in agents
        ]
        return Fleet(
            pools,
            effects,
            components,
            tuple(c.name for c in candidates),
            min_tasks,
            RecordFit.build(records, components),
            {a.agent: i for i, a in enumerate(agents)},
            frozen,
            shifts,
        )

    def record_effects_for(self, agent: AgentEvidence) -> dict[str, Normal]:
        """Effects from everyone's record but this agent's; a candidate no judged agent
        ever ran keeps its pooled fleet effect."""
        effects = dict(self.effects)
        effects.update(self.record.effects(without=self.slots[agent.agent]))
        for name, shift in self.shifts.items():
            before = effects.get(before_change(name))
            if before is not None and before.variance < FLAT:
                effects[name] = _shifted(before, shift)
        return effects

    def effects_for(self, agent: AgentEvidence, cell: Counts) -> dict[str, Normal]:
        effects = dict(self.effects)
        if agent.current in self.shifts:
            return effects
        pool = self.pools[agent.current]
        if pool.holds == "cells":
            own = cell
        elif pool.holds == "all":
            own = agent.current_counts
        else:
            own = agent.recent_counts or Counts()
        rest = _minus(pool.counts, own)
        if rest is None:
            counts, k = pool.counts, pool.agents
        else:
            counts, k = rest, max(0, pool.agents - 1)
        effects[agent.current] = effect(counts, k, self.components.between)
        return effects


__all__ = ["Fleet", "Pool", "before_change", "judged_cell", "own_cells"]
