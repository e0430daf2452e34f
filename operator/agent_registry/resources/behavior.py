"""The AgentBehavior custom resource: a sandboxed Lua script for agents of one role."""

from __future__ import annotations

from pydantic import Field

from agent_registry.resources.common import (
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
            "agent using this behavior."
        ),
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


class BehaviorStats(ResourceModel):
    """Results of the agents currently assigned this behavior (from the registry)."""

    tasks_completed: int = Field(default=0, ge=0, description="Tasks completed by those agents.")
    success_rate: float = Field(
        default=0.0, ge=0, le=1, description="Successes / tasks, 0 when no tasks yet."
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
    conditions: list[Condition] | None = Field(
        default=None,
        description="Valid (the script compiled and survived a dry run) and Ready.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
