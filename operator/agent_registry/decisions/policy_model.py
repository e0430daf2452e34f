"""The statistical model behind BehaviorPolicy: agent skill + behavior effect + interaction.

On the log-odds scale, agent i on behavior b succeeds with theta_ib = e_b + a_i + eps_ib:
e_b is what a typical agent of the role gets on b (from the fleet's counts), a_i ~ N(0, skill)
is the agent's own level, eps_ib ~ N(0, interaction) how well b suits that agent beyond both.
Observed counts enter as empirical log-odds with their sampling variance. Everything is
Gaussian, so the posterior of one agent's thetas has a closed form (`agent_posterior`): one
shared skill term plus independent per-behavior terms, no matrix to invert.

Why this shape: an agent's low rate on its script is partly the agent (which follows it to any
behavior) and partly the script not suiting it (which does not). Comparing its raw rate with
another behavior's fleet rate would send every weak agent chasing the fleet's averages; the
model transfers only the skill part, and the interaction variance keeps "better on average"
from being read as "better for this agent" with more confidence than the fleet can support.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from agent_registry.decisions.evidence import Counts

# Prior variance of an effect nothing else informs: wide enough to be flat on any rate.
FLAT = 1.0e4
# Between-agent variance (skill + interaction) assumed before the fleet shows its own, and
# how many degrees of freedom that assumption weighs: a sd of 0.5 log-odds is about +-10
# points around 0.8, a plausible spread of agents; a handful of agents overrule it.
BETWEEN_PRIOR = 0.25
BETWEEN_PRIOR_DF = 5.0
BETWEEN_FLOOR = 0.01
# Share of that variance taken as interaction until agents that ran two behaviors show the
# real share. Half is deliberately pessimistic: it keeps the first switches to differences
# large enough to hold for most agents, and the estimate from pairs only ever relaxes it as
# fast as the pairs accumulate (PAIRS_PRIOR weight).
INTERACTION_SHARE_PRIOR = 0.5
PAIRS_PRIOR = 10.0
# No two behaviors are treated as identical for an agent to better than 0.1 log-odds: this
# floor is what stops a tie from being "won" by repeated looks at ever larger fleets.
INTERACTION_FLOOR = 0.01
SKILL_FLOOR = 1.0e-6
# A recent window replaces the whole record only when the two differ by this many standard
# errors. Judging on a sliding window at every look would chase its noise (a window that
# happens to look bad triggers the switch, and the older tasks that would have contradicted
# it are not counted), which roughly triples the harmful switches near the threshold; at 3
# a stationary agent trips it about once in 370 looks, a 0.3 drop within about 100 tasks.
CHANGE_Z = 3.0


@dataclass(frozen=True)
class Normal:
    mean: float
    variance: float

    @property
    def sd(self) -> float:
        return math.sqrt(self.variance)


def log_odds(counts: Counts) -> Normal:
    """Empirical log-odds with the +1/2 correction (finite at 0 or all successes)."""
    s = counts.successes + 0.5
    f = counts.failures + 0.5
    return Normal(math.log(s / f), 1.0 / s + 1.0 / f)


def expit(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def effect(pooled: Counts, agents: int, between: float) -> Normal:
    """A behavior's effect from its runners' pooled counts: their sampling error plus the
    chance that its `agents` runners are better or worse than the role's typical agent."""
    if pooled.tasks == 0 or agents <= 0:
        return Normal(0.0, FLAT)
    cell = log_odds(pooled)
    return Normal(cell.mean, cell.variance + between / agents)


@dataclass(frozen=True)
class Components:
    between: float  # skill + interaction: agents' spread on one behavior
    interaction: float

    @property
    def skill(self) -> float:
        return max(self.between - self.interaction, SKILL_FLOOR)


def between_variance(groups: Iterable[list[Normal]]) -> float:
    """Method of moments over the agents of each behavior (their spread minus sampling
    noise), shrunk toward the prior by BETWEEN_PRIOR_DF degrees of freedom."""
    excess = 0.0
    df = 0.0
    for cells in groups:
        k = len(cells)
        if k < 2:
            continue
        centre = sum(c.mean for c in cells) / k
        spread = sum((c.mean - centre) ** 2 for c in cells)
        excess += spread - (1.0 - 1.0 / k) * sum(c.variance for c in cells)
        df += k - 1
    estimate = (excess + BETWEEN_PRIOR_DF * BETWEEN_PRIOR) / (df + BETWEEN_PRIOR_DF)
    return max(BETWEEN_FLOOR, estimate)


