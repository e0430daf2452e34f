"""The task-outcome write path: the statements record_tasks runs, built once.

A batch changes the agent's row and, per script in the batch, that script's row in
agent_revision_stats. Counters are updated with arithmetic on the current values
(`n = n + :k`), never with values computed in Python from a read, so concurrent writers
serialize on the row locks and none is lost.

Attribution (see stats.attribute): the batch arrives split into per-script groups; a group
whose sha256 is NULL is the agent's current script. The agent's lifetime counters take every
group; its `current_*` counters (the open assignment's) only the groups of
`current_sha256`, compared inside the statement that holds the agent row's lock, so a
concurrent assign_behavior (which changes current_sha256 under the same lock) cannot make a
batch count for the wrong assignment.

Lock order: the agent row first, then the script rows in sha256 order, in every writer
(assign_behavior and allow_scripts too; an upsert locks the rows it conflicts with even when
it changes nothing), so no two writers wait on each other crosswise.

PostgreSQL: one statement in autocommit mode, so the row locks are held only while the
server runs it and commits, never across a client round trip (as in pgbench's hot-row
UPDATE). Data-modifying CTEs: with a batch id, `new_batch` first inserts the id into
processed_report_batches (ON CONFLICT DO NOTHING; only if the agent exists) and the agent
UPDATE runs only if that insert happened; `agent` updates the agent row and returns the
current_sha256 it saw under the lock; `per_script` adds each group to its script's row,
NULL groups going to that current_sha256. The groups travel as parallel arrays (unnest).
Written as SQL text: arrays, unnest and the CTE chain read better than their Core forms.

SQLite: the same effect as statements in one BEGIN IMMEDIATE transaction (SQLite has no DML
in CTEs; its writers are serialized by the database lock, so reading current_sha256 first
is safe there).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    Update,
    bindparam,
    case,
    select,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql.dml import Insert

from agent_registry.registry.models import AGENTS, BATCHES, REVISION_STATS, UTCDateTime
from agent_registry.registry.stats import Attribution, BatchEffect, ScriptGroup

_A = AGENTS
_B = BATCHES
_R = REVISION_STATS

# -- PostgreSQL -----------------------------------------------------------------------------

_GROUP_ARRAYS = (
    ("g_sha", "varchar", "sha"),
    ("g_tasks", "int", "tasks"),
    ("g_successes", "int", "successes"),
    ("g_timed", "int", "timed"),
    ("g_total_ms", "float8", "total_ms"),
    ("g_first_at", "timestamptz", "first_at"),
    ("g_last_at", "timestamptz", "last_at"),
)
_GROUPS = "unnest({}) AS g({})".format(
    ", ".join(f"%({param})s::{cast}[]" for param, cast, _ in _GROUP_ARRAYS),
    ", ".join(name for _, _, name in _GROUP_ARRAYS),
)


def _current_add(column: str, param: str, cast: str) -> str:
    # A scalar subquery over the parameters only (no CTE): when the UPDATE waits for the row
    # lock, PostgreSQL re-evaluates SET against the newest row version (EvalPlanQual), and
    # this subquery then sees the current_sha256 of that version.
    return (
        f"{column} = a.{column} + COALESCE((SELECT sum(g.n) "
        f"FROM unnest(%(g_sha)s::varchar[], %({param})s::{cast}[]) AS g(sha, n) "
        "WHERE g.sha IS NULL OR g.sha = a.current_sha256), 0)"
    )


_AGENT_SET = ",\n        ".join(
    [
        "tasks_completed = a.tasks_completed + %(p_tasks)s::bigint",
        "successes = a.successes + %(p_successes)s::bigint",
        "timed_tasks = a.timed_tasks + %(p_timed)s::bigint",
        "total_response_time_ms = a.total_response_time_ms + %(p_total_ms)s::float8",
        _current_add("current_tasks_completed", "g_tasks", "int"),
        _current_add("current_successes", "g_successes", "int"),
        _current_add("current_timed_tasks", "g_timed", "int"),
        _current_add("current_total_response_time_ms", "g_total_ms", "float8"),
        "cycles_completed = a.cycles_completed + %(p_cycles)s::bigint",
        # consecutive = previous * keep + trailing (keep = 0 when the batch had a success)
        "consecutive_failures = a.consecutive_failures * %(p_keep_failures)s::bigint"
        " + %(p_trailing_failures)s::bigint",
        # GREATEST/LEAST ignore NULLs: a NULL parameter keeps the column.
        "last_task_at = GREATEST(a.last_task_at, %(p_last_task_at)s::timestamptz)",
        "last_success_at = GREATEST(a.last_success_at, %(p_last_success_at)s::timestamptz)",
        "last_failure_at = GREATEST(a.last_failure_at, %(p_last_failure_at)s::timestamptz)",
        "updated_at = %(p_now)s::timestamptz",
    ]
)

_NEW_BATCH = """new_batch AS (
    INSERT INTO processed_report_batches (batch_id, agent_id, recorded, processed_at)
    SELECT %(p_batch_id)s::uuid, %(p_agent_id)s::varchar, %(p_recorded)s::int,
        %(p_now)s::timestamptz
    WHERE EXISTS (SELECT FROM agent_registry WHERE agent_id = %(p_agent_id)s::varchar)
    ON CONFLICT (batch_id) DO NOTHING
    RETURNING batch_id
), """

# An upsert, not an UPDATE: a batch that waited for the agent row's lock while
# assign_behavior switched to a script delivered for the first time must count for it, and
# that script's row was committed after this statement's snapshot, invisible to an UPDATE;
# ON CONFLICT finds it anyway. The row always exists (a script is known delivered before
# the statement starts, and the current script's row commits with the assignment), so the
# insert branch never runs; its label is the nil behavior id, which the foreign key
# refuses, so a broken invariant fails the batch instead of making up a row.
_PER_SCRIPT = f"""per_script AS (
    INSERT INTO agent_revision_stats AS s (agent_id, script_sha256, behavior_id, revision,
        tasks, successes, timed_tasks, total_response_time_ms, first_task_at, last_task_at,
        delivered_at)
    SELECT %(p_agent_id)s::varchar, t.sha, '00000000-0000-0000-0000-000000000000'::uuid, 0,
        t.tasks, t.successes, t.timed, t.total_ms, t.first_at, t.last_at, %(p_now)s::timestamptz
    FROM (
        SELECT COALESCE(g.sha, agent.current_sha256) AS sha, sum(g.tasks) AS tasks,
            sum(g.successes) AS successes, sum(g.timed) AS timed, sum(g.total_ms) AS total_ms,
            min(g.first_at) AS first_at, max(g.last_at) AS last_at
        FROM agent, {_GROUPS}
        GROUP BY 1
    ) AS t
    ORDER BY t.sha COLLATE "C"
    ON CONFLICT (agent_id, script_sha256) DO UPDATE SET
        tasks = s.tasks + EXCLUDED.tasks,
        successes = s.successes + EXCLUDED.successes,
        timed_tasks = s.timed_tasks + EXCLUDED.timed_tasks,
        total_response_time_ms = s.total_response_time_ms + EXCLUDED.total_response_time_ms,
        first_task_at = LEAST(s.first_task_at, EXCLUDED.first_task_at),
        last_task_at = GREATEST(s.last_task_at, EXCLUDED.last_task_at)
    RETURNING 1
)"""


def _postgres(*, batched: bool) -> str:
    # `FROM new_batch` (a join), not WHERE EXISTS (SELECT FROM new_batch): when the UPDATE
    # waits for the row lock, PostgreSQL rechecks the newest row version (EvalPlanQual) and
    # in that recheck an EXISTS over a data-modifying CTE comes back empty, silently skipping
    # the update; a joined CTE row is carried into the recheck (ROW_MARK_COPY).
    return (
        "WITH "
        + (_NEW_BATCH if batched else "")
        + f"""agent AS (
    UPDATE agent_registry AS a SET
        {_AGENT_SET}
    {"FROM new_batch " if batched else ""}WHERE a.agent_id = %(p_agent_id)s::varchar
    RETURNING a.id, a.current_sha256
), {_PER_SCRIPT}
SELECT id FROM agent"""
    )


# Without a batch id (record_task): RETURNING tells whether the agent exists.
POSTGRES_PLAIN = _postgres(batched=False)
# With a batch id: no row when the agent is missing or the batch was counted before.
POSTGRES_BATCHED = _postgres(batched=True)


def _effect_params(effect: BatchEffect, cycles: int, now: datetime) -> dict[str, Any]:
    return {
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


def postgres_params(
    agent_id: str,
    attribution: Attribution,
    cycles: int,
    now: datetime,
    batch_id: Any = None,
) -> dict[str, Any]:
    groups = attribution.groups
    values = {
        "p_agent_id": agent_id,
        **_effect_params(attribution.effect, cycles, now),
        "g_sha": [g.sha256 for g in groups],
        "g_tasks": [g.tasks for g in groups],
        "g_successes": [g.successes for g in groups],
        "g_timed": [g.timed_tasks for g in groups],
        "g_total_ms": [g.total_response_time_ms for g in groups],
        "g_first_at": [g.first_task_at for g in groups],
        "g_last_at": [g.last_task_at for g in groups],
    }
    if batch_id is not None:
        values |= {"p_batch_id": batch_id, "p_recorded": attribution.recorded}
    return values


# -- SQLite ---------------------------------------------------------------------------------


def _latest(column: Any, param: str) -> ColumnElement[Any]:
    """The later of the column and the parameter; a NULL parameter keeps the column."""
    value = bindparam(param, type_=UTCDateTime())
    return case(
        (value.is_(None), column),
        (column.is_(None), value),
        (column < value, value),
        else_=column,
    )


def _earliest(column: Any, param: str) -> ColumnElement[Any]:
    value = bindparam(param, type_=UTCDateTime())
    return case(
        (value.is_(None), column),
        (column.is_(None), value),
        (column > value, value),
        else_=column,
    )


def _add(column: Any, param: str) -> ColumnElement[Any]:
    return column + bindparam(param)  # type: ignore[no-any-return]


SQLITE_CURRENT: Select[Any] = select(_A.c.current_sha256).where(
    _A.c.agent_id == bindparam("p_agent_id", type_=String())
)

SQLITE_AGENT_UPDATE: Update = (
    update(_A)
    .where(_A.c.agent_id == bindparam("p_agent_id", type_=String()))
    .values(
        tasks_completed=_add(_A.c.tasks_completed, "p_tasks"),
        successes=_add(_A.c.successes, "p_successes"),
        timed_tasks=_add(_A.c.timed_tasks, "p_timed"),
        total_response_time_ms=_add(_A.c.total_response_time_ms, "p_total_ms"),
        current_tasks_completed=_add(_A.c.current_tasks_completed, "p_cur_tasks"),
        current_successes=_add(_A.c.current_successes, "p_cur_successes"),
        current_timed_tasks=_add(_A.c.current_timed_tasks, "p_cur_timed"),
        current_total_response_time_ms=_add(_A.c.current_total_response_time_ms, "p_cur_total_ms"),
        cycles_completed=_add(_A.c.cycles_completed, "p_cycles"),
        consecutive_failures=_A.c.consecutive_failures * bindparam("p_keep_failures")
        + bindparam("p_trailing_failures"),
        last_task_at=_latest(_A.c.last_task_at, "p_last_task_at"),
        last_success_at=_latest(_A.c.last_success_at, "p_last_success_at"),
        last_failure_at=_latest(_A.c.last_failure_at, "p_last_failure_at"),
        updated_at=bindparam("p_now", type_=UTCDateTime()),
    )
)

SQLITE_SCRIPT_UPDATE: Update = (
    update(_R)
    .where(
        _R.c.agent_id == bindparam("p_agent_id", type_=String()),
        _R.c.script_sha256 == bindparam("p_sha", type_=String()),
    )
    .values(
        tasks=_add(_R.c.tasks, "p_g_tasks"),
        successes=_add(_R.c.successes, "p_g_successes"),
        timed_tasks=_add(_R.c.timed_tasks, "p_g_timed"),
        total_response_time_ms=_add(_R.c.total_response_time_ms, "p_g_total_ms"),
        first_task_at=_earliest(_R.c.first_task_at, "p_g_first_at"),
        last_task_at=_latest(_R.c.last_task_at, "p_g_last_at"),
    )
)


def sqlite_batch_insert() -> Insert:
    # RETURNING tells whether a row went in (rowcount of an INSERT is not reliable across
    # drivers).
    return (
        sqlite.insert(_B)
        .on_conflict_do_nothing(index_elements=[_B.c.batch_id])
        .returning(_B.c.batch_id)
    )


SQLITE_BATCH_INSERT: Insert = sqlite_batch_insert()


def resolved_groups(groups: Sequence[ScriptGroup], current: str | None) -> list[ScriptGroup]:
    """The groups with the current script's (sha256 None) resolved to `current` and merged
    with a group naming it explicitly (one UPDATE per script row)."""
    merged: dict[str, ScriptGroup] = {}
    for group in groups:
        sha = group.sha256 if group.sha256 is not None else current
        if sha is None:
            continue  # attribute() accepts such outcomes only when a current script exists
        into = merged.get(sha)
        if into is None:
            merged[sha] = ScriptGroup(
                sha,
                group.tasks,
                group.successes,
                group.timed_tasks,
                group.total_response_time_ms,
                group.first_task_at,
                group.last_task_at,
            )
            continue
        into.tasks += group.tasks
        into.successes += group.successes
        into.timed_tasks += group.timed_tasks
        into.total_response_time_ms += group.total_response_time_ms
        into.first_task_at = _min(into.first_task_at, group.first_task_at)
        into.last_task_at = _max(into.last_task_at, group.last_task_at)
    return list(merged.values())


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def sqlite_agent_params(
    agent_id: str,
    attribution: Attribution,
    groups: Sequence[ScriptGroup],
    current: str | None,
    cycles: int,
    now: datetime,
) -> dict[str, Any]:
    mine = next((g for g in groups if g.sha256 is not None and g.sha256 == current), None)
    return {
        "p_agent_id": agent_id,
        **_effect_params(attribution.effect, cycles, now),
        "p_cur_tasks": mine.tasks if mine else 0,
        "p_cur_successes": mine.successes if mine else 0,
        "p_cur_timed": mine.timed_tasks if mine else 0,
        "p_cur_total_ms": mine.total_response_time_ms if mine else 0.0,
    }


def sqlite_script_params(agent_id: str, groups: Sequence[ScriptGroup]) -> list[dict[str, Any]]:
    return [
        {
            "p_agent_id": agent_id,
            "p_sha": g.sha256,
            "p_g_tasks": g.tasks,
            "p_g_successes": g.successes,
            "p_g_timed": g.timed_tasks,
            "p_g_total_ms": g.total_response_time_ms,
            "p_g_first_at": g.first_task_at,
            "p_g_last_at": g.last_task_at,
        }
        for g in groups
    ]


__all__ = [
    "POSTGRES_BATCHED",
    "POSTGRES_PLAIN",
    "SQLITE_AGENT_UPDATE",
    "SQLITE_BATCH_INSERT",
    "SQLITE_CURRENT",
    "SQLITE_SCRIPT_UPDATE",
    "postgres_params",
    "resolved_groups",
    "sqlite_agent_params",
    "sqlite_script_params",
]
