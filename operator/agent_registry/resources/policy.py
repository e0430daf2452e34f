"""The BehaviorPolicy custom resource: switch underperforming agents of a role to a behavior
that is credibly better for them (Auto), or only say what it would do (Recommend)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from agent_registry.resources.common import (
    DURATION_PATTERN,
    Condition,
    LabelSelector,
    LocalObjectReference,
    ResourceModel,
)

KIND = "BehaviorPolicy"
PLURAL = "behaviorpolicies"
SINGULAR = "behaviorpolicy"
SHORT_NAMES = ["bp"]

# Status lists stay bounded: Kubernetes objects have a size limit (1.5 MiB in etcd).
MAX_RECOMMENDATIONS = 100
MAX_SWITCHED = 5000


class BehaviorPolicySpec(ResourceModel):
    """What the policy may do, and on how much evidence."""

    role: str = Field(
        min_length=1,
        max_length=253,
        description="The Active Agents of this role in the namespace are judged.",
    )
    selector: LabelSelector | None = Field(default=None, description="Narrows the agents.")
    candidates: list[LocalObjectReference] | None = Field(
        default=None,
        max_length=20,
        description=(
            "AgentBehaviors the policy may switch to; default every Valid AgentBehavior of the "
            "role in the namespace."
        ),
    )
    mode: Literal["Auto", "Recommend"] = Field(
        default="Auto",
        description="Auto switches agents; Recommend only says what it would do (status, Events).",
    )
    min_tasks: int = Field(
        default=50,
        ge=1,
        le=1_000_000,
        description="Tasks on an agent's current script before it is judged.",
    )
    confidence: float = Field(
        default=0.95,
        ge=0.5,
        le=0.9999,
        description="Switch only when the candidate is better with this probability.",
    )
    cooldown: str = Field(
        default="10m",
        pattern=DURATION_PATTERN,
        description="Per agent, the least time between two switches (e.g. 30s, 10m, 1h).",
    )
    max_switch_fraction: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="At most this share of the role's agents switched per cooldown window.",
    )


class CandidateStatus(ResourceModel):
    """A candidate behavior's current revision, over the role's agents."""

    name: str = Field(description="AgentBehavior name.")
    revision: int | None = Field(default=None, ge=1, description="Its current revision.")
    tasks: int = Field(default=0, ge=0, description="Tasks of that revision on the role's agents.")
    success_rate: float = Field(default=0.0, ge=0, le=1, description="Their success rate.")
    interval: list[float] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="[low, high] credible interval of the success rate at `confidence`.",
    )
    recent_tasks: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Tasks of its last window of use (the last 20 minutes while agents run it), from"
            " the controller's in-memory snapshots; absent until it has two of them."
        ),
    )
    recent_success_rate: float | None = Field(
        default=None, ge=0, le=1, description="Their success rate."
    )


class Recommendation(ResourceModel):
    """A switch the policy would make (Recommend) or made in its last evaluation (Auto)."""

    agent: str = Field(description="Agent name.")
    from_: str = Field(alias="from", description="Behavior it runs.")
    to: str = Field(description="Behavior the policy recommends.")
    reason: str = Field(max_length=1024, description="The evidence.")


class Switch(ResourceModel):
    """A switch the policy made: it stays in effect while the policy exists."""

    agent: str = Field(description="Agent name.")
    from_: str = Field(alias="from", description="Behavior it ran.")
    to: str = Field(description="Behavior it runs now.")
    at: datetime = Field(description="When.")
    reason: str = Field(max_length=1024, description="The evidence.")


class BehaviorPolicyStatus(ResourceModel):
    """What the policy saw and did; written by the operator."""

    observed_generation: int | None = Field(default=None, ge=0, description="Generation seen.")
    agents: int | None = Field(default=None, ge=0, description="Agents judged by the policy.")
    candidates: list[CandidateStatus] | None = Field(default=None, description="Candidates.")
    recommendations: list[Recommendation] | None = Field(
        default=None,
        max_length=MAX_RECOMMENDATIONS,
        description="Switches of the last evaluation (made in Auto, proposed in Recommend).",
    )
    switched: list[Switch] | None = Field(
        default=None,
        max_length=MAX_SWITCHED,
        description="Agents the policy switched, one entry per agent (its latest switch).",
    )
    switches: int | None = Field(default=None, ge=0, description="Switches made, ever.")
    last_switch_at: datetime | None = Field(default=None, description="Time of the last switch.")
    last_evaluated_at: datetime | None = Field(default=None, description="Last evaluation.")
    conditions: list[Condition] | None = Field(
        default=None,
        description="Ready (the policy could evaluate), Switching (made a switch last time).",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
