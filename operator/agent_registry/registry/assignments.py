"""Assignments: giving an agent a behavior revision (closing the open assignment with its
final counters), delivering scripts (each gets its row in agent_revision_stats, the only
scripts whose outcomes count), and reading the current assignment and the history. The
implementation behind RegistryService's assignment methods."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, bindparam, case, insert, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from agent_registry.registry.delivered import DeliveredScripts
from agent_registry.registry.errors import (
    AgentNotFound,
    BehaviorNotFound,
    BehaviorRevisionNotFound,
    NoBehaviorAssigned,
)
from agent_registry.registry.models import (
    AGENTS,
    ASSIGNMENTS,
    BEHAVIORS,
    REVISION_STATS,
    REVISIONS,
    utcnow,
)
from agent_registry.registry.records import AssignmentRecord, BehaviorRecord, ScriptRef
from agent_registry.registry.rows import (
    CURRENT,
    agent_row,
    assignment_record,
    behavior_record,
    behavior_row,
    chunks,
    open_assignment,
    open_assignment_full,
    open_assignment_record,
)
from agent_registry.registry.stats import outcome_notes
from agent_registry.registry.transactions import Database

_A = AGENTS
_B = BEHAVIORS
_S = ASSIGNMENTS
_R = REVISION_STATS
_V = REVISIONS


def _evidence(evidence: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if evidence is None:
        return None
    try:
        # A round trip: what is stored is what a read gives back (tuples become lists).
        return cast(dict[str, Any], json.loads(json.dumps(dict(evidence))))
    except (TypeError, ValueError) as error:
        raise ValueError(f"evidence must be JSON-serializable: {error}") from error


async def _script_of(
    conn: AsyncConnection, behavior: Row[Any], revision: int | None
) -> tuple[int, str]:
    """The (revision, sha256) to assign: the behavior's current one, or a stored one."""
    if revision is None or revision == behavior.revision:
        return behavior.revision, behavior.script_sha256
    stmt = select(_V.c.script_sha256).where(
        _V.c.behavior_id == behavior.id, _V.c.revision == revision
    )
    sha = (await conn.execute(stmt)).scalar_one_or_none()
    if sha is None:
        raise BehaviorRevisionNotFound(behavior.id, revision)
    return revision, sha


def _deliver(db: Database, agent_id: str, refs: Sequence[ScriptRef], now: datetime) -> Any:
    """Upsert the script rows of `refs` (counters untouched): a new row starts at zero, an
    existing one takes the newest label (behavior, revision) it is delivered under."""
    return _deliver_rows(
        db,
        [
            {
                "agent_id": agent_id,
                "script_sha256": ref.sha256,
                "behavior_id": ref.behavior_id,
                "revision": ref.revision,
                "delivered_at": now,
            }
            for ref in refs
        ],
    )


def _deliver_rows(db: Database, rows: Sequence[Mapping[str, Any]] | None = None) -> Any:
    """`_deliver` for rows of any agents (agent_id, script_sha256, behavior_id, revision,
    delivered_at). Without `rows`, the statement to execute with many parameter sets: its
    compiled form is cached, where a multi-row VALUES of a few thousand bound parameters is
    compiled again on every call."""
    insert = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
    stmt = insert(_R) if rows is None else insert(_R).values(list(rows))
    return stmt.on_conflict_do_update(
        index_elements=[_R.c.agent_id, _R.c.script_sha256],
        set_={"behavior_id": stmt.excluded.behavior_id, "revision": stmt.excluded.revision},
        where=or_(
            _R.c.behavior_id != stmt.excluded.behavior_id,
            _R.c.revision != stmt.excluded.revision,
        ),
    )


def _earliest(column: Any, value: datetime | None) -> Any:
    return (
        column
        if value is None
        else case((column.is_(None) | (column > value), value), else_=column)
    )


def _latest(column: Any, value: datetime | None) -> Any:
    return (
        column
        if value is None
        else case((column.is_(None) | (column < value), value), else_=column)
    )


def _fold(agent: Row[Any]) -> Any:
    """Add the agent's current_* (its current script's counts while the assignment was
    open) to that script's row. Under the agent row's lock: nothing else writes either."""
    return (
        update(_R)
        .where(_R.c.agent_id == agent.agent_id, _R.c.script_sha256 == agent.current_sha256)
        .values(
            tasks=_R.c.tasks + agent.current_tasks_completed,
            successes=_R.c.successes + agent.current_successes,
            timed_tasks=_R.c.timed_tasks + agent.current_timed_tasks,
            total_response_time_ms=_R.c.total_response_time_ms
            + agent.current_total_response_time_ms,
            first_task_at=_earliest(_R.c.first_task_at, agent.current_first_task_at),
            last_task_at=_latest(_R.c.last_task_at, agent.current_last_task_at),
        )
    )


