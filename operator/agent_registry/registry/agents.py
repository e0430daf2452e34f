"""Agents: registration, status and identity, and the agent queries (lists, the
underperforming agents). The implementation behind RegistryService's agent methods."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from agent_registry.registry.errors import AgentAlreadyRegistered, AgentNotFound, InvalidStatus
from agent_registry.registry.models import AGENTS, ASSIGNMENTS, judged_rate, utcnow
from agent_registry.registry.records import STATUSES, AgentRecord, UnderperformingAgent
from agent_registry.registry.rows import agent_record, agent_row, chunks, underperformer_record
from agent_registry.registry.transactions import Database

_A = AGENTS
_S = ASSIGNMENTS


def check_status(status: str) -> None:
    if status not in STATUSES:
        raise InvalidStatus(status)


def _in_namespace(namespace: str) -> Any:
    """agent_ids of a namespace are "<ns>/<name>". A prefix comparison with substr, not a
    range or LIKE: correct under any collation and needs no wildcard escaping."""
    prefix = f"{namespace}/"
    return func.substr(_A.c.agent_id, 1, len(prefix)) == prefix


async def register_agent(
    db: Database, agent_id: str, role: str, name: str | None, created_by: str
) -> AgentRecord:
    now = utcnow()
    async with db.write("register_agent") as conn:
        existing = (
            await conn.execute(db.for_update(select(_A.c.status).where(_A.c.agent_id == agent_id)))
        ).first()
        if existing is None:
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        insert(_A).values(
                            id=uuid.uuid4(),
                            agent_id=agent_id,
                            agent_role=role,
                            agent_name=name,
                            status="active",
                            created_by=created_by,
                            inserted_at=now,
                            updated_at=now,
                        )
                    )
            except IntegrityError as error:  # registered concurrently
                raise AgentAlreadyRegistered(agent_id, "active") from error
        elif existing.status != "stopped":
            raise AgentAlreadyRegistered(agent_id, existing.status)
        else:
            await conn.execute(
                update(_A)
                .where(_A.c.agent_id == agent_id)
                .values(status="active", agent_role=role, agent_name=name, updated_at=now)
            )
        return agent_record(await agent_row(db, conn, agent_id))


async def set_status(db: Database, agent_id: str, status: str) -> AgentRecord:
    check_status(status)
    async with db.write("set_status") as conn:
        result = await conn.execute(
            update(_A).where(_A.c.agent_id == agent_id).values(status=status, updated_at=utcnow())
        )
        if result.rowcount == 0:
            raise AgentNotFound(agent_id)
        return agent_record(await agent_row(db, conn, agent_id))


async def update_agent(
    db: Database, agent_id: str, role: str | None, name: str | None, notes: str | None
) -> AgentRecord:
    values: dict[str, Any] = {}
    if role is not None:
        values["agent_role"] = role
    if name is not None:
        values["agent_name"] = name
    if notes is not None:
        values["notes"] = notes
    async with db.write("update_agent") as conn:
        if values:
            values["updated_at"] = utcnow()
            result = await conn.execute(
                update(_A).where(_A.c.agent_id == agent_id).values(**values)
            )
            if result.rowcount == 0:
                raise AgentNotFound(agent_id)
        return agent_record(await agent_row(db, conn, agent_id))


async def get_by_agent_id(db: Database, agent_id: str) -> AgentRecord:
    async with db.read("get_by_agent_id") as conn:
        return agent_record(await agent_row(db, conn, agent_id))


async def get_agents(db: Database, agent_ids: Sequence[str]) -> dict[str, AgentRecord]:
    """The records of these agents that exist, by agent_id (one query per BULK_CHUNK ids)."""
    found: dict[str, AgentRecord] = {}
    unique = list(dict.fromkeys(agent_ids))
    async with db.read("get_agents") as conn:
        for chunk in chunks(unique):
            for row in await conn.execute(select(_A).where(_A.c.agent_id.in_(chunk))):
                record = agent_record(row)
                found[record.agent_id] = record
    return found


async def agent_ids_changed_since(db: Database, since: datetime) -> list[str]:
    """The agents whose row was written at or after `since` (every agent write stamps
    updated_at): ids only, so a caller builds records only for the ones it needs."""
    stmt = select(_A.c.agent_id).where(_A.c.updated_at >= since).order_by(_A.c.agent_id)
    async with db.read("agent_ids_changed_since") as conn:
        return [str(row.agent_id) for row in await conn.execute(stmt)]


async def list_active_agents(db: Database) -> list[AgentRecord]:
    stmt = (
        select(_A).where(_A.c.status == "active").order_by(_A.c.inserted_at.desc(), _A.c.agent_id)
    )
    async with db.read("list_active_agents") as conn:
        return [agent_record(row) for row in await conn.execute(stmt)]


async def list_agents_by_role(db: Database, role: str) -> list[AgentRecord]:
    stmt = (
        select(_A).where(_A.c.agent_role == role, _A.c.status == "active").order_by(_A.c.agent_id)
    )
    async with db.read("list_agents_by_role") as conn:
        return [agent_record(row) for row in await conn.execute(stmt)]


async def list_agents(db: Database, namespace: str | None, status: str | None) -> list[AgentRecord]:
    stmt = select(_A).order_by(_A.c.agent_id)
    if namespace is not None:
        stmt = stmt.where(_in_namespace(namespace))
    if status is not None:
        check_status(status)
        stmt = stmt.where(_A.c.status == status)
    async with db.read("list_agents") as conn:
        return [agent_record(row) for row in await conn.execute(stmt)]


async def live_agent_ids(db: Database, created_by: str, namespace: str | None) -> list[str]:
    """The agent_ids of the agents not stopped that `created_by` registered (optionally of one
    namespace): what the operator's sweep compares with the Agents listed."""
    stmt = select(_A.c.agent_id).where(_A.c.created_by == created_by, _A.c.status != "stopped")
    if namespace is not None:
        stmt = stmt.where(_in_namespace(namespace))
    async with db.read("live_agent_ids") as conn:
        return [str(row.agent_id) for row in await conn.execute(stmt.order_by(_A.c.agent_id))]


