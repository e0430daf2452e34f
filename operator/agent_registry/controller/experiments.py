"""BehaviorExperiment: run an A/B test between behaviors on a role's agents, judge it on a
timer, and hand the arms to the arbiter as grants.

The shape follows BehaviorPolicy: a kopf index of the experiments, a timer that evaluates
each one from two bulk registry reads (the namespace's behaviors, the participants' per-script
counts) and writes status (the source of truth: it survives restarts), an event handler that
re-decides the agents whose grant changed, and `experiment_grant`, which the arbiter's inputs
are built with. The statistics are `decisions.experiment_analysis` (always-valid, so judging
on every tick does not inflate false positives).

Rules this module implements (docs/experiments.md):

- An arm is its behavior's revision at the start (frozen in status.arms). A new revision of
  an arm's behavior, or a spec change, RESTARTS the whole experiment: every arm's counts start
  again from zero at the new revisions. Restarting one arm alone would compare windows of
  different lengths and, with Fixed allocation, break the split check at once.
- The registry keeps lifetime counts per (agent, script). A participant's tasks count from
  the first evaluation that sees it run the experiment's scripts (its status shows the
  experiment's assignment); its lifetime counts then are its baseline, subtracted from then
  on. Tasks run before (on its old script, or while the bundle was on its way) never count,
  so they can neither bias an arm nor skew the split.
- An agent that leaves (deleted, pinned, paused, relabelled, taken by an earlier-named
  experiment) keeps the counts it had, frozen in status; it does not rejoin this experiment.
"""

from __future__ import annotations

import datetime
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from agent_registry.controller.conditions import Cond, find, merge_conditions, timestamp
from agent_registry.controller.context import IndexMap, OperatorContext, context_of
from agent_registry.controller.events import post_event
from agent_registry.controller.indexes import (
    ABORT_ANNOTATION,
    PIN_ANNOTATION,
    Key,
    ObjectState,
    one,
    state_of,
)
from agent_registry.controller.policies import states_in
from agent_registry.controller.retrying import retry_on_outage
from agent_registry.controller.rollouts import serving
from agent_registry.controller.status import status_patch
from agent_registry.decisions.allocation import thompson_weights
from agent_registry.decisions.arbiter import Grant, Revision, ScriptShare
from agent_registry.decisions.evidence import Counts
from agent_registry.decisions.experiment_analysis import (
    ArmEvidence,
    ExperimentVerdict,
    analyze_experiment,
)
from agent_registry.registry import BehaviorRecord
from agent_registry.resources.experiment import (
    KIND,
    MAX_PARTICIPANTS,
    TERMINAL_PHASES,
    ArmStatus,
    BehaviorExperimentSpec,
    BehaviorExperimentStatus,
    Participant,
    Phase,
    ScriptCounts,
)

logger = logging.getLogger(__name__)

READY = "Ready"
RUNNING = "Running"
CONCLUDED = "Concluded"
SAMPLE_RATIO_MISMATCH = "SampleRatioMismatch"

# Thompson: every arm keeps this share, and the weights in status move only in steps of at
# least WEIGHT_STEP: each move re-renders every participant's bundle.
THOMPSON_FLOOR = 0.05
THOMPSON_DRAWS = 2000
WEIGHT_STEP = 0.05

# Keys the evaluation may have to remove from status (a merge patch removes a key set to null).
_REMOVABLE = (
    "startedAt",
    "concludedAt",
    "arms",
    "tasks",
    "winner",
    "pValue",
    "srmPValue",
    "reason",
    "participants",
)
_MAX_NAMES_IN_EVENT = 20


def experiment_states(body: Mapping[str, Any], **_: Any) -> dict[Key, ObjectState]:
    state = state_of(KIND, body)
    return {(state.namespace, state.name): state}


def reason_prefix(experiment: str) -> str:
    """How an experiment's grants start their reason: the assignment's reason (shown in the
    Agent's status) is how an evaluation recognises that the agent runs this experiment."""
    return f"BehaviorExperiment {experiment}: "


# ---------------------------------------------------------------------------------------
# Validation: shared by the webhook (behaviors from the index) and the evaluation.


@dataclass(frozen=True)
class BehaviorInfo:
    """One arm's AgentBehavior as far as the experiment cares."""

    name: str
    role: str | None  # spec.roleType; None: no such AgentBehavior in the namespace
    current: Revision | None = None  # the registry's current valid revision


def _location(loc: Iterable[int | str]) -> str:
    text = "spec"
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def parse_spec(spec: Mapping[str, Any]) -> tuple[BehaviorExperimentSpec | None, list[str]]:
    try:
        return BehaviorExperimentSpec.model_validate(dict(spec)), []
    except ValidationError as error:
        return None, [f"{_location(e['loc'])}: {e['msg']}" for e in error.errors()]