def _closing_notes(agent: Any, behavior: Any, revision: int, reason: Any, assigned_by: Any) -> str:
    """The outcome notes of the open assignment that `agent` leaves for `behavior` at
    `revision` (its counts are the agent row's current_*): one text for assign and
    assign_many."""
    return outcome_notes(
        tasks=agent.current_tasks_completed,
        successes=agent.current_successes,
        total_response_time_ms=agent.current_total_response_time_ms,
        timed_tasks=agent.current_timed_tasks,
        replaced_by=(
            f"{behavior.namespace}/{behavior.name} revision {revision} ({reason}, by {assigned_by})"
        ),
    )


async def assign(
    db: Database,
    delivered: DeliveredScripts,
    agent_id: str,
    behavior_id: uuid.UUID,
    *,
    assigned_by: str,
    reason: str,
    revision: int | None = None,
    source: str | None = None,
    evidence: Mapping[str, Any] | None = None,
) -> tuple[AssignmentRecord, bool]:
    """The open assignment, and whether this call opened it."""
    stored_evidence = _evidence(evidence)
    now = utcnow()
    async with db.write("assign_behavior") as conn:
        # The agent row's lock orders this against record_tasks (which locks that row before
        # any script row): the open assignment's counters read here are final, and the
        # script row below is locked in the same order as record_tasks locks it.
        agent = await agent_row(db, conn, agent_id, lock=True)
        behavior = await behavior_row(conn, behavior_id)
        if behavior.deleted_at is not None:
            raise BehaviorNotFound(behavior_id)
        revision, sha = await _script_of(conn, behavior, revision)
        current = await open_assignment(conn, agent_id)
        if (
            current is not None
            and current.behavior_id == behavior_id
            and current.behavior_revision == revision
            and (source is None or current.source == source)
        ):
            return open_assignment_record(current._mapping, agent._mapping), False
        if agent.current_sha256 is not None:
            # The open assignment's counts were its script's too: into that script's row.
            await conn.execute(_fold(agent))
        if current is not None:
            notes = _closing_notes(agent, behavior, revision, reason, assigned_by)
            await conn.execute(
                update(_S)
                .where(_S.c.id == current.id)
                .values(
                    unassigned_at=now,
                    outcome_notes=notes,
                    **{field: agent._mapping[column] for field, column in CURRENT.items()},
                )
            )
        await conn.execute(_deliver(db, agent_id, [ScriptRef(behavior_id, revision, sha)], now))
        new_id = uuid.uuid4()
        await conn.execute(
            insert(_S).values(
                id=new_id,
                agent_id=agent_id,
                behavior_id=behavior_id,
                behavior_revision=revision,
                script_sha256=sha,
                assigned_at=now,
                assigned_by=assigned_by,
                reason=reason,
                source=source,
                evidence=stored_evidence,
            )
        )
        await conn.execute(
            update(_A)
            .where(_A.c.agent_id == agent_id)
            .values(
                behavior_id=behavior_id,
                behavior_assigned_at=now,
                current_sha256=sha,
                current_revision=revision,
                current_first_task_at=None,
                current_last_task_at=None,
                updated_at=now,
                **dict.fromkeys(CURRENT.values(), 0),
            )
        )
        row = (await conn.execute(select(_S).where(_S.c.id == new_id))).one()
    delivered.delivered(agent_id, sha, current=True)
    return assignment_record(row), True


async def allow_scripts(
    db: Database, delivered: DeliveredScripts, agent_id: str, scripts: Sequence[ScriptRef]
) -> None:
    # One ref per script (a statement may not upsert one row twice), in sha order: two
    # concurrent calls lock the rows in the same order.
    refs = sorted({ref.sha256: ref for ref in scripts}.values(), key=lambda ref: ref.sha256)
    if not refs:
        return
    async with db.write("allow_scripts") as conn:
        # Locked like every writer of script rows (see hotpath.py). The current script is
        # labelled by its assignment (the reads add the agent's counts under that label).
        agent = await agent_row(db, conn, agent_id, lock=True)
        wanted = {(ref.behavior_id, ref.revision) for ref in refs}
        stmt = select(_V.c.behavior_id, _V.c.revision, _V.c.script_sha256).where(
            tuple_(_V.c.behavior_id, _V.c.revision).in_(wanted)
        )
        stored = {(r.behavior_id, r.revision): r.script_sha256 for r in await conn.execute(stmt)}
        for ref in refs:
            sha = stored.get((ref.behavior_id, ref.revision))
            if sha is None:
                raise BehaviorRevisionNotFound(ref.behavior_id, ref.revision)
            if sha != ref.sha256:
                raise ValueError(
                    f"{ref.behavior_id} revision {ref.revision} has script {sha}, not {ref.sha256}"
                )
        others = [ref for ref in refs if ref.sha256 != agent.current_sha256]
        if others:
            await conn.execute(_deliver(db, agent_id, others, utcnow()))
    for ref in refs:
        delivered.delivered(agent_id, ref.sha256, current=False)


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


