"""BehaviorPolicy's decision rule: which agents of a role to switch to which behavior, and why.

The controller gathers the evidence (registry counts), calls `recommend`, and in Auto mode
turns the result into Policy grants; in Recommend mode it only shows it. The rule
(docs/policy.md): an agent is switched from its current behavior c to a candidate b when,
in a hierarchical model of agent skill + behavior effect + interaction
(`policy_model`), P(this agent does better on b than on c) >= confidence, both

- on the current evidence alone (its own recent counts on c; each behavior's recent fleet
  counts), so a stale history cannot send it back to a behavior that has since degraded, and
- with its own history on other behaviors added, so a behavior that already failed this
  agent, or a fleet average its own record contradicts, does not win.

On top of the rule: `min_tasks` on the current assignment before an agent is judged, a
per-agent `cooldown` between Policy switches, and a role-wide budget per cooldown window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agent_registry.decisions.evidence import Counts
from agent_registry.decisions.policy_beta import jeffreys_interval
from agent_registry.decisions.policy_fleet import Fleet
from agent_registry.decisions.policy_judge import Verdict, judge


@dataclass(frozen=True)
class PolicySettings:
    min_tasks: int = 50
    confidence: float = 0.95
    cooldown_seconds: float = 600.0
    max_switch_fraction: float = 0.25
    # What AgentEvidence.recent_counts and CandidateEvidence.recent_counts should span (the
    # rule does not read the clock for it; the controller differences its snapshots of the
    # cumulative counts, policy_windows). Long enough for min_tasks at ordinary task rates,
    # short enough that a behavior that degrades shows it within a few cooldowns.
    window_seconds: float = 1200.0

    def __post_init__(self) -> None:
        if isinstance(self.min_tasks, bool) or not isinstance(self.min_tasks, int):
            raise ValueError(f"min_tasks must be an integer, got {self.min_tasks!r}")
        if self.min_tasks < 1:
            raise ValueError(f"min_tasks must be >= 1, got {self.min_tasks}")
        # Below 1/2, "better with this probability" would allow switching to a likely worse one.
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")
        if not (math.isfinite(self.cooldown_seconds) and self.cooldown_seconds >= 0.0):
            raise ValueError(
                f"cooldown_seconds must be finite and >= 0, got {self.cooldown_seconds}"
            )
        if not 0.0 <= self.max_switch_fraction <= 1.0:
            raise ValueError(
                f"max_switch_fraction must be in [0, 1], got {self.max_switch_fraction}"
            )
        if not (math.isfinite(self.window_seconds) and self.window_seconds > 0.0):
            raise ValueError(f"window_seconds must be finite and > 0, got {self.window_seconds}")


@dataclass(frozen=True)
class AgentEvidence:
    agent: str  # "<namespace>/<name>"
    current: str  # behavior name it runs now
    current_counts: Counts  # its current assignment's counts (own script only)
    # Per behavior name, this agent's counts on it (any revision); may be empty. The entry of
    # the current behavior is not read (it may or may not include the open assignment).
    history: Mapping[str, Counts] = field(default_factory=dict)
    last_switch_at: float | None = None  # epoch seconds of its last Policy switch
    # The current assignment's counts within the last settings.window_seconds; None: not
    # given, and current_counts stands in (a behavior that degrades is then seen later).
    recent_counts: Counts | None = None


@dataclass(frozen=True)
class CandidateEvidence:
    name: str
    revision: int
    counts: Counts  # fleet-wide counts of this revision over the role's agents
    # The same over its last window of use: since (its last task - settings.window_seconds),
    # which for a behavior agents run now is the last window_seconds. None: not given.
    recent_counts: Counts | None = None
    # Distinct agents behind recent_counts (or counts when that is None); None: the judged
    # agents currently running it are counted instead.
    agents: int | None = None


@dataclass(frozen=True)
class Recommendation:
    agent: str
    from_behavior: str
    to_behavior: str
    probability: float  # posterior P(candidate better than current for this agent)
    reason: str  # e.g. "quick 0.43 (n=104, upper 0.52) < balanced 0.97 (lower 0.95) ..."


def switch_budget(settings: PolicySettings, role_agents: int) -> int:
    """Policy switches allowed in the role per cooldown window: floor(fraction * agents),
    but at least one when the fraction is above 0, so a role smaller than 1 / fraction is not
    frozen (a 3-agent role at 0.25 may switch one agent per window)."""
    if role_agents <= 0 or settings.max_switch_fraction <= 0.0:
        return 0
    # The epsilon keeps 0.29 * 100 = 28.999999999999996 from losing a switch to rounding.
    return max(1, math.floor(settings.max_switch_fraction * role_agents + 1e-9))


def recommend(
    agents: Sequence[AgentEvidence],
    candidates: Sequence[CandidateEvidence],
    *,
    settings: PolicySettings,
    now: float,
    switches_in_window: int,
    role_agents: int,
) -> tuple[Recommendation, ...]:
    """The switches to make now, strongest evidence first, at most the remaining budget
    `switch_budget - switches_in_window`. Deterministic: the input order does not matter,
    ties go to the agent name. Recommend mode calls it the same way and does not act."""
    _validate(agents, candidates, now, switches_in_window, role_agents)
    remaining = switch_budget(settings, role_agents) - switches_in_window
    if remaining <= 0 or not candidates:
        return ()
    ordered = sorted(agents, key=lambda a: a.agent)
    fleet = Fleet.build(ordered, sorted(candidates, key=lambda c: c.name), settings.min_tasks)
    verdicts: list[Verdict] = []
    for agent in ordered:
        if agent.current_counts.tasks < settings.min_tasks:
            continue
        if agent.last_switch_at is not None and now - agent.last_switch_at < (
            settings.cooldown_seconds
        ):
            continue
        verdict = judge(agent, fleet, settings.confidence)
        if verdict is not None:
            verdicts.append(verdict)
    verdicts.sort(key=lambda v: (-v.z, v.agent))
    return tuple(
        Recommendation(v.agent, v.from_behavior, v.to_behavior, v.probability, v.reason)
        for v in verdicts[:remaining]
    )


def candidate_interval(counts: Counts, confidence: float) -> tuple[float, float]:
    """Equal-tailed Jeffreys interval of a candidate's fleet rate, for its status."""
    return jeffreys_interval(counts, confidence)


