"""Canary rollouts of behavior revisions: the step logic, pure.

A rollout's state lives in `AgentBehavior.status.rollout` (and, through the decisions it
causes, in the registry's assignment history), never in memory, so an operator killed
mid-rollout resumes at the same step. Three pure entry points, each from status to status:

- `on_new_revision`: reconcile stored a new valid revision. The first revision is promoted at
  once (there is nothing to compare it with); a later one starts a rollout from the revision
  the agents run, or replaces the canary of a rollout in progress (its counts restart).
- `next_rollout_state`: the rollout timer's tick. Manual abort and promote (annotations) come
  first, then the analysis verdict (abort at any step the canary runs at; advance a setWeight
  step), then pause durations. Every new step opens a new analysis window.
- `serving`: what the agents of the behavior run according to its status, for the arbiter.

The registry keeps lifetime counts per (agent, script). A step's window is those counts minus
a baseline recorded in status when the window opened, over a fixed set of agents: another set
(an agent joined or left) cannot be subtracted from the old baseline, so it opens a new window
(`window`). The I/O around this is `controller.rollout_handlers`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from agent_registry.controller.conditions import Cond
from agent_registry.controller.indexes import ABORT_ANNOTATION, PROMOTE_ANNOTATION
from agent_registry.decisions.canary_analysis import CanaryVerdict
from agent_registry.decisions.evidence import Counts
from agent_registry.resources.behavior import (
    RevisionResults,
    RolloutAction,
    RolloutAnalysis,
    RolloutBaseline,
    RolloutSpec,
    RolloutStatus,
    RolloutStep,
)
from agent_registry.resources.common import parse_duration

IN_PROGRESS = frozenset({"Progressing", "Paused"})
DEFAULT_STEPS = (RolloutStep(set_weight=10), RolloutStep(set_weight=50))
DEGRADED = "Degraded"
READY = "Ready"
# Reasons of kstatus' Reconciling while a rollout is in progress; the Argo CD health check
# reads the manual pause's as Suspended (waiting for a human, not for the controller).
PROGRESSING_REASON = "RolloutProgressing"
PAUSED_REASON = "RolloutPaused"
AWAITING_PROMOTE_REASON = "RolloutAwaitingPromote"
ABORTED_REASON = "RolloutAborted"
# An annotation value that asks for nothing (kubectl annotate ...=false is a common undo).
_NO = frozenset({"false", "no", "0"})

Outcome = Literal["Promoted", "Aborted"]


@dataclass(frozen=True)
class RevisionRef:
    revision: int
    sha256: str


@dataclass(frozen=True)
class Observation:
    """The registry now, over the agents that take part in the rollout: lifetime counts of the
    stable and canary scripts, and the canary's load failures."""

    stable: Counts = field(default_factory=Counts)
    canary: Counts = field(default_factory=Counts)
    # Which agents the counts cover: the baseline is only comparable over the same ones.
    agents: str = ""
    canary_agents: int = 0
    canary_load_failures: int = 0


@dataclass(frozen=True)
class RolloutEvent:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Transition:
    """The new `status.rollout` (None: remove it) and what to do about the change."""

    rollout: dict[str, Any] | None
    events: tuple[RolloutEvent, ...] = ()
    # Annotations acted on (or found meaningless): the controller removes them.
    consumed: Mapping[str, str] = field(default_factory=dict)
    outcome: Outcome | None = None


def spec_of(spec: Mapping[str, Any]) -> RolloutSpec:
    """spec.rollout; absent (or not parseable, which the CRD schema prevents) is Immediate."""
    try:
        return RolloutSpec.model_validate(spec.get("rollout") or {})
    except ValidationError:
        return RolloutSpec()


def status_of(status: Mapping[str, Any]) -> RolloutStatus | None:
    value = status.get("rollout")
    if not value:
        return None
    try:
        return RolloutStatus.model_validate(value)
    except ValidationError:
        return None


def steps_of(spec: RolloutSpec) -> tuple[RolloutStep, ...]:
    return tuple(spec.steps) if spec.steps else DEFAULT_STEPS


