"""What agents report: task outcomes (attributed to the script that ran them, see
stats.attribute, and counted on the hot path, see hotpath.py), absolute stats
(the seed's update_stats), and which script the runtime loaded or refused. The implementation
behind RegistryService's stats and load methods."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select, update

from agent_registry.registry import hotpath
from agent_registry.registry.delivered import NOTHING, DeliveredScripts
from agent_registry.registry.errors import AgentNotFound, UnknownStatsField
from agent_registry.registry.models import AGENTS, ASSIGNMENTS, utcnow
from agent_registry.registry.records import AgentRecord, LoadConfirmation, RecordResult, Refusal
from agent_registry.registry.rows import agent_record, agent_row, open_assignment
from agent_registry.registry.stats import Attribution, Outcome, attribute, needs, prepare
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
    delivered: DeliveredScripts,
    agent_id: str,
    outcomes: Iterable[Outcome],
    batch_id: uuid.UUID | None,
    cycles: int,
    loaded_sha256: str | None,
) -> RecordResult:
    if cycles < 0:
        raise ValueError("cycles must be >= 0")
    now = utcnow()
    batch = prepare(outcomes, now)
    needed = needs(batch, loaded_sha256)
    known = await delivered.covering(db, agent_id, needed) if batch.outcomes else NOTHING
    attribution = attribute(
        batch,
        loaded_sha256=loaded_sha256,
        delivered=known.shas,
        has_current=known.has_current,
    )
    refused = [Refusal(index=i, sha256=sha, reason=why) for i, sha, why in attribution.refused]
    if db.fast is not None:
        counted = await _record_postgres(db, agent_id, attribution, batch_id, cycles, now)
    else:
        counted = await _record_sqlite(db, agent_id, attribution, batch_id, cycles, now)
    if counted:
        return RecordResult(recorded=attribution.recorded, refused=refused)
    return RecordResult(recorded=0, refused=refused, duplicate=True)


async def _record_postgres(
    db: Database,
    agent_id: str,
    attribution: Attribution,
    batch_id: uuid.UUID | None,
    cycles: int,
    now: datetime,
) -> bool:
    """Whether the batch was counted (False: counted before); AgentNotFound if missing."""
    assert db.fast is not None
    sql, values = hotpath.postgres_statement(agent_id, attribution, cycles, now, batch_id)
    if await db.fast.fetch_one(sql, values) is not None:
        return True
    # Nothing changed: the agent does not exist, or the batch was counted before.
    async with db.read("record_tasks") as conn:
        known = await conn.execute(select(_A.c.id).where(_A.c.agent_id == agent_id))
        if known.first() is None:
            raise AgentNotFound(agent_id)
    return False


async def _record_sqlite(
    db: Database,
    agent_id: str,
    attribution: Attribution,
    batch_id: uuid.UUID | None,
    cycles: int,
    now: datetime,
) -> bool:
    async with db.write("record_tasks") as conn:
        # Under the database's write lock (BEGIN IMMEDIATE): current_sha256 cannot change
        # before this transaction commits.
        agent = (await conn.execute(hotpath.SQLITE_CURRENT, {"p_agent_id": agent_id})).first()
        if agent is None:
            raise AgentNotFound(agent_id)
        if batch_id is not None:
            inserted = await conn.execute(
                hotpath.SQLITE_BATCH_INSERT,
                {
                    "batch_id": batch_id,
                    "agent_id": agent_id,
                    "recorded": attribution.recorded,
                    "processed_at": now,
                },
            )
            if inserted.first() is None:
                return False
        current = agent.current_sha256
        groups = hotpath.resolved_groups(attribution.groups, current)
        mine, others = hotpath.split_current(groups, current)
        await conn.execute(
            hotpath.SQLITE_AGENT_UPDATE,
            hotpath.sqlite_agent_params(agent_id, attribution, mine, cycles, now),
        )
        if others:
            await conn.execute(
                hotpath.SQLITE_SCRIPT_UPDATE, hotpath.sqlite_script_params(agent_id, others)
            )
    return True


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
            .values(loaded_sha256=sha256, loaded_at=loaded_at, updated_at=utcnow())
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
                .values(**_NO_LOAD_FAILURE, updated_at=utcnow())
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
                updated_at=utcnow(),
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