def spec_problems(
    spec: BehaviorExperimentSpec,
    behaviors: Mapping[str, BehaviorInfo],
    *,
    need_revisions: bool,
) -> list[str]:
    """What keeps the experiment from running, each message naming the field. The webhook
    passes `need_revisions=False`: a behavior whose first script is still being validated
    may be declared together with the experiment."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for index, arm in enumerate(spec.arms):
        name = arm.behavior_ref.name
        where = f"spec.arms[{index}].behaviorRef.name"
        if name in seen:
            problems.append(f"{where}: AgentBehavior {name} is already arm {seen[name]}")
            continue
        seen[name] = index
        info = behaviors.get(name)
        if info is None or info.role is None:
            problems.append(f"{where}: no AgentBehavior {name} in the namespace")
        elif info.role != spec.role:
            problems.append(
                f"{where}: AgentBehavior {name} is for role {info.role}, "
                f"the experiment for role {spec.role}"
            )
        elif need_revisions and info.current is None:
            problems.append(f"{where}: AgentBehavior {name} has no valid revision yet")
    weighted = [arm.weight is not None for arm in spec.arms]
    if any(weighted) and not all(weighted):
        missing = weighted.index(False)
        problems.append(
            f"spec.arms[{missing}].weight: give a weight to every arm or to none "
            "(none: equal weights)"
        )
    if spec.max_tasks_per_arm < spec.min_tasks_per_arm:
        problems.append(
            f"spec.maxTasksPerArm: {spec.max_tasks_per_arm} is below minTasksPerArm "
            f"{spec.min_tasks_per_arm}"
        )
    return problems


def declared_behaviors(
    behavior_states: IndexMap, namespace: str, names: Iterable[str]
) -> dict[str, BehaviorInfo]:
    """The arms' AgentBehaviors as declared (kopf's index): existence and role."""
    found: dict[str, BehaviorInfo] = {}
    for name in names:
        state = one(behavior_states, (namespace, name))
        role = state.spec.get("roleType") if isinstance(state, ObjectState) else None
        found[name] = BehaviorInfo(name, str(role) if role is not None else None)
    return found


def spec_weights(spec: BehaviorExperimentSpec) -> list[float]:
    raw = [arm.weight if arm.weight is not None else 1.0 for arm in spec.arms]
    total = sum(raw)
    return [w / total for w in raw]


# ---------------------------------------------------------------------------------------
# Participation and grants (pure).


def eligible(agent: ObjectState, spec: BehaviorExperimentSpec) -> bool:
    """May take part: the role, the selector, Active, and no pin annotation (a pinned agent
    runs its pin, so its tasks would say nothing about the arms)."""
    if agent.spec.get("role") != spec.role:
        return False
    if spec.selector is not None and not spec.selector.matches(dict(agent.labels)):
        return False
    if agent.annotations.get(PIN_ANNOTATION, "").strip():
        return False
    if agent.spec.get("paused"):
        return False
    return (agent.status.get("phase") or "Active") == "Active"


def _participants(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [p for p in status.get("participants") or [] if isinstance(p, dict)]


def _taking_part(experiment: ObjectState) -> dict[str, dict[str, Any]]:
    """Agent -> its status entry while it takes part (the first one without `leftAt`)."""

    def build(state: ObjectState) -> dict[str, dict[str, Any]]:
        entries: dict[str, dict[str, Any]] = {}
        for p in _participants(state.status):
            if not p.get("leftAt"):
                entries.setdefault(str(p.get("agent")), p)
        return entries

    return experiment.derived("taking part", build)


def _frozen_arms(status: Mapping[str, Any]) -> list[tuple[Revision, float]] | None:
    """The arms' frozen revisions and current weights, or None if any arm has none."""
    arms: list[tuple[Revision, float]] = []
    for arm in status.get("arms") or []:
        if not isinstance(arm, dict):
            return None
        revision, sha = arm.get("revision"), arm.get("sha256")
        if revision is None or not sha:
            return None
        arms.append((Revision(str(arm["behavior"]), int(revision), str(sha)), float(arm["weight"])))
    return arms or None


