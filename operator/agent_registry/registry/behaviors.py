"""Behaviors: creating and revising them (every script kept as a revision), looking them up,
their lineage and summary, and marking them deleted. The implementation behind
RegistryService's behavior methods."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from agent_registry.registry.errors import (
    BehaviorNotFound,
    BehaviorRevisionNotFound,
    RegistryError,
)
from agent_registry.registry.models import AGENTS, ASSIGNMENTS, BEHAVIORS, REVISIONS, utcnow
from agent_registry.registry.records import (
    BehaviorRecord,
    BehaviorRevisionRecord,
    BehaviorSummary,
)
from agent_registry.registry.rows import behavior_record, behavior_row
from agent_registry.registry.transactions import Database

_A = AGENTS
_B = BEHAVIORS
_R = REVISIONS
_S = ASSIGNMENTS

_MAX_LINEAGE = 1000


def script_sha256(lua_script: str) -> str:
    return hashlib.sha256(lua_script.encode("utf-8")).hexdigest()


async def create_behavior(
    db: Database,
    name: str,
    role_type: str,
    lua_script: str,
    namespace: str,
    parent_behavior_id: uuid.UUID | None,
    description: str | None,
) -> BehaviorRecord:
    for attempt in range(2):
        try:
            return await _upsert_behavior(
                db, name, role_type, lua_script, namespace, parent_behavior_id, description
            )
        except RegistryError as error:
            # Two creators of a new name raced: the loser retries as an update.
            if attempt == 0 and isinstance(error.__cause__, IntegrityError):
                continue
            raise
    raise AssertionError("unreachable")


async def _upsert_behavior(
    db: Database,
    name: str,
    role_type: str,
    lua_script: str,
    namespace: str,
    parent_behavior_id: uuid.UUID | None,
    description: str | None,
) -> BehaviorRecord:
    sha = script_sha256(lua_script)
    now = utcnow()
    async with db.write("create_behavior") as conn:
        if parent_behavior_id is not None:
            await behavior_row(conn, parent_behavior_id)
        stmt = select(_B).where(_B.c.namespace == namespace, _B.c.name == name)
        row = (await conn.execute(db.for_update(stmt))).first()
        if row is None:
            behavior_id = uuid.uuid4()
            await conn.execute(
                insert(_B).values(
                    id=behavior_id,
                    namespace=namespace,
                    name=name,
                    role_type=role_type,
                    lua_script=lua_script,
                    script_sha256=sha,
                    revision=1,
                    parent_behavior_id=parent_behavior_id,
                    description=description,
                    inserted_at=now,
                    updated_at=now,
                )
            )
            await _insert_revision(conn, behavior_id, 1, lua_script, sha, now)
        else:
            behavior_id = row.id
            values: dict[str, Any] = {}
            if row.script_sha256 != sha:
                revision = row.revision + 1
                values |= {"lua_script": lua_script, "script_sha256": sha, "revision": revision}
                await _insert_revision(conn, behavior_id, revision, lua_script, sha, now)
            wanted = {
                "role_type": role_type,
                "parent_behavior_id": parent_behavior_id,
                "description": description,
                "deleted_at": None,
            }
            values |= {k: v for k, v in wanted.items() if getattr(row, k) != v}
            if values:
                values["updated_at"] = now
                await conn.execute(update(_B).where(_B.c.id == behavior_id).values(**values))
        return behavior_record(await behavior_row(conn, behavior_id))


async def _insert_revision(
    conn: AsyncConnection,
    behavior_id: uuid.UUID,
    revision: int,
    lua_script: str,
    sha: str,
    now: datetime,
) -> None:
    await conn.execute(
        insert(_R).values(
            behavior_id=behavior_id,
            revision=revision,
            lua_script=lua_script,
            script_sha256=sha,
            inserted_at=now,
        )
    )


async def get_behavior(db: Database, behavior_id: uuid.UUID) -> BehaviorRecord:
    async with db.read("get_behavior") as conn:
        return behavior_record(await behavior_row(conn, behavior_id))


async def get_behavior_by_name(db: Database, namespace: str, name: str) -> BehaviorRecord:
    async with db.read("get_behavior_by_name") as conn:
        stmt = select(_B).where(_B.c.namespace == namespace, _B.c.name == name)
        row = (await conn.execute(stmt)).first()
        if row is None:
            raise BehaviorNotFound(f"{namespace}/{name}")
        return behavior_record(row)


async def list_behaviors(
    db: Database, namespace: str | None, include_deleted: bool
) -> list[BehaviorRecord]:
    stmt = select(_B).order_by(_B.c.namespace, _B.c.name)
    if namespace is not None:
        stmt = stmt.where(_B.c.namespace == namespace)
    if not include_deleted:
        stmt = stmt.where(_B.c.deleted_at.is_(None))
    async with db.read("list_behaviors") as conn:
        return [behavior_record(row) for row in await conn.execute(stmt)]


async def mark_behavior_deleted(db: Database, namespace: str, name: str) -> BehaviorRecord:
    async with db.write("mark_behavior_deleted") as conn:
        stmt = select(_B.c.id).where(_B.c.namespace == namespace, _B.c.name == name)
        row = (await conn.execute(stmt)).first()
        if row is None:
            raise BehaviorNotFound(f"{namespace}/{name}")
        now = utcnow()
        await conn.execute(
            update(_B)
            .where(_B.c.id == row.id, _B.c.deleted_at.is_(None))
            .values(deleted_at=now, updated_at=now)
        )
        return behavior_record(await behavior_row(conn, row.id))


async def behavior_revisions(db: Database, behavior_id: uuid.UUID) -> list[BehaviorRevisionRecord]:
    async with db.read("behavior_revisions") as conn:
        await behavior_row(conn, behavior_id)
        stmt = select(_R).where(_R.c.behavior_id == behavior_id).order_by(_R.c.revision)
        return [
            BehaviorRevisionRecord.model_validate(dict(r._mapping))
            for r in await conn.execute(stmt)
        ]


async def get_behavior_revision(
    db: Database, behavior_id: uuid.UUID, revision: int
) -> BehaviorRevisionRecord:
    async with db.read("get_behavior_revision") as conn:
        stmt = select(_R).where(_R.c.behavior_id == behavior_id, _R.c.revision == revision)
        row = (await conn.execute(stmt)).first()
        if row is None:
            raise BehaviorRevisionNotFound(behavior_id, revision)
        return BehaviorRevisionRecord.model_validate(dict(row._mapping))


async def behavior_lineage(db: Database, behavior_id: uuid.UUID) -> list[BehaviorRecord]:
    lineage: list[BehaviorRecord] = []
    seen: set[uuid.UUID] = set()
    async with db.read("behavior_lineage") as conn:
        current: uuid.UUID | None = behavior_id
        while current is not None and current not in seen and len(lineage) < _MAX_LINEAGE:
            seen.add(current)
            row = (await conn.execute(select(_B).where(_B.c.id == current))).first()
            if row is None:
                if not lineage:
                    raise BehaviorNotFound(behavior_id)
                break
            lineage.append(behavior_record(row))
            current = row.parent_behavior_id
    return lineage


async def behavior_summary(db: Database, behavior_id: uuid.UUID) -> BehaviorSummary:
    async with db.read("behavior_summary") as conn:
        await behavior_row(conn, behavior_id)
        agents = await conn.execute(
            select(func.count())
            .select_from(_S.join(_A, _A.c.agent_id == _S.c.agent_id))
            .where(
                _S.c.behavior_id == behavior_id,
                _S.c.unassigned_at.is_(None),
                _A.c.status != "stopped",
            )
        )
        agent_count = int(agents.scalar_one())
        closed = (
            await conn.execute(
                select(
                    func.coalesce(func.sum(_S.c.tasks_completed), 0),
                    func.coalesce(func.sum(_S.c.successes), 0),
                ).where(_S.c.behavior_id == behavior_id, _S.c.unassigned_at.is_not(None))
            )
        ).one()
        open_ = (
            await conn.execute(
                select(
                    func.coalesce(func.sum(_A.c.current_tasks_completed), 0),
                    func.coalesce(func.sum(_A.c.current_successes), 0),
                )
                .select_from(_S.join(_A, _A.c.agent_id == _S.c.agent_id))
                .where(_S.c.behavior_id == behavior_id, _S.c.unassigned_at.is_(None))
            )
        ).one()
        return BehaviorSummary(
            behavior_id=behavior_id,
            agent_count=agent_count,
            tasks_completed=int(closed[0]) + int(open_[0]),
            successes=int(closed[1]) + int(open_[1]),
        )


__all__ = [
    "behavior_lineage",
    "behavior_revisions",
    "behavior_summary",
    "create_behavior",
    "get_behavior",
    "get_behavior_by_name",
    "get_behavior_revision",
    "list_behaviors",
    "mark_behavior_deleted",
    "script_sha256",
]