def analysis_of(spec: RolloutSpec) -> RolloutAnalysis:
    return spec.analysis or RolloutAnalysis()


def describe_step(step: RolloutStep) -> str:
    if step.set_weight is not None:
        return f"setWeight {step.set_weight}"
    assert step.pause is not None
    if step.pause.duration:
        return f"pause {step.pause.duration}"
    return "pause until promoted"


def _wire(rollout: RolloutStatus) -> dict[str, Any]:
    return rollout.to_wire()


def _second(moment: datetime) -> datetime:
    # Kubernetes stores metav1.Time to the second: keep what we write comparable.
    return moment.replace(microsecond=0)


def _label(name: str, revision: int | None) -> str:
    return f"{name}@{revision}" if revision is not None else name


def _results(counts: Counts, interval: tuple[float, float] | None) -> RevisionResults:
    return RevisionResults(
        tasks=counts.tasks,
        successes=counts.successes,
        success_rate=round(counts.rate, 4),
        interval=[round(interval[0], 4), round(interval[1], 4)] if interval else None,
    )


def _baseline(observation: Observation) -> RolloutBaseline:
    return RolloutBaseline(
        stable_tasks=observation.stable.tasks,
        stable_successes=observation.stable.successes,
        canary_tasks=observation.canary.tasks,
        canary_successes=observation.canary.successes,
        agents=observation.agents,
    )


def window(rollout: RolloutStatus, observation: Observation) -> tuple[Counts, Counts, bool]:
    """(stable, canary) counts since the step's window opened, and whether the window must
    (re)open now: no baseline yet, or it covers other agents, or counts went backwards (a
    registry restored from an older backup)."""
    base = rollout.baseline
    if base is None or base.agents != observation.agents:
        return Counts(), Counts(), True
    try:
        stable = observation.stable - Counts(base.stable_tasks, base.stable_successes)
        canary = observation.canary - Counts(base.canary_tasks, base.canary_successes)
    except ValueError:
        return Counts(), Counts(), True
    return stable, canary, False


# -- the revision agents run ---------------------------------------------------------------


@dataclass(frozen=True)
class Serving:
    """What the agents of one behavior get, according to its spec and status.

    `served`: the revision outside any rollout step (what a pin without revision gets, and
    everyone after a rollout ended); None means the newest valid revision (Immediate, or a
    behavior whose status predates rollouts). `canary` is set while a rollout is in progress.
    `note` and `evidence` explain, after a rollout ended, why agents run `served`."""

    served: RevisionRef | None = None
    canary: RevisionRef | None = None
    weight: float = 0.0
    unit: Literal["Task", "Agent"] = "Task"
    step: int = 0
    note: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[Any, ...]:
        """What the agents' bundles depend on: a change re-decides them."""
        return (self.served, self.canary, self.weight, self.unit)


def _ref(revision: int | None, sha256: str | None) -> RevisionRef | None:
    if revision is None or not sha256:
        return None
    return RevisionRef(revision, sha256)