def grant_of(experiment: ObjectState, agent: str) -> Grant | None:
    """What `experiment` gives `agent` now, from its status alone: the arms while Running
    (all of them by weight for unit Task, the agent's own for unit Agent), the winner when
    Concluded with Promote, nothing otherwise (the agent returns to what it had)."""
    status = experiment.status
    phase = status.get("phase")
    if phase not in ("Running", "Concluded"):
        return None
    entry = _taking_part(experiment).get(agent)
    arms = _frozen_arms(status)
    if entry is None or arms is None:
        return None
    unit = experiment.spec.get("unit") or "Task"
    labels = [revision.label() for revision, _ in arms]
    evidence: dict[str, Any] = {"experiment": experiment.name, "arms": labels, "unit": unit}
    prefix = reason_prefix(experiment.name)
    if phase == "Concluded":
        winner = status.get("winner")
        if experiment.spec.get("onConclusion") != "Promote" or not winner:
            return None
        chosen = next((revision for revision, _ in arms if revision.behavior == winner), None)
        if chosen is None:
            return None
        p_value = status.get("pValue")
        return Grant(
            source="Experiment",
            behavior=chosen.behavior,
            reason=f"{prefix}winner {chosen.label()} promoted (p={p_value})",
            scripts=(ScriptShare(chosen, 1.0),),
            evidence={**evidence, "winner": chosen.label(), "pValue": p_value},
            owner=experiment.name,
        )
    if unit == "Agent":
        index = entry.get("arm")
        if not isinstance(index, int) or not 0 <= index < len(arms):
            return None
        revision = arms[index][0]
        return Grant(
            source="Experiment",
            behavior=revision.behavior,
            reason=f"{prefix}arm {revision.label()} of {', '.join(labels)} (unit Agent)",
            scripts=(ScriptShare(revision, 1.0),),
            evidence={**evidence, "arm": revision.label()},
            owner=experiment.name,
        )
    return Grant(
        source="Experiment",
        behavior=arms[0][0].behavior,
        reason=f"{prefix}arms {', '.join(labels)} (unit Task: one drawn per task by weight)",
        scripts=tuple(ScriptShare(revision, weight) for revision, weight in arms),
        evidence=evidence,
        owner=experiment.name,
    )


def _active(experiments: IndexMap, namespace: str) -> list[ObjectState]:
    return sorted(states_in(experiments, namespace), key=lambda e: e.name)


def experiment_grant(agent: ObjectState, experiments: IndexMap) -> Grant | None:
    """The experiment grant for `agent`, if any: the first experiment by name that lists it
    (two experiments cannot both run one agent; the later one lets it go)."""
    role = agent.spec.get("role")
    for experiment in _active(experiments, agent.namespace):
        if experiment.spec.get("role") != role:
            continue
        grant = grant_of(experiment, agent.name)
        if grant is not None:
            return grant
    return None


GrantKey = tuple[str, tuple[tuple[str, float], ...]]


def grant_keys(experiment: ObjectState) -> dict[str, GrantKey]:
    """Per agent, what its grant from `experiment` is (to find the agents whose grant a
    status change changed: only those are re-decided). Computed once per snapshot (every
    other experiment's evaluation asks, through claims); not to be changed by callers."""

    def build(state: ObjectState) -> dict[str, GrantKey]:
        keys: dict[str, GrantKey] = {}
        for entry in _participants(state.status):
            name = str(entry.get("agent"))
            grant = grant_of(state, name)
            if grant is not None:
                keys[name] = (
                    grant.reason,
                    tuple((s.revision.sha256, round(s.weight, 6)) for s in grant.scripts),
                )
        return keys

    return experiment.derived("grant keys", build)


def claims(experiments: IndexMap, namespace: str, exclude: str) -> dict[str, str]:
    """Agent -> the other experiment that has a grant for it (in name order: the first one
    wins, as in experiment_grant)."""
    found: dict[str, str] = {}
    for experiment in _active(experiments, namespace):
        if experiment.name == exclude:
            continue
        for name in grant_keys(experiment):
            found.setdefault(name, experiment.name)
    return found


def delivered(agent: ObjectState, experiment: str, sha256: str) -> bool:
    """The agent's status shows this experiment's assignment of `sha256` (the bundle's
    primary script): the operator applied the bundle, so its tasks may count from now on."""
    shown = agent.status.get("behavior") or {}
    return (
        shown.get("source") == "Experiment"
        and str(shown.get("reason") or "").startswith(reason_prefix(experiment))
        and shown.get("sha256") == sha256
    )


def balanced_arm(counts: Sequence[int], weights: Sequence[float]) -> int:
    """The arm a joining agent gets (unit Agent): the one furthest below its share."""
    return min(range(len(counts)), key=lambda i: ((counts[i] + 1) / weights[i], i))


# ---------------------------------------------------------------------------------------
# One evaluation (pure): inputs in, the new status and the Events out.


@dataclass(frozen=True)
class Note:
    """An Event to post about the experiment."""

    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Inputs:
    experiment: ObjectState
    now: datetime.datetime
    agents: Sequence[ObjectState]  # the namespace's Agents
    behaviors: Mapping[str, BehaviorInfo]
    # Lifetime counts per (agent name, script sha256), for the participants and candidates.
    stats: Mapping[tuple[str, str], Counts] = field(default_factory=dict)
    # Agent -> another experiment that runs it.
    claimed: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    status: dict[str, Any]
    notes: tuple[Note, ...] = ()
    consumed_abort: bool = False


