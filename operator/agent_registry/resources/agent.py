"""The Agent custom resource: one agent, the behavior it should run, and how it does."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from agent_registry.resources.common import (
    NAME_PATTERN,
    SHA256_PATTERN,
    Condition,
    LocalObjectReference,
    ResourceModel,
)

KIND = "Agent"
PLURAL = "agents"
SINGULAR = "agent"
SHORT_NAMES = ["ag"]

Phase = Literal["Active", "Paused", "Stopped"]


class AgentSpec(ResourceModel):
    """What Git declares about an agent. The operator never writes it."""

    role: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-_a-z0-9]*[a-z0-9])?$",
        description="Role of the agent, e.g. code_developer; immutable.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "spec.role is immutable"},
            ]
        },
    )
    display_name: str | None = Field(
        default=None, max_length=256, description="Human-readable name."
    )
    behavior_ref: LocalObjectReference | None = Field(
        default=None,
        description="The AgentBehavior (same namespace) this agent runs.",
    )
    paused: bool = Field(
        default=False,
        description="Paused agents stay registered (status paused) but should take no tasks.",
    )
    notes: str | None = Field(default=None, max_length=4096, description="Free-form notes.")
    service_account_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=NAME_PATTERN,
        description=(
            "The ServiceAccount whose token alone may report for the agent; the Deployment's "
            "pods also run as it. Unset: spec.template.spec.serviceAccountName, else the "
            "ServiceAccount named like the Agent (the operator's --report-auth=namespace "
            "accepts any ServiceAccount of the namespace instead)."
        ),
    )
    template: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Optional pod template (core/v1 PodTemplateSpec). When set, the operator runs the "
            "agent as a Deployment with its behavior ConfigMap mounted at /etc/agent-behavior."
        ),
        json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    )


BehaviorSource = Literal["Spec", "Pin", "Experiment", "Policy", "Rollout"]


class AssignedBehavior(ResourceModel):
    """The behavior the operator assigned, with the reason (the registry's assignment)."""

    name: str = Field(description="AgentBehavior name.")
    revision: int | None = Field(default=None, ge=1, description="Behavior revision assigned.")
    sha256: str | None = Field(
        default=None, pattern=SHA256_PATTERN, description="sha256 of the assigned script."
    )
    assigned_at: datetime | None = Field(default=None, description="When it was assigned.")
    assigned_by: str | None = Field(
        default=None, max_length=256, description="Who assigned it (the operator's identity)."
    )
    source: BehaviorSource | None = Field(
        default=None,
        description=(
            "What decided it, by precedence: Pin (the agents.singularity.dev/pin annotation), "
            "Experiment, Policy, Spec (spec.behaviorRef); Rollout when a canary rollout of the "
            "behavior decided the revision."
        ),
    )
    reason: str | None = Field(
        default=None,
        max_length=1024,
        description="Why, with the evidence the decision rests on.",
    )


class LoadedBehaviorStatus(ResourceModel):
    """What the agent's runtime confirmed it has loaded."""

    sha256: str = Field(pattern=SHA256_PATTERN, description="sha256 of the loaded script.")
    loaded_at: datetime | None = Field(default=None, description="When the runtime loaded it.")


class AgentStats(ResourceModel):
    """Task results reported by the agent's runtime (the registry's counters)."""

    cycles_completed: int = Field(default=0, ge=0, description="Work cycles completed.")
    tasks_completed: int = Field(default=0, ge=0, description="Tasks completed.")
    success_rate: float = Field(
        default=0.0, ge=0, le=1, description="Successes / tasks, 0 when no tasks yet."
    )
    avg_response_time_ms: float = Field(default=0.0, ge=0, description="Mean task duration.")
    consecutive_failures: int = Field(default=0, ge=0, description="Failures since last success.")
    last_task_at: datetime | None = Field(default=None, description="Last task finished.")
    last_success_at: datetime | None = Field(default=None, description="Last success.")
    last_failure_at: datetime | None = Field(default=None, description="Last failure.")


class AgentStatus(ResourceModel):
    """What the operator observed and decided; never written by users."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the status was computed from."
    )
    phase: Phase | None = Field(default=None, description="Active, Paused or Stopped.")
    behavior: AssignedBehavior | None = Field(
        default=None, description="The behavior assigned in the registry."
    )
    loaded_behavior: LoadedBehaviorStatus | None = Field(
        default=None, description="The behavior the runtime confirmed it loaded."
    )
    stats: AgentStats | None = Field(default=None, description="Task results.")
    conditions: list[Condition] | None = Field(
        default=None,
        description=(
            "BehaviorAssigned, BehaviorLoaded, Ready, Underperforming, Pinned (while the pin "
            "annotation is set: True when applied, False with the reason when not), and "
            "kstatus' Reconciling and Stalled."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