def serving(name: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> Serving:
    if spec_of(spec).strategy != "Canary":
        return Serving()
    rollout = status_of(status)
    if rollout is None:
        # Canary, but no rollout recorded: agents stay on what the status last announced
        # until reconcile records the rollout of a newer revision (in the same patch as the
        # revision), so a new script never reaches them before its rollout exists.
        return Serving(served=_ref(status.get("revision"), status.get("scriptSha256")))
    stable = _ref(rollout.stable_revision, rollout.stable_sha256)
    canary = _ref(rollout.canary_revision, rollout.canary_sha256)
    if rollout.phase in IN_PROGRESS and stable is not None and canary is not None:
        return Serving(
            served=stable,
            canary=canary,
            weight=(rollout.weight or 0) / 100,
            unit=rollout.unit or "Task",
            step=rollout.current_step or 0,
        )
    evidence: dict[str, Any] = {
        "rollout": rollout.phase,
        "stable": _label(name, rollout.stable_revision),
    }
    if rollout.phase == "Aborted" and canary is not None:
        evidence["canary"] = _label(name, rollout.canary_revision)
        evidence.update(_evidence_counts(rollout))
        note = (
            f"rollout of {_label(name, rollout.canary_revision)} aborted, back on "
            f"{_label(name, rollout.stable_revision)}: {rollout.reason or ''}"
        )
        return Serving(served=stable, note=note[:900], evidence=evidence)
    if rollout.phase == "Promoted" and rollout.canary_revision is not None:
        evidence.update(_evidence_counts(rollout))
        note = f"{_label(name, rollout.stable_revision)} promoted by its canary rollout"
        return Serving(served=stable, note=note, evidence=evidence)
    return Serving(served=stable)


def _evidence_counts(rollout: RolloutStatus) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, results in (("stableResults", rollout.stable), ("canaryResults", rollout.canary)):
        if results is not None:
            found[key] = results.to_wire()
    return found


def served_revision(status: Mapping[str, Any]) -> RevisionRef | None:
    """The revision the agents of a Canary behavior run outside a rollout step."""
    rollout = status_of(status)
    if rollout is not None:
        return _ref(rollout.stable_revision, rollout.stable_sha256)
    return _ref(status.get("revision"), status.get("scriptSha256"))


# -- entering steps ------------------------------------------------------------------------


def _enter(
    name: str,
    rollout: RolloutStatus,
    steps: tuple[RolloutStep, ...],
    index: int,
    now: datetime,
    observation: Observation,
) -> tuple[RolloutStatus, RolloutEvent]:
    """The rollout at step `index` (past steps that need no time: setWeight 0), or promoted
    after the last step (or at setWeight 100: the canary takes every task, so there is no
    stable left to compare with)."""
    weight = rollout.weight or 0
    while index < len(steps):
        step = steps[index]
        if step.set_weight is None:
            break
        weight = step.set_weight
        if weight >= 100:
            return _promoted(name, rollout, now, f"step {index + 1}: setWeight 100")
        if weight > 0:
            break
        index += 1
    if index >= len(steps):
        return _promoted(name, rollout, now, "every step passed")
    step = steps[index]
    phase = "Progressing" if step.set_weight is not None else "Paused"
    moved = rollout.model_copy(
        update={
            "phase": phase,
            "current_step": index,
            "steps": len(steps),
            "weight": weight,
            "step_started_at": _second(now),
            "pause_until": _pause_end(step, _second(now)),
            "baseline": _baseline(observation),
            "stable": _results(Counts(), None),
            "canary": _results(Counts(), None),
            "last_transition_time": _second(now),
            "reason": f"step {index + 1}/{len(steps)}: {describe_step(step)}",
        }
    )
    message = (
        f"{_label(name, rollout.canary_revision)} beside {_label(name, rollout.stable_revision)}"
        f": step {index + 1}/{len(steps)}, {describe_step(step)} (canary at {weight}%)"
    )
    return moved, RolloutEvent("RolloutPaused" if phase == "Paused" else "RolloutStep", message)


def _pause_end(step: RolloutStep, started: datetime) -> datetime | None:
    if step.pause is None or not step.pause.duration:
        return None
    return started + timedelta(seconds=parse_duration(step.pause.duration))


def _promoted(
    name: str, rollout: RolloutStatus, now: datetime, why: str
) -> tuple[RolloutStatus, RolloutEvent]:
    promoted = rollout.model_copy(
        update={
            "phase": "Promoted",
            "stable_revision": rollout.canary_revision,
            "stable_sha256": rollout.canary_sha256,
            "weight": 100,
            "current_step": rollout.steps,
            "pause_until": None,
            "baseline": None,
            "last_transition_time": _second(now),
            "reason": f"promoted: {why}",
        }
    )
    message = (
        f"{_label(name, rollout.canary_revision)} promoted (was stable: "
        f"{_label(name, rollout.stable_revision)}): {why}"
    )
    return promoted, RolloutEvent("RolloutPromoted", message)


def _aborted(
    name: str, rollout: RolloutStatus, now: datetime, why: str
) -> tuple[RolloutStatus, RolloutEvent]:
    aborted = rollout.model_copy(
        update={
            "phase": "Aborted",
            "weight": 0,
            "pause_until": None,
            "baseline": None,
            "last_transition_time": _second(now),
            "reason": f"aborted: {why}"[:4096],
        }
    )
    message = (
        f"{_label(name, rollout.canary_revision)} rolled back, every agent returns to "
        f"{_label(name, rollout.stable_revision)}: {why}"
    )
    return aborted, RolloutEvent(ABORTED_REASON, message[:1024], warning=True)


# -- a new revision -------------------------------------------------------------------------


def on_new_revision(
    name: str,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    new: RevisionRef,
    now: datetime,
) -> Transition | None:
    """What a newly stored valid revision does to the rollout; None: nothing changes (the
    same revision reconciled again, e.g. after a restart)."""
    rollout_spec = spec_of(spec)
    rollout = status_of(status)
    if rollout_spec.strategy != "Canary":
        if rollout is None:
            return None
        cancelled: tuple[RolloutEvent, ...] = ()
        if rollout.phase in IN_PROGRESS:
            cancelled = (
                RolloutEvent(
                    "RolloutCancelled",
                    f"strategy Immediate: every agent runs {_label(name, new.revision)} now",
                ),
            )
        return Transition(rollout=None, events=cancelled)
    steps = steps_of(rollout_spec)
    if rollout is not None and new.revision in (rollout.canary_revision, rollout.stable_revision):
        return None
    previous = served_revision(status)
    if previous is not None and previous.revision == new.revision:
        return None
    base = RolloutStatus(
        phase="Progressing",
        unit=rollout_spec.unit,
        canary_revision=new.revision,
        canary_sha256=new.sha256,
        steps=len(steps),
    )
    if previous is None:
        first = RolloutStatus(
            phase="Promoted",
            unit=rollout_spec.unit,
            stable_revision=new.revision,
            stable_sha256=new.sha256,
            steps=len(steps),
            current_step=len(steps),
            weight=100,
            reason="promoted: first revision, nothing to compare",
            last_transition_time=_second(now),
        )
        message = f"{_label(name, new.revision)} is the first revision: promoted at once"
        return Transition(_wire(first), (RolloutEvent("RolloutPromoted", message),))
    base = base.model_copy(
        update={"stable_revision": previous.revision, "stable_sha256": previous.sha256}
    )
    if previous.sha256 == new.sha256:
        # The same script as stable under a new number (a revert): nothing to compare.
        promoted, event = _promoted(name, base, now, "same script as stable")
        return Transition(_wire(promoted), (event,))
    replacing = rollout is not None and rollout.phase in IN_PROGRESS
    started, step_event = _enter(name, base, steps, 0, now, Observation())
    # The baseline needs the registry's counts: the first tick records it.
    started = started.model_copy(update={"baseline": None})
    if replacing:
        assert rollout is not None
        event = RolloutEvent(
            "CanaryReplaced",
            f"{_label(name, new.revision)} replaces canary "
            f"{_label(name, rollout.canary_revision)} (counts restart) beside stable "
            f"{_label(name, previous.revision)}; {step_event.message}",
        )
    else:
        event = RolloutEvent(
            "RolloutStarted",
            f"canary {_label(name, new.revision)} beside stable "
            f"{_label(name, previous.revision)}; {step_event.message}",
        )
    events = [event]
    if started.phase == "Promoted":
        events.append(step_event)
    return Transition(
        _wire(started),
        tuple(events),
        outcome="Promoted" if started.phase == "Promoted" else None,
    )


# -- a tick of the rollout timer ------------------------------------------------------------


def next_rollout_state(
    name: str,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    verdict: CanaryVerdict | None,
    now: datetime,
    annotations: Mapping[str, str],
    observation: Observation | None = None,
) -> Transition | None:
    """The rollout after one look: None when the status stays as it is.

    `verdict` is the analysis of the current window (`window`) or None when the canary runs
    nowhere (weight 0); `observation` the registry's counts it was computed from."""
    observation = observation or Observation()
    rollout = status_of(status)
    promote = annotations.get(PROMOTE_ANNOTATION)
    abort = annotations.get(ABORT_ANNOTATION)
    asked = {
        k: v for k, v in ((PROMOTE_ANNOTATION, promote), (ABORT_ANNOTATION, abort)) if v is not None
    }
    if rollout is None or rollout.phase not in IN_PROGRESS:
        if not asked:
            return None
        phase = rollout.phase if rollout is not None else "none"
        return Transition(
            rollout=_wire(rollout) if rollout is not None else None,
            events=(
                RolloutEvent(
                    "AnnotationIgnored",
                    f"no rollout in progress (phase {phase}): {', '.join(sorted(asked))} removed",
                    warning=True,
                ),
            ),
            consumed=asked,
        )
    rollout_spec = spec_of(spec)
    steps = steps_of(rollout_spec)
    stable_counts, canary_counts, reopen = window(rollout, observation)
    current = rollout.model_copy(
        update={
            "stable": _results(stable_counts, verdict.stable_interval if verdict else None),
            "canary": _results(canary_counts, verdict.canary_interval if verdict else None),
            "baseline": _baseline(observation) if reopen else rollout.baseline,
            "steps": len(steps),
        }
    )
    if verdict is not None and not reopen:
        current = current.model_copy(update={"reason": verdict.reason[:4096]})

    if abort is not None and abort.strip().lower() not in _NO:
        why = abort.strip() or "no reason given"
        aborted, event = _aborted(name, current, now, f"manual abort: {why}")
        aborted = aborted.model_copy(
            update={"last_action": RolloutAction(action="Abort", reason=why, at=_second(now))}
        )
        manual = RolloutEvent("ManualAbort", f"{ABORT_ANNOTATION}={why}: acted on", warning=True)
        return Transition(_wire(aborted), (manual, event), asked, "Aborted")
    if promote is not None and promote.strip().lower() not in _NO:
        value = promote.strip()
        action = RolloutAction(action="Promote", reason=value, at=_second(now))
        index = current.current_step or 0
        if current.phase == "Paused" and value.lower() != "full":
            moved, event = _enter(name, current, steps, index + 1, now, observation)
            why = "ends the pause"
        else:
            moved, event = _promoted(name, current, now, "manual promote")
            why = "skips the remaining steps"
        moved = moved.model_copy(update={"last_action": action})
        manual = RolloutEvent("ManualPromote", f"{PROMOTE_ANNOTATION}={value}: {why}")
        outcome: Outcome | None = "Promoted" if moved.phase == "Promoted" else None
        return Transition(_wire(moved), (manual, event), asked, outcome)
    if asked:
        # promote=false / abort=false: an undo; nothing to act on.
        consumed = Transition(
            _wire(current),
            (RolloutEvent("AnnotationIgnored", f"{', '.join(sorted(asked))}: no action"),),
            asked,
        )
        return consumed

    if verdict is not None and not reopen and verdict.action == "Abort":
        aborted, event = _aborted(name, current, now, verdict.reason)
        return Transition(_wire(aborted), (event,), outcome="Aborted")
    index = current.current_step or 0
    if index >= len(steps):  # steps were removed from the spec meanwhile
        promoted, event = _promoted(name, current, now, "every step passed")
        return Transition(_wire(promoted), (event,), outcome="Promoted")
    step = steps[index]
    advance = False
    if step.set_weight is not None:
        advance = verdict is not None and not reopen and verdict.action == "Advance"
        if reopen and current.phase == "Progressing":
            current = current.model_copy(
                update={"reason": f"step {index + 1}/{len(steps)}: analysis window opened"}
            )
    else:
        # The spec's duration, not the recorded end: Git may have changed it meanwhile.
        end = _pause_end(step, current.step_started_at or _second(now))
        current = current.model_copy(update={"pause_until": end})
        advance = end is not None and now >= end
    if advance:
        moved, event = _enter(name, current, steps, index + 1, now, observation)
        outcome = "Promoted" if moved.phase == "Promoted" else None
        return Transition(_wire(moved), (event,), outcome=outcome)
    if current == rollout:
        return None
    return Transition(_wire(current))


# -- conditions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutConditions:
    """What a rollout says in the AgentBehavior's conditions."""

    updates: tuple[Cond, ...] = ()
    remove: tuple[str, ...] = ()
    stalled: Cond | None = None
    progressing: Cond | None = None


def rollout_conditions(
    rollout_value: Mapping[str, Any] | None, *, valid: bool = True
) -> RolloutConditions:
    """Degraded (present while there is a rollout status: True once aborted), Ready, and the
    kstatus verdicts: Stalled while aborted (Git declares a script no agent runs; only a new
    commit or a manual action moves it), Reconciling while in progress. `valid`: the newest
    script validated (otherwise Ready stays the validity's, except after an abort)."""
    if not rollout_value:
        return RolloutConditions(remove=(DEGRADED,))
    try:
        rollout = RolloutStatus.model_validate(rollout_value)
    except ValidationError:
        return RolloutConditions(remove=(DEGRADED,))
    canary = rollout.canary_revision
    stable = rollout.stable_revision
    if rollout.phase == "Aborted":
        why = rollout.reason or "aborted"
        message = f"agents run stable revision {stable}; revision {canary} was rolled back: {why}"
        return RolloutConditions(
            updates=(
                Cond(DEGRADED, "True", ABORTED_REASON, message),
                Cond(READY, "False", ABORTED_REASON, message),
            ),
            stalled=Cond("Stalled", "True", ABORTED_REASON, message),
        )
    if rollout.phase == "Promoted":
        degraded = Cond(DEGRADED, "False", "RolloutPromoted", f"revision {stable} is stable")
        ready = Cond(READY, "True", "Ready", f"revision {stable} is served (promoted)")
        return RolloutConditions(updates=(degraded, ready) if valid else (degraded,))
    reason = PROGRESSING_REASON
    if rollout.phase == "Paused":
        reason = PAUSED_REASON if rollout.pause_until is not None else AWAITING_PROMOTE_REASON
    step = (rollout.current_step or 0) + 1
    message = (
        f"canary revision {canary} at {rollout.weight or 0}% beside stable revision {stable}, "
        f"step {step}/{rollout.steps or step}"
    )
    updates: tuple[Cond, ...] = (Cond(DEGRADED, "False", reason, message),)
    if valid:
        updates += (Cond(READY, "True", "Ready", message),)
    return RolloutConditions(
        updates=updates, progressing=Cond("Reconciling", "True", reason, message)
    )


def replacement_patch(old: Any, new: Any) -> Any:
    """`new` as a JSON merge patch over `old`: a merge patch merges objects key by key, so
    every key of `old` that `new` lacks is sent as null (removed), at every depth. Without it
    a replaced canary would keep the old one's baseline."""
    if not isinstance(new, Mapping) or not isinstance(old, Mapping):
        return new
    patch = {key: replacement_patch(old.get(key), value) for key, value in new.items()}
    patch.update({key: None for key in old if key not in new})
    return patch


def fingerprint(agent_ids: list[str], canary_ids: list[str]) -> str:
    """A short stable name of the agent set a window counts (and who runs the canary)."""
    text = "\n".join(sorted(agent_ids)) + "\0" + "\n".join(sorted(canary_ids))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


__all__ = [
    "DEFAULT_STEPS",
    "IN_PROGRESS",
    "Observation",
    "RevisionRef",
    "RolloutConditions",
    "RolloutEvent",
    "Serving",
    "Transition",
    "analysis_of",
    "describe_step",
    "fingerprint",
    "next_rollout_state",
    "on_new_revision",
    "replacement_patch",
    "rollout_conditions",
    "served_revision",
    "serving",
    "spec_of",
    "status_of",
    "steps_of",
    "window",
]
