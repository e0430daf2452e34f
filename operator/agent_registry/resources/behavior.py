"""The AgentBehavior custom resource: a sandboxed Lua script for agents of one role."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from agent_registry.resources.common import (
    DURATION_PATTERN,
    SHA256_PATTERN,
    Condition,
    LocalObjectReference,
    ResourceModel,
)

KIND = "AgentBehavior"
PLURAL = "agentbehaviors"
SINGULAR = "agentbehavior"
SHORT_NAMES = ["agb"]

# Bounds on the per-call limits: a behavior may ask for less than the runtime's defaults or
# somewhat more, never enough to starve the agent process it runs in.
MAX_INSTRUCTIONS = 1_000_000_000
MAX_MEMORY_BYTES = 1024 * 1024 * 1024
MAX_TIMEOUT_MS = 60_000
MAX_SCRIPT_BYTES = 256 * 1024


class LuaSource(ResourceModel):
    """Where the behavior's Lua comes from."""

    script: str = Field(
        min_length=1,
        max_length=MAX_SCRIPT_BYTES,
        description=(
            "Inline Lua 5.4 source. Must define on_task(task, ctx); may define init(config) and "
            "on_reload(previous_state). A change makes a new revision and hot-reloads every "
            "agent using this behavior (or starts a canary rollout: spec.rollout)."
        ),
    )
    sample_task: dict[str, Any] | None = Field(
        default=None,
        description=(
            "A task as this behavior's agents receive it (any JSON object). Admission makes "
            "one dry call on_task(sampleTask, ctx) and refuses the script when it fails. "
            "Without it the dry call uses an invented task {id, kind, difficulty}, and its "
            "failure is only a warning: a script may read fields that task lacks."
        ),
        json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    )


class BehaviorLimits(ResourceModel):
    """Per-call limits of the sandbox; omitted fields use the runtime's defaults."""

    max_instructions: int | None = Field(
        default=None,
        ge=1000,
        le=MAX_INSTRUCTIONS,
        description="Lua VM instructions allowed per call.",
    )
    max_memory_bytes: int | None = Field(
        default=None,
        ge=64 * 1024,
        le=MAX_MEMORY_BYTES,
        description="Memory ceiling of the Lua state in bytes.",
    )
    timeout_ms: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TIMEOUT_MS,
        description="Wall-clock timeout per call in milliseconds.",
    )


class RolloutPause(ResourceModel):
    """Hold the canary at its current weight."""

    duration: str | None = Field(
        default=None,
        pattern=DURATION_PATTERN,
        description=(
            "How long to hold before the next step (e.g. 30s, 2m). Without it the rollout waits "
            "for `kubectl annotate agb NAME agents.singularity.dev/promote=true`."
        ),
    )


class RolloutStep(ResourceModel):
    """One step of a canary rollout (Argo Rollouts' vocabulary): exactly one of setWeight and
    pause."""

    # Checked by the apiserver too, so a bad step is refused at `kubectl apply` and never
    # reaches the controller.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.setWeight) != has(self.pause)",
                    "message": "a step has exactly one of setWeight and pause",
                }
            ]
        }
    )

    set_weight: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description=(
            "Percent of the canary: of each agent's tasks (unit Task) or of the agents (unit "
            "Agent). The step ends when the analysis finds the canary not worse than stable; "
            "100 promotes it."
        ),
    )
    pause: RolloutPause | None = Field(
        default=None,
        description="Hold the current weight: for `duration`, or until a manual promote.",
    )

    @model_validator(mode="after")
    def _one_action(self) -> Self:
        if (self.set_weight is None) == (self.pause is None):
            raise ValueError("a step has exactly one of setWeight and pause")
        return self


class RolloutAnalysis(ResourceModel):
    """How the canary is compared with stable at each step (always-valid sequential test)."""

    min_tasks: int = Field(
        default=200,
        ge=1,
        le=10_000_000,
        description="Canary tasks needed at a step before it may advance.",
    )
    # Inclusive bounds only: the CRD schema is OpenAPI 3.0, where exclusiveMaximum is a flag
    # and pydantic's numeric form is refused by the apiserver.
    max_regression: float = Field(
        default=0.02,
        ge=0,
        le=0.5,
        description=(
            "Tolerated drop of the success rate: abort when the canary is credibly worse than "
            "stable by more than this, advance when it is credibly not."
        ),
    )
    alpha: float = Field(
        default=0.05,
        ge=0.0001,
        le=0.5,
        description=(
            "Error rate of each decision, valid however often the step is evaluated: a fine "
            "canary is aborted, or a bad one advanced, with at most this probability."
        ),
    )


class RolloutSpec(ResourceModel):
    """How a new revision reaches the agents."""

    strategy: Literal["Canary", "Immediate"] = Field(
        default="Immediate",
        description=(
            "Immediate: every agent reloads the new revision at once. Canary: it runs beside the "
            "stable revision through `steps`, and is promoted or rolled back automatically."
        ),
    )
    unit: Literal["Task", "Agent"] = Field(
        default="Task",
        description=(
            "Task: every agent runs both revisions, the canary drawn for setWeight% of its "
            "tasks (compared on the same agents and time window). Agent: setWeight% of the "
            "agents run the canary alone."
        ),
    )
    steps: list[RolloutStep] | None = Field(
        default=None,
        max_length=32,
        description=(
            "e.g. [{setWeight: 10}, {pause: {duration: 2m}}, {setWeight: 50}, {pause: {}}]. "
            "Promoted after the last step. Default [{setWeight: 10}, {setWeight: 50}]."
        ),
    )
    analysis: RolloutAnalysis | None = Field(
        default=None, description="The canary analysis; defaults when omitted."
    )