def _validate(
    agents: Sequence[AgentEvidence],
    candidates: Sequence[CandidateEvidence],
    now: float,
    switches_in_window: int,
    role_agents: int,
) -> None:
    if not math.isfinite(now):
        raise ValueError(f"now must be finite, got {now}")
    if switches_in_window < 0:
        raise ValueError(f"switches_in_window must be >= 0, got {switches_in_window}")
    if role_agents < len(agents):
        raise ValueError(f"role_agents ({role_agents}) is below the {len(agents)} agents judged")
    names = [a.agent for a in agents]
    if len(set(names)) != len(names):
        raise ValueError("an agent appears twice in the evidence")
    for a in agents:
        if not a.agent or not a.current:
            raise ValueError(f"agent evidence needs an agent and a current behavior: {a!r}")
        if a.last_switch_at is not None and not math.isfinite(a.last_switch_at):
            raise ValueError(f"{a.agent}: last_switch_at must be finite")
    behaviors = [c.name for c in candidates]
    if len(set(behaviors)) != len(behaviors):
        raise ValueError("a candidate appears twice")
    for c in candidates:
        if not c.name:
            raise ValueError("a candidate needs a name")
        if c.agents is not None and c.agents < 0:
            raise ValueError(f"candidate {c.name}: agents must be >= 0, got {c.agents}")


__all__ = [
    "AgentEvidence",
    "CandidateEvidence",
    "PolicySettings",
    "Recommendation",
    "candidate_interval",
    "recommend",
    "switch_budget",
]
