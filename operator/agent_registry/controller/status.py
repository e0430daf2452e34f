"""What an Agent's and an AgentBehavior's status should say, and the patch to get there.

Pure: the handlers and the write-back loop read the registry, build the views below, and send
the patch `status_patch` returns (nothing when nothing changed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agent_registry.controller.conditions import Cond, find, merge_conditions, timestamp
from agent_registry.controller.kstatus import kstatus_updates
from agent_registry.controller.rollouts import rollout_conditions

StatusDict = dict[str, Any]

PHASES = {"active": "Active", "paused": "Paused", "stopped": "Stopped"}

BEHAVIOR_ASSIGNED = "BehaviorAssigned"
BEHAVIOR_LOADED = "BehaviorLoaded"
READY = "Ready"
UNDERPERFORMING = "Underperforming"
VALID = "Valid"
LOAD_FAILED = "LoadFailed"
# BehaviorLoaded/BehaviorAssigned reasons that mean "in flight": kstatus' Reconciling.
IN_FLIGHT = frozenset({"NotLoaded", "ReloadPending", "AssignmentPending"})


@dataclass(frozen=True)
class AssignmentView:
    """The agent's open assignment in the registry."""

    name: str
    revision: int | None
    sha256: str | None
    assigned_at: datetime | None = None
    assigned_by: str | None = None
    reason: str | None = None
    behavior_deleted: bool = False
    source: str | None = None  # the arbiter's: Spec, Pin, Experiment, Policy, Rollout


@dataclass(frozen=True)
class AgentView:
    """What the registry knows about one agent."""

    status: str
    assignment: AssignmentView | None
    loaded_sha256: str | None = None
    loaded_at: datetime | None = None
    stats: StatusDict = field(default_factory=dict)
    load_failure: LoadFailureView | None = None
    # The open assignment's counters (the registry keeps them on the agent row).
    current_tasks: int = 0
    current_successes: int = 0


@dataclass(frozen=True)
class UnderperformingPolicy:
    """When an agent is flagged Underperforming (`agentreg run --underperforming-*`): its
    CURRENT assignment has at least `min_tasks` tasks and a success rate below `threshold`
    (the registry's list_underperforming_agents rule; an agent switched to a good behavior is
    judged on that behavior alone)."""

    threshold: float = 0.7
    min_tasks: int = 10


@dataclass(frozen=True)
class LoadFailureView:
    """The last script the agent's runtime refused (it keeps running the last good one)."""

    sha256: str
    error: str | None
    line: int | None = None


def _time(value: datetime | None) -> str | None:
    return timestamp(value) if value is not None else None


