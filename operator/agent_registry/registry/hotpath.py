"""The task-outcome write path: the statements record_tasks runs, built once.

A batch changes ONE row: the agent's, which also holds the open assignment's counters (see
models.py). Counters are updated with arithmetic on the current values (`n = n + :k`), never
with values computed in Python from a read, so concurrent writers serialize on the row lock
and none is lost.

PostgreSQL: one statement in autocommit mode, so the hot row's lock is held only while the
server runs it and commits, never across a client round trip (as in pgbench's hot-row
UPDATE). With a batch id, a data-modifying CTE first inserts the id into
processed_report_batches (ON CONFLICT DO NOTHING; only if the agent exists) and the UPDATE
runs only if that insert happened: a repeated batch changes nothing.

SQLite: the same UPDATE and INSERT as two statements in one BEGIN IMMEDIATE transaction
(SQLite has no DML in CTEs; its writers are serialized by the database lock anyway).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    Update,
    Uuid,
    bindparam,
    case,
    exists,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from agent_registry.registry.models import AGENTS, BATCHES, UTCDateTime
from agent_registry.registry.stats import BatchEffect

_A = AGENTS
_B = BATCHES


def _latest(column: Any, param: str) -> ColumnElement[Any]:
    """The later of the column and the parameter; a NULL parameter keeps the column."""
    value = bindparam(param, type_=UTCDateTime())
    return case(
        (value.is_(None), column),
        (column.is_(None), value),
        (column < value, value),
        else_=column,
    )


def _add(column: Any, param: str) -> ColumnElement[Any]:
    return column + bindparam(param)  # type: ignore[no-any-return]


AGENT_UPDATE: Update = (
    update(_A)
    .where(_A.c.agent_id == bindparam("p_agent_id", type_=String()))
    .values(
        tasks_completed=_add(_A.c.tasks_completed, "p_tasks"),
        successes=_add(_A.c.successes, "p_successes"),
        timed_tasks=_add(_A.c.timed_tasks, "p_timed"),
        total_response_time_ms=_add(_A.c.total_response_time_ms, "p_total_ms"),
        current_tasks_completed=_add(_A.c.current_tasks_completed, "p_tasks"),
        current_successes=_add(_A.c.current_successes, "p_successes"),
        current_timed_tasks=_add(_A.c.current_timed_tasks, "p_timed"),
        current_total_response_time_ms=_add(_A.c.current_total_response_time_ms, "p_total_ms"),
        cycles_completed=_add(_A.c.cycles_completed, "p_cycles"),
        # consecutive = previous * keep + trailing (keep = 0 when the batch had a success)
        consecutive_failures=_A.c.consecutive_failures * bindparam("p_keep_failures")
        + bindparam("p_trailing_failures"),
        last_task_at=_latest(_A.c.last_task_at, "p_last_task_at"),
        last_success_at=_latest(_A.c.last_success_at, "p_last_success_at"),
        last_failure_at=_latest(_A.c.last_failure_at, "p_last_failure_at"),
        updated_at=bindparam("p_now", type_=UTCDateTime()),
    )
)

# record_task / a batch without id: the UPDATE alone. RETURNING tells whether the agent exists.
PLAIN: Update = AGENT_UPDATE.returning(_A.c.id)


def _postgres_batched() -> Update:
    agent_exists = exists().where(_A.c.agent_id == bindparam("p_agent_id", type_=String()))
    inserted = (
        postgresql.insert(_B)
        .from_select(
            ["batch_id", "agent_id", "recorded", "processed_at"],
            select(
                bindparam("p_batch_id", type_=Uuid()),
                bindparam("p_agent_id", type_=String()),
                bindparam("p_recorded", type_=Integer()),
                bindparam("p_now", type_=UTCDateTime()),
            ).where(agent_exists),
        )
        .on_conflict_do_nothing(index_elements=[_B.c.batch_id])
        .returning(_B.c.batch_id)
        .cte("new_batch")
    )
    # UPDATE ... FROM new_batch (a join), not WHERE EXISTS (SELECT FROM new_batch): when the
    # UPDATE waits for the row lock, PostgreSQL rechecks the newest row version (EvalPlanQual)
    # and in that recheck an EXISTS over a data-modifying CTE comes back empty, silently
    # skipping the update; a joined CTE row is carried into the recheck (ROW_MARK_COPY).
    return AGENT_UPDATE.add_cte(inserted).where(inserted.c.batch_id.is_not(None)).returning(_A.c.id)


POSTGRES_BATCHED: Update = _postgres_batched()


def sqlite_batch_insert() -> Insert:
    # RETURNING tells whether a row went in (rowcount of an INSERT is not reliable across
    # drivers).
    return (
        sqlite.insert(_B)
        .on_conflict_do_nothing(index_elements=[_B.c.batch_id])
        .returning(_B.c.batch_id)
    )


SQLITE_BATCH_INSERT: Insert = sqlite_batch_insert()


def params(
    agent_id: str,
    effect: BatchEffect,
    cycles: int,
    now: datetime,
    batch_id: Any = None,
) -> dict[str, Any]:
    values = {
        "p_agent_id": agent_id,
        "p_tasks": effect.tasks,
        "p_successes": effect.successes,
        "p_timed": effect.timed_tasks,
        "p_total_ms": effect.total_response_time_ms,
        "p_cycles": cycles,
        "p_keep_failures": effect.keep_failures,
        "p_trailing_failures": effect.trailing_failures,
        "p_last_task_at": effect.last_task_at,
        "p_last_success_at": effect.last_success_at,
        "p_last_failure_at": effect.last_failure_at,
        "p_now": now,
    }
    if batch_id is not None:
        values |= {"p_batch_id": batch_id, "p_recorded": effect.tasks}
    return values


__all__ = [
    "AGENT_UPDATE",
    "PLAIN",
    "POSTGRES_BATCHED",
    "SQLITE_BATCH_INSERT",
    "params",
]
