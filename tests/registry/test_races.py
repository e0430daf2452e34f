"""Concurrent writers of the same registration, behavior or assignment (one process, many
connections): exactly one wins where one must, nothing is duplicated; outcome batches racing
a behavior switch count for the script that ran them and the assignment open when they are
written."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from agent_registry.registry import AgentAlreadyRegistered, RegistryService, ScriptRef
from agent_registry.reports import TaskOutcome


async def test_concurrent_registration_of_one_agent(registry: RegistryService) -> None:
    results = await asyncio.gather(
        *(registry.register_agent("ns/a", "dev") for _ in range(6)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(e, AgentAlreadyRegistered) for e in losers)
    assert len(await registry.list_agents()) == 1


async def test_concurrent_creation_of_one_behavior(registry: RegistryService) -> None:
    scripts = [f"function on_task() return {i} end" for i in range(4)]
    created = await asyncio.gather(
        *(registry.create_behavior("b", "dev", script) for script in scripts)
    )
    assert len({b.id for b in created}) == 1
    revisions = await registry.behavior_revisions(created[0].id)
    assert [r.revision for r in revisions] == [1, 2, 3, 4]
    final = await registry.get_behavior(created[0].id)
    assert final.revision == 4
    assert final.lua_script == revisions[-1].lua_script


async def test_concurrent_assignments_keep_one_open(registry: RegistryService) -> None:
    await registry.register_agent("ns/a", "dev")
    behaviors = [
        await registry.create_behavior(f"b{i}", "dev", f"function on_task() return {i} end")
        for i in range(5)
    ]
    await asyncio.gather(*(registry.assign_behavior("ns/a", b.id) for b in behaviors))
    history = await registry.assignment_history("ns/a")
    assert len(history) == 5
    assert sum(1 for h in history if h.is_open) == 1
    current = await registry.current_assignment("ns/a")
    assert (await registry.get_by_agent_id("ns/a")).behavior_id == current.behavior_id


async def _waiting_for_locks(conn: psycopg.AsyncConnection[Any], count: int) -> None:
    """Until `count` sessions of this database wait for a lock (bounded: a hang fails).
    `conn` must be outside a transaction: pg_stat_activity is a snapshot per transaction."""
    for _ in range(500):
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        row = await cursor.fetchone()
        if row is not None and row[0] >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {count} sessions ever waited for a lock")


def ran(sha: str) -> TaskOutcome:
    return TaskOutcome(success=True, duration_ms=1.0, behavior_sha256=sha)


async def _batches_behind_a_switch(
    postgres_url: str,
    registry: RegistryService,
    behavior_id: uuid.UUID,
    batches: list[list[TaskOutcome | tuple[bool, float]]],
) -> list[int]:
    """Hold the agent row's lock, queue assign_behavior behind it, then the batches behind
    that; release. The batches get the lock after the switch committed."""
    dsn = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    async with (
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as holder,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as watcher,
    ):
        await holder.execute("BEGIN")
        await holder.execute("SELECT 1 FROM agent_registry WHERE agent_id = 'ns/a' FOR UPDATE")
        switch = asyncio.create_task(registry.assign_behavior("ns/a", behavior_id))
        await _waiting_for_locks(watcher, 1)
        writes = [
            asyncio.create_task(registry.record_tasks("ns/a", batch, batch_id=uuid.uuid4()))
            for batch in batches
        ]
        await _waiting_for_locks(watcher, 1 + len(batches))
        await holder.execute("COMMIT")
        await switch
        return [(await write).recorded for write in writes]


async def test_a_batch_waiting_for_a_switch_counts_for_the_new_assignment(
    postgres_url: str, pg_registry: RegistryService
) -> None:
    """Batches wait for the agent row's lock while assign_behavior switches. They count for
    the assignment open when they get the lock: PostgreSQL rechecks a waiting UPDATE against
    the newest row version, and the current_sha256 compared is that version's, not the one
    of the statement's snapshot. The second switch delivers a script for the first time:
    its row is newer than the waiting statement's snapshot, and still gets its outcomes."""
    registry = pg_registry
    await registry.register_agent("ns/a", "dev")
    a, b, c = [
        await registry.create_behavior(name, "dev", f"function on_task() return {i} end")
        for i, name in enumerate("abc")
    ]
    await registry.assign_behavior("ns/a", a.id)
    await registry.allow_scripts("ns/a", [ScriptRef(b.id, 1, b.script_sha256)])
    await registry.record_tasks("ns/a", [(True, 1.0)])  # delivered scripts cached, warm

    # One batch of each statement shape: several scripts named, none, one.
    named: list[TaskOutcome | tuple[bool, float]] = [ran(a.script_sha256)] * 3
    named += [ran(b.script_sha256)] * 2
    unnamed: list[TaskOutcome | tuple[bool, float]] = [(True, 1.0)] * 4
    only_b: list[TaskOutcome | tuple[bool, float]] = [ran(b.script_sha256)] * 2
    batches = [named, unnamed, only_b]
    assert await _batches_behind_a_switch(postgres_url, registry, b.id, batches) == [5, 4, 2]
    assert await _batches_behind_a_switch(postgres_url, registry, c.id, batches) == [5, 4, 2]

    on_c, on_b, on_a = await registry.assignment_history("ns/a")
    assert (on_a.script_sha256, on_a.tasks_completed) == (a.script_sha256, 1)
    assert (on_b.script_sha256, on_b.tasks_completed) == (b.script_sha256, 2 + 4 + 2)
    assert (on_c.script_sha256, on_c.tasks_completed) == (c.script_sha256, 4)
    stats = {r.script_sha256: r.tasks for r in await registry.agent_revision_stats()}
    assert stats == {a.script_sha256: 1 + 3 + 3, b.script_sha256: 8 + 2 + 2, c.script_sha256: 4}
    assert (await registry.get_by_agent_id("ns/a")).tasks_completed == 23