def _parse_status(status: Mapping[str, Any]) -> BehaviorExperimentStatus:
    try:
        return BehaviorExperimentStatus.model_validate(dict(status))
    except ValidationError:
        logger.warning("unreadable BehaviorExperiment status, starting from scratch")
        return BehaviorExperimentStatus()


def _difference(now: Counts | None, before: Counts | None) -> Counts:
    """now - before, never negative (a registry that lost rows must not crash the loop)."""
    now = now or Counts()
    before = before or Counts()
    tasks = max(0, now.tasks - before.tasks)
    return Counts(tasks, min(tasks, max(0, now.successes - before.successes)))


def _as_map(items: Iterable[ScriptCounts] | None) -> dict[str, Counts]:
    return {c.sha256: Counts(c.tasks, c.successes) for c in items or ()}


def _as_list(counts: Mapping[str, Counts]) -> list[ScriptCounts]:
    return [
        ScriptCounts(sha256=sha, tasks=c.tasks, successes=c.successes)
        for sha, c in counts.items()
        if c.tasks
    ]


def _short(p: float | None) -> float | None:
    return None if p is None else float(f"{p:.4g}")


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_IN_EVENT])
    more = len(names) - _MAX_NAMES_IN_EVENT
    return shown + (f" and {more} more" if more > 0 else "")


class _Run:
    """The working state of one evaluation of a valid experiment."""

    def __init__(self, inputs: Inputs, spec: BehaviorExperimentSpec) -> None:
        self.inputs = inputs
        self.spec = spec
        self.now = inputs.now
        self.stamp = timestamp(inputs.now)
        self.notes: list[Note] = []

    def arm_shas(self, arms: Sequence[ArmStatus], participant: Participant) -> list[str]:
        """The scripts whose tasks count for this participant."""
        if self.spec.unit == "Agent":
            if participant.arm is None or participant.arm >= len(arms):
                return []
            return [str(arms[participant.arm].sha256)]
        return [str(arm.sha256) for arm in arms]

    def lifetime(self, agent: str, sha: str) -> Counts | None:
        return self.inputs.stats.get((agent, sha))

    def window(self, arms: Sequence[ArmStatus], participant: Participant) -> dict[str, Counts]:
        """The participant's counts per script since it began to count."""
        if participant.left_at is not None:
            return _as_map(participant.counts)
        if participant.counting_since is None:
            return {}
        baseline = _as_map(participant.baseline)
        return {
            sha: _difference(self.lifetime(participant.agent, sha), baseline.get(sha))
            for sha in self.arm_shas(arms, participant)
        }


def advance(inputs: Inputs) -> Step:
    """One evaluation: abort, validation, start or restart, membership, counts, verdict."""
    experiment = inputs.experiment
    current = _parse_status(experiment.status)
    phase = current.phase or "Pending"
    abort = experiment.annotations.get(ABORT_ANNOTATION)
    if abort is not None:
        return _aborted(inputs, current, phase, abort.strip())
    if phase in TERMINAL_PHASES:
        kept = {k: v for k, v in experiment.status.items() if k != "lastEvaluatedAt"}
        return Step({**kept, "observedGeneration": experiment.generation})
    spec, problems = parse_spec(experiment.spec)
    if spec is not None:
        problems += spec_problems(spec, inputs.behaviors, need_revisions=True)
    if spec is None or problems:
        return _invalid(inputs, current, phase, spec, problems)
    return _running(inputs, current, phase, spec)


def _base(current: BehaviorExperimentStatus) -> dict[str, Any]:
    wire = current.to_wire()
    wire.pop("lastEvaluatedAt", None)
    return wire


def _conditions(
    inputs: Inputs,
    *,
    ready: Cond,
    running: Cond,
    concluded: Cond,
    srm: Cond,
) -> list[dict[str, Any]]:
    return merge_conditions(
        inputs.experiment.status.get("conditions"),
        [ready, running, concluded, srm],
        now=inputs.now,
        observed_generation=inputs.experiment.generation,
    )


def _aborted(inputs: Inputs, current: BehaviorExperimentStatus, phase: str, why: str) -> Step:
    status = {**{k: None for k in _REMOVABLE}, **_base(current)}
    if phase == "Aborted":
        return Step(
            status,
            (Note("AbortIgnored", "already Aborted; the annotation was removed"),),
            consumed_abort=True,
        )
    reason = f"aborted by the {ABORT_ANNOTATION} annotation: {why or '(no reason given)'}"
    if phase != "Pending":
        reason += f" (was {phase}: {current.reason or ''})"
    reason = reason[:4096]
    condition = find(inputs.experiment.status.get("conditions"), SAMPLE_RATIO_MISMATCH)
    srm_status = condition.get("status") if condition else "False"
    status.update(
        phase="Aborted",
        concludedAt=timestamp(inputs.now),
        reason=reason,
        observedGeneration=inputs.experiment.generation,
        conditions=_conditions(
            inputs,
            ready=Cond(READY, "True", "Aborted", "the experiment was aborted"),
            running=Cond(RUNNING, "False", "Aborted", reason),
            concluded=Cond(CONCLUDED, "False", "Aborted", reason),
            srm=Cond(
                SAMPLE_RATIO_MISMATCH,
                "True" if srm_status == "True" else "False",
                "Aborted",
                "no longer checked: the experiment was aborted",
            ),
        ),
    )
    participants = [p for p in current.participants or [] if p.left_at is None]
    return Step(
        status,
        (
            Note(
                "Aborted",
                f"{reason}; {len(participants)} participant(s) return to what they had",
            ),
        ),
        consumed_abort=True,
    )


