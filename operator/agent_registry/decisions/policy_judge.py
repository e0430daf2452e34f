"""Judging one agent for BehaviorPolicy: the fleet's evidence, then both analyses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Literal

from agent_registry.decisions.evidence import Counts
from agent_registry.decisions.policy_model import (
    FLAT,
    Components,
    Normal,
    Posterior,
    agent_posterior,
    between_variance,
    effect,
    expit,
    interaction_variance,
    log_odds,
)

if TYPE_CHECKING:
    from agent_registry.decisions.policy import AgentEvidence, CandidateEvidence

_STANDARD = NormalDist()


def judged_cell(agent: AgentEvidence, min_tasks: int) -> Counts:
    """What the agent is judged on: its recent window when that holds enough tasks (a
    degraded behavior shows there first), else its whole current assignment."""
    recent = agent.recent_counts
    if recent is not None and recent.tasks >= min_tasks:
        return recent
    return agent.current_counts


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


def _without(pool: Pool, own: Counts) -> tuple[Counts, int]:
    left = pool.counts.tasks - own.tasks
    wins = pool.counts.successes - own.successes
    if left < 0 or wins < 0 or wins > left:
        return pool.counts, pool.agents  # inconsistent inputs: keep the pool as given
    return Counts(left, wins), max(0, pool.agents - 1)


@dataclass(frozen=True)
class Fleet:
    pools: Mapping[str, Pool]
    effects: Mapping[str, Normal]
    components: Components
    candidates: tuple[str, ...]
    min_tasks: int

    @staticmethod
    def build(
        agents: Sequence[AgentEvidence], candidates: Sequence[CandidateEvidence], min_tasks: int
    ) -> Fleet:
        cells = {a.agent: judged_cell(a, min_tasks) for a in agents}
        running: dict[str, list[Counts]] = {}
        for a in agents:
            running.setdefault(a.current, []).append(cells[a.agent])
        pools: dict[str, Pool] = {}
        for c in candidates:
            counts = c.recent_counts if c.recent_counts is not None else c.counts
            k = c.agents if c.agents is not None else len(running.get(c.name, ()))
            # Counts without a known runner still come from at least one agent.
            k = max(k, 1) if counts.tasks else 0
            holds: Literal["recent", "all"] = "all" if c.recent_counts is None else "recent"
            pools[c.name] = Pool(counts, k, holds, counts.tasks >= min_tasks)
        for name, own in running.items():
            if name not in pools:
                pools[name] = Pool(Counts.total(own), len(own), "cells", False)
        between = between_variance(
            [log_odds(c) for c in running_cells if c.tasks >= min_tasks]
            for running_cells in running.values()
        )
        effects = {name: effect(p.counts, p.agents, between) for name, p in pools.items()}
        pairs = []
        for a in agents:
            cell = cells[a.agent]
            if cell.tasks < min_tasks:
                continue
            for name, past in a.history.items():
                if name == a.current or past.tasks < min_tasks or name not in effects:
                    continue
                if effects[name].variance >= FLAT or effects[a.current].variance >= FLAT:
                    continue
                y_c, y_b = log_odds(cell), log_odds(past)
                e_c, e_b = effects[a.current], effects[name]
                pairs.append(
                    Normal(
                        (y_c.mean - y_b.mean) - (e_c.mean - e_b.mean),
                        y_c.variance + y_b.variance + e_c.variance + e_b.variance,
                    )
                )
        components = Components(between, interaction_variance(between, pairs))
        return Fleet(pools, effects, components, tuple(c.name for c in candidates), min_tasks)

    def effects_for(self, agent: AgentEvidence, cell: Counts) -> dict[str, Normal]:
        effects = dict(self.effects)
        pool = self.pools[agent.current]
        if pool.holds == "cells":
            own = cell
        elif pool.holds == "all":
            own = agent.current_counts
        else:
            own = agent.recent_counts or Counts()
        counts, k = _without(pool, own)
        effects[agent.current] = effect(counts, k, self.components.between)
        return effects


@dataclass(frozen=True)
class Verdict:
    agent: str
    from_behavior: str
    to_behavior: str
    z: float  # the weaker analysis's standardized gain: the ranking key
    probability: float
    reason: str


def judge(agent: AgentEvidence, fleet: Fleet, confidence: float) -> Verdict | None:
    """The candidate this agent should switch to, if one is better with `confidence` under
    both analyses; the best expected rate among those that are."""
    current = agent.current
    cell = judged_cell(agent, fleet.min_tasks)
    effects = fleet.effects_for(agent, cell)
    targets = [
        name
        for name in fleet.candidates
        if name != current and fleet.pools[name].eligible and effects[name].variance < FLAT
    ]
    if not targets:
        return None
    own = {current: log_odds(cell)}
    now_only = agent_posterior(
        {name: effects[name] for name in (current, *targets)}, own, fleet.components
    )
    past = {
        name: log_odds(counts)
        for name, counts in sorted(agent.history.items())
        if name != current and counts.tasks > 0 and name in effects
    }
    keys = dict.fromkeys((current, *targets, *past))
    with_history = agent_posterior(
        {name: effects[name] for name in keys}, {**own, **past}, fleet.components
    )
    needed = _STANDARD.inv_cdf(confidence)
    best: tuple[float, str, float, Posterior] | None = None
    for name in targets:
        weaker, z = min(
            ((p, _z(p.difference(name, current))) for p in (now_only, with_history)),
            key=lambda pz: pz[1],
        )
        if z < needed:
            continue
        rate = with_history.means[name]
        if best is None or rate > best[0]:
            best = (rate, name, z, weaker)
    if best is None:
        return None
    _, target, z, weaker = best
    probability = _STANDARD.cdf(z)
    reason = _reason(agent, cell, target, weaker, fleet.pools[target].counts, probability, needed)
    return Verdict(agent.agent, current, target, z, probability, reason)


def _z(d: Normal) -> float:
    return d.mean / d.sd


def _reason(
    agent: AgentEvidence,
    cell: Counts,
    target: str,
    posterior: Posterior,
    fleet: Counts,
    probability: float,
    z: float,
) -> str:
    mine, theirs = posterior.theta(agent.current), posterior.theta(target)
    upper = expit(mine.mean + z * mine.sd)
    lower = expit(theirs.mean - z * theirs.sd)
    # The bounds are one-sided at the policy's confidence; the decision is on the difference,
    # which is tighter (the agent's skill is common to both), so they may overlap.
    sign = "<" if upper < lower else "vs"
    shown = "P(better)>0.999" if probability >= 0.9995 else f"P(better)={probability:.3f}"
    return (
        f"{agent.current} {cell.rate:.2f} (n={cell.tasks}, upper {upper:.2f}) {sign} "
        f"{target} {expit(theirs.mean):.2f} for this agent (lower {lower:.2f}), {shown}; "
        f"{target} fleet {fleet.rate:.2f} (n={fleet.tasks})"
    )


__all__ = ["Fleet", "Verdict", "judge", "judged_cell"]
