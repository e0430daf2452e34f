"""The task-outcome write path: the statements record_tasks runs, built once.

A batch is one transaction of at most three statements, each touching one row:
1. UPDATE the agent's counters with arithmetic on the current values (`n = n + :k`), never a
   value computed in Python from a read: concurrent writers serialize on the row lock and
   none is lost. Its row lock also orders this batch against assign_behavior.
2. INSERT the batch id (ON CONFLICT DO NOTHING): nothing inserted means the batch was counted
   before, and the transaction is rolled back.
3. UPDATE the open assignment's counters. A separate statement on purpose: on PostgreSQL
   (READ COMMITTED) it takes a fresh snapshot after statement 1 got the agent's row lock, so
   it sees an assignment opened by a concurrent assign_behavior that committed meanwhile.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Update, and_, bindparam, case, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from agent_registry.registry.models import AGENTS, ASSIGNMENTS, BATCHES, UTCDateTime
from agent_registry.registry.stats import BatchEffect

_A = AGENTS
_S = ASSIGNMENTS
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


def _counter_values(table: Any) -> dict[str, Any]:
    return {
        "tasks_completed": table.c.tasks_completed + bindparam("n_tasks"),
        "successes": table.c.successes + bindparam("n_successes"),
        "timed_tasks": table.c.timed_tasks + bindparam("n_timed"),
        "total_response_time_ms": table.c.total_response_time_ms + bindparam("total_ms"),
    }


AGENT_UPDATE: Update = (
    update(_A)
    .where(_A.c.agent_id == bindparam("p_agent_id"))
    .values(
        **_counter_values(_A),
        cycles_completed=_A.c.cycles_completed + bindparam("n_cycles"),
        # consecutive = previous * keep + trailing (keep = 0 when the batch had a success)
        consecutive_failures=_A.c.consecutive_failures * bindparam("keep_failures")
        + bindparam("trailing_failures"),
        last_task_at=_latest(_A.c.last_task_at, "p_last_task_at"),
        last_success_at=_latest(_A.c.last_success_at, "p_last_success_at"),
        last_failure_at=_latest(_A.c.last_failure_at, "p_last_failure_at"),
        updated_at=bindparam("now", type_=UTCDateTime()),
    )
)

ASSIGNMENT_UPDATE: Update = (
    update(_S)
    .where(and_(_S.c.agent_id == bindparam("p_agent_id"), _S.c.unassigned_at.is_(None)))
    .values(**_counter_values(_S))
)


def batch_insert(dialect_name: str) -> Insert:
    insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    # RETURNING tells whether a row went in (rowcount of an INSERT is not reliable across
    # drivers: psycopg reports -1 here).
    return (
        insert(_B).on_conflict_do_nothing(index_elements=[_B.c.batch_id]).returning(_B.c.batch_id)
    )


def agent_params(agent_id: str, effect: BatchEffect, cycles: int, now: datetime) -> dict[str, Any]:
    return {
        "p_agent_id": agent_id,
        "n_tasks": effect.tasks,
        "n_successes": effect.successes,
        "n_timed": effect.timed_tasks,
        "total_ms": effect.total_response_time_ms,
        "n_cycles": cycles,
        "keep_failures": effect.keep_failures,
        "trailing_failures": effect.trailing_failures,
        "p_last_task_at": effect.last_task_at,
        "p_last_success_at": effect.last_success_at,
        "p_last_failure_at": effect.last_failure_at,
        "now": now,
    }


def assignment_params(agent_id: str, effect: BatchEffect) -> dict[str, Any]:
    return {
        "p_agent_id": agent_id,
        "n_tasks": effect.tasks,
        "n_successes": effect.successes,
        "n_timed": effect.timed_tasks,
        "total_ms": effect.total_response_time_ms,
    }


__all__ = [
    "AGENT_UPDATE",
    "ASSIGNMENT_UPDATE",
    "agent_params",
    "assignment_params",
    "batch_insert",
]