def _invalid(
    inputs: Inputs,
    current: BehaviorExperimentStatus,
    phase: str,
    spec: BehaviorExperimentSpec | None,
    problems: list[str],
) -> Step:
    """Pending: the spec cannot run (webhook off, or a behavior missing or not valid yet).
    No grants: the participants of a run that turned invalid return to what they had."""
    message = "; ".join(problems)[:4096]
    before = find(inputs.experiment.status.get("conditions"), READY)
    notes: list[Note] = []
    if before is None or before.get("reason") != "InvalidSpec" or before.get("message") != message:
        notes.append(Note("InvalidSpec", message, warning=True))
    if phase == "Running":
        notes.append(Note("Stopped", "the spec cannot run any more; it starts over once it can"))
    arm_names = ",".join(a.behavior_ref.name for a in spec.arms) if spec else None
    status: dict[str, Any] = {k: None for k in _REMOVABLE}
    status.update(
        observedGeneration=inputs.experiment.generation,
        phase="Pending",
        restarts=current.restarts or 0,
        armNames=arm_names,
        reason=message,
        conditions=_conditions(
            inputs,
            ready=Cond(READY, "False", "InvalidSpec", message),
            running=Cond(RUNNING, "False", "Pending", "waiting for a valid spec"),
            concluded=Cond(CONCLUDED, "False", "Pending", "not started"),
            srm=Cond(SAMPLE_RATIO_MISMATCH, "False", "Pending", "not started"),
        ),
    )
    if arm_names is None:
        status.pop("armNames")
    return Step(status, tuple(notes))


def _running(
    inputs: Inputs, current: BehaviorExperimentStatus, phase: str, spec: BehaviorExperimentSpec
) -> Step:
    experiment = inputs.experiment
    run = _Run(inputs, spec)
    revisions = [inputs.behaviors[a.behavior_ref.name].current for a in spec.arms]
    assert all(r is not None for r in revisions)
    wanted = [r for r in revisions if r is not None]
    arms = list(current.arms or [])
    participants = list(current.participants or [])
    started_at = current.started_at
    restarts = current.restarts or 0
    fresh: set[str] = set()  # participants (re)set in this evaluation: no delivery check yet

    restart: str | None = None
    keep_arms_of_agents = True
    if phase == "Running":
        frozen = [Revision(a.behavior, a.revision or 0, a.sha256 or "") for a in arms]
        if current.observed_generation != experiment.generation:
            restart = f"the spec changed (generation {experiment.generation})"
            keep_arms_of_agents = False
        elif len(frozen) != len(wanted):
            restart = "the arms changed"
            keep_arms_of_agents = False
        else:
            moved = [
                f"AgentBehavior {new.behavior} revision {old.revision} -> {new.revision}"
                for old, new in zip(frozen, wanted, strict=True)
                if old != new
            ]
            if moved:
                restart = "; ".join(moved)
    if phase != "Running" or restart is not None:
        weights = spec_weights(spec)
        arms = [
            ArmStatus(behavior=r.behavior, revision=r.revision, sha256=r.sha256, weight=round(w, 6))
            for r, w in zip(wanted, weights, strict=True)
        ]
        started_at = run.now.replace(microsecond=0)
        if restart is None:
            participants = []
            run.notes.append(
                Note("Started", f"arms {', '.join(r.label() for r in wanted)} (unit {spec.unit})")
            )
        else:
            restarts += 1
            # Counts of different revisions are never mixed: everyone starts counting again.
            participants = [
                p.model_copy(
                    update={
                        "counting_since": None,
                        "baseline": None,
                        "arm": p.arm if keep_arms_of_agents else None,
                    }
                )
                for p in participants
                if p.left_at is None
            ]
            fresh = {p.agent for p in participants}
            run.notes.append(
                Note(
                    "Restarted",
                    f"{restart}: every arm's counts start again at "
                    f"{', '.join(r.label() for r in wanted)}",
                )
            )

    participants = _membership(run, arms, participants, fresh)
    return _judge(run, current, arms, participants, started_at, restarts)