async def list_underperforming_agents(
    db: Database, threshold: float, min_tasks: int, limit: int | None, namespace: str | None = None
) -> list[UnderperformingAgent]:
    min_tasks = max(1, min_tasks)
    # The indexed expression (agent_registry_current_rate_index): a range scan of the agents
    # below the threshold, already in rate order, instead of a scan of every agent.
    rate = judged_rate(_A)
    # Rank on the agent table alone (its row holds the open assignment's counters), then
    # join the few flagged agents to their open assignment rows.
    flagged = (
        select(
            _A.c.agent_id,
            rate.label("rate"),
            _A.c.current_tasks_completed.label("judged_tasks"),
        )
        .where(
            rate < threshold,
            _A.c.status == "active",
            _A.c.behavior_id.is_not(None),
            _A.c.current_tasks_completed >= min_tasks,
        )
        .order_by(rate.asc(), _A.c.current_tasks_completed.desc(), _A.c.agent_id)
    )
    if namespace is not None:
        flagged = flagged.where(_in_namespace(namespace))
    if limit is not None:
        flagged = flagged.limit(max(0, limit))
    async with db.read("list_underperforming_agents") as conn:
        ranked = [row.agent_id for row in await conn.execute(flagged)]
        # Then the few flagged agents with their open assignments, by key: a join with the
        # ranking would let the planner scan every open assignment to hash it.
        found: dict[str, UnderperformingAgent] = {}
        for chunk in chunks(ranked):
            stmt = (
                select(_A, *_ASSIGNMENT_COLS)
                .join(_S, and_(_S.c.agent_id == _A.c.agent_id, _S.c.unassigned_at.is_(None)))
                .where(_A.c.agent_id.in_(chunk))
            )
            result = await conn.execute(stmt)
            keys = list(result.keys())  # once: a Row's mapping rebuilds its keys every time
            for row in result:
                record = _underperformer(dict(zip(keys, row, strict=True)))
                found[record.agent_id] = record
    # An agent switched between the two reads has no open assignment left: not listed.
    return [found[agent_id] for agent_id in ranked if agent_id in found]


_ASSIGNMENT_COLS = [c.label(f"s_{c.name}") for c in _S.c]


def _underperformer(data: dict[str, Any]) -> UnderperformingAgent:
    stored = {c.name: data.pop(f"s_{c.name}") for c in _S.c}
    return underperformer_record(data, stored)


__all__ = [
    "agent_ids_changed_since",
    "check_status",
    "get_agents",
    "get_by_agent_id",
    "list_active_agents",
    "list_agents",
    "list_agents_by_role",
    "list_underperforming_agents",
    "register_agent",
    "register_agents",
    "set_status",
    "update_agent",
]


async def register_agents(
    db: Database, agents: Sequence[tuple[str, str, str | None]], created_by: str
) -> dict[str, AgentRecord]:
    """Register many agents, (agent_id, role, name) each, in one transaction (one multi-row
    insert per chunk); a stopped one is reactivated as register_agent does, one already
    active or paused is left as it is. Their records, by agent_id."""
    now = utcnow()
    wanted = {agent_id: (role, name) for agent_id, role, name in agents}
    async with db.write("register_agents") as conn:
        for chunk in chunks(list(wanted)):
            existing = {
                row.agent_id: row.status
                for row in await conn.execute(
                    db.for_update(
                        select(_A.c.agent_id, _A.c.status).where(_A.c.agent_id.in_(chunk))
                    )
                )
            }
            new = [
                {
                    "id": uuid.uuid4(),
                    "agent_id": agent_id,
                    "agent_role": wanted[agent_id][0],
                    "agent_name": wanted[agent_id][1],
                    "status": "active",
                    "created_by": created_by,
                    "inserted_at": now,
                    "updated_at": now,
                }
                for agent_id in chunk
                if agent_id not in existing
            ]
            if new:
                await conn.execute(insert(_A), new)  # many parameter sets: compiled once
            for agent_id, status in existing.items():
                if status == "stopped":
                    role, name = wanted[agent_id]
                    await conn.execute(
                        update(_A)
                        .where(_A.c.agent_id == agent_id)
                        .values(status="active", agent_role=role, agent_name=name, updated_at=now)
                    )
        found: dict[str, AgentRecord] = {}
        for chunk in chunks(list(wanted)):
            for row in await conn.execute(select(_A).where(_A.c.agent_id.in_(chunk))):
                record = agent_record(row)
                found[record.agent_id] = record
    return found
