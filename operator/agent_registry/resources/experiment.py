"""The BehaviorExperiment custom resource: an A/B test between AgentBehaviors of one role on
the role's Agents, judged by a test that stays valid however often it is looked at."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from agent_registry.resources.common import (
    SHA256_PATTERN,
    Condition,
    LabelSelector,
    LocalObjectReference,
    ResourceModel,
)

KIND = "BehaviorExperiment"
PLURAL = "behaviorexperiments"
SINGULAR = "behaviorexperiment"
SHORT_NAMES = ["bx"]

MIN_ARMS = 2
MAX_ARMS = 5
# Status lists stay bounded: Kubernetes objects have a size limit (1.5 MiB in etcd). Agents
# beyond this many (those that left included) do not join.
MAX_PARTICIPANTS = 5000

Phase = Literal["Pending", "Running", "Concluded", "Inconclusive", "Aborted"]
PHASES: tuple[Phase, ...] = ("Pending", "Running", "Concluded", "Inconclusive", "Aborted")
TERMINAL_PHASES: frozenset[str] = frozenset({"Concluded", "Inconclusive", "Aborted"})


class ArmSpec(ResourceModel):
    """One arm: an AgentBehavior of the experiment's role, at its revision at the start."""

    behavior_ref: LocalObjectReference = Field(description="The AgentBehavior this arm runs.")
    weight: float | None = Field(
        default=None,
        gt=0,
        le=1000,
        description=(
            "Relative share of tasks (unit Task) or of agents (unit Agent); default equal. "
            "Give a weight to every arm or to none. With allocation Thompson these are only "
            "the starting weights."
        ),
    )


class BehaviorExperimentSpec(ResourceModel):
    """What is compared, on which agents, and when it is decided."""

    role: str = Field(
        min_length=1,
        max_length=253,
        description=(
            "The Active Agents of this role in the namespace take part, except pinned ones "
            "(agents.singularity.dev/pin) and those another experiment already runs."
        ),
    )
    selector: LabelSelector | None = Field(default=None, description="Narrows the participants.")
    arms: list[ArmSpec] = Field(
        min_length=MIN_ARMS,
        max_length=MAX_ARMS,
        description=f"{MIN_ARMS} to {MAX_ARMS} arms, distinct AgentBehaviors of the role.",
    )
    unit: Literal["Task", "Agent"] = Field(
        default="Task",
        description=(
            "Task: every participant runs all arms, one drawn per task by weight. Agent: each "
            "participant runs one arm, assigned when it joins so the arms stay balanced by "
            "weight; agents are then the units of the test."
        ),
    )
    allocation: Literal["Fixed", "Thompson"] = Field(
        default="Fixed",
        description=(
            "Fixed: the weights, checked for a sample ratio mismatch. Thompson: adaptive, the "
            "arm likely to be best gets more tasks (unit Task) or more joining agents "
            "(unit Agent); every arm keeps at least 5%."
        ),
    )
    alpha: float = Field(
        default=0.05,
        gt=0,
        le=0.5,
        description=(
            "Chance of declaring a winner among equal arms, whenever and however often the "
            "experiment is evaluated (always-valid test)."
        ),
    )
    min_tasks_per_arm: int = Field(
        default=100,
        ge=1,
        le=100_000_000,
        description="No winner before every arm has this many tasks.",
    )
    max_tasks_per_arm: int = Field(
        default=10_000,
        ge=1,
        le=100_000_000,
        description=(
            "The horizon: Inconclusive when an arm reaches it without a winner. At least "
            "minTasksPerArm."
        ),
    )
    on_conclusion: Literal["Report", "Promote"] = Field(
        default="Report",
        description=(
            "Report: the participants return to what they ran before at once. Promote: the "
            "winner stays in effect for them while this object exists."
        ),
    )


