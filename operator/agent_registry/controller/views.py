"""Read the registry into the views status computation needs (controller.status)."""

from __future__ import annotations

import uuid
from typing import Any

from agent_registry.controller.status import (
    AgentView,
    AssignmentView,
    LoadFailureView,
    stats_from_record,
)
from agent_registry.registry import (
    AgentRecord,
    AssignmentRecord,
    BehaviorNotFound,
    BehaviorRecord,
    NoBehaviorAssigned,
    RegistryService,
)


async def open_assignment(registry: RegistryService, agent_id: str) -> AssignmentRecord | None:
    """The agent's current assignment, or None."""
    try:
        return await registry.current_assignment(agent_id)
    except NoBehaviorAssigned:
        return None


def assignment_view(
    assignment: AssignmentRecord, behavior: BehaviorRecord | None
) -> AssignmentView:
    return AssignmentView(
        name=behavior.name if behavior is not None else str(assignment.behavior_id),
        revision=assignment.behavior_revision,
        sha256=assignment.script_sha256,
        assigned_at=assignment.assigned_at,
        assigned_by=assignment.assigned_by,
        reason=assignment.reason,
        behavior_deleted=behavior is None or behavior.deleted_at is not None,
        source=getattr(assignment, "source", None),
    )


def load_failure_view(record: AgentRecord) -> LoadFailureView | None:
    sha256 = getattr(record, "load_failed_sha256", None)
    if sha256 is None:
        return None
    return LoadFailureView(
        sha256=sha256,
        error=getattr(record, "load_error", None),
        line=getattr(record, "load_error_line", None),
    )


def agent_view(record: AgentRecord, assignment: AssignmentView | None) -> AgentView:
    return AgentView(
        status=record.status,
        assignment=assignment,
        loaded_sha256=record.loaded_sha256,
        loaded_at=record.loaded_at,
        stats=stats_from_record(record),
        load_failure=load_failure_view(record),
        current_tasks=int(getattr(record, "current_tasks_completed", 0) or 0),
        current_successes=int(getattr(record, "current_successes", 0) or 0),
    )


class ViewReader:
    """Builds AgentViews, caching assignments by what identifies them (the loop runs often,
    assignments change rarely: one history query per change, not per tick)."""

    def __init__(self, registry: RegistryService) -> None:
        self._registry = registry
        # agent_id -> (what identifies the assignment, the assignment row)
        self._assignments: dict[str, tuple[tuple[Any, ...], Any]] = {}
        self._behaviors: dict[uuid.UUID, BehaviorRecord | None] = {}

    def forget_behaviors(self) -> None:
        """Behaviors are re-read once per tick (revision and deletion change)."""
        self._behaviors.clear()

    async def behavior(self, behavior_id: uuid.UUID) -> BehaviorRecord | None:
        if behavior_id not in self._behaviors:
            try:
                self._behaviors[behavior_id] = await self._registry.get_behavior(behavior_id)
            except BehaviorNotFound:
                self._behaviors[behavior_id] = None
        return self._behaviors[behavior_id]

    async def views(self, records: list[AgentRecord]) -> dict[str, AgentView]:
        """The views of many agents from one bulk read of their open assignments (the loop
        reads only the agents that changed, so nothing is cached per agent)."""
        assigned = [r.agent_id for r in records if r.behavior_id is not None]
        assignments = await self._registry.current_assignments(assigned) if assigned else {}
        views: dict[str, AgentView] = {}
        for record in records:
            assignment = assignments.get(record.agent_id)
            if record.behavior_id is None or assignment is None:
                views[record.agent_id] = agent_view(record, None)
                continue
            behavior = await self.behavior(record.behavior_id)
            views[record.agent_id] = agent_view(record, assignment_view(assignment, behavior))
        return views

    async def view(self, record: AgentRecord) -> AgentView:
        if record.behavior_id is None:
            return agent_view(record, None)
        behavior = await self.behavior(record.behavior_id)
        key = (
            record.behavior_id,
            record.behavior_assigned_at,
            getattr(behavior, "revision", None),
        )
        cached = self._assignments.get(record.agent_id)
        if cached is not None and cached[0] == key:
            assignment = cached[1]
        else:
            assignment = await open_assignment(self._registry, record.agent_id)
            if assignment is None:
                return agent_view(record, None)
            self._assignments[record.agent_id] = (key, assignment)
        return agent_view(record, assignment_view(assignment, behavior))
