"""Exact counts under concurrency: 8 processes write 4,800 outcomes to one agent (record_task
and idempotent record_tasks batches, each batch also retried), while its assignment is
switched several times. Afterwards the counters are exact, and the agent's total equals the
sum over its assignments and over its scripts' rows (no outcome lost in a switch). On
PostgreSQL and on SQLite."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from agent_registry.registry import RegistryService

WRITER = Path(__file__).with_name("concurrent_writer.py")
PROCESSES = 8
SINGLES = 200
BATCHES = 20
BATCH_SIZE = 20


async def test_many_processes_lose_nothing(database_url: str, registry: RegistryService) -> None:
    agent_id = "ns/hot"
    await registry.register_agent(agent_id, "dev")
    behaviors = [
        await registry.create_behavior(f"b{i}", "dev", f"function on_task() return {i} end")
        for i in range(3)
    ]
    await registry.assign_behavior(agent_id, behaviors[0].id)

    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WRITER),
            database_url,
            agent_id,
            str(n),
            str(SINGLES),
            str(BATCHES),
            str(BATCH_SIZE),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(PROCESSES)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=120)
            assert line.strip() == b"ready", line
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        # Switch the behavior while the writers run.
        for i in range(1, 7):
            await registry.assign_behavior(agent_id, behaviors[i % 3].id, reason=f"switch {i}")
            await asyncio.sleep(0.1)
        results = []
        for proc in procs:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=240)
            assert proc.returncode == 0, err.decode()
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()

    tasks = sum(r["tasks"] for r in results)
    successes = sum(r["successes"] for r in results)
    assert tasks == PROCESSES * (SINGLES + BATCHES * BATCH_SIZE) >= 4000
    assert sum(r["recorded"] for r in results) == tasks
    assert sum(r["duplicates_counted"] for r in results) == 0

    agent = await registry.get_by_agent_id(agent_id)
    assert agent.tasks_completed == tasks
    assert agent.successes == successes
    assert agent.timed_tasks == tasks
    assert agent.total_response_time_ms == PROCESSES * (SINGLES * 2.0 + BATCHES * BATCH_SIZE)
    history = await registry.assignment_history(agent_id)
    assert len(history) == 7
    assert sum(h.tasks_completed for h in history) == tasks
    assert sum(h.successes for h in history) == successes
    # The writers' outcomes name no script: each counts for the script assigned when it is
    # written, so each script's row holds exactly what its assignments counted.
    per_script = {r.script_sha256: r for r in await registry.agent_revision_stats()}
    assert set(per_script) == {b.script_sha256 for b in behaviors}
    for sha, row in per_script.items():
        runs = [h for h in history if h.script_sha256 == sha]
        assert row.tasks == sum(h.tasks_completed for h in runs)
        assert row.successes == sum(h.successes for h in runs)