@dataclass(frozen=True)
class Pair:
    """An agent seen on two behaviors: its residuals (log-odds minus the behavior's effect)
    on the one it ran before and on the one it runs now."""

    before: float
    now: float
    noise: float  # sampling and effect variance of `before`


def interaction_variance(between: float, pairs: Sequence[Pair]) -> float:
    """How much of the agents' spread is interaction, from agents seen on two behaviors.

    The part of an agent's residual that is skill follows it to the next behavior, so the
    slope of `now` on `before` is skill / (between + noise). A regression slope stays
    unbiased when the sample is selected on the regressor, and the policy selects agents on
    exactly that (it moves those who did badly before): a moment estimate of the pairs'
    differences would not be (moved agents' differences run large), and would call skill
    interaction, which is what sends weak agents chasing fleet averages.
    """
    prior_slope = 1.0 - INTERACTION_SHARE_PRIOR
    prior_weight = PAIRS_PRIOR * between
    sxx = sxy = noise = 0.0
    if len(pairs) >= 2:
        mean_before = sum(p.before for p in pairs) / len(pairs)
        mean_now = sum(p.now for p in pairs) / len(pairs)
        sxx = sum((p.before - mean_before) ** 2 for p in pairs)
        sxy = sum((p.before - mean_before) * (p.now - mean_now) for p in pairs)
        noise = sum(p.noise for p in pairs) / len(pairs)
    slope = min(1.0, max(0.0, (sxy + prior_weight * prior_slope) / (sxx + prior_weight)))
    skill = slope * (between + noise)
    return min(between, max(INTERACTION_FLOOR, between - skill))


def change_z(before: Counts, recent: Counts, min_tasks: int) -> float:
    """How many standard errors the recent rate lies above the earlier one (0 when either
    side has fewer than min_tasks)."""
    if before.tasks < min_tasks or recent.tasks < min_tasks:
        return 0.0
    a, b = log_odds(before), log_odds(recent)
    return (b.mean - a.mean) / math.sqrt(a.variance + b.variance)


def changed(before: Counts, recent: Counts, min_tasks: int) -> bool:
    """Whether the recent rate differs from the earlier one by CHANGE_Z standard errors."""
    return abs(change_z(before, recent, min_tasks)) >= CHANGE_Z


@dataclass(frozen=True)
class Posterior:
    """One agent's thetas: theta_j = mean_j + weight_j * (shared skill deviation) + own_j."""

    means: Mapping[str, float]
    variances: Mapping[str, float]
    weights: Mapping[str, float]
    shared: float  # posterior variance of the agent's skill

    def difference(self, better: str, than: str) -> Normal:
        covariance = self.weights[better] * self.weights[than] * self.shared
        return Normal(
            self.means[better] - self.means[than],
            self.variances[better] + self.variances[than] - 2.0 * covariance,
        )

    def theta(self, name: str) -> Normal:
        return Normal(self.means[name], self.variances[name])


def agent_posterior(
    effects: Mapping[str, Normal], observed: Mapping[str, Normal], components: Components
) -> Posterior:
    """Posterior of theta_j for every j in `effects`, given the agent's observed cells.

    theta_j = e_j + a + eps_j: a is shared, e_j + eps_j ~ N(e_j mean, v_j + interaction) is
    not. Given a, an observed cell informs only its own e_j + eps_j, so a's posterior is a
    precision-weighted sum and each theta is linear in a plus independent noise.
    """
    skill = components.skill
    precision = 1.0 / skill
    weighted = 0.0
    for name, seen in observed.items():
        own = effects[name].variance + components.interaction
        total = own + seen.variance
        precision += 1.0 / total
        weighted += (seen.mean - effects[name].mean) / total
    shared = 1.0 / precision
    level = weighted * shared
    means: dict[str, float] = {}
    variances: dict[str, float] = {}
    weights: dict[str, float] = {}
    for name, prior in effects.items():
        own = prior.variance + components.interaction
        cell = observed.get(name)
        if cell is None:
            means[name] = prior.mean + level
            variances[name] = shared + own
            weights[name] = 1.0
            continue
        total = own + cell.variance
        weight = cell.variance / total
        means[name] = prior.mean + (own * (cell.mean - prior.mean) + cell.variance * level) / total
        variances[name] = weight * weight * shared + own * cell.variance / total
        weights[name] = weight
    return Posterior(means, variances, weights, shared)


__all__ = [
    "FLAT",
    "Components",
    "Normal",
    "Pair",
    "Posterior",
    "agent_posterior",
    "between_variance",
    "change_z",
    "changed",
    "effect",
    "expit",
    "interaction_variance",
    "log_odds",
]