async def test_concurrent_batches_deliveries_and_switches_lose_nothing(
    registry: RegistryService,
) -> None:
    """Mixed-script batches, deliveries and switches, all at once on one agent: every
    outcome lands on its script's row exactly once, and no two writers deadlock (a deadlock
    would surface as a RegistryError)."""
    await registry.register_agent("ns/a", "dev")
    behaviors = [
        await registry.create_behavior(f"b{i}", "dev", f"function on_task() return {i} end")
        for i in range(3)
    ]
    shas = [b.script_sha256 for b in behaviors]
    refs = [ScriptRef(b.id, 1, b.script_sha256) for b in behaviors]
    await registry.assign_behavior("ns/a", behaviors[0].id)
    await registry.allow_scripts("ns/a", refs)

    async def batches(lane: int) -> int:
        recorded = 0
        for i in range(15):
            outcomes: list[TaskOutcome | tuple[bool, float]] = [
                TaskOutcome(success=(i + j) % 2 == 0, behavior_sha256=shas[(lane + j) % 3])
                for j in range(6)
            ]
            outcomes.append((True, 1.0))  # the current script's, whichever it is
            result = await registry.record_tasks("ns/a", outcomes, batch_id=uuid.uuid4())
            recorded += result.recorded
        return recorded

    async def switches() -> None:
        for i in range(1, 10):
            await registry.assign_behavior("ns/a", behaviors[i % 3].id, reason=f"switch {i}")
            await registry.allow_scripts("ns/a", refs[::-1] if i % 2 else refs)

    recorded, _ = await asyncio.gather(
        asyncio.gather(*(batches(lane) for lane in range(4))), switches()
    )
    assert sum(recorded) == 4 * 15 * 7

    agent = await registry.get_by_agent_id("ns/a")
    assert agent.tasks_completed == 4 * 15 * 7
    per_script = await registry.agent_revision_stats(agent_ids=["ns/a"])
    assert sum(r.tasks for r in per_script) == agent.tasks_completed
    assert sum(r.successes for r in per_script) == agent.successes
    # Each script's named outcomes: 4 lanes x 15 batches x 2 outcomes per script.
    history = await registry.assignment_history("ns/a")
    assert len(history) == 10
    for row in per_script:
        runs = [h for h in history if h.script_sha256 == row.script_sha256]
        assert sum(h.tasks_completed for h in runs) <= row.tasks
    assert sum(h.tasks_completed for h in history) >= 4 * 15  # at least the unnamed ones
