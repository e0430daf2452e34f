"""The API's response bodies. Field names are the registry's (the seed's column names), so
a record projects onto its view by name; the views leave out what a client has no use for
(the Lua source, internal counters)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class AgentView(_View):
    """An agent as the registry knows it."""

    agent_id: str = Field(description='"<namespace>/<name>" of the Agent.')
    namespace: str
    name: str
    agent_role: str
    agent_name: str | None = None
    status: str = Field(description="active, paused or stopped.")
    behavior_id: uuid.UUID | None = None
    behavior_assigned_at: datetime | None = None
    loaded_sha256: str | None = Field(
        default=None, description="The script sha256 the runtime last confirmed it loaded."
    )
    loaded_at: datetime | None = None
    load_error: str | None = Field(
        default=None,
        description="The Lua error of the last script the runtime refused (it keeps running "
        "its last good one); null once a later load succeeded.",
    )
    load_error_line: int | None = None
    load_failed_sha256: str | None = Field(
        default=None, description="The sha256 of the refused script."
    )
    load_failed_at: datetime | None = None
    cycles_completed: int = 0
    tasks_completed: int = 0
    success_rate: float = 1.0
    avg_response_time_ms: float = 0.0
    consecutive_failures: int = 0
    last_task_at: datetime | None = None
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    created_by: str | None = None
    notes: str | None = None
    inserted_at: datetime | None = None
    updated_at: datetime | None = None


class AgentList(_View):
    items: list[AgentView]


class AssignmentView(_View):
    """One behavior assignment of an agent; open while unassigned_at is null. Its counters
    count only outcomes of its own script (script_sha256)."""

    id: uuid.UUID | None = None
    agent_id: str
    behavior_id: uuid.UUID
    behavior_revision: int | None = None
    script_sha256: str | None = None
    assigned_at: datetime
    assigned_by: str | None = None
    reason: str | None = None
    unassigned_at: datetime | None = None
    tasks_completed: int = 0
    success_rate: float = 1.0
    outcome_notes: str | None = None
    loaded_at: datetime | None = Field(
        default=None, description="When the agent first confirmed it loaded this script."
    )
    source: str | None = Field(
        default=None,
        description="The rule that decided it: Spec, Pin, Experiment, Policy or Rollout.",
    )
    evidence: dict[str, Any] = Field(
        default_factory=dict, description="What the decision rested on."
    )


class AssignmentList(_View):
    items: list[AssignmentView] = Field(description="Newest first (the open one, if any, first).")


class UnderperformerView(AgentView):
    """An underperforming agent, with the current assignment whose results were judged."""

    assignment: AssignmentView | None = None


class UnderperformerList(_View):
    items: list[UnderperformerView] = Field(description="Worst success rate first.")


class BehaviorView(_View):
    """A behavior (without its Lua source)."""

    id: uuid.UUID
    namespace: str
    name: str
    role_type: str
    revision: int
    script_sha256: str
    parent_behavior_id: uuid.UUID | None = None
    description: str | None = None
    inserted_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None


class Lineage(_View):
    items: list[BehaviorView] = Field(
        description="The behavior and its ancestors through parent_behavior_id."
    )


class Health(_View):
    status: str = "ok"


M = TypeVar("M", bound=BaseModel)


def project(model: type[M], record: Any, **extra: Any) -> M:
    """Build `model` from the same-named attributes (or keys) of `record`, plus `extra`.

    Missing names fall back to the model's defaults, so a registry record with more or
    fewer columns still projects onto the view.
    """
    values: dict[str, Any] = {}
    for name in model.model_fields:
        if isinstance(record, Mapping):
            if name in record:
                values[name] = record[name]
        elif hasattr(record, name):
            values[name] = getattr(record, name)
    values.update(extra)
    return model.model_validate(values)


def _agent_names(record: Any) -> dict[str, str]:
    agent_id = str(record["agent_id"] if isinstance(record, Mapping) else record.agent_id)
    namespace, _, name = agent_id.rpartition("/")
    return {"namespace": namespace, "name": name}


def agent_view(record: Any) -> AgentView:
    return project(AgentView, record, **_agent_names(record))


def underperformer_view(record: Any) -> UnderperformerView:
    assignment = getattr(record, "assignment", None)
    return project(
        UnderperformerView,
        record,
        **_agent_names(record),
        assignment=project(AssignmentView, assignment) if assignment is not None else None,
    )


__all__ = [
    "AgentList",
    "AgentView",
    "AssignmentList",
    "AssignmentView",
    "BehaviorView",
    "Health",
    "Lineage",
    "UnderperformerList",
    "UnderperformerView",
    "agent_view",
    "project",
    "underperformer_view",
]
