"""The task-outcome write path: the statements record_tasks runs, built once.

A batch changes the agent's row and, for outcomes of scripts other than the agent's current
one, those scripts' rows in agent_revision_stats. Counters are updated with arithmetic on
the current values (`n = n + :k`), never with values computed in Python from a read, so
concurrent writers serialize on the row locks and none is lost.

Attribution (see stats.attribute): the batch arrives split into per-script groups; a group
whose sha256 is NULL is the agent's current script. The agent's lifetime counters take every
group. The current script's group goes to the agent's `current_*` (the open assignment's
counters, which also stand for the current script until assign_behavior folds them into its
row, see models.py); every other group to its script's row. Which group is current is
decided by comparing with `current_sha256` inside the statement that holds the agent row's
lock, so a concurrent assign_behavior (which changes it under the same lock) cannot make a
batch count for the wrong assignment. The common batch, all of the current script, thus
writes one row, as before attribution.

Every writer of script rows (this, assign_behavior, allow_scripts) holds the agent row's
lock first, so they never wait on each other crosswise. The script rows this statement
writes existed before it started (a script is known delivered before the statement runs,
and rows are never deleted), so a plain UPDATE finds them in its snapshot.

PostgreSQL: one statement in autocommit mode, so the row locks are held only while the
server runs it and commits, never across a client round trip (as in pgbench's hot-row
UPDATE). Data-modifying CTEs: with a batch id, `new_batch` first inserts the id into
processed_report_batches (ON CONFLICT DO NOTHING; only if the agent exists) and the agent
UPDATE runs only if that insert happened; `agent` updates the agent row and returns the
current_sha256 it saw under the lock; `per_script` adds the other groups to their rows.
Three shapes, by what the batch holds: only the current script's outcomes (no script named:
the statement of before attribution, nothing to compare), one named script (compared with
CASE on scalar parameters), several (groups as parallel arrays, unnest). Arrays and
subqueries cost a quarter of a batch's server time, so the common shapes avoid them.
Written as SQL text: arrays, unnest and the CTE chain read better than their Core forms.

SQLite: the same effect as statements in one BEGIN IMMEDIATE transaction (SQLite has no DML
in CTEs; its writers are serialized by the database lock, so reading current_sha256 first
is safe there).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

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

Shape = Literal["current", "one", "many"]

# -- PostgreSQL -----------------------------------------------------------------------------

_LIFETIME = [
    "tasks_completed = a.tasks_completed + %(p_tasks)s::bigint",
    "successes = a.successes + %(p_successes)s::bigint",
    "timed_tasks = a.timed_tasks + %(p_timed)s::bigint",
    "total_response_time_ms = a.total_response_time_ms + %(p_total_ms)s::float8",
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

# The current script's counters, and what a batch that is all its own adds to them.
_CURRENT = (
    ("current_tasks_completed", "a.current_tasks_completed + %(p_tasks)s::bigint"),
    ("current_successes", "a.current_successes + %(p_successes)s::bigint"),
    ("current_timed_tasks", "a.current_timed_tasks + %(p_timed)s::bigint"),
    (
        "current_total_response_time_ms",
        "a.current_total_response_time_ms + %(p_total_ms)s::float8",
    ),
    ("current_first_task_at", "LEAST(a.current_first_task_at, %(p_first_at)s::timestamptz)"),
    (
        "current_last_task_at",
        "GREATEST(a.current_last_task_at, %(p_last_task_at)s::timestamptz)",
    ),
)

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


def _current_set(shape: Shape) -> list[str]:
    if shape == "current":
        return [f"{column} = {added}" for column, added in _CURRENT]
    if shape == "one":
        # Current or not is decided on the locked row's version: when the UPDATE waits for
        # the lock, PostgreSQL re-evaluates SET against the newest row version
        # (EvalPlanQual), so this compares with the current_sha256 of that one.
        mine = "a.current_sha256 = %(g_sha)s::varchar"
        return [
            f"{column} = CASE WHEN {mine} THEN {added} ELSE a.{column} END"
            for column, added in _CURRENT
        ]
    # One subquery over the parameters only (no CTE, for the same recheck) sets all six.
    columns = ", ".join(column for column, _ in _CURRENT)
    return [
        f"({columns}) = (SELECT a.current_tasks_completed + COALESCE(sum(g.tasks), 0), "
        "a.current_successes + COALESCE(sum(g.successes), 0), "
        "a.current_timed_tasks + COALESCE(sum(g.timed), 0), "
        "a.current_total_response_time_ms + COALESCE(sum(g.total_ms), 0), "
        "LEAST(a.current_first_task_at, min(g.first_at)), "
        "GREATEST(a.current_last_task_at, max(g.last_at)) "
        f"FROM {_GROUPS} WHERE g.sha IS NULL OR g.sha = a.current_sha256)"
    ]


_NEW_BATCH = """new_batch AS (
    INSERT INTO processed_report_batches (batch_id, agent_id, recorded, processed_at)
    SELECT %(p_batch_id)s::uuid, %(p_agent_id)s::varchar, %(p_recorded)s::int,
        %(p_now)s::timestamptz
    WHERE EXISTS (SELECT FROM agent_registry WHERE agent_id = %(p_agent_id)s::varchar)
    ON CONFLICT (batch_id) DO NOTHING
    RETURNING batch_id
), """

_SCRIPT_SET = """
        tasks = s.tasks + t.tasks,
        successes = s.successes + t.successes,
        timed_tasks = s.timed_tasks + t.timed,
        total_response_time_ms = s.total_response_time_ms + t.total_ms,
        first_task_at = LEAST(s.first_task_at, t.first_at),
        last_task_at = GREATEST(s.last_task_at, t.last_at)"""

# The groups that are not the current script's, each added to its row. `FROM agent`: only
# once the agent row is locked, and compared with the current_sha256 seen under that lock.
_PER_SCRIPT: dict[Shape, str] = {
    "current": "",
    "one": f""", per_script AS (
    UPDATE agent_revision_stats AS s SET{_SCRIPT_SET}
    FROM (
        SELECT %(g_sha)s::varchar AS sha, %(p_tasks)s::bigint AS tasks,
            %(p_successes)s::bigint AS successes, %(p_timed)s::bigint AS timed,
            %(p_total_ms)s::float8 AS total_ms, %(p_first_at)s::timestamptz AS first_at,
            %(p_last_task_at)s::timestamptz AS last_at
        FROM agent WHERE agent.current_sha256 IS DISTINCT FROM %(g_sha)s::varchar
    ) AS t
    WHERE s.agent_id = %(p_agent_id)s::varchar AND s.script_sha256 = t.sha
    RETURNING 1
)""",
    "many": f""", per_script AS (
    UPDATE agent_revision_stats AS s SET{_SCRIPT_SET}
    FROM (
        -- One group per script (the NULL one is the current script's, not written here).
        SELECT g.sha, g.tasks, g.successes, g.timed, g.total_ms, g.first_at, g.last_at
        FROM agent, {_GROUPS}
        WHERE g.sha IS NOT NULL AND g.sha IS DISTINCT FROM agent.current_sha256
    ) AS t
    WHERE s.agent_id = %(p_agent_id)s::varchar AND s.script_sha256 = t.sha
    RETURNING 1
)""",
}


def _postgres(shape: Shape, *, batched: bool) -> str:
    # `FROM new_batch` (a join), not WHERE EXISTS (SELECT FROM new_batch): when the UPDATE
    # waits for the row lock, PostgreSQL rechecks the newest row version (EvalPlanQual) and
    # in that recheck an EXISTS over a data-modifying CTE comes back empty, silently skipping
    # the update; a joined CTE row is carried into the recheck (ROW_MARK_COPY). The same
    # holds for per_script's FROM subquery over `agent`.
    sets = ",\n        ".join(_LIFETIME + _current_set(shape))
    return (
        "WITH "
        + (_NEW_BATCH if batched else "")
        + f"""agent AS (
    UPDATE agent_registry AS a SET
        {sets}
    {"FROM new_batch " if batched else ""}WHERE a.agent_id = %(p_agent_id)s::varchar
    RETURNING a.id, a.current_sha256
){_PER_SCRIPT[shape]}
SELECT id FROM agent"""
    )


# By shape and whether the batch has an id: without one (record_task), RETURNING tells
# whether the agent exists; with one, no row also when the batch was counted before.
POSTGRES: dict[tuple[Shape, bool], str] = {
    (shape, batched): _postgres(shape, batched=batched)
    for shape in ("current", "one", "many")
    for batched in (False, True)
}


def shape_of(groups: Sequence[ScriptGroup]) -> Shape:
    if all(g.sha256 is None for g in groups):
        return "current"  # no script named (or no outcome): all the current script's
    return "one" if len(groups) == 1 else "many"


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


def _array(items: Sequence[object]) -> str:
    """A PostgreSQL array literal, e.g. {1,NULL,2}. The groups go as text that the server
    parses through the statement's casts: psycopg's adaptation of Python lists (element type
    inference per call) cost 0.3 ms of client CPU per batch, half a single writer's rate.
    Elements are hex digests, numbers and ISO timestamps: no quoting or escaping needed."""
    return "{" + ",".join("NULL" if item is None else str(item) for item in items) + "}"


def _times(items: Sequence[datetime | None]) -> str:
    return _array([None if at is None else at.isoformat() for at in items])


def postgres_statement(
    agent_id: str,
    attribution: Attribution,
    cycles: int,
    now: datetime,
    batch_id: Any = None,
) -> tuple[str, dict[str, Any]]:
    """The statement for this batch, and its parameters."""
    groups = attribution.groups
    shape = shape_of(groups)
    values = {
        "p_agent_id": agent_id,
        **_effect_params(attribution.effect, cycles, now),
        "p_first_at": min(
            (g.first_task_at for g in groups if g.first_task_at is not None), default=None
        ),
    }
    if shape == "one":
        values["g_sha"] = groups[0].sha256
    elif shape == "many":
        values |= {
            "g_sha": _array([g.sha256 for g in groups]),
            "g_tasks": _array([g.tasks for g in groups]),
            "g_successes": _array([g.successes for g in groups]),
            "g_timed": _array([g.timed_tasks for g in groups]),
            "g_total_ms": _array([repr(g.total_response_time_ms) for g in groups]),
            "g_first_at": _times([g.first_task_at for g in groups]),
            "g_last_at": _times([g.last_task_at for g in groups]),
        }
    if batch_id is not None:
        values |= {"p_batch_id": batch_id, "p_recorded": attribution.recorded}
    return POSTGRES[(shape, batch_id is not None)], values


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
        current_first_task_at=_earliest(_A.c.current_first_task_at, "p_cur_first_at"),
        current_last_task_at=_latest(_A.c.current_last_task_at, "p_cur_last_at"),
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


def split_current(
    groups: Sequence[ScriptGroup], current: str | None
) -> tuple[ScriptGroup | None, list[ScriptGroup]]:
    """The current script's group (for the agent's current_*) and the others (for their
    rows), of groups resolved by resolved_groups."""
    mine = next((g for g in groups if current is not None and g.sha256 == current), None)
    return mine, [g for g in groups if g is not mine]


def sqlite_agent_params(
    agent_id: str,
    attribution: Attribution,
    mine: ScriptGroup | None,
    cycles: int,
    now: datetime,
) -> dict[str, Any]:
    return {
        "p_agent_id": agent_id,
        **_effect_params(attribution.effect, cycles, now),
        "p_cur_tasks": mine.tasks if mine else 0,
        "p_cur_successes": mine.successes if mine else 0,
        "p_cur_timed": mine.timed_tasks if mine else 0,
        "p_cur_total_ms": mine.total_response_time_ms if mine else 0.0,
        "p_cur_first_at": mine.first_task_at if mine else None,
        "p_cur_last_at": mine.last_task_at if mine else None,
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
    "POSTGRES",
    "SQLITE_AGENT_UPDATE",
    "SQLITE_BATCH_INSERT",
    "SQLITE_CURRENT",
    "SQLITE_SCRIPT_UPDATE",
    "Shape",
    "postgres_statement",
    "resolved_groups",
    "shape_of",
    "split_current",
    "sqlite_agent_params",
    "sqlite_script_params",
]