def _membership(
    run: _Run,
    arms: list[ArmStatus],
    participants: list[Participant],
    fresh: set[str],
) -> list[Participant]:
    """Leaves, joins, arm assignment (unit Agent) and the start of counting."""
    inputs, spec = run.inputs, run.spec
    name = inputs.experiment.name
    by_name = {a.name: a for a in inputs.agents}
    kept: list[Participant] = []
    left: list[str] = []
    for p in participants:
        if p.left_at is not None:
            kept.append(p)
            continue
        agent = by_name.get(p.agent)
        other = inputs.claimed.get(p.agent)
        if agent is None or not eligible(agent, spec) or (other is not None and other < name):
            counts = run.window(arms, p) if p.counting_since is not None else None
            kept.append(
                p.model_copy(
                    update={
                        "left_at": run.now.replace(microsecond=0),
                        "counts": _as_list(counts or {}) or None,
                    }
                )
            )
            left.append(p.agent)
        else:
            kept.append(p)
    listed = {p.agent for p in kept}
    joining = sorted(
        a.name
        for a in inputs.agents
        if a.name not in listed and a.name not in inputs.claimed and eligible(a, spec)
    )[: max(0, MAX_PARTICIPANTS - len(kept))]
    kept += [Participant(agent=n, joined_at=run.now.replace(microsecond=0)) for n in joining]
    fresh = fresh | set(joining)
    if spec.unit == "Agent":
        kept = _assign_arms(kept, [a.weight for a in arms])
    counted: list[Participant] = []
    for p in kept:
        if p.left_at is None and p.counting_since is None and p.agent not in fresh:
            primary = run.arm_shas(arms, p)
            agent = by_name.get(p.agent)
            if primary and agent is not None and delivered(agent, name, primary[0]):
                baseline = {
                    sha: c for sha in primary if (c := run.lifetime(p.agent, sha)) is not None
                }
                p = p.model_copy(
                    update={
                        "counting_since": run.now.replace(microsecond=0),
                        "baseline": _as_list(baseline) or None,
                    }
                )
        counted.append(p)
    if joining:
        run.notes.append(Note("AgentsJoined", f"{len(joining)} joined: {_names(joining)}"))
    if left:
        run.notes.append(Note("AgentsLeft", f"{len(left)} left: {_names(left)}"))
    return counted


def _assign_arms(participants: list[Participant], weights: Sequence[float]) -> list[Participant]:
    """Agents without an arm get the one furthest below its share, in name order: stable
    (recorded in status) and balanced by weight among the agents taking part now."""
    counts = [0] * len(weights)
    for p in participants:
        if p.left_at is None and p.arm is not None and p.arm < len(weights):
            counts[p.arm] += 1
    result: list[Participant] = []
    for p in participants:
        if p.left_at is None and (p.arm is None or p.arm >= len(weights)):
            arm = balanced_arm(counts, weights)
            counts[arm] += 1
            p = p.model_copy(update={"arm": arm})
        result.append(p)
    return result


def _judge(
    run: _Run,
    current: BehaviorExperimentStatus,
    arms: list[ArmStatus],
    participants: list[Participant],
    started_at: datetime.datetime | None,
    restarts: int,
) -> Step:
    inputs, spec = run.inputs, run.spec
    per_agent: list[list[Counts]] = [[] for _ in arms]
    for p in participants:
        if p.left_at is None and p.counting_since is None:
            continue
        if p.left_at is not None and not p.counts:
            continue
        window = run.window(arms, p)
        for index, arm in enumerate(arms):
            if spec.unit == "Agent" and p.arm != index:
                continue
            per_agent[index].append(window.get(str(arm.sha256), Counts()))
    totals = [Counts.total(items) for items in per_agent]
    verdict = analyze_experiment(
        [
            ArmEvidence(
                counts=totals[i],
                per_agent=tuple(per_agent[i]) if spec.unit == "Agent" else (),
                weight=arm.weight,
                name=arm.behavior,
            )
            for i, arm in enumerate(arms)
        ],
        alpha=spec.alpha,
        min_tasks_per_arm=spec.min_tasks_per_arm,
        max_tasks_per_arm=spec.max_tasks_per_arm,
        unit=spec.unit,
        allocation=spec.allocation,
    )
    phase: Phase = verdict.outcome
    weights = [arm.weight for arm in arms]
    if phase == "Running" and spec.allocation == "Thompson":
        weights = _thompson(inputs.experiment.uid, totals, weights)
    active = [p for p in participants if p.left_at is None]
    new_arms = [
        arm.model_copy(
            update={
                "agents": (
                    sum(1 for p in active if p.arm == i)
                    if spec.unit == "Agent"
                    else sum(1 for p in active if p.counting_since is not None)
                ),
                "weight": weights[i],
                "tasks": totals[i].tasks,
                "successes": totals[i].successes,
                "success_rate": round(totals[i].rate, 4),
                "interval": [round(x, 4) for x in verdict.intervals[i]],
            }
        )
        for i, arm in enumerate(arms)
    ]
    winner = arms[verdict.winner].behavior if verdict.winner is not None else None
    concluded_at = run.now.replace(microsecond=0) if phase != "Running" else None
    _verdict_notes(run, phase, verdict, winner, len(active))
    conditions = _conditions(
        inputs,
        ready=Cond(READY, "True", "Valid", f"arms {', '.join(_label(a) for a in arms)}"),
        running=Cond(RUNNING, "True", "Running", verdict.reason)
        if phase == "Running"
        else Cond(RUNNING, "False", phase, verdict.reason),
        concluded=Cond(CONCLUDED, "True", "WinnerFound", verdict.reason)
        if phase == "Concluded"
        else Cond(
            CONCLUDED,
            "False",
            "Inconclusive" if phase == "Inconclusive" else "NoWinnerYet",
            verdict.reason,
        ),
        srm=_srm_condition(spec, verdict),
    )
    status = BehaviorExperimentStatus(
        observed_generation=inputs.experiment.generation,
        phase=phase,
        started_at=started_at,
        concluded_at=concluded_at,
        restarts=restarts,
        arm_names=",".join(a.behavior for a in arms),
        arms=new_arms,
        tasks=sum(t.tasks for t in totals),
        winner=winner,
        p_value=_short(verdict.p_value),
        srm_p_value=_short(verdict.srm_p_value),
        reason=verdict.reason[:4096],
        participants=participants,
    ).to_wire()
    status["conditions"] = conditions
    return Step({**{k: None for k in _REMOVABLE}, **status}, tuple(run.notes))


