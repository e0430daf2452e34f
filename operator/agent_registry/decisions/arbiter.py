"""The arbiter: the one place that decides which script(s) an Agent runs, from what is
declared and what is known, and says why.

Precedence, first match wins, decides WHICH BEHAVIOR:

    Pin  >  Experiment  >  Policy  >  Spec

and, unless that choice fixed its revisions itself (a pin `name@3`, an experiment's arms
frozen at their start), the behavior's rollout decides WHICH REVISION(S): stable alone, or
stable plus a canary. Every rule is a pure function of its inputs; features (experiments,
policies, rollouts) compute their grants with their own pure code and hand them in here
instead of writing ConfigMaps themselves, so one function answers "what does this Agent run".

No I/O: the controller builds the inputs from its indexes and the registry, and writes the
Decision to status, the registry's assignment history and the ConfigMap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Source = Literal["Spec", "Pin", "Experiment", "Policy", "Rollout"]
SOURCES: tuple[Source, ...] = ("Pin", "Experiment", "Policy", "Spec", "Rollout")


@dataclass(frozen=True)
class Revision:
    """One stored script of a behavior."""

    behavior: str
    revision: int
    sha256: str

    def label(self) -> str:
        return f"{self.behavior}@{self.revision}"


@dataclass(frozen=True)
class Rollout:
    """A rollout in progress of a behavior: `canary` runs beside `stable`.

    unit Task: every agent of the behavior runs both, the canary drawn for `weight` of its
    tasks. unit Agent: `weight` is the share of agents that run the canary alone (chosen by a
    stable hash of the agent, so the same agents stay in the canary as the weight grows).
    """

    stable: Revision
    canary: Revision
    weight: float
    unit: Literal["Task", "Agent"] = "Task"
    step: int = 0


@dataclass(frozen=True)
class BehaviorFacts:
    """What is known of one AgentBehavior: its role and its revisions in the registry."""

    name: str
    role: str
    # The revision agents get without a rollout (the newest valid one); None: nothing valid yet.
    current: Revision | None
    # Every stored revision, by number: a pin may name an older one.
    revisions: Mapping[int, Revision] = field(default_factory=dict)
    deleted: bool = False
    rollout: Rollout | None = None

    @property
    def stable(self) -> Revision | None:
        """What an agent that takes part in no rollout runs."""
        return self.rollout.stable if self.rollout is not None else self.current


@dataclass(frozen=True)
class PinRequest:
    """`agents.singularity.dev/pin=<behavior>[@<revision>]` on the Agent."""

    behavior: str
    revision: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ScriptShare:
    """One script of the bundle and the share of tasks drawn for it."""

    revision: Revision
    weight: float


@dataclass(frozen=True)
class Grant:
    """What an experiment or a policy gives one agent. `scripts` empty: the grant names only
    the behavior, whose revision the rollout (or the current revision) then decides."""

    source: Source
    behavior: str
    reason: str
    scripts: tuple[ScriptShare, ...] = ()
    evidence: Mapping[str, Any] = field(default_factory=dict)
    # The object that made it (experiment or policy name), for Events and history.
    owner: str | None = None


@dataclass(frozen=True)
class AgentFacts:
    """One Agent as declared, with the grants computed for it."""

    namespace: str
    name: str
    role: str
    behavior_ref: str | None
    pin: PinRequest | None = None
    pin_error: str | None = None  # the annotation did not parse
    experiment: Grant | None = None
    policy: Grant | None = None


@dataclass(frozen=True)
class Problem:
    """Something declared that could not be applied: becomes a condition and an Event."""

    condition: str
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    """The effective behavior of one Agent, its source, and why.

    `scripts` is the bundle, the primary script first (the assignment's script: the one the
    agent runs, or the stable one beside a Task-unit canary). Empty when there is nothing to
    run (no behaviorRef, or its behavior has no valid revision yet).
    """

    source: Source
    reason: str
    behavior: str | None = None
    scripts: tuple[ScriptShare, ...] = ()
    evidence: Mapping[str, Any] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()
    owner: str | None = None

    @property
    def primary(self) -> Revision | None:
        return self.scripts[0].revision if self.scripts else None


PIN_CONDITION = "Pinned"


def decide(agent: AgentFacts, behaviors: Mapping[str, BehaviorFacts]) -> Decision:
    """The effective behavior of `agent`. Never raises for bad declarations: what cannot be
    applied falls through to the next rule and is reported in `problems`."""
    problems: list[Problem] = []
    pinned = _pin(agent, behaviors, problems)
    if pinned is not None:
        return pinned
    for grant in (agent.experiment, agent.policy):
        if grant is None:
            continue
        decision = _granted(grant, behaviors, problems)
        if decision is not None:
            return decision
    return _spec(agent, behaviors, problems)


def _pin(
    agent: AgentFacts, behaviors: Mapping[str, BehaviorFacts], problems: list[Problem]
) -> Decision | None:
    if agent.pin_error is not None:
        problems.append(Problem(PIN_CONDITION, "InvalidPin", agent.pin_error))
        return None
    pin = agent.pin
    if pin is None:
        return None
    facts = behaviors.get(pin.behavior)
    if facts is None or facts.deleted:
        problems.append(
            Problem(PIN_CONDITION, "UnknownBehavior", f"no AgentBehavior {pin.behavior!r}")
        )
        return None
    if facts.role != agent.role:
        problems.append(
            Problem(
                PIN_CONDITION,
                "RoleMismatch",
                f"AgentBehavior {pin.behavior} is for role {facts.role}, the agent is {agent.role}",
            )
        )
        return None
    if pin.revision is None:
        revision = facts.stable
        if revision is None:
            problems.append(
                Problem(
                    PIN_CONDITION,
                    "UnknownRevision",
                    f"AgentBehavior {pin.behavior} has no valid revision",
                )
            )
            return None
    else:
        found = facts.revisions.get(pin.revision)
        if found is None:
            known = ", ".join(str(r) for r in sorted(facts.revisions)) or "none"
            problems.append(
                Problem(
                    PIN_CONDITION,
                    "UnknownRevision",
                    f"AgentBehavior {pin.behavior} has no revision {pin.revision} (known: {known})",
                )
            )
            return None
        revision = found
    why = f"pinned to {revision.label()}"
    if pin.reason:
        why += f": {pin.reason}"
    return Decision(
        source="Pin",
        reason=why,
        behavior=pin.behavior,
        scripts=(ScriptShare(revision, 1.0),),
        evidence={"pin": f"{pin.behavior}@{pin.revision}" if pin.revision else pin.behavior},
        problems=tuple(problems),
    )


def _granted(
    grant: Grant, behaviors: Mapping[str, BehaviorFacts], problems: list[Problem]
) -> Decision | None:
    facts = behaviors.get(grant.behavior)
    if grant.scripts:
        scripts = _normalized(grant.scripts)
        if not scripts:
            return None
        return Decision(
            source=grant.source,
            reason=grant.reason,
            behavior=grant.behavior,
            scripts=scripts,
            evidence=grant.evidence,
            problems=tuple(problems),
            owner=grant.owner,
        )
    if facts is None or facts.deleted or facts.current is None:
        return None
    return _with_rollout(
        facts,
        grant.source,
        grant.reason,
        grant.evidence,
        problems,
        agent_key=None,
        owner=grant.owner,
    )


def _spec(
    agent: AgentFacts, behaviors: Mapping[str, BehaviorFacts], problems: list[Problem]
) -> Decision:
    ref = agent.behavior_ref
    if ref is None:
        return Decision(
            source="Spec", reason="spec.behaviorRef is not set", problems=tuple(problems)
        )
    facts = behaviors.get(ref)
    if facts is None or facts.current is None:
        return Decision(
            source="Spec",
            reason=f"AgentBehavior {ref} has no valid revision yet",
            behavior=ref,
            problems=tuple(problems),
        )
    return _with_rollout(
        facts,
        "Spec",
        "spec.behaviorRef",
        {},
        problems,
        agent_key=f"{agent.namespace}/{agent.name}",
    )


def _with_rollout(
    facts: BehaviorFacts,
    source: Source,
    reason: str,
    evidence: Mapping[str, Any],
    problems: list[Problem],
    *,
    agent_key: str | None,
    owner: str | None = None,
) -> Decision:
    rollout = facts.rollout
    stable = facts.stable
    assert stable is not None
    if rollout is None or rollout.weight <= 0:
        return Decision(
            source=source,
            reason=reason,
            behavior=facts.name,
            scripts=(ScriptShare(stable, 1.0),),
            evidence=evidence,
            problems=tuple(problems),
            owner=owner,
        )
    why = (
        f"canary {rollout.canary.label()} at {_percent(rollout.weight)} beside stable "
        f"{rollout.stable.label()} (step {rollout.step}; behavior from {reason})"
    )
    rollout_evidence = {
        **evidence,
        "stable": rollout.stable.label(),
        "canary": rollout.canary.label(),
        "weight": rollout.weight,
        "step": rollout.step,
    }
    if rollout.unit == "Agent":
        key = agent_key or ""
        in_canary = rollout.weight >= 1 or _bucket(key, facts.name) < rollout.weight
        chosen = rollout.canary if in_canary else rollout.stable
        return Decision(
            source="Rollout",
            reason=why + (": this agent runs the canary" if in_canary else ": this agent stays"),
            behavior=facts.name,
            scripts=(ScriptShare(chosen, 1.0),),
            evidence=rollout_evidence,
            problems=tuple(problems),
            owner=owner,
        )
    weight = min(1.0, rollout.weight)
    return Decision(
        source="Rollout",
        reason=why,
        behavior=facts.name,
        scripts=(ScriptShare(rollout.stable, 1.0 - weight), ScriptShare(rollout.canary, weight)),
        evidence=rollout_evidence,
        problems=tuple(problems),
        owner=owner,
    )


def _normalized(scripts: tuple[ScriptShare, ...]) -> tuple[ScriptShare, ...]:
    total = sum(max(0.0, s.weight) for s in scripts)
    if total <= 0:
        return ()
    return tuple(ScriptShare(s.revision, max(0.0, s.weight) / total) for s in scripts)


def _bucket(agent_key: str, salt: str) -> float:
    """A stable number in [0, 1) per agent: the same agents stay in as a weight grows."""
    digest = hashlib.sha256(f"{salt}\0{agent_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _percent(weight: float) -> str:
    return f"{weight * 100:.4g}%"


def parse_pin(value: str | None) -> tuple[PinRequest | None, str | None]:
    """The pin annotation's value as (request, None), or (None, error message)."""
    if value is None:
        return None, None
    text = value.strip()
    if not text:
        return None, None
    name, sep, rev = text.partition("@")
    name = name.strip()
    if not name:
        return None, f"pin {value!r}: expected <behavior>[@<revision>]"
    if not sep:
        return PinRequest(name), None
    if not rev.strip().isdigit() or int(rev) < 1:
        return None, f"pin {value!r}: the revision after @ must be a positive integer"
    return PinRequest(name, int(rev)), None


__all__ = [
    "PIN_CONDITION",
    "SOURCES",
    "AgentFacts",
    "BehaviorFacts",
    "Decision",
    "Grant",
    "PinRequest",
    "Problem",
    "Revision",
    "Rollout",
    "ScriptShare",
    "Source",
    "decide",
    "parse_pin",
]
