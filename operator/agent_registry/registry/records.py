"""What the registry returns: frozen pydantic records, never live ORM objects.

Field names are the seed's column names. Rates (`success_rate`, `avg_response_time_ms`) are
computed fields derived from the exact integers stored in the database (`successes`,
`tasks_completed`, `total_response_time_ms`, `timed_tasks`), so they can never disagree.
Every datetime is timezone-aware UTC.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from agent_registry.registry import stats

Status = Literal["active", "paused", "stopped"]
STATUSES: tuple[Status, ...] = ("active", "paused", "stopped")


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Counters(_Record):
    tasks_completed: int = 0
    successes: int = 0
    timed_tasks: int = 0
    total_response_time_ms: float = 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def success_rate(self) -> float:
        """successes / tasks_completed; 1.0 (the seed's default) before the first task."""
        return stats.success_rate(self.successes, self.tasks_completed)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def avg_response_time_ms(self) -> float:
        """Mean duration of the tasks that reported one; 0.0 before the first."""
        return stats.avg_response_time_ms(self.total_response_time_ms, self.timed_tasks)


class BehaviorRecord(_Record):
    id: uuid.UUID
    namespace: str
    name: str
    role_type: str
    lua_script: str
    script_sha256: str
    revision: int
    parent_behavior_id: uuid.UUID | None
    description: str | None
    inserted_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class BehaviorRevisionRecord(_Record):
    """One script a behavior has had; every revision is kept (history says what ran)."""

    behavior_id: uuid.UUID
    revision: int
    lua_script: str
    script_sha256: str
    inserted_at: datetime


class AgentRecord(_Counters):
    id: uuid.UUID
    agent_id: str
    agent_role: str
    agent_name: str | None
    behavior_id: uuid.UUID | None
    behavior_assigned_at: datetime | None
    status: Status
    cycles_completed: int
    last_task_at: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    consecutive_failures: int
    loaded_sha256: str | None
    loaded_at: datetime | None
    # The last script the runtime refused (None: no refusal since the last confirmed load).
    load_error: str | None = None
    load_error_line: int | None = None
    load_failed_sha256: str | None = None
    load_failed_at: datetime | None = None
    # The open assignment's counters (what "underperforming" is judged on; 0 without one).
    # They count only outcomes of the assignment's own script, `current_sha256`.
    current_tasks_completed: int = 0
    current_successes: int = 0
    current_sha256: str | None = None
    created_by: str | None
    notes: str | None
    inserted_at: datetime
    updated_at: datetime

    @property
    def current_success_rate(self) -> float:
        """The open assignment's success rate; 1.0 before its first task (like success_rate)."""
        return stats.success_rate(self.current_successes, self.current_tasks_completed)


class AssignmentRecord(_Counters):
    """One row of an agent's behavior history. Open while `unassigned_at` is None; the
    counters cover the tasks of this assignment's own script (`script_sha256`) reported
    while it was open: outcomes of another script, even arriving meanwhile, are not its."""

    id: uuid.UUID
    agent_id: str
    behavior_id: uuid.UUID
    behavior_revision: int
    script_sha256: str
    assigned_at: datetime
    assigned_by: str | None
    reason: str | None
    unassigned_at: datetime | None
    outcome_notes: str | None
    loaded_at: datetime | None  # first time the agent confirmed this script was loaded
    # The rule that decided it (Spec, Pin, Experiment, Policy, Rollout), None if not given.
    source: str | None = None
    # What the decision rested on (JSON); {} if nothing was given.
    evidence: dict[str, Any] = Field(default_factory=dict)

    @field_validator("evidence", mode="before")
    @classmethod
    def _no_evidence(cls, value: Any) -> Any:
        return {} if value is None else value

    @property
    def is_open(self) -> bool:
        return self.unassigned_at is None


class UnderperformingAgent(AgentRecord):
    """An agent flagged by list_underperforming_agents, with the current assignment whose
    results were judged (the agent's lifetime counters are in the inherited fields)."""

    assignment: AssignmentRecord


class LoadConfirmation(_Record):
    """Result of confirm_loaded. `new` is True the first time the current assignment's script
    is confirmed (then loaded_at - assigned_at is the reload latency)."""

    new: bool
    matches_assignment: bool
    assigned_at: datetime | None


class BehaviorSummary(_Record):
    """agent_count: agents not stopped whose current assignment is this behavior;
    tasks_completed/successes: over every assignment of this behavior, all revisions."""

    behavior_id: uuid.UUID
    agent_count: int
    tasks_completed: int
    successes: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def success_rate(self) -> float:
        return stats.success_rate(self.successes, self.tasks_completed)


@dataclass(frozen=True, slots=True)
class ScriptRef:
    """A script the registry delivers to an agent: `sha256` is behavior `behavior_id`'s
    script at `revision`."""

    behavior_id: uuid.UUID
    revision: int
    sha256: str


class Refusal(_Record):
    """An outcome record_tasks did not count: its position in the batch, the script it was
    attributed to (None: none could be), and why."""

    index: int
    sha256: str | None
    reason: str


class RecordResult(_Record):
    """What record_tasks did. `recorded`: outcomes counted now (0 for a duplicate batch);
    `refused`: the outcomes not counted, in batch order (also listed for a duplicate, as
    they would be refused again); `duplicate`: the batch id was counted before."""

    recorded: int
    refused: list[Refusal] = Field(default_factory=list)
    duplicate: bool = False


class _ScriptCounts(_Record):
    tasks: int
    successes: int
    timed_tasks: int
    total_response_time_ms: float
    first_task_at: datetime | None
    last_task_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def success_rate(self) -> float:
        """successes / tasks; 1.0 before the first task (as for agents)."""
        return stats.success_rate(self.successes, self.tasks)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def avg_response_time_ms(self) -> float:
        return stats.avg_response_time_ms(self.total_response_time_ms, self.timed_tasks)


class RevisionStatsRecord(_ScriptCounts):
    """One script summed over agents (revision_stats): `agents` is how many of the selected
    agents it was delivered to (with or without tasks)."""

    behavior_id: uuid.UUID
    revision: int
    script_sha256: str
    agents: int


class AgentRevisionStatsRecord(_ScriptCounts):
    """The exact counts of one script on one agent (every outcome of that script, whichever
    assignment was open when it arrived). `delivered_at`: when the registry first delivered
    it to the agent."""

    agent_id: str
    script_sha256: str
    behavior_id: uuid.UUID
    revision: int
    delivered_at: datetime


class ScriptCounts(NamedTuple):
    """Tasks and successes of one script on one agent, counted as AgentRevisionStatsRecord
    counts them: a plain tuple, for callers that read a whole namespace's rows at a time (a
    BehaviorPolicy's every evaluation: 30,000 rows for 10,000 agents with 3 scripts each)."""

    agent_id: str
    behavior_id: uuid.UUID
    revision: int
    script_sha256: str
    tasks: int
    successes: int


class BehaviorChanged(_Record):
    """Published to subscribe()rs when an agent's assignment changes or is hot-reloaded."""

    agent_id: str
    behavior_id: uuid.UUID
    revision: int
    script_sha256: str
    reason: str


__all__ = [
    "STATUSES",
    "AgentRecord",
    "AgentRevisionStatsRecord",
    "AssignmentRecord",
    "BehaviorChanged",
    "BehaviorRecord",
    "BehaviorRevisionRecord",
    "BehaviorSummary",
    "LoadConfirmation",
    "RecordResult",
    "Refusal",
    "RevisionStatsRecord",
    "ScriptCounts",
    "ScriptRef",
    "Status",
    "UnderperformingAgent",
]