def _label(arm: ArmStatus) -> str:
    return f"{arm.behavior}@{arm.revision}"


def _srm_condition(spec: BehaviorExperimentSpec, verdict: ExperimentVerdict) -> Cond:
    if spec.allocation != "Fixed":
        return Cond(
            SAMPLE_RATIO_MISMATCH, "False", "NotChecked", "Thompson allocation moves the split"
        )
    if verdict.sample_ratio_mismatch:
        return Cond(SAMPLE_RATIO_MISMATCH, "True", "SampleRatioMismatch", verdict.reason)
    if verdict.srm_p_value is None:
        return Cond(SAMPLE_RATIO_MISMATCH, "False", "TooEarly", "too few units to check")
    return Cond(
        SAMPLE_RATIO_MISMATCH,
        "False",
        "SplitAsWeighted",
        f"the split matches the weights (chi-square p={_short(verdict.srm_p_value)})",
    )


def _verdict_notes(
    run: _Run,
    phase: str,
    verdict: ExperimentVerdict,
    winner: str | None,
    participants: int,
) -> None:
    if phase == "Concluded":
        then = (
            f"the winner stays in effect for {participants} participant(s) while this object exists"
            if run.spec.on_conclusion == "Promote"
            else f"{participants} participant(s) return to what they had"
        )
        run.notes.append(Note("Concluded", f"winner {winner}: {verdict.reason}; {then}"))
    elif phase == "Inconclusive":
        run.notes.append(
            Note("Inconclusive", f"{verdict.reason}; {participants} participant(s) return")
        )
    before = find(run.inputs.experiment.status.get("conditions"), SAMPLE_RATIO_MISMATCH)
    was = before is not None and before.get("status") == "True"
    if verdict.sample_ratio_mismatch and not was:
        run.notes.append(Note("SampleRatioMismatch", verdict.reason, warning=True))


def _thompson(uid: str, totals: Sequence[Counts], weights: list[float]) -> list[float]:
    """Thompson weights, seeded by the counts: the same counts give the same weights, so an
    evaluation without news writes nothing."""
    seed = f"{uid}:" + ",".join(f"{c.tasks}/{c.successes}" for c in totals)
    proposed = thompson_weights(
        totals, rng=random.Random(seed), draws=THOMPSON_DRAWS, floor=THOMPSON_FLOOR
    )
    if max(abs(p - w) for p, w in zip(proposed, weights, strict=True)) < WEIGHT_STEP:
        return weights
    return [round(p, 3) for p in proposed]


# ---------------------------------------------------------------------------------------
# kopf handlers (I/O).