def _compact(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def stats_from_record(record: Any) -> StatusDict:
    """status.stats from a registry AgentRecord (field names of the seed)."""
    tasks = int(getattr(record, "tasks_completed", 0) or 0)
    return _compact(
        {
            "cyclesCompleted": int(getattr(record, "cycles_completed", 0) or 0),
            "tasksCompleted": tasks,
            # The seed starts success_rate at 1.0; with no task yet there is no rate to show.
            "successRate": round(float(getattr(record, "success_rate", 0.0) or 0.0), 4)
            if tasks
            else 0.0,
            "avgResponseTimeMs": round(float(getattr(record, "avg_response_time_ms", 0.0) or 0), 3),
            "consecutiveFailures": int(getattr(record, "consecutive_failures", 0) or 0),
            "lastTaskAt": _time(getattr(record, "last_task_at", None)),
            "lastSuccessAt": _time(getattr(record, "last_success_at", None)),
            "lastFailureAt": _time(getattr(record, "last_failure_at", None)),
        }
    )


def assigned_condition(behavior_ref: str | None, assignment: AssignmentView | None) -> Cond:
    if behavior_ref is None:
        return Cond(BEHAVIOR_ASSIGNED, "False", "NoBehaviorRef", "spec.behaviorRef is not set")
    if assignment is None:
        return Cond(
            BEHAVIOR_ASSIGNED,
            "False",
            "BehaviorNotAvailable",
            f"AgentBehavior {behavior_ref} has no valid revision in the registry",
        )
    if assignment.behavior_deleted:
        return Cond(
            BEHAVIOR_ASSIGNED,
            "False",
            "BehaviorDeleted",
            f"AgentBehavior {assignment.name} was deleted; the agent keeps its last script",
        )
    # Only a Spec decision must match spec.behaviorRef: a pin, an experiment or a policy
    # names another behavior on purpose (the source says which).
    if assignment.name != behavior_ref and assignment.source in (None, "Spec"):
        return Cond(
            BEHAVIOR_ASSIGNED,
            "False",
            "AssignmentPending",
            f"assigned {assignment.name}, spec asks for {behavior_ref}",
        )
    return Cond(
        BEHAVIOR_ASSIGNED,
        "True",
        "Assigned",
        f"{assignment.name} revision {assignment.revision} "
        f"({assignment.source or 'Spec'}: {assignment.reason or 'spec.behaviorRef'})",
    )


def loaded_condition(
    assignment: AssignmentView | None,
    loaded_sha256: str | None,
    failure: LoadFailureView | None = None,
) -> Cond:
    if assignment is None or assignment.sha256 is None:
        return Cond(BEHAVIOR_LOADED, "False", "NothingAssigned", "no behavior assigned")
    # The runtime refused the assigned script (and keeps running its last good one).
    refused = failure is not None and failure.sha256 == assignment.sha256
    if refused and failure is not None and loaded_sha256 != assignment.sha256:
        keeps = f"; keeps running {loaded_sha256[:12]}" if loaded_sha256 else ""
        return Cond(
            BEHAVIOR_LOADED,
            "False",
            LOAD_FAILED,
            f"runtime refused revision {assignment.revision} "
            f"({assignment.sha256[:12]}): {describe_lua_error(failure.error, failure.line)}"
            f"{keeps}",
        )
    if loaded_sha256 is None:
        return Cond(BEHAVIOR_LOADED, "False", "NotLoaded", "no runtime has confirmed a load yet")
    if loaded_sha256 != assignment.sha256:
        return Cond(
            BEHAVIOR_LOADED,
            "False",
            "ReloadPending",
            f"runtime runs {loaded_sha256[:12]}, assigned {assignment.sha256[:12]}",
        )
    return Cond(
        BEHAVIOR_LOADED, "True", "Loaded", f"runtime confirmed revision {assignment.revision}"
    )


def underperforming_policy(config: Any) -> UnderperformingPolicy:
    """From OperatorConfig's underperforming_threshold / underperforming_min_tasks."""
    default = UnderperformingPolicy()
    return UnderperformingPolicy(
        threshold=float(getattr(config, "underperforming_threshold", default.threshold)),
        min_tasks=int(getattr(config, "underperforming_min_tasks", default.min_tasks)),
    )


def underperforming_condition(phase: str, view: AgentView, policy: UnderperformingPolicy) -> Cond:
    """Informational: it never makes the agent not Ready. Messages carry numbers only when
    True, so a healthy agent's condition does not change with every batch of tasks."""
    assignment = view.assignment
    if assignment is None:
        return Cond(UNDERPERFORMING, "False", "NothingAssigned", "no behavior to judge")
    if phase != "Active":
        return Cond(UNDERPERFORMING, "False", "NotActive", f"agent is {phase.lower()}")
    min_tasks = max(1, policy.min_tasks)
    if view.current_tasks < min_tasks:
        return Cond(
            UNDERPERFORMING,
            "False",
            "TooFewTasks",
            f"fewer than {min_tasks} tasks under the current assignment",
        )
    rate = view.current_successes / view.current_tasks
    if rate < policy.threshold:
        return Cond(
            UNDERPERFORMING,
            "True",
            "LowSuccessRate",
            f"success rate {rate:.2f} over {view.current_tasks} tasks of {assignment.name} "
            f"revision {assignment.revision}, below {policy.threshold:g}",
        )
    return Cond(
        UNDERPERFORMING,
        "False",
        "SuccessRateOk",
        f"success rate of the current assignment is at least {policy.threshold:g}",
    )


def ready_condition(phase: str, assigned: Cond, loaded: Cond) -> Cond:
    if phase != "Active":
        return Cond(READY, "False", phase, f"agent is {phase.lower()}")
    for condition in (assigned, loaded):
        if not condition.is_true:
            return Cond(READY, "False", condition.reason, condition.message)
    return Cond(READY, "True", "Ready", "behavior assigned and loaded")


def desired_agent_status(
    current: StatusDict,
    *,
    behavior_ref: str | None,
    view: AgentView,
    now: datetime,
    observed_generation: int | None = None,
    generation: int | None = None,
    policy: UnderperformingPolicy = UnderperformingPolicy(),
    extra: Iterable[Cond] = (),
    remove_extra: Iterable[str] = (),
) -> StatusDict:
    """The status the agent should have. observedGeneration moves only when a handler
    reconciled the spec (it passes it); the write-back loop keeps the current one.
    `generation` (metadata.generation) makes Reconciling=True while observedGeneration lags.
    `extra` conditions come from the handler's decision (Pinned) and `remove_extra` drops
    them; the write-back loop passes neither and keeps them."""
    observed = (
        observed_generation
        if observed_generation is not None
        else current.get("observedGeneration")
    )
    phase = PHASES.get(view.status, "Active")
    assigned = assigned_condition(behavior_ref, view.assignment)
    loaded = loaded_condition(view.assignment, view.loaded_sha256, view.load_failure)
    ready = ready_condition(phase, assigned, loaded)
    underperforming = underperforming_condition(phase, view, policy)
    # A refused script needs a new one from Git: stuck. A pending assignment or reload of an
    # active agent is in flight (a paused one is not expected to move).
    stalled = loaded if loaded.reason == LOAD_FAILED else None
    progressing = None
    if phase == "Active":
        progressing = next((c for c in (assigned, loaded) if c.reason in IN_FLIGHT), None)
    kstatus, absent = kstatus_updates(
        generation=generation,
        observed_generation=observed,
        stalled=stalled,
        progressing=progressing,
    )
    behavior = None
    if view.assignment is not None:
        a = view.assignment
        behavior = _compact(
            {
                "name": a.name,
                "revision": a.revision,
                "sha256": a.sha256,
                "assignedAt": _time(a.assigned_at),
                "assignedBy": a.assigned_by,
                "source": a.source or "Spec",
                "reason": (a.reason or "")[:1024] or None,
            }
        )
    loaded_behavior = None
    if view.loaded_sha256 is not None:
        loaded_behavior = _compact(
            {"sha256": view.loaded_sha256, "loadedAt": _time(view.loaded_at)}
        )
    return {
        "observedGeneration": observed,
        "phase": phase,
        "behavior": behavior,
        "loadedBehavior": loaded_behavior,
        "stats": view.stats or None,
        "conditions": merge_conditions(
            current.get("conditions"),
            [assigned, loaded, ready, underperforming, *kstatus, *extra],
            now=now,
            observed_generation=observed,
            remove=[*absent, *remove_extra],
        ),
    }


def describe_lua_error(error: str | None, line: int | None) -> str:
    """`line 3: unexpected symbol near '}'` (Lua's own `chunk:3:` prefix folded in)."""
    text = error or "invalid script"
    if line is None:
        return text
    prefix = f":{line}: "
    if prefix in text.split("\n", 1)[0]:
        text = text.split(prefix, 1)[1]
    return f"line {line}: {text}"


def validity_condition(ok: bool, error: str | None, line: int | None) -> Cond:
    if ok:
        return Cond(VALID, "True", "ScriptValid", "script compiled and survived a dry run")
    return Cond(VALID, "False", "InvalidScript", describe_lua_error(error, line))


def behavior_ready_condition(valid: Cond, revision: int | None) -> Cond:
    if valid.is_true:
        return Cond(READY, "True", "Ready", f"revision {revision} is served")
    if revision is not None:
        return Cond(
            READY, "False", valid.reason, f"agents keep revision {revision}: {valid.message}"
        )
    return Cond(READY, "False", valid.reason, valid.message)


# `rollout=KEEP`: the status' own rollout stays (None would remove it).
KEEP: Any = object()


def desired_behavior_status(
    current: StatusDict,
    *,
    observed_generation: int | None,
    valid: Cond | None = None,
    revision: int | None = None,
    sha256: str | None = None,
    agent_count: int | None = None,
    tasks: int | None = None,
    successes: int | None = None,
    now: datetime,
    generation: int | None = None,
    rollout: StatusDict | None = KEEP,
) -> StatusDict:
    """None arguments keep what the status already says (handlers and the loop each know a
    part: validity and revision come from the handler, counts and stats from the loop).
    `generation` (metadata.generation) makes Reconciling=True while observedGeneration lags;
    Valid=False (given or already in the status) makes Stalled=True. The conditions a
    rollout implies (Degraded, Ready, Stalled, Reconciling: controller.rollouts) follow from
    `rollout` (or the status' own), so every writer derives the same ones."""
    observed = (
        observed_generation
        if observed_generation is not None
        else current.get("observedGeneration")
    )
    desired: StatusDict = {
        "observedGeneration": observed,
        "revision": revision if revision is not None else current.get("revision"),
        "scriptSha256": sha256 if sha256 is not None else current.get("scriptSha256"),
        "agentCount": agent_count if agent_count is not None else current.get("agentCount", 0),
        "stats": current.get("stats") or {"tasksCompleted": 0, "successRate": 0.0},
    }
    if tasks is not None:
        rate = round(successes / tasks, 4) if tasks and successes is not None else 0.0
        desired["stats"] = {"tasksCompleted": tasks, "successRate": rate}
    updates: list[Cond] = []
    verdict = valid
    if valid is not None:
        updates = [valid, behavior_ready_condition(valid, desired["revision"])]
    else:
        known = find(current.get("conditions"), VALID)
        if known is not None:
            verdict = Cond(
                VALID,
                known.get("status", "Unknown"),
                str(known.get("reason", "")),
                str(known.get("message", "")),
            )
    desired["rollout"] = current.get("rollout") if rollout is KEEP else rollout
    shown = rollout_conditions(desired["rollout"], valid=verdict is None or verdict.is_true)
    stalled = verdict if verdict is not None and verdict.status == "False" else shown.stalled
    kstatus, absent = kstatus_updates(
        generation=generation,
        observed_generation=observed,
        stalled=stalled,
        progressing=shown.progressing,
    )
    updates += shown.updates
    if updates or kstatus or current.get("conditions"):
        desired["conditions"] = merge_conditions(
            current.get("conditions"),
            [*updates, *kstatus],
            now=now,
            observed_generation=observed,
            remove=[*absent, *shown.remove],
        )
    else:
        desired["conditions"] = current.get("conditions")
    return desired


def status_patch(current: StatusDict, desired: StatusDict) -> StatusDict | None:
    """The top-level keys of `desired` that differ from `current` (None removes a key), or None
    when the status is already what it should be."""
    patch = {key: value for key, value in desired.items() if current.get(key) != value}
    return patch or None
