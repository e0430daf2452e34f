"""Assignments: giving an agent a behavior's current revision (closing the open assignment
with its final counters), and reading the current assignment and the history. The
implementation behind RegistryService's assignment methods."""

from __future__ import annotations

import uuid

from sqlalchemy import insert, select, update

from agent_registry.registry.errors import BehaviorNotFound, NoBehaviorAssigned
from agent_registry.registry.models import AGENTS, ASSIGNMENTS, utcnow
from agent_registry.registry.records import AssignmentRecord, BehaviorRecord
from agent_registry.registry.rows import (
    CURRENT,
    agent_row,
    assignment_record,
    behavior_record,
    behavior_row,
    open_assignment,
    open_assignment_full,
    open_assignment_record,
)
from agent_registry.registry.stats import outcome_notes
from agent_registry.registry.transactions import Database

_A = AGENTS
_S = ASSIGNMENTS


async def assign(
    db: Database, agent_id: str, behavior_id: uuid.UUID, assigned_by: str, reason: str
) -> tuple[AssignmentRecord, bool]:
    """The open assignment, and whether this call opened it."""
    now = utcnow()
    async with db.write("assign_behavior") as conn:
        # The agent row's lock orders this against record_tasks (which updates only that
        # row): the open assignment's counters read here are final.
        agent = await agent_row(db, conn, agent_id, lock=True)
        behavior = await behavior_row(conn, behavior_id)
        if behavior.deleted_at is not None:
            raise BehaviorNotFound(behavior_id)
        current = await open_assignment(conn, agent_id)
        if (
            current is not None
            and current.behavior_id == behavior_id
            and current.behavior_revision == behavior.revision
        ):
            return open_assignment_record(current._mapping, agent._mapping), False
        if current is not None:
            notes = outcome_notes(
                tasks=agent.current_tasks_completed,
                successes=agent.current_successes,
                total_response_time_ms=agent.current_total_response_time_ms,
                timed_tasks=agent.current_timed_tasks,
                replaced_by=(
                    f"{behavior.namespace}/{behavior.name} revision {behavior.revision} "
                    f"({reason}, by {assigned_by})"
                ),
            )
            await conn.execute(
                update(_S)
                .where(_S.c.id == current.id)
                .values(
                    unassigned_at=now,
                    outcome_notes=notes,
                    **{field: agent._mapping[column] for field, column in CURRENT.items()},
                )
            )
        new_id = uuid.uuid4()
        await conn.execute(
            insert(_S).values(
                id=new_id,
                agent_id=agent_id,
                behavior_id=behavior_id,
                behavior_revision=behavior.revision,
                script_sha256=behavior.script_sha256,
                assigned_at=now,
                assigned_by=assigned_by,
                reason=reason,
            )
        )
        await conn.execute(
            update(_A)
            .where(_A.c.agent_id == agent_id)
            .values(
                behavior_id=behavior_id,
                behavior_assigned_at=now,
                updated_at=now,
                **dict.fromkeys(CURRENT.values(), 0),
            )
        )
        row = (await conn.execute(select(_S).where(_S.c.id == new_id))).one()
        return assignment_record(row), True


async def get_agent_behavior(db: Database, agent_id: str) -> BehaviorRecord:
    async with db.read("get_agent_behavior") as conn:
        agent = await agent_row(db, conn, agent_id)
        if agent.behavior_id is None:
            raise NoBehaviorAssigned(agent_id)
        return behavior_record(await behavior_row(conn, agent.behavior_id))


async def current_assignment(db: Database, agent_id: str) -> AssignmentRecord:
    async with db.read("current_assignment") as conn:
        await agent_row(db, conn, agent_id)
        record = await open_assignment_full(conn, agent_id)
        if record is None:
            raise NoBehaviorAssigned(agent_id)
        return record


async def assignment_history(db: Database, agent_id: str) -> list[AssignmentRecord]:
    async with db.read("assignment_history") as conn:
        agent = await agent_row(db, conn, agent_id)
        stmt = (
            select(_S)
            .where(_S.c.agent_id == agent_id)
            .order_by(_S.c.assigned_at.desc(), _S.c.unassigned_at.is_(None).desc())
        )
        return [
            open_assignment_record(row._mapping, agent._mapping)
            if row.unassigned_at is None
            else assignment_record(row)
            for row in await conn.execute(stmt)
        ]


__all__ = ["assign", "assignment_history", "current_assignment", "get_agent_behavior"]
