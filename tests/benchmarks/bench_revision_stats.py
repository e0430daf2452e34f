"""Per-revision aggregates benchmark (standalone script, run by `make bench`; not collected).

Starts its own throwaway PostgreSQL, fills it with AGENTS agents (10 namespaces, 5 roles),
each with an open assignment of revision 3 of one behavior and a script row for each of its
3 revisions (agent_revision_stats: AGENTS x 3 rows), then measures, in the same run, the
latency seen by a caller of RegistryService (query, transfer and records):
- `revision_stats` for a role (1/5 of the agents), a namespace (1/10) and the behavior (all);
- `agent_revision_stats` for a namespace (AGENTS x 3 / 10 records), and `agent_script_counts`
  (the same counts as tuples, what a BehaviorPolicy reads) for it and for a role in it;
- `list_underperforming_agents` (the current query; 1% of the agents are flagged),
as p50 / p99 over --runs calls each, after one warm-up call.

Usage: python tests/benchmarks/bench_revision_stats.py [--agents 100000] [--runs 50]
       [--write-docs]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.machine import DOC, cpu_model, write_section  # noqa: E402
from fixtures.pgserver import FAST_SETTINGS, PostgresServer, find_bin_dir  # noqa: E402

SECTION = "## Per-revision aggregates (`tests/benchmarks/bench_revision_stats.py`)"
NAMESPACES = 10
ROLES = 5
BEHAVIOR = "00000000-0000-0000-0000-0000000000b1"


def sha(revision: int) -> str:
    return f"{revision:x}" * 64


# Set-based inserts: the registry's own calls would take an hour for this many agents, and
# the queries measured only read the rows.
FILL = [
    f"""INSERT INTO agent_behaviors (id, namespace, name, role_type, lua_script, script_sha256,
        revision, inserted_at, updated_at)
    VALUES ('{BEHAVIOR}', 'ns-0', 'bench', 'role-0', '', '{sha(3)}', 3, now(), now())""",
    f"""INSERT INTO agent_behavior_revisions (behavior_id, revision, lua_script, script_sha256,
        inserted_at)
    SELECT '{BEHAVIOR}', r, '', repeat(to_hex(r), 64), now() FROM generate_series(1, 3) r""",
    # Every 100th agent fails half its tasks on the current script: 1% underperformers.
    f"""INSERT INTO agent_registry (id, agent_id, agent_role, status, behavior_id,
        behavior_assigned_at, current_sha256, tasks_completed, successes, timed_tasks,
        total_response_time_ms, current_tasks_completed, current_successes,
        current_timed_tasks, current_total_response_time_ms, inserted_at, updated_at)
    SELECT gen_random_uuid(), 'ns-' || (i % {NAMESPACES}) || '/agent-' || i,
        'role-' || (i % {ROLES}), 'active', '{BEHAVIOR}', now(), '{sha(3)}',
        300 + i % 97, 290 + i % 97, 300 + i % 97, 3000.0,
        20 + i % 31, CASE WHEN i % 100 = 0 THEN 10 ELSE 20 + i % 31 END, 20 + i % 31, 200.0,
        now(), now()
    FROM generate_series(1, %(agents)s) i""",
    f"""INSERT INTO agent_behavior_assignments (id, agent_id, behavior_id, behavior_revision,
        script_sha256, assigned_at, assigned_by, reason, source)
    SELECT gen_random_uuid(), agent_id, '{BEHAVIOR}', 3, '{sha(3)}', now(), 'bench', 'spec',
        'Spec'
    FROM agent_registry""",
    f"""INSERT INTO agent_revision_stats (agent_id, script_sha256, behavior_id, revision, tasks,
        successes, timed_tasks, total_response_time_ms, first_task_at, last_task_at,
        delivered_at)
    SELECT a.agent_id, repeat(to_hex(r), 64), '{BEHAVIOR}', r, 100 + r, 90 + r, 100 + r,
        1000.0, now() - interval '1 day', now(), now() - interval '2 days'
    FROM agent_registry a, generate_series(1, 3) r""",
    "VACUUM ANALYZE",
]


# The ranking of list_underperforming_agents as it runs now (the expression of
# agent_registry_current_rate_index), and as it ran before migration 0005: the same filter on
# a NUMERIC rate nothing indexes, so every agent row is read. Same rows, same order.
_FILTER = "status = 'active' AND behavior_id IS NOT NULL AND current_tasks_completed >= 10"
RANKING = f"""SELECT agent_id FROM agent_registry
    WHERE (CAST(current_successes AS DOUBLE PRECISION) / nullif(current_tasks_completed, 0)) < 0.7
    AND {_FILTER}
    ORDER BY (CAST(current_successes AS DOUBLE PRECISION) / nullif(current_tasks_completed, 0)),
    current_tasks_completed DESC, agent_id"""
SCAN = f"""SELECT agent_id FROM agent_registry
    WHERE current_successes * 1.0 / current_tasks_completed < 0.7 AND {_FILTER}
    ORDER BY current_successes * 1.0 / current_tasks_completed, current_tasks_completed DESC,
    agent_id"""


def fill(server: PostgresServer, agents: int) -> None:
    import psycopg

    with psycopg.connect(server.conninfo("registry"), autocommit=True) as conn:
        for sql in FILL:
            conn.execute(sql.replace("%(agents)s", str(agents)).encode())
        # Settled, as a database that has run for a while: otherwise autovacuum's analyze of
        # the fresh rows lands in the middle of the measurements (a 40-60 ms outlier, which
        # with 50 calls is the p99).
        conn.execute(b"VACUUM ANALYZE")


async def timings(call: Callable[[], Awaitable[Any]], runs: int) -> tuple[float, float, int]:
    """p50 and p99 in ms, and how many items one call returned. A call under 50 ms runs ten
    times as often: of 50 samples the p99 is the slowest, one hiccup of the machine."""
    started = time.perf_counter()
    items = len(await call())  # warm-up: connection, statement caches
    if time.perf_counter() - started < 0.05:
        runs *= 10
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
    return statistics.median(samples), p99, items


async def measure(url: str, runs: int, agents: int) -> list[tuple[str, float, float, int]]:
    import uuid

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from agent_registry.registry import RegistryService

    registry = RegistryService.from_url(url)
    behavior = uuid.UUID(BEHAVIOR)
    engine = create_async_engine(url)

    async def rows_of(sql: str) -> list[Any]:
        async with engine.connect() as conn:
            return list(await conn.execute(text(sql)))

    calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("`revision_stats(role=...)`", lambda: registry.revision_stats(role="role-1")),
        ("`revision_stats(namespace=...)`", lambda: registry.revision_stats(namespace="ns-1")),
        (
            "`revision_stats(behavior_id=...)`",
            lambda: registry.revision_stats(behavior_id=behavior),
        ),
        (
            "`agent_revision_stats(namespace=...)`",
            lambda: registry.agent_revision_stats(namespace="ns-1"),
        ),
        (
            "`agent_script_counts(namespace=...)` (a policy's read: tuples, same counts)",
            lambda: registry.agent_script_counts(namespace="ns-1"),
        ),
        (
            "`agent_script_counts(namespace=..., role=...)`",
            lambda: registry.agent_script_counts(namespace="ns-1", role="role-1"),
        ),
        (
            "`list_agents(namespace=...)` (a policy's other read)",
            lambda: registry.list_agents(namespace="ns-1"),
        ),
        (
            "`list_underperforming_agents(0.7, min_tasks=10)`",
            lambda: registry.list_underperforming_agents(0.7, min_tasks=10),
        ),
        (
            "`list_underperforming_agents(0.7, min_tasks=10, limit=100)`",
            lambda: registry.list_underperforming_agents(0.7, min_tasks=10, limit=100),
        ),
        (
            "`list_underperforming_agents(..., limit=10, namespace=...)`",
            lambda: registry.list_underperforming_agents(
                0.7, min_tasks=10, limit=10, namespace="ns-0"
            ),
        ),
        ("underperformers ranking alone (the indexed query, ids only)", lambda: rows_of(RANKING)),
        ("baseline: the ranking before 0005 (a scan of every agent)", lambda: rows_of(SCAN)),
    ]
    rows = []
    try:
        for name, call in calls:
            p50, p99, items = await timings(call, runs)
            rows.append((name, p50, p99, items))
            print(f"{name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, {items} items", flush=True)
        check = await registry.revision_stats(behavior_id=behavior)
        if [(r.revision, r.agents, r.tasks) for r in check] != [
            (r, agents, agents * (100 + r)) for r in (1, 2, 3)
        ]:
            raise AssertionError(f"unexpected aggregate: {check}")
    finally:
        await registry.close()
        await engine.dispose()
    return rows


def render(rows: list[tuple[str, float, float, int]], agents: int, runs: int) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Machine: `nproc` = {os.cpu_count()}, {cpu_model()}, {platform.system()}"
        f" {platform.release()}; PostgreSQL {find_bin_dir().parent.name}, Python"
        f" {platform.python_version()}; run {now}, load average"
        f" {os.getloadavg()[0]:.1f} at the end; {agents:,} agents x 3 revisions"
        f" ({3 * agents:,} script rows); {runs} calls each, {10 * runs} for those under 50 ms.",
        "",
        "| call | items returned | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {items:,} | {p50:.1f} | {p99:.1f} |" for name, p50, p99, items in rows]
    return "\n".join(lines)


DOC_INTRO = """
Run: `python tests/benchmarks/bench_revision_stats.py --write-docs`. A throwaway PostgreSQL
(fsync off; these are reads) holds 100,000 agents in 10 namespaces and 5 roles, each with
an open assignment of revision 3 of one behavior and a row in `agent_revision_stats` for
each of the behavior's 3 revisions. Latency is what a `RegistryService` caller sees (query,
transfer, records), p50 / p99 over `--runs` calls (50 by default, ten times as many for calls
under 50 ms; the machine line says how many) after one warm-up, all in the same run, beside
the underperformers query: whole (1,000 flagged agents with their open assignments), the worst
100, a namespace's worst 10, its ranking alone (agent ids: the query the index serves), and,
as the baseline, that ranking as it ran before migration 0005 (a scan of every agent row).
"""

DOC_NOTES = """
Each `revision_stats` is one `GROUP BY (behavior_id, revision, script_sha256)` over the
script rows: for a behavior, the `(behavior_id, revision)` index; for a role, a join with
the agent rows through `agent_registry_role_index`; for a namespace, a prefix of
`agent_id` on the script rows themselves (no join). The index holds no counters
(no `INCLUDE`): a counter changed by every batch in an index would rule out HOT updates on
the ingestion path, which matters more than index-only scans here.