async def gather_inputs(
    ctx: OperatorContext, experiment: ObjectState, now: datetime.datetime
) -> Inputs:
    """The evaluation's evidence: the declared objects from kopf's indexes, then one read of
    the namespace's behaviors and one of the participants' per-script counts."""
    assert ctx.indexes is not None, "the startup handler sets the indexes"
    indexes = ctx.indexes
    namespace = experiment.namespace
    agents = states_in(indexes.agent_states, namespace)
    phase = experiment.status.get("phase") or "Pending"
    if phase in TERMINAL_PHASES or ABORT_ANNOTATION in experiment.annotations:
        return Inputs(experiment, now, agents, {})
    spec, _ = parse_spec(experiment.spec)
    if spec is None:
        return Inputs(experiment, now, agents, {})
    names = [a.behavior_ref.name for a in spec.arms]
    declared = declared_behaviors(indexes.behavior_states, namespace, names)
    records = {
        r.name: r for r in await ctx.registry.list_behaviors(namespace=namespace) if r.name in names
    }
    behaviors = {
        name: BehaviorInfo(
            name, info.role, _served(indexes.behavior_states, experiment, records.get(name), name)
        )
        for name, info in declared.items()
    }
    claimed = claims(indexes.experiment_states, namespace, experiment.name)
    listed = {str(p.get("agent")) for p in _participants(experiment.status) if not p.get("leftAt")}
    candidates = {a.name for a in agents if eligible(a, spec)}
    ids = sorted(listed | candidates)
    stats: dict[tuple[str, str], Counts] = {}
    if ids and phase == "Running":
        shas = {str(a.get("sha256")) for a in experiment.status.get("arms") or []}
        shas |= {r.current.sha256 for r in behaviors.values() if r.current is not None}
        rows = await ctx.registry.agent_script_counts(
            namespace=namespace, agent_ids=[f"{namespace}/{name}" for name in ids]
        )
        for row in rows:
            if row.script_sha256 in shas:
                agent = row.agent_id.partition("/")[2]
                stats[(agent, row.script_sha256)] = Counts(row.tasks, row.successes)
    return Inputs(experiment, now, agents, behaviors, stats, claimed)


def _served(
    behavior_states: IndexMap,
    experiment: ObjectState,
    record: BehaviorRecord | None,
    name: str,
) -> Revision | None:
    """What an arm freezes: the revision the behavior's agents run outside any rollout step
    (a canary in progress is not the arm; its promotion is a new revision), else the
    registry's newest valid one."""
    if record is None or record.deleted_at is not None:
        return None
    state = one(behavior_states, (experiment.namespace, name))
    if isinstance(state, ObjectState):
        plan = serving(name, state.spec, state.status)
        if plan.served is not None:
            return Revision(name, plan.served.revision, plan.served.sha256)
    return Revision(name, record.revision, record.script_sha256)


@retry_on_outage
async def evaluate_experiment(
    body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any
) -> None:
    """The experiment's timer: evaluate, write the status (and Events for transitions), and
    remove a consumed abort annotation."""
    ctx = context_of(memo)
    experiment = state_of(KIND, body)
    now = datetime.datetime.now(datetime.UTC)
    step = advance(await gather_inputs(ctx, experiment, now))
    if step.consumed_abort:
        patch.metadata.annotations[ABORT_ANNOTATION] = None
    # lastEvaluatedAt is left out of the comparison: a patch only when something changed.
    changes = status_patch(experiment.status, step.status)
    if changes:
        patch.status.update(changes)
        patch.status["lastEvaluatedAt"] = timestamp(now)
    for note in step.notes:
        await post_event(
            ctx, experiment, reason=note.reason, message=note.message, warning=note.warning
        )


async def apply_experiment_grants(
    body: kopf.Body, memo: kopf.Memo, type: str | None, **_: Any
) -> None:
    """Every watch event of an experiment (its status included): re-decide the agents whose
    grant changed: joined, left, a phase that ends or promotes, Thompson weights, deletion."""
    from agent_registry.controller.agents import redecide_agents

    ctx = context_of(memo)
    experiment = state_of(KIND, body)
    key = (experiment.namespace, experiment.name)
    now_keys = {} if type == "DELETED" else grant_keys(experiment)
    before = ctx.experiment_grants.get(key, {})
    affected = {a for a in set(now_keys) | set(before) if now_keys.get(a) != before.get(a)}
    if affected and ctx.indexes is not None:
        agents = [
            a
            for a in states_in(ctx.indexes.agent_states, experiment.namespace)
            if a.name in affected
        ]
        await redecide_agents(ctx, agents)
    # Remembered only once applied: a failed re-decision is retried on the next event.
    if type == "DELETED":
        ctx.experiment_grants.pop(key, None)
    else:
        ctx.experiment_grants[key] = now_keys


__all__ = [
    "BehaviorInfo",
    "Inputs",
    "Note",
    "Step",
    "advance",
    "apply_experiment_grants",
    "balanced_arm",
    "claims",
    "declared_behaviors",
    "delivered",
    "eligible",
    "evaluate_experiment",
    "experiment_grant",
    "experiment_states",
    "gather_inputs",
    "grant_keys",
    "grant_of",
    "parse_spec",
    "reason_prefix",
    "spec_problems",
    "spec_weights",
]
