"""Counting task outcomes: counters, streaks, timestamps, idempotent batches, update_stats,
and the underperformers query judged on the current assignment. (Which script an outcome
counts for: test_attribution.py.)"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from agent_registry.registry import (
    AgentNotFound,
    RecordResult,
    RegistryService,
    UnknownStatsField,
)
from agent_registry.registry.retention import prune_processed_batches
from agent_registry.reports import TaskOutcome

GOOD = "function on_task(t, ctx) return {accept = true, effort = 1} end"
BAD = "function on_task(t, ctx) return {accept = false, effort = 0} end"


async def assigned(registry: RegistryService, agent_id: str) -> None:
    """A registered agent with an assignment: its outcomes without a sha256 count for it."""
    await registry.register_agent(agent_id, "dev")
    behavior = await registry.create_behavior("good", "dev", GOOD)
    await registry.assign_behavior(agent_id, behavior.id)


async def test_record_task_like_the_seed(registry: RegistryService) -> None:
    await assigned(registry, "ns/a")
    assert await registry.record_task("ns/a", True, duration_ms=10.0)
    await registry.record_task("ns/a", False)
    await registry.record_task("ns/a", False, duration_ms=30.0)
    agent = await registry.get_by_agent_id("ns/a")
    assert (agent.tasks_completed, agent.successes) == (3, 1)
    assert agent.success_rate == pytest.approx(1 / 3)
    assert agent.avg_response_time_ms == pytest.approx(20.0)  # only timed tasks count
    assert agent.consecutive_failures == 2
    assert agent.last_task_at is not None
    assert agent.last_success_at is not None
    assert agent.last_failure_at is not None
    assert agent.last_success_at <= agent.last_failure_at == agent.last_task_at
    await registry.record_task("ns/a", True)
    assert (await registry.get_by_agent_id("ns/a")).consecutive_failures == 0


async def test_record_unknown_agent(registry: RegistryService) -> None:
    with pytest.raises(AgentNotFound):
        await registry.record_task("ns/missing", True)
    with pytest.raises(AgentNotFound):
        await registry.record_tasks("ns/missing", [(True, 1.0)], batch_id=uuid.uuid4())


async def test_record_task_without_an_assignment_is_refused(registry: RegistryService) -> None:
    await registry.register_agent("ns/a", "dev")
    assert not await registry.record_task("ns/a", True)
    result = await registry.record_tasks("ns/a", [(True, 1.0)], cycles=3)
    assert result.recorded == 0
    assert not result.duplicate
    assert [(r.index, r.sha256) for r in result.refused] == [(0, None)]
    assert "no script known" in result.refused[0].reason
    agent = await registry.get_by_agent_id("ns/a")
    assert (agent.tasks_completed, agent.cycles_completed) == (0, 3)


async def test_batch_with_report_payload(registry: RegistryService) -> None:
    await assigned(registry, "ns/a")
    finished = datetime.now(UTC) - timedelta(minutes=1)
    outcomes = [
        TaskOutcome(success=False, duration_ms=4.0),
        TaskOutcome(success=True, duration_ms=6.0, finished_at=finished),
        TaskOutcome(success=False, duration_ms=None),
    ]
    assert (await registry.record_tasks("ns/a", outcomes, cycles=5)).recorded == 3
    agent = await registry.get_by_agent_id("ns/a")
    assert (agent.tasks_completed, agent.successes, agent.timed_tasks) == (3, 1, 2)
    assert agent.cycles_completed == 5
    assert agent.consecutive_failures == 1
    assert agent.last_success_at == finished
    assert agent.total_response_time_ms == 10.0


async def test_cycles_only_batch(registry: RegistryService) -> None:
    await assigned(registry, "ns/a")
    await registry.record_tasks("ns/a", [(False, None)])
    assert await registry.record_tasks("ns/a", [], cycles=2) == RecordResult(recorded=0)
    agent = await registry.get_by_agent_id("ns/a")
    assert (agent.cycles_completed, agent.tasks_completed, agent.consecutive_failures) == (2, 1, 1)


async def test_batches_are_idempotent(registry: RegistryService) -> None:
    await registry.register_agent("ns/a", "dev")
    behavior = await registry.create_behavior("b", "dev", GOOD)
    await registry.assign_behavior("ns/a", behavior.id)
    batch = uuid.uuid4()
    outcomes = [(True, 1.0), (False, 2.0)]
    assert await registry.record_tasks("ns/a", outcomes, batch_id=batch, cycles=1) == RecordResult(
        recorded=2
    )
    again = await registry.record_tasks("ns/a", outcomes, batch_id=batch, cycles=1)
    assert again == RecordResult(recorded=0, duplicate=True)
    assert (await registry.record_tasks("ns/a", outcomes, batch_id=uuid.uuid4())).recorded == 2
    agent = await registry.get_by_agent_id("ns/a")
    assert (agent.tasks_completed, agent.cycles_completed) == (4, 1)
    assignment = await registry.current_assignment("ns/a")
    assert assignment.tasks_completed == 4


async def test_a_batch_id_counts_once_even_for_another_agent(registry: RegistryService) -> None:
    await assigned(registry, "ns/a")
    await assigned(registry, "ns/b")
    batch = uuid.uuid4()
    assert (await registry.record_tasks("ns/a", [(True, 1.0)], batch_id=batch)).recorded == 1
    assert (await registry.record_tasks("ns/b", [(True, 1.0)], batch_id=batch)).duplicate
    assert (await registry.get_by_agent_id("ns/b")).tasks_completed == 0


async def test_pruned_batch_records_are_forgotten_and_kept_ones_still_count_once(
    registry: RegistryService,
) -> None:
    await assigned(registry, "ns/a")
    old = [uuid.uuid4() for _ in range(3)]
    for batch in old:
        assert (await registry.record_tasks("ns/a", [(True, 1.0)], batch_id=batch)).recorded == 1
    await asyncio.sleep(0.01)
    cutoff = datetime.now(UTC)
    await asyncio.sleep(0.01)
    recent = uuid.uuid4()
    assert (await registry.record_tasks("ns/a", [(True, 1.0)], batch_id=recent)).recorded == 1

    assert await registry.prune_report_batches(cutoff) == 3
    assert await registry.prune_report_batches(cutoff) == 0
    assert (await registry.record_tasks("ns/a", [(True, 1.0)], batch_id=recent)).duplicate
    # A forgotten id counts again: why the retention must outlast every runtime's retries.
    assert (await registry.record_tasks("ns/a", [(True, 1.0)], batch_id=old[0])).recorded == 1
    assert (await registry.get_by_agent_id("ns/a")).tasks_completed == 5


async def test_pruning_goes_in_chunks_until_nothing_old_is_left(
    registry: RegistryService,
) -> None:
    await assigned(registry, "ns/a")
    for _ in range(5):
        await registry.record_tasks("ns/a", [(True, 1.0)], batch_id=uuid.uuid4())
    later = datetime.now(UTC) + timedelta(seconds=1)
    db = registry._db  # the chunk size is not part of the service's API
    assert await prune_processed_batches(db, later, chunk=2) == 5
    assert await prune_processed_batches(db, later, chunk=2) == 0


async def test_update_stats(registry: RegistryService) -> None:
    await assigned(registry, "ns/a")
    now = datetime.now(UTC)
    agent = await registry.update_stats(
        "ns/a",
        cycles_completed=7,
        tasks_completed=10,
        success_rate=0.8,
        avg_response_time_ms=12.5,
        consecutive_failures=2,
        last_task_at=now,
    )
    assert (agent.cycles_completed, agent.tasks_completed, agent.successes) == (7, 10, 8)
    assert agent.success_rate == pytest.approx(0.8)
    assert agent.avg_response_time_ms == pytest.approx(12.5)
    assert agent.consecutive_failures == 2
    assert agent.last_task_at == now
    # Counting continues from the set values.
    await registry.record_task("ns/a", True, duration_ms=12.5)
    agent = await registry.get_by_agent_id("ns/a")
    assert (agent.tasks_completed, agent.successes, agent.consecutive_failures) == (11, 9, 0)


async def test_update_stats_refuses_unknown_fields(registry: RegistryService) -> None:
    await registry.register_agent("ns/a", "dev")
    with pytest.raises(UnknownStatsField) as caught:
        await registry.update_stats("ns/a", tasks_completed=1, status="paused", bogus=1)
    assert caught.value.fields == ["bogus", "status"]
    assert (await registry.get_by_agent_id("ns/a")).tasks_completed == 0
    with pytest.raises(AgentNotFound):
        await registry.update_stats("ns/missing", tasks_completed=1)


async def test_underperformers_are_judged_on_the_current_assignment(
    registry: RegistryService,
) -> None:
    good = await registry.create_behavior("good", "dev", GOOD)
    bad = await registry.create_behavior("bad", "dev", BAD)
    for name in ("worst", "poor", "fine", "switched", "few", "paused", "none"):
        await registry.register_agent(f"ns/{name}", "dev")
        if name != "none":
            await registry.assign_behavior(f"ns/{name}", bad.id)
    await registry.record_tasks("ns/worst", [(False, 1.0)] * 20)
    await registry.record_tasks("ns/poor", [(True, 1.0)] * 6 + [(False, 1.0)] * 6)
    await registry.record_tasks("ns/fine", [(True, 1.0)] * 9 + [(False, 1.0)] * 3)
    await registry.record_tasks("ns/switched", [(False, 1.0)] * 50)
    await registry.record_tasks("ns/few", [(False, 1.0)] * 5)
    await registry.record_tasks("ns/paused", [(False, 1.0)] * 20)
    refused = await registry.record_tasks("ns/none", [(False, 1.0)] * 20)
    assert (refused.recorded, len(refused.refused)) == (0, 20)
    await registry.set_status("ns/paused", "paused")
    await registry.assign_behavior("ns/switched", good.id, reason="performance")
    await registry.record_tasks("ns/switched", [(True, 1.0)] * 10)

    flagged = await registry.list_underperforming_agents(0.7, min_tasks=10)
    assert [a.agent_id for a in flagged] == ["ns/worst", "ns/poor"]
    worst = flagged[0]
    assert worst.assignment.behavior_id == bad.id
    assert (worst.assignment.tasks_completed, worst.assignment.success_rate) == (20, 0.0)
    poor = flagged[1]
    assert poor.assignment.success_rate == pytest.approx(0.5)
    assert poor.success_rate == pytest.approx(0.5)  # the agent's own (lifetime) numbers too

    # The switched agent was terrible for life (10/60) but is good now: not flagged.
    switched = await registry.get_by_agent_id("ns/switched")
    assert switched.success_rate < 0.7
    # Its record carries the current assignment's counters (what the status loop judges).
    assert (switched.current_tasks_completed, switched.current_successes) == (10, 10)
    assert switched.current_success_rate == 1.0
    assert (poor.current_tasks_completed, poor.current_successes) == (12, 6)
    unassigned = await registry.get_by_agent_id("ns/none")
    assert (unassigned.current_tasks_completed, unassigned.tasks_completed) == (0, 0)

    # min_tasks counts on the current assignment; the threshold is strict (< not <=).
    assert "ns/few" in [
        a.agent_id for a in await registry.list_underperforming_agents(0.7, min_tasks=5)
    ]
    assert [a.agent_id for a in await registry.list_underperforming_agents(0.5)] == ["ns/worst"]
    assert await registry.list_underperforming_agents(0.0) == []
    worst_only = await registry.list_underperforming_agents(0.7, limit=1)
    assert [a.agent_id for a in worst_only] == ["ns/worst"]

    # A namespace is ranked on its own: the worst of another namespace does not take its
    # place under the limit (and "ns2" is not a prefix match of "ns").
    for name in ("ns2/worse", "nsx/mine"):
        await registry.register_agent(name, "dev")
        await registry.assign_behavior(name, bad.id)
    await registry.record_tasks("ns2/worse", [(False, 1.0)] * 30)
    await registry.record_tasks("nsx/mine", [(True, 1.0)] * 3 + [(False, 1.0)] * 9)
    everywhere = await registry.list_underperforming_agents(0.7, limit=2)
    assert [a.agent_id for a in everywhere] == ["ns2/worse", "ns/worst"]
    mine = await registry.list_underperforming_agents(0.7, limit=1, namespace="nsx")
    assert [a.agent_id for a in mine] == ["nsx/mine"]
    in_ns = await registry.list_underperforming_agents(0.7, namespace="ns")
    assert [a.agent_id for a in in_ns] == ["ns/worst", "ns/poor"]