A BehaviorPolicy reads every script row of its namespace at each evaluation (every 15 s by
default). As `agent_revision_stats` records (a pydantic record per row) that read is mostly
Python; `agent_script_counts` adds the open assignment's share in SQL and returns the two
counters a policy uses as plain tuples, so the same 30,000 rows cost a fraction. Here every
agent of `ns-1` has the role `role-1`, so the role filter leaves every row: a namespace of one
role, the worst case for a policy.

The underperformers ranking reads `agent_registry_current_rate_index`, an index on the open
assignment's success rate (`successes / nullif(tasks, 0)` as a double), from the lowest rate
up to the threshold: its cost grows with the agents flagged, not with the fleet. That index
does hold counters, so a report's update of the agent row is no longer a HOT update (one more
index entry per row per batch). Alternating ingestion runs with and without it (fsync off,
8 writers) did not tell them apart on this shared machine: `record_tasks` at 6.9x and 11.2x
pgbench's hot-row TPS with the index, 11.6x and 9.5x without. The whole list is then
dominated by building its records (about 0.1 ms each in Python): a caller that wants the
worst few asks for them with `limit`.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOC.name}")
    args = parser.parse_args()

    from agent_registry.registry import migrate

    server = PostgresServer(settings=dict(FAST_SETTINGS))
    try:
        server.start()
        server.create_database("registry")
        url = server.socket_url_for("registry")
        migrate(url)
        started = time.perf_counter()
        fill(server, args.agents)
        print(f"filled in {time.perf_counter() - started:.1f} s", flush=True)
        rows = asyncio.run(measure(url, args.runs, args.agents))
    finally:
        server.destroy()
    report = render(rows, args.agents, args.runs)
    print(report)
    if args.write_docs:
        write_section(SECTION, DOC_INTRO + "\n" + report + "\n" + DOC_NOTES)


if __name__ == "__main__":
    main()