class AgentBehaviorSpec(ResourceModel):
    """What Git declares about a behavior."""

    role_type: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-_a-z0-9]*[a-z0-9])?$",
        description="Role of the agents this behavior is written for, e.g. code_developer.",
    )
    description: str | None = Field(
        default=None, max_length=4096, description="What the behavior does, for humans."
    )
    parent_ref: LocalObjectReference | None = Field(
        default=None,
        description="The AgentBehavior this one was derived from (lineage), same namespace.",
    )
    lua: LuaSource = Field(description="The behavior's Lua source.")
    limits: BehaviorLimits | None = Field(
        default=None, description="Sandbox limits per call; defaults when omitted."
    )
    rollout: RolloutSpec | None = Field(
        default=None,
        description="How a new revision reaches the agents; absent: Immediate.",
    )


class BehaviorStats(ResourceModel):
    """Results of the agents currently assigned this behavior (from the registry)."""

    tasks_completed: int = Field(default=0, ge=0, description="Tasks completed by those agents.")
    success_rate: float = Field(
        default=0.0, ge=0, le=1, description="Successes / tasks, 0 when no tasks yet."
    )


RolloutPhase = Literal["Progressing", "Paused", "Promoted", "Aborted"]


class RevisionResults(ResourceModel):
    """One revision's results in the current step's window."""

    tasks: int = Field(default=0, ge=0, description="Tasks at this step, on the rollout's agents.")
    successes: int = Field(default=0, ge=0, description="Their successes.")
    success_rate: float = Field(default=0.0, ge=0, le=1, description="successes / tasks.")
    interval: list[float] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="[low, high] always-valid 1 - alpha interval of the success rate.",
    )


class RolloutBaseline(ResourceModel):
    """The registry's lifetime counts when the step's window opened: the step's results are
    the counts since, over the same agents."""

    stable_tasks: int = Field(default=0, ge=0, description="Stable's tasks then.")
    stable_successes: int = Field(default=0, ge=0, description="Stable's successes then.")
    canary_tasks: int = Field(default=0, ge=0, description="The canary's tasks then.")
    canary_successes: int = Field(default=0, ge=0, description="The canary's successes then.")
    agents: str = Field(
        default="",
        max_length=64,
        description="Fingerprint of the agents counted: another set opens a new window.",
    )


class RolloutAction(ResourceModel):
    """A manual promote or abort the controller acted on (its annotation is then removed)."""

    action: Literal["Promote", "Abort"] = Field(description="What was asked.")
    reason: str = Field(default="", max_length=1024, description="The annotation's value.")
    at: datetime = Field(description="When the controller acted.")


class RolloutStatus(ResourceModel):
    """The rollout of the newest revision: the source of truth of its progress (it survives
    operator restarts), written by the operator."""

    phase: RolloutPhase = Field(
        description=(
            "Progressing (at a setWeight step), Paused (at a pause step), Promoted (the canary "
            "is stable), Aborted (rolled back: agents run stableRevision)."
        )
    )
    stable_revision: int | None = Field(
        default=None,
        ge=1,
        description="The revision agents run outside the canary (after Promoted: the canary).",
    )
    canary_revision: int | None = Field(
        default=None, ge=1, description="The revision under test (the newest valid one)."
    )
    stable_sha256: str | None = Field(
        default=None, pattern=SHA256_PATTERN, description="sha256 of the stable script."
    )
    canary_sha256: str | None = Field(
        default=None, pattern=SHA256_PATTERN, description="sha256 of the canary script."
    )
    unit: Literal["Task", "Agent"] | None = Field(default=None, description="spec.rollout.unit.")
    current_step: int | None = Field(
        default=None, ge=0, description="Index into spec.rollout.steps."
    )
    steps: int | None = Field(default=None, ge=0, description="Number of steps.")
    step_started_at: datetime | None = Field(
        default=None, description="When the current step (and its analysis window) began."
    )
    pause_until: datetime | None = Field(
        default=None,
        description="At a timed pause: when it ends. Paused without it: waiting for a promote.",
    )
    weight: int | None = Field(default=None, ge=0, le=100, description="Canary percent now.")
    stable: RevisionResults | None = Field(default=None, description="Stable at this step.")
    canary: RevisionResults | None = Field(default=None, description="The canary at this step.")
    baseline: RolloutBaseline | None = Field(
        default=None, description="Lifetime counts when the step's window opened."
    )
    reason: str | None = Field(
        default=None, max_length=4096, description="The last verdict, or why the phase changed."
    )
    last_transition_time: datetime | None = Field(
        default=None, description="When the phase or the step last changed."
    )
    last_action: RolloutAction | None = Field(
        default=None, description="The last manual promote or abort."
    )


class AgentBehaviorStatus(ResourceModel):
    """What the operator observed and decided; never written by users."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the status was computed from."
    )
    revision: int | None = Field(
        default=None,
        ge=1,
        description="Registry revision of the last valid script (a new script makes a new one).",
    )
    script_sha256: str | None = Field(
        default=None,
        pattern=SHA256_PATTERN,
        description="sha256 of the last valid script, as agents report it when loaded.",
    )
    agent_count: int | None = Field(
        default=None, ge=0, description="Agents currently assigned this behavior."
    )
    stats: BehaviorStats | None = Field(
        default=None, description="Aggregate results of the agents using it."
    )
    rollout: RolloutStatus | None = Field(
        default=None, description="The canary rollout of the newest revision (spec.rollout)."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        description=(
            "Valid (the script loads; reason ValidWithWarnings when its dry call failed on "
            "the invented task, see spec.lua.sampleTask), Ready, Degraded (True when "
            "a rollout was aborted: Git declares a script no agent runs), and kstatus' "
            "Reconciling (a rollout in progress) and Stalled."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
