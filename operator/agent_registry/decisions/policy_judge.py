"""Judging one agent for BehaviorPolicy: both analyses, the choice of target, the reason."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

from agent_registry.decisions.evidence import Counts
from agent_registry.decisions.policy_fleet import Fleet, judged_cell, own_cells
from agent_registry.decisions.policy_model import (
    FLAT,
    Normal,
    Posterior,
    agent_posterior,
    expit,
    log_odds,
)

if TYPE_CHECKING:
    from agent_registry.decisions.policy import AgentEvidence

_STANDARD = NormalDist()


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
    recorded = fleet.record_effects_for(agent)
    past = {
        name: seen
        for name, seen in own_cells(agent, cell, fleet.changed).items()
        if name in recorded
    }
    keys = dict.fromkeys((current, *targets, *past))
    with_history = agent_posterior(
        {name: recorded[name] for name in keys}, {**own, **past}, fleet.components
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


__all__ = ["Verdict", "judge"]
