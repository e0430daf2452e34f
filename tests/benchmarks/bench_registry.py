"""Registry ingestion benchmark (standalone script, run by `make bench`; not collected by pytest).

Starts its own throwaway PostgreSQL (the same helper as the test fixture), then measures, on
that server in the same run:
- baseline: `pgbench` TPS of `UPDATE hot SET n = n + 1 WHERE id = 1` (one hot row);
- outcomes/s through `record_task` (one outcome per call) and `record_tasks` (batches of 100,
  each with a batch id, as the API ingests reports), all writing to ONE agent with an open
  assignment (the worst case: every write contends for the same rows); `record_tasks` twice:
  outcomes without a script (counted for the current one), and outcomes naming their script,
  90% the assigned one and 10% a canary delivered beside it (as the runtime sends them);
with 1, 8 and 32 concurrent writers. Writers are asyncio tasks spread over up to `nproc`
processes (one RegistryService each), so the Python client can use every core.

Usage: python tests/benchmarks/bench_registry.py [--seconds 5] [--writers 1,8,32]
       [--settings fast|durable|both] [--write-docs]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import multiprocessing as mp
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.machine import DOC, cpu_model, write_section  # noqa: E402
from fixtures.pgserver import FAST_SETTINGS, PostgresServer, find_bin_dir  # noqa: E402

BATCH = 100
AGENT = "bench/hot"
STABLE = "function on_task() end"
CANARY = "function on_task() return nil end"
MODES = ("record_task", "record_tasks", "record_tasks_sha")


def sha256(script: str) -> str:
    return hashlib.sha256(script.encode()).hexdigest()


SECTION = "## Registry ingestion (`tests/benchmarks/bench_registry.py`)"


# -- pgbench baseline -------------------------------------------------------------------------


def pgbench_tps(server: PostgresServer, database: str, clients: int, seconds: float) -> float:
    script = Path(tempfile.mkdtemp(prefix="agentreg-pgbench-")) / "hot.sql"
    script.write_text("UPDATE hot SET n = n + 1 WHERE id = 1;\n")
    script.parent.chmod(0o755)
    script.chmod(0o644)
    proc = subprocess.run(
        [
            str(server.bin_dir / "pgbench"),
            "-n",
            "-h",
            str(server.socket_dir),
            "-p",
            str(server.port),
            "-U",
            "postgres",
            "-c",
            str(clients),
            "-j",
            str(min(clients, os.cpu_count() or 1)),
            "-T",
            str(int(seconds)),
            "-f",
            str(script),
            database,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"tps = ([0-9.]+)", proc.stdout)
    if not match:
        raise RuntimeError(f"pgbench output not understood:\n{proc.stdout}\n{proc.stderr}")
    return float(match.group(1))


# -- registry writers -------------------------------------------------------------------------


def _writer_process(
    url: str, mode: str, tasks: int, seconds: float, ready: Any, go: Any, out: Any
) -> None:
    from agent_registry.registry import RegistryService
    from agent_registry.reports import TaskOutcome

    async def run() -> tuple[int, float]:
        registry = RegistryService.from_url(url, pool_size=tasks, max_overflow=0)
        count = 0
        outcomes: list[Any] = [(i % 5 != 0, 3.0) for i in range(BATCH)]
        if mode == "record_tasks_sha":
            outcomes = [
                TaskOutcome(
                    success=i % 5 != 0,
                    duration_ms=3.0,
                    behavior_sha256=sha256(CANARY if i % 10 == 0 else STABLE),
                )
                for i in range(BATCH)
            ]

        async def warm() -> None:  # one connection per writer, statements prepared
            for _ in range(6):
                await registry.record_tasks(AGENT, [(True, 1.0)])

        await asyncio.gather(*(warm() for _ in range(tasks)))
        ready.put(1)
        await asyncio.to_thread(go.wait)
        started = time.perf_counter()
        deadline = started + seconds

        async def one_writer() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                if mode == "record_task":
                    await registry.record_task(AGENT, True, duration_ms=3.0)
                    count += 1
                else:
                    # Not `count += await ...`: that reads `count` before the await and loses
                    # the other writers' increments made meanwhile.
                    result = await registry.record_tasks(AGENT, outcomes, batch_id=uuid.uuid4())
                    count += result.recorded

        await asyncio.gather(*(one_writer() for _ in range(tasks)))
        elapsed = time.perf_counter() - started
        await registry.close()
        return count, elapsed

    out.put(asyncio.run(run()))


def registry_rate(url: str, mode: str, writers: int, seconds: float) -> tuple[float, int]:
    """Outcomes per second, and how many outcomes were written in total (warm-up included)."""
    procs_n = min(writers, os.cpu_count() or 1)
    per_proc = [writers // procs_n + (1 if i < writers % procs_n else 0) for i in range(procs_n)]
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_writer_process, args=(url, mode, n, seconds, ready, go, out))
        for n in per_proc
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=180)
    go.set()  # every writer connected and warm: start together
    results = [out.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(30)
    count = sum(c for c, _ in results)
    elapsed = max(e for _, e in results)
    return count / elapsed, count + 6 * writers


async def prepare_registry(url: str) -> None:
    from agent_registry.registry import RegistryService, ScriptRef

    registry = RegistryService.from_url(url)
    await registry.register_agent(AGENT, "bench")
    stable = await registry.create_behavior("bench", "bench", STABLE)
    canary = await registry.create_behavior("bench", "bench", CANARY)
    await registry.allow_scripts(
        AGENT,
        [
            ScriptRef(stable.id, 1, stable.script_sha256),
            ScriptRef(canary.id, 2, canary.script_sha256),
        ],
    )
    await registry.assign_behavior(AGENT, stable.id, revision=1)
    await registry.close()


async def verify(url: str, expected: int) -> int:
    """The counts equal what the writers wrote: on the agent, on the scripts' rows, and on
    the assignment (its own script's outcomes: all but the canary's)."""
    from agent_registry.registry import RegistryService

    registry = RegistryService.from_url(url)
    agent = await registry.get_by_agent_id(AGENT)
    assignment = await registry.current_assignment(AGENT)
    rows = {r.script_sha256: r.tasks for r in await registry.agent_revision_stats()}
    await registry.close()
    if agent.tasks_completed != expected:
        raise AssertionError(f"{agent.tasks_completed} counted, {expected} written")
    if sum(rows.values()) != expected or rows[sha256(STABLE)] != assignment.tasks_completed:
        raise AssertionError(f"script rows {rows} disagree with {assignment.tasks_completed}")
    return agent.tasks_completed


# -- main -------------------------------------------------------------------------------------


SETTINGS = {
    "fast": ("fsync off", "fsync, synchronous_commit, full_page_writes off; CPU-bound"),
    "durable": ("durable", "PostgreSQL defaults: fsync and synchronous_commit on"),
}

DOC_INTRO = """
Run: `python tests/benchmarks/bench_registry.py --write-docs` (`make bench` runs it without
writing). It starts its own throwaway PostgreSQL (the test fixture's
`tests/fixtures/pgserver.py`), and on that server, in the same run, measures the baseline,
`pgbench -c N -j min(N, nproc)` of `UPDATE hot SET n = n + 1 WHERE id = 1` (one hot row), then
task outcomes ingested into ONE agent with an open assignment (every write contends for the
same rows, the worst case): `record_task` (one outcome per call) and `record_tasks` (batches of
100, each with a batch id, as the API ingests reports), the latter with outcomes that name no
script (counted for the assigned one) and with outcomes naming their script, 90% the assigned
one and 10% a canary delivered beside it (two script rows per batch). N writers are asyncio
tasks over min(N, nproc) processes, one `RegistryService` each, started together after
connecting and warming up. At the end it checks that the agent's count, the sum of its script
rows, and its assignment's count (the assigned script's row) equal the outcomes the writers
were told were recorded. The machine is shared with other builds and
tests: absolute numbers swing by 2x between runs (the disk's fsync latency even more); only
same-run ratios mean anything.
"""

DOC_NOTES = """
Why `record_task` with ONE sequential writer and fsync off stays below 0.5x: each call is a
full round trip awaited from Python, and asyncio + psycopg 3 alone cost ~150 us of CPU per
round trip here (a bare async psycopg `UPDATE ... n = n + 1` reaches ~3,600/s, under half of
pgbench's C client); with fsync on the commit dominates both, and with concurrent writers
group commit takes over.

What makes ingestion fast (`operator/agent_registry/registry/hotpath.py`, `pgfast.py`,
`coalescing.py`):
- A batch changes the agent row and one row per script it ran. The open assignment's
  counters live on the agent row (`current_*`, counting only its own script's outcomes), so a
  batch is a single-row `UPDATE ... SET n = n + :k` on the agent, like pgbench's, plus an
  upsert of its scripts' rows (`agent_revision_stats`).
- On PostgreSQL it is ONE statement in autocommit mode (data-modifying CTEs: the batch id
  insert, the agent UPDATE, the script rows' upsert from the batch's groups passed as arrays),
  so the row locks are never held across a client round trip; it runs as a server-side
  prepared statement on raw psycopg connections, bypassing SQLAlchemy's async engine
  (measured 1.3 ms of client CPU per call through it, 0.2-0.3 ms now). Which scripts were
  delivered to the agent (outcomes of any other are refused) is cached in the process: no
  extra round trip per batch.
- Concurrent `record_task` calls for the same agent are group-committed: those arriving while
  a write is in flight are written together by the next one (each caller still returns only
  after its own outcome is committed). So `record_task` scales with writers; pgbench's hot row
  does not.
"""


def measure(settings: str, writer_counts: list[int], seconds: float) -> list[dict[str, Any]]:
    from agent_registry.registry import migrate

    server = PostgresServer(settings={} if settings == "durable" else dict(FAST_SETTINGS))
    rows: list[dict[str, Any]] = []
    try:
        server.start()
        server.create_database("pgbench")
        import psycopg

        with psycopg.connect(server.conninfo("pgbench"), autocommit=True) as conn:
            conn.execute("CREATE TABLE hot (id int PRIMARY KEY, n bigint NOT NULL)")
            conn.execute("INSERT INTO hot VALUES (1, 0)")
        url = server.socket_url_for("registry")
        server.create_database("registry")
        migrate(url)
        asyncio.run(prepare_registry(url))
        counted = 0
        for writers in writer_counts:
            tps = pgbench_tps(server, "pgbench", writers, seconds)
            row: dict[str, Any] = {"settings": settings, "writers": writers, "pgbench_tps": tps}
            for mode in MODES:
                rate, written = registry_rate(url, mode, writers, seconds)
                row[f"{mode}_per_s"] = rate
                counted += written
            rows.append(row)
            print(json.dumps(row), flush=True)
        total = asyncio.run(verify(url, counted))
        print(f"verified: {total} outcomes counted on agent, scripts and assignment", flush=True)
    finally:
        server.destroy()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--writers", default="1,8,32")
    parser.add_argument("--settings", choices=["durable", "fast", "both"], default="both")
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOC.name}")
    args = parser.parse_args()
    writer_counts = [int(x) for x in args.writers.split(",")]
    chosen = ["fast", "durable"] if args.settings == "both" else [args.settings]
    tables = {name: measure(name, writer_counts, args.seconds) for name in chosen}
    report = render(tables, args.seconds)
    print(report)
    if args.write_docs:
        write_section(SECTION, DOC_INTRO + "\n" + report + "\n" + DOC_NOTES)


def render(tables: dict[str, list[dict[str, Any]]], seconds: float) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Machine: `nproc` = {os.cpu_count()}, {cpu_model()}, {platform.system()}"
        f" {platform.release()}; PostgreSQL {find_bin_dir().parent.name}, Python"
        f" {platform.python_version()}; run {now}, load average"
        f" {os.getloadavg()[0]:.1f} at the end; {seconds:.0f} s per measurement.",
    ]
    misses: list[str] = []
    for name, rows in tables.items():
        title, detail = SETTINGS[name]
        lines += [
            "",
            f"**{title}** (`--settings {name}`: {detail})",
            "",
            "| writers | pgbench hot-row UPDATE TPS | record_task outcomes/s (ratio) "
            "| record_tasks x100 outcomes/s (ratio) "
            "| record_tasks x100, named scripts, 10% canary, outcomes/s (ratio) |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            base = r["pgbench_tps"]
            single, batched = r["record_task_per_s"], r["record_tasks_per_s"]
            named = r["record_tasks_sha_per_s"]
            lines.append(
                f"| {r['writers']} | {base:,.0f} | {single:,.0f} ({single / base:.2f}x) "
                f"| {batched:,.0f} ({batched / base:.1f}x) | {named:,.0f} ({named / base:.1f}x) |"
            )
            for mode, rate in (("record_tasks", batched), ("record_tasks (named)", named)):
                if rate < 50_000:
                    misses.append(f"{mode}, {title}, {r['writers']} writers")
            if single < 0.5 * base:
                misses.append(f"record_task, {title}, {r['writers']} writer(s)")
    lines += [
        "",
        "Targets on 2 cores: `record_tasks` >= 50,000 outcomes/s; `record_task` >= 0.5x pgbench."
        + (f" Missed in this run: {'; '.join(misses)}." if misses else " All met in this run."),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