class ArmStatus(ResourceModel):
    """One arm: its revision frozen at the start, and its counts since then."""

    behavior: str = Field(description="AgentBehavior name.")
    revision: int | None = Field(
        default=None, ge=1, description="Its revision at the start (the one the arm runs)."
    )
    sha256: str | None = Field(
        default=None, pattern=SHA256_PATTERN, description="sha256 of that revision's script."
    )
    agents: int = Field(default=0, ge=0, description="Participants whose tasks count for it.")
    weight: float = Field(
        default=0.0, ge=0, le=1, description="Its share now (normalized; Thompson moves it)."
    )
    tasks: int = Field(default=0, ge=0, description="Tasks since the start.")
    successes: int = Field(default=0, ge=0, description="Successes among them.")
    success_rate: float = Field(default=0.0, ge=0, le=1, description="successes / tasks.")
    interval: list[float] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="[low, high]: always-valid 1 - alpha interval of the success rate.",
    )


class ScriptCounts(ResourceModel):
    """Outcome counts of one script on one agent."""

    sha256: str = Field(pattern=SHA256_PATTERN, description="The script.")
    tasks: int = Field(ge=0, description="Tasks.")
    successes: int = Field(ge=0, description="Successes.")


class Participant(ResourceModel):
    """An agent that takes (or took) part; its tasks count from countingSince on."""

    agent: str = Field(description="Agent name.")
    arm: int | None = Field(
        default=None, ge=0, le=MAX_ARMS - 1, description="unit Agent: index of the arm it runs."
    )
    joined_at: datetime = Field(description="When it joined.")
    counting_since: datetime | None = Field(
        default=None, description="When its tasks started to count (unset: not yet)."
    )
    baseline: list[ScriptCounts] | None = Field(
        default=None,
        max_length=MAX_ARMS,
        description=(
            "Its lifetime counts of the arms' scripts when counting began: the registry keeps "
            "lifetime counts, so these are subtracted (empty: none)."
        ),
    )
    left_at: datetime | None = Field(
        default=None, description="When it left (deleted, pinned, paused or relabelled)."
    )
    counts: list[ScriptCounts] | None = Field(
        default=None,
        max_length=MAX_ARMS,
        description="For an agent that left: its counts in the experiment, kept as they were.",
    )


class BehaviorExperimentStatus(ResourceModel):
    """The experiment as the operator runs it; written by the operator."""

    observed_generation: int | None = Field(default=None, ge=0, description="Generation seen.")
    phase: Phase | None = Field(
        default=None,
        description=(
            "Pending (not started: invalid or not yet valid arms), Running, Concluded (a "
            "winner), Inconclusive (the horizon was reached without one), Aborted (the "
            "agents.singularity.dev/abort annotation)."
        ),
    )
    started_at: datetime | None = Field(
        default=None, description="When the arms' revisions were frozen (the last start)."
    )
    concluded_at: datetime | None = Field(
        default=None, description="When it became Concluded, Inconclusive or Aborted."
    )
    restarts: int | None = Field(
        default=None,
        ge=0,
        description="Restarts while Running: a new revision of an arm, or a spec change.",
    )
    arm_names: str | None = Field(
        default=None, max_length=1300, description="The arms' behaviors, comma-separated."
    )
    arms: list[ArmStatus] | None = Field(default=None, max_length=MAX_ARMS, description="Arms.")
    tasks: int | None = Field(default=None, ge=0, description="Tasks counted, all arms.")
    winner: str | None = Field(default=None, description="The winning arm's AgentBehavior.")
    p_value: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=(
            "Always-valid p-value of the winner (while Running: of the current leader) "
            "beating every other arm, adjusted for the number of pairs."
        ),
    )
    srm_p_value: float | None = Field(
        default=None, ge=0, le=1, description="Sample ratio check (Fixed allocation)."
    )
    reason: str | None = Field(default=None, max_length=4096, description="Why, in numbers.")
    participants: list[Participant] | None = Field(
        default=None, max_length=MAX_PARTICIPANTS, description="Agents that take or took part."
    )
    last_evaluated_at: datetime | None = Field(default=None, description="Last evaluation.")
    conditions: list[Condition] | None = Field(
        default=None,
        description=(
            "Ready (False/InvalidSpec naming the field while the spec cannot run), Running, "
            "Concluded, SampleRatioMismatch (the split differs from the weights: no winner "
            "is declared)."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