async def current_assignments(
    db: Database, agent_ids: Sequence[str]
) -> dict[str, AssignmentRecord]:
    """The open assignments of these agents, by agent_id (agents without one are left out);
    one query per chunk of ids instead of one per agent."""
    found: dict[str, AssignmentRecord] = {}
    unique = list(dict.fromkeys(agent_ids))
    columns = [_A.c[name] for name in CURRENT.values()]
    async with db.read("current_assignments") as conn:
        for chunk in chunks(unique):
            stmt = (
                select(_S, *columns)
                .join(_A, _A.c.agent_id == _S.c.agent_id)
                .where(_S.c.agent_id.in_(chunk), _S.c.unassigned_at.is_(None))
            )
            for row in await conn.execute(stmt):
                data = dict(row._mapping)
                record = open_assignment_record({c.name: data[c.name] for c in _S.c}, data)
                found[record.agent_id] = record
    return found


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


__all__ = [
    "AssignRequest",
    "allow_scripts",
    "assign",
    "assign_many",
    "assignment_history",
    "current_assignment",
    "current_assignments",
    "get_agent_behavior",
]


@dataclass(frozen=True)
class AssignRequest:
    """One assignment of assign_many (the arguments of assign)."""

    agent_id: str
    behavior_id: uuid.UUID
    assigned_by: str
    reason: str
    revision: int | None = None
    source: str | None = None
    evidence: Mapping[str, Any] | None = None


async def assign_many(
    db: Database, delivered: DeliveredScripts, requests: Sequence[AssignRequest]
) -> list[tuple[AssignmentRecord, bool]]:
    """`assign` for many agents in one transaction and a fixed number of statements per
    chunk (multi-row inserts, executemany updates) instead of about ten per agent: what a
    batch of 500 reconciles costs on SQLite is then one transaction, not 500 (each about
    25 ms there, serialized). Same rules and results as `assign`, in the order asked; one
    request per agent. Raises (and writes nothing) if any behavior or revision is missing."""
    if not requests:
        return []
    if len({r.agent_id for r in requests}) != len(requests):
        raise ValueError("assign_many takes one request per agent")
    now = utcnow()
    results: dict[str, tuple[AssignmentRecord, bool]] = {}
    opened: list[tuple[str, str]] = []
    async with db.write("assign_many") as conn:
        ordered = sorted(requests, key=lambda r: r.agent_id)  # lock order: agent_id
        for chunk_start in range(0, len(ordered), 500):
            chunk = ordered[chunk_start : chunk_start + 500]
            ids = [r.agent_id for r in chunk]
            agents = {
                row.agent_id: row
                for row in await conn.execute(
                    db.for_update(select(_A).where(_A.c.agent_id.in_(ids)).order_by(_A.c.agent_id))
                )
            }
            missing = [i for i in ids if i not in agents]
            if missing:
                raise AgentNotFound(missing[0])
            behavior_ids = list({r.behavior_id for r in chunk})
            behaviors = {
                row.id: row
                for row in await conn.execute(select(_B).where(_B.c.id.in_(behavior_ids)))
            }
            currents = {
                row.agent_id: row
                for row in await conn.execute(
                    select(_S).where(_S.c.agent_id.in_(ids), _S.c.unassigned_at.is_(None))
                )
            }
            folds: list[dict[str, Any]] = []
            closes: list[dict[str, Any]] = []
            delivers: list[dict[str, Any]] = []
            inserts: list[dict[str, Any]] = []
            updates: list[dict[str, Any]] = []
            for request in chunk:
                agent = agents[request.agent_id]
                behavior = behaviors.get(request.behavior_id)
                if behavior is None or behavior.deleted_at is not None:
                    raise BehaviorNotFound(request.behavior_id)
                revision, sha = await _script_of(conn, behavior, request.revision)
                current = currents.get(request.agent_id)
                if (
                    current is not None
                    and current.behavior_id == request.behavior_id
                    and current.behavior_revision == revision
                    and (request.source is None or current.source == request.source)
                ):
                    results[request.agent_id] = (
                        open_assignment_record(current._mapping, agent._mapping),
                        False,
                    )
                    continue
                if agent.current_sha256 is not None:
                    folds.append(
                        {
                            "b_agent_id": agent.agent_id,
                            "b_sha": agent.current_sha256,
                            "b_tasks": agent.current_tasks_completed,
                            "b_successes": agent.current_successes,
                            "b_timed": agent.current_timed_tasks,
                            "b_total": agent.current_total_response_time_ms,
                            "b_first": agent.current_first_task_at,
                            "b_last": agent.current_last_task_at,
                        }
                    )
                if current is not None:
                    notes = _closing_notes(
                        agent, behavior, revision, request.reason, request.assigned_by
                    )
                    closes.append(
                        {
                            "b_id": current.id,
                            "b_notes": notes,
                            "b_unassigned_at": now,
                            **{
                                f"b_{field}": agent._mapping[column]
                                for field, column in CURRENT.items()
                            },
                        }
                    )
                delivers.append(
                    {
                        "agent_id": agent.agent_id,
                        "script_sha256": sha,
                        "behavior_id": behavior.id,
                        "revision": revision,
                        "delivered_at": now,
                    }
                )
                new_id = uuid.uuid4()
                inserts.append(
                    {
                        "id": new_id,
                        "agent_id": agent.agent_id,
                        "behavior_id": behavior.id,
                        "behavior_revision": revision,
                        "script_sha256": sha,
                        "assigned_at": now,
                        "assigned_by": request.assigned_by,
                        "reason": request.reason,
                        "source": request.source,
                        "evidence": _evidence(request.evidence),
                    }
                )
                updates.append(
                    {
                        "b_agent_id": agent.agent_id,
                        "b_behavior_id": behavior.id,
                        "b_sha": sha,
                        "b_revision": revision,
                    }
                )
                opened.append((agent.agent_id, sha))
            if folds:
                await conn.execute(_FOLD_MANY, folds)
            if closes:
                await conn.execute(_CLOSE_MANY, closes)
            # Executed with many parameter sets (not multi-row VALUES): compiled once, cached.
            if delivers:
                await conn.execute(_deliver_rows(db), delivers)
            if inserts:
                await conn.execute(insert(_S), inserts)
                await conn.execute(_AGENT_ASSIGNED_MANY, [{**u, "b_now": now} for u in updates])
                new_ids = [i["id"] for i in inserts]
                for row in await conn.execute(select(_S).where(_S.c.id.in_(new_ids))):
                    results[row.agent_id] = (assignment_record(row), True)
    for agent_id, sha in opened:
        delivered.delivered(agent_id, sha, current=True)
    return [results[r.agent_id] for r in requests]


