"""Reading the registry's rows: fetching an agent, a behavior or an open assignment (raising
the typed not-found errors), and turning rows into the frozen records of records.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection

from agent_registry.registry.errors import AgentNotFound, BehaviorNotFound
from agent_registry.registry.models import AGENTS, ASSIGNMENTS, BEHAVIORS
from agent_registry.registry.records import (
    AgentRecord,
    AssignmentRecord,
    BehaviorRecord,
    UnderperformingAgent,
)
from agent_registry.registry.transactions import Database

_A = AGENTS
_B = BEHAVIORS
_S = ASSIGNMENTS

# Assignment counter -> the agent column holding it while the assignment is open.
CURRENT = {
    "tasks_completed": "current_tasks_completed",
    "successes": "current_successes",
    "timed_tasks": "current_timed_tasks",
    "total_response_time_ms": "current_total_response_time_ms",
}
_CURRENT_COLS = [_A.c[name] for name in CURRENT.values()]


# Agent columns an AgentRecord leaves out: the open assignment's other counters, and what
# stands for the current script's counts until they are folded into its row (the revision
# stats reads add them).
_INTERNAL = frozenset(
    {
        "current_timed_tasks",
        "current_total_response_time_ms",
        "current_revision",
        "current_first_task_at",
        "current_last_task_at",
    }
)


# Ids per IN (...) list: well under SQLite's bound parameters limit, one round trip per chunk.
BULK_CHUNK = 500


def chunks(items: Sequence[str], size: int = BULK_CHUNK) -> Iterator[list[str]]:
    """`items` in lists of at most `size` (the bulk reads' IN lists)."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def agent_record(row: Row[Any] | Mapping[str, Any]) -> AgentRecord:
    data = dict(row._mapping if isinstance(row, Row) else row)
    for column in _INTERNAL:
        data.pop(column, None)
    return AgentRecord.model_validate(data)


def open_assignment_record(
    assignment: Mapping[Any, Any], agent: Mapping[Any, Any]
) -> AssignmentRecord:
    """An open assignment's record: its counters come from the agent row."""
    data = dict(assignment)
    for field, column in CURRENT.items():
        data[field] = agent[column]
    return AssignmentRecord.model_validate(data)


def underperformer_record(
    agent: Mapping[str, Any], assignment: Mapping[str, Any]
) -> UnderperformingAgent:
    """An agent row and its open assignment's row, validated once (the underperformers list
    builds a thousand of these at a time)."""
    data = {k: v for k, v in agent.items() if k not in _INTERNAL}
    opened = dict(assignment)
    for field, column in CURRENT.items():
        opened[field] = agent[column]
    data["assignment"] = opened
    return UnderperformingAgent.model_validate(data)


def assignment_record(row: Row[Any] | Mapping[str, Any]) -> AssignmentRecord:
    data = row._mapping if isinstance(row, Row) else row
    return AssignmentRecord.model_validate(dict(data))


def behavior_record(row: Row[Any]) -> BehaviorRecord:
    return BehaviorRecord.model_validate(dict(row._mapping))


async def agent_row(
    db: Database, conn: AsyncConnection, agent_id: str, *, lock: bool = False
) -> Row[Any]:
    stmt = select(_A).where(_A.c.agent_id == agent_id)
    row = (await conn.execute(db.for_update(stmt) if lock else stmt)).first()
    if row is None:
        raise AgentNotFound(agent_id)
    return row


async def behavior_row(conn: AsyncConnection, behavior_id: uuid.UUID) -> Row[Any]:
    row = (await conn.execute(select(_B).where(_B.c.id == behavior_id))).first()
    if row is None:
        raise BehaviorNotFound(behavior_id)
    return row


async def open_assignment(conn: AsyncConnection, agent_id: str) -> Row[Any] | None:
    """The open assignment's row as stored (its counters are on the agent row)."""
    stmt = select(_S).where(_S.c.agent_id == agent_id, _S.c.unassigned_at.is_(None))
    return (await conn.execute(stmt)).first()


async def open_assignment_full(conn: AsyncConnection, agent_id: str) -> AssignmentRecord | None:
    stmt = (
        select(_S, *_CURRENT_COLS)
        .join(_A, _A.c.agent_id == _S.c.agent_id)
        .where(_S.c.agent_id == agent_id, _S.c.unassigned_at.is_(None))
    )
    row = (await conn.execute(stmt)).first()
    if row is None:
        return None
    data = dict(row._mapping)
    return open_assignment_record({c.name: data[c.name] for c in _S.c}, data)


__all__ = [
    "BULK_CHUNK",
    "CURRENT",
    "agent_record",
    "agent_row",
    "assignment_record",
    "behavior_record",
    "behavior_row",
    "chunks",
    "open_assignment",
    "open_assignment_full",
    "open_assignment_record",
    "underperformer_record",
]
