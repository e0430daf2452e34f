"""Reading the per-script counts: summed per behavior revision over a selection of agents
(revision_stats), or per (agent, script) (agent_revision_stats). One query each; the
implementation behind RegistryService's revision stats methods.

A script's counts are its row in agent_revision_stats plus, while it is the agent's current
script, the agent's current_* (see models.py): both parts are read in the same query, so in
the same snapshot, and a concurrent assign_behavior (which moves the second into the first)
cannot make a read count anything twice or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, and_, case, func, literal, select, union_all

from agent_registry.registry.models import AGENTS, REVISION_STATS, REVISIONS
from agent_registry.registry.records import (
    AgentRevisionStatsRecord,
    RevisionStatsRecord,
    ScriptCounts,
)
from agent_registry.registry.transactions import Database

_A = AGENTS
_R = REVISION_STATS
_V = REVISIONS


def _in_namespace(agent_id: Any, namespace: str) -> Any:
    # As agents._in_namespace: a prefix comparison, right under any collation.
    prefix = f"{namespace}/"
    return func.substr(agent_id, 1, len(prefix)) == prefix


def _rows_of(
    stmt: Select[Any],
    *,
    namespace: str | None,
    role: str | None,
    behavior_id: uuid.UUID | None,
    agent_ids: Sequence[str] | None,
) -> Select[Any]:
    """The selection, on script rows."""
    if role is not None:
        # A semi-join (agent_id is unique): measured faster than a join at 100,000 agents.
        stmt = stmt.where(_R.c.agent_id.in_(select(_A.c.agent_id).where(_A.c.agent_role == role)))
    if namespace is not None:
        stmt = stmt.where(_in_namespace(_R.c.agent_id, namespace))
    if behavior_id is not None:
        stmt = stmt.where(_R.c.behavior_id == behavior_id)
    if agent_ids is not None:
        stmt = stmt.where(_R.c.agent_id.in_(list(agent_ids)))
    return stmt


def _agents_of(
    stmt: Select[Any],
    *,
    namespace: str | None,
    role: str | None,
    behavior_id: uuid.UUID | None,
    agent_ids: Sequence[str] | None,
) -> Select[Any]:
    """The same selection, on agent rows (for their current scripts' counts)."""
    if role is not None:
        stmt = stmt.where(_A.c.agent_role == role)
    if namespace is not None:
        stmt = stmt.where(_in_namespace(_A.c.agent_id, namespace))
    if behavior_id is not None:
        stmt = stmt.where(_A.c.behavior_id == behavior_id)
    if agent_ids is not None:
        stmt = stmt.where(_A.c.agent_id.in_(list(agent_ids)))
    return stmt


def _sum(column: Any) -> Any:
    return func.coalesce(func.sum(column), 0)


async def revision_stats(
    db: Database,
    *,
    namespace: str | None,
    role: str | None,
    behavior_id: uuid.UUID | None,
    agent_ids: Sequence[str] | None,
) -> list[RevisionStatsRecord]:
    where: dict[str, Any] = {
        "namespace": namespace,
        "role": role,
        "behavior_id": behavior_id,
        "agent_ids": agent_ids,
    }
    # The rows, and the agents' current scripts (labelled by the open assignment, which is
    # also their rows' label), summed per (behavior, revision) apart and then together: two
    # scans without a join, cheaper than joining every row to its agent. Grouped on
    # (behavior_id, revision), the sha256 joined at the end: hashing a uuid and an int is
    # cheaper than a 64-character string, and a row's label always names a stored revision
    # with the row's script (assign_behavior takes the sha256 from the revision,
    # allow_scripts checks it).
    stored = _rows_of(
        select(
            _R.c.behavior_id,
            _R.c.revision,
            func.count().label("agents"),
            _sum(_R.c.tasks).label("tasks"),
            _sum(_R.c.successes).label("successes"),
            _sum(_R.c.timed_tasks).label("timed_tasks"),
            _sum(_R.c.total_response_time_ms).label("total_response_time_ms"),
            func.min(_R.c.first_task_at).label("first_task_at"),
            func.max(_R.c.last_task_at).label("last_task_at"),
        ).select_from(_R),
        **where,
    ).group_by(_R.c.behavior_id, _R.c.revision)
    current = _agents_of(
        select(
            _A.c.behavior_id,
            _A.c.current_revision,
            literal(0).label("agents"),
            _sum(_A.c.current_tasks_completed),
            _sum(_A.c.current_successes),
            _sum(_A.c.current_timed_tasks),
            _sum(_A.c.current_total_response_time_ms),
            func.min(_A.c.current_first_task_at),
            func.max(_A.c.current_last_task_at),
        ).where(_A.c.current_sha256.is_not(None)),
        **where,
    ).group_by(_A.c.behavior_id, _A.c.current_revision)
    both = union_all(stored, current).subquery("both_parts")
    grouped = (
        select(
            both.c.behavior_id,
            both.c.revision,
            _sum(both.c.agents).label("agents"),
            _sum(both.c.tasks).label("tasks"),
            _sum(both.c.successes).label("successes"),
            _sum(both.c.timed_tasks).label("timed_tasks"),
            _sum(both.c.total_response_time_ms).label("total_response_time_ms"),
            func.min(both.c.first_task_at).label("first_task_at"),
            func.max(both.c.last_task_at).label("last_task_at"),
        )
        .group_by(both.c.behavior_id, both.c.revision)
        .subquery("grouped")
    )
    stmt = (
        select(grouped, _V.c.script_sha256)
        .join(
            _V,
            and_(_V.c.behavior_id == grouped.c.behavior_id, _V.c.revision == grouped.c.revision),
        )
        .order_by(grouped.c.behavior_id, grouped.c.revision)
    )
    async with db.read("revision_stats") as conn:
        rows = (await conn.execute(stmt)).all()
    return [_revision_record(row._mapping) for row in rows]


def _revision_record(row: Any) -> RevisionStatsRecord:
    data = dict(row)
    # PostgreSQL's sum of a bigint is a numeric (Decimal here).
    for name in ("agents", "tasks", "successes", "timed_tasks"):
        data[name] = int(data[name])
    data["total_response_time_ms"] = float(data["total_response_time_ms"])
    return RevisionStatsRecord.model_validate(data)


_CURRENT_PART = (
    _A.c.current_sha256,
    _A.c.current_tasks_completed,
    _A.c.current_successes,
    _A.c.current_timed_tasks,
    _A.c.current_total_response_time_ms,
    _A.c.current_first_task_at,
    _A.c.current_last_task_at,
)


async def agent_revision_stats(
    db: Database,
    *,
    namespace: str | None,
    agent_ids: Sequence[str] | None,
    behavior_id: uuid.UUID | None,
) -> list[AgentRevisionStatsRecord]:
    stmt = _rows_of(
        select(_R, *_CURRENT_PART).join(_A, _A.c.agent_id == _R.c.agent_id),
        namespace=namespace,
        role=None,
        behavior_id=behavior_id,
        agent_ids=agent_ids,
    ).order_by(_R.c.agent_id, _R.c.behavior_id, _R.c.revision, _R.c.script_sha256)
    if namespace is not None:
        # Also on the agent side of the join: the planner then joins one namespace's agents.
        stmt = stmt.where(_in_namespace(_A.c.agent_id, namespace))
    async with db.read("agent_revision_stats") as conn:
        rows = (await conn.execute(stmt)).all()
    return [_agent_record(row) for row in rows]


async def agent_script_counts(
    db: Database, *, namespace: str, role: str | None, agent_ids: Sequence[str] | None
) -> list[ScriptCounts]:
    """agent_revision_stats' tasks and successes alone, for a namespace's agents (of one
    role, among the listed ones), as tuples: the current part added in SQL, no record built
    per row."""
    current = _A.c.current_sha256 == _R.c.script_sha256
    stmt = (
        select(
            _R.c.agent_id,
            _R.c.behavior_id,
            _R.c.revision,
            _R.c.script_sha256,
            (_R.c.tasks + case((current, _A.c.current_tasks_completed), else_=0)).label("tasks"),
            (_R.c.successes + case((current, _A.c.current_successes), else_=0)).label("successes"),
        )
        .join(_A, _A.c.agent_id == _R.c.agent_id)
        # On both sides of the join: the planner then joins one namespace's agents.
        .where(_in_namespace(_R.c.agent_id, namespace), _in_namespace(_A.c.agent_id, namespace))
        .order_by(_R.c.agent_id, _R.c.behavior_id, _R.c.revision, _R.c.script_sha256)
    )
    if role is not None:
        stmt = stmt.where(_A.c.agent_role == role)
    if agent_ids is not None:
        stmt = stmt.where(_R.c.agent_id.in_(list(agent_ids)))
    async with db.read("agent_script_counts") as conn:
        result = await conn.execute(stmt)
        return [ScriptCounts._make(row) for row in result]


def _agent_record(row: Any) -> AgentRevisionStatsRecord:
    data = {column.name: row._mapping[column] for column in _R.c}
    if row.current_sha256 == row.script_sha256:
        data["tasks"] += row.current_tasks_completed
        data["successes"] += row.current_successes
        data["timed_tasks"] += row.current_timed_tasks
        data["total_response_time_ms"] += row.current_total_response_time_ms
        data["first_task_at"] = _earlier(data["first_task_at"], row.current_first_task_at)
        data["last_task_at"] = _later(data["last_task_at"], row.current_last_task_at)
    return AgentRevisionStatsRecord.model_validate(data)


def _earlier(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else min(a, b)


def _later(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)


__all__ = ["agent_revision_stats", "revision_stats"]