_FOLD_MANY = (
    update(_R)
    .where(_R.c.agent_id == bindparam("b_agent_id"), _R.c.script_sha256 == bindparam("b_sha"))
    .values(
        tasks=_R.c.tasks + bindparam("b_tasks"),
        successes=_R.c.successes + bindparam("b_successes"),
        timed_tasks=_R.c.timed_tasks + bindparam("b_timed"),
        total_response_time_ms=_R.c.total_response_time_ms + bindparam("b_total"),
        first_task_at=case(
            (
                bindparam("b_first", type_=_R.c.first_task_at.type).is_not(None)
                & (
                    _R.c.first_task_at.is_(None)
                    | (_R.c.first_task_at > bindparam("b_first", type_=_R.c.first_task_at.type))
                ),
                bindparam("b_first", type_=_R.c.first_task_at.type),
            ),
            else_=_R.c.first_task_at,
        ),
        last_task_at=case(
            (
                bindparam("b_last", type_=_R.c.last_task_at.type).is_not(None)
                & (
                    _R.c.last_task_at.is_(None)
                    | (_R.c.last_task_at < bindparam("b_last", type_=_R.c.last_task_at.type))
                ),
                bindparam("b_last", type_=_R.c.last_task_at.type),
            ),
            else_=_R.c.last_task_at,
        ),
    )
)

_CLOSE_MANY = (
    update(_S)
    .where(_S.c.id == bindparam("b_id"))
    .values(
        unassigned_at=bindparam("b_unassigned_at"),
        outcome_notes=bindparam("b_notes"),
        **{field: bindparam(f"b_{field}") for field in CURRENT},
    )
)

_AGENT_ASSIGNED_MANY = (
    update(_A)
    .where(_A.c.agent_id == bindparam("b_agent_id"))
    .values(
        behavior_id=bindparam("b_behavior_id"),
        behavior_assigned_at=bindparam("b_now"),
        current_sha256=bindparam("b_sha"),
        current_revision=bindparam("b_revision"),
        current_first_task_at=None,
        current_last_task_at=None,
        updated_at=bindparam("b_now"),
        **dict.fromkeys(CURRENT.values(), 0),
    )
)
