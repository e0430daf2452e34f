"""What agents report: task outcomes (counted on the hot path, see hotpath.py), absolute stats
(the seed's update_stats), and which script the runtime loaded or refused. The implementation
behind RegistryService's stats and load methods."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select, update

from agent_registry.registry import hotpath
from agent_registry.registry.errors import AgentNotFound, UnknownStatsField
from agent_registry.registry.models import AGENTS, ASSIGNMENTS, utcnow
from agent_registry.registry.records import AgentRecord, LoadConfirmation
from agent_registry.registry.rows import agent_record, agent_row, open_assignment
from agent_registry.registry.stats import Outcome, batch_effect
from agent_registry.registry.transactions import Database

_A = AGENTS
_S = ASSIGNMENTS

# Fields update_stats accepts: the seed's update_stats_changeset, plus the exact counters.
# The seed's rates are converted to counters (see update_stats).
STATS_FIELDS = frozenset(
    {
        "cycles_completed",
        "tasks_completed",
        "success_rate",
        "avg_response_time_ms",
        "last_task_at",
        "last_success_at",
        "last_failure_at",
        "consecutive_failures",
        "successes",
        "timed_tasks",
        "total_response_time_ms",
    }
)
_NO_LOAD_FAILURE: dict[str, Any] = {
    "load_error": None,
    "load_error_line": None,
    "load_failed_sha256": None,
    "load_failed_at": None,
}


class LoadFailureLike(Protocol):
    """What record_load_failure reads (reports.LoadFailure fits; the registry does not
    import the report models)."""

    @property
    def sha256(self) -> str: ...
    @property
    def error(self) -> str: ...
    @property
    def line(self) -> int | None: ...
    @property
    def failed_at(self) -> datetime: ...


async def update_stats(db: Database, agent_id: str, fields: dict[str, Any]) -> AgentRecord:
    unknown = sorted(set(fields) - STATS_FIELDS)
    if unknown:
        raise UnknownStatsField(unknown)
    async with db.write("update_stats") as conn:
        row = await agent_row(db, conn, agent_id, lock=True)
        values = {
            k: v for k, v in fields.items() if k not in ("success_rate", "avg_response_time_ms")
        }
        tasks = int(values.get("tasks_completed", row.tasks_completed))
        if "success_rate" in fields:
            values["successes"] = round(float(fields["success_rate"]) * tasks)
        if "avg_response_time_ms" in fields:
            timed = int(values.get("timed_tasks", row.timed_tasks)) or tasks
            values["timed_tasks"] = timed
            values["total_response_time_ms"] = float(fields["avg_response_time_ms"]) * timed
        values["updated_at"] = utcnow()
        await conn.execute(update(_A).where(_A.c.agent_id == agent_id).values(**values))
        return agent_record(await agent_row(db, conn, agent_id))


async def record_tasks(
    db: Database,
    agent_id: str,
    outcomes: Iterable[Outcome],
    batch_id: uuid.UUID | None,
    cycles: int,
) -> int:
    now = utcnow()
    effect = batch_effect(outcomes, now)
    if cycles < 0:
        raise ValueError("cycles must be >= 0")
    values = hotpath.params(agent_id, effect, cycles, now, batch_id)
    if db.fast is not None:
        sql = db.plain_sql if batch_id is None else db.batched_sql
        if await db.fast.fetch_one(sql, values) is not None:
            return effect.tasks
        # Nothing changed: the agent does not exist, or the batch was counted before.
        async with db.read("record_tasks") as conn:
            known = await conn.execute(select(_A.c.id).where(_A.c.agent_id == agent_id))
            if known.first() is None:
                raise AgentNotFound(agent_id)
        return 0
    async with db.write("record_tasks") as conn:
        if (await conn.execute(hotpath.PLAIN, values)).first() is None:
            raise AgentNotFound(agent_id)
        if batch_id is not None:
            inserted = await conn.execute(
                hotpath.SQLITE_BATCH_INSERT,
                {
                    "batch_id": batch_id,
                    "agent_id": agent_id,
                    "recorded": effect.tasks,
                    "processed_at": now,
                },
            )
            if inserted.first() is None:
                await conn.rollback()
                return 0
    return effect.tasks


async def confirm_loaded(
    db: Database, agent_id: str, sha256: str, loaded_at: datetime
) -> LoadConfirmation:
    async with db.write("confirm_loaded") as conn:
        result = await conn.execute(
            update(_A)
            .where(
                _A.c.agent_id == agent_id,
                (_A.c.loaded_at.is_(None)) | (_A.c.loaded_at <= loaded_at),
            )
            .values(loaded_sha256=sha256, loaded_at=loaded_at)
        )
        if result.rowcount == 0:
            await agent_row(db, conn, agent_id)  # raises AgentNotFound if missing
        else:
            # A load of the refused script, or of anything after the refusal, supersedes it.
            await conn.execute(
                update(_A)
                .where(
                    _A.c.agent_id == agent_id,
                    _A.c.load_failed_sha256.is_not(None),
                    (_A.c.load_failed_sha256 == sha256) | (_A.c.load_failed_at <= loaded_at),
                )
                .values(**_NO_LOAD_FAILURE)
            )
        current = await open_assignment(conn, agent_id)
        if current is None:
            return LoadConfirmation(new=False, matches_assignment=False, assigned_at=None)
        matches = current.script_sha256 == sha256
        new = False
        if matches and current.loaded_at is None:
            marked = await conn.execute(
                update(_S)
                .where(_S.c.id == current.id, _S.c.loaded_at.is_(None))
                .values(loaded_at=loaded_at)
            )
            new = marked.rowcount == 1
        return LoadConfirmation(
            new=new, matches_assignment=matches, assigned_at=current.assigned_at
        )


async def record_load_failure(db: Database, agent_id: str, failure: LoadFailureLike) -> bool:
    failed_at = failure.failed_at
    async with db.write("record_load_failure") as conn:
        result = await conn.execute(
            update(_A)
            .where(
                _A.c.agent_id == agent_id,
                _A.c.load_failed_at.is_(None) | (_A.c.load_failed_at <= failed_at),
                _A.c.loaded_at.is_(None) | (_A.c.loaded_at < failed_at),
            )
            .values(
                load_error=failure.error,
                load_error_line=failure.line,
                load_failed_sha256=failure.sha256,
                load_failed_at=failed_at,
            )
        )
        if result.rowcount == 0:
            await agent_row(db, conn, agent_id)  # raises AgentNotFound if missing
            return False
        return True


__all__ = [
    "STATS_FIELDS",
    "LoadFailureLike",
    "confirm_loaded",
    "record_load_failure",
    "record_tasks",
    "update_stats",
]
