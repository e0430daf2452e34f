"""Assignments: one transaction, history rows, closing with outcome fields, revisions,
hot reload notifications, load confirmations."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from agent_registry.registry import (
    AgentNotFound,
    BehaviorChanged,
    BehaviorNotFound,
    BehaviorRecord,
    NoBehaviorAssigned,
    RegistryService,
)

SCRIPT_A = "function on_task(t, ctx) return {accept = true, effort = 0.2} end"
SCRIPT_B = "function on_task(t, ctx) return {accept = true, effort = 0.8} end"


@pytest.fixture
async def setup(registry: RegistryService) -> tuple[BehaviorRecord, BehaviorRecord]:
    await registry.register_agent("ns/agent", "dev")
    a = await registry.create_behavior("a", "dev", SCRIPT_A)
    b = await registry.create_behavior("b", "dev", SCRIPT_B)
    return a, b


async def next_event(events: AsyncIterator[BehaviorChanged]) -> BehaviorChanged:
    return await asyncio.wait_for(anext(events), timeout=5)


async def test_first_assignment(
    registry: RegistryService, setup: tuple[BehaviorRecord, BehaviorRecord]
) -> None:
    a, _ = setup
    with pytest.raises(NoBehaviorAssigned):
        await registry.get_agent_behavior("ns/agent")
    with pytest.raises(NoBehaviorAssigned):
        await registry.current_assignment("ns/agent")
    assignment = await registry.assign_behavior(
        "ns/agent", a.id, assigned_by="alice", reason="manual"
    )
    assert assignment.is_open
    assert (assignment.behavior_id, assignment.behavior_revision) == (a.id, 1)
    assert assignment.script_sha256 == a.script_sha256
    assert (assignment.assigned_by, assignment.reason) == ("alice", "manual")
    assert (assignment.tasks_completed, assignment.success_rate) == (0, 1.0)
    agent = await registry.get_by_agent_id("ns/agent")
    assert agent.behavior_id == a.id
    assert agent.behavior_assigned_at == assignment.assigned_at
    assert (await registry.get_agent_behavior("ns/agent")).id == a.id
    assert (await registry.current_assignment("ns/agent")).id == assignment.id


async def test_assign_errors(
    registry: RegistryService, setup: tuple[BehaviorRecord, BehaviorRecord]
) -> None:
    a, _ = setup
    with pytest.raises(AgentNotFound):
        await registry.assign_behavior("ns/missing", a.id)
    with pytest.raises(BehaviorNotFound):
        await registry.assign_behavior("ns/agent", uuid.uuid4())
    await registry.mark_behavior_deleted("default", "a")
    with pytest.raises(BehaviorNotFound):
        await registry.assign_behavior("ns/agent", a.id)
    assert await registry.assignment_history("ns/agent") == []
    with pytest.raises(AgentNotFound):
        await registry.assignment_history("ns/missing")
    with pytest.raises(AgentNotFound):
        await registry.get_agent_behavior("ns/missing")


async def test_same_behavior_same_revision_is_a_no_op(
    registry: RegistryService, setup: tuple[BehaviorRecord, BehaviorRecord]
) -> None:
    a, _ = setup
    first = await registry.assign_behavior("ns/agent", a.id)
    again = await registry.assign_behavior("ns/agent", a.id, assigned_by="bob", reason="again")
    assert again.id == first.id
    assert again.reason == first.reason
    assert len(await registry.assignment_history("ns/agent")) == 1


async def test_switching_closes_the_previous_assignment_with_its_outcome(
    registry: RegistryService, setup: tuple[BehaviorRecord, BehaviorRecord]
) -> None:
    a, b = setup
    first = await registry.assign_behavior("ns/agent", a.id)
    await registry.record_tasks("ns/agent", [(True, 10.0), (True, 20.0), (False, 30.0)])
    second = await registry.assign_behavior(
        "ns/agent", b.id, assigned_by="optimizer", reason="performance"
    )
    await registry.record_tasks("ns/agent", [(True, 5.0)])
    history = await registry.assignment_history("ns/agent")
    assert [h.id for h in history] == [second.id, first.id]
    closed, current = history[1], history[0]
    assert closed.unassigned_at is not None
    assert closed.unassigned_at == current.assigned_at
    assert (closed.tasks_completed, closed.successes) == (3, 2)
    assert closed.success_rate == pytest.approx(2 / 3)
    assert closed.avg_response_time_ms == pytest.approx(20.0)
    assert closed.outcome_notes is not None
    assert "3 tasks" in closed.outcome_notes
    assert "default/b" in closed.outcome_notes
    assert current.is_open
    assert (current.tasks_completed, current.successes) == (1, 1)
    agent = await registry.get_by_agent_id("ns/agent")
    assert (agent.tasks_completed, agent.successes) == (4, 3)


async def test_new_revision_reopens_the_assignment(
    registry: RegistryService, setup: tuple[BehaviorRecord, BehaviorRecord]
) -> None:
    a, _ = setup
    first = await registry.assign_behavior("ns/agent", a.id)
    edited = await registry.create_behavior("a", "dev", SCRIPT_A + "\n-- edited")
    second = await registry.assign_behavior("ns/agent", a.id, reason="script_changed")
    assert second.id != first.id
    assert (second.behavior_revision, second.script_sha256) == (2, edited.script_sha256)
    history = await registry.assignment_history("ns/agent")
    assert [(h.behavior_revision, h.is_open) for h in history] == [(2, True), (1, False)]


async def test_subscribers_get_assignment_changes(
    registry: RegistryService, setup: tuple[BehaviorRecord, BehaviorRecord]
) -> None:
    a, b = setup
    async with registry.subscribe() as events:
        await registry.assign_behavior("ns/agent", a.id, reason="manual")
        event = await next_event(events)
        assert event == BehaviorChanged(
            agent_id="ns/agent",
            behavior_id=a.id,
            revision=1,
            script_sha256=a.script_sha256,
            reason="manual",
        )
        await registry.assign_behavior("ns/agent", a.id)  # no-op: no event
        await registry.hot_reload_behavior("ns/agent", b.id, "performance_improvement")
        event = await next_event(events)
        assert (event.behavior_id, event.reason) == (b.id, "performance_improvement")


async def test_hot_reload_always_notifies_and_records_system(
    registry: RegistryService, setup: tuple[BehaviorRecord, BehaviorRecord]
) -> None:
    a, _ = setup
    async with registry.subscribe() as first, registry.subscribe() as second:
        assignment = await registry.hot_reload_behavior("ns/agent", a.id)
        assert (assignment.assigned_by, assignment.reason) == ("system", "hot_reload")
        await registry.hot_reload_behavior("ns/agent", a.id, "reload_again")
        for events in (first, second):
            assert (await next_event(events)).reason == "hot_reload"
            assert (await next_event(events)).reason == "reload_again"
    assert len(await registry.assignment_history("ns/agent")) == 1


async def test_unsubscribed_listeners_get_nothing(
    registry: RegistryService, setup: tuple[BehaviorRecord, BehaviorRecord]
) -> None:
    a, _ = setup
    async with registry.subscribe() as events:
        pass
    await registry.assign_behavior("ns/agent", a.id)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(events), timeout=0.2)


async def test_hot_reload_errors_do_not_notify(
    registry: RegistryService, setup: tuple[BehaviorRecord, BehaviorRecord]
) -> None:
    async with registry.subscribe() as events:
        with pytest.raises(BehaviorNotFound):
            await registry.hot_reload_behavior("ns/agent", uuid.uuid4())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(events), timeout=0.2)


async def test_confirm_loaded(
    registry: RegistryService, setup: tuple[BehaviorRecord, BehaviorRecord]
) -> None:
    a, b = setup
    t0 = datetime.now(UTC)
    nothing = await registry.confirm_loaded("ns/agent", a.script_sha256, t0)
    assert (nothing.new, nothing.matches_assignment, nothing.assigned_at) == (False, False, None)
    assignment = await registry.assign_behavior("ns/agent", a.id)
    stale = await registry.confirm_loaded("ns/agent", b.script_sha256, t0 + timedelta(seconds=1))
    assert (stale.new, stale.matches_assignment) == (False, False)
    loaded_at = t0 + timedelta(seconds=2)
    first = await registry.confirm_loaded("ns/agent", a.script_sha256, loaded_at)
    assert (first.new, first.matches_assignment) == (True, True)
    assert first.assigned_at == assignment.assigned_at
    repeat = await registry.confirm_loaded("ns/agent", a.script_sha256, t0 + timedelta(seconds=3))
    assert (repeat.new, repeat.matches_assignment) == (False, True)
    agent = await registry.get_by_agent_id("ns/agent")
    assert (agent.loaded_sha256, agent.loaded_at) == (a.script_sha256, t0 + timedelta(seconds=3))
    assert (await registry.current_assignment("ns/agent")).loaded_at == loaded_at
    # A late, older confirmation does not overwrite a newer one.
    await registry.confirm_loaded("ns/agent", b.script_sha256, t0)
    assert (await registry.get_by_agent_id("ns/agent")).loaded_sha256 == a.script_sha256
    with pytest.raises(AgentNotFound):
        await registry.confirm_loaded("ns/missing", a.script_sha256, t0)
    # A naive timestamp (no offset in the report) is taken as UTC.
    naive = (t0 + timedelta(seconds=9)).replace(tzinfo=None)
    await registry.confirm_loaded("ns/agent", a.script_sha256, naive)
    agent = await registry.get_by_agent_id("ns/agent")
    assert agent.loaded_at == naive.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Failure:
    """Shaped like reports.LoadFailure (the registry reads it by attribute)."""

    sha256: str
    error: str
    line: int | None
    failed_at: datetime


async def test_load_failure_is_stored_until_a_later_load_succeeds(
    registry: RegistryService, setup: tuple[BehaviorRecord, BehaviorRecord]
) -> None:
    a, b = setup
    t0 = datetime.now(UTC)
    await registry.assign_behavior("ns/agent", a.id)
    await registry.confirm_loaded("ns/agent", a.script_sha256, t0)
    await registry.assign_behavior("ns/agent", b.id)
    refused = Failure(
        b.script_sha256, "behavior:3: unexpected symbol", 3, t0 + timedelta(seconds=1)
    )
    assert await registry.record_load_failure("ns/agent", refused)
    agent = await registry.get_by_agent_id("ns/agent")
    assert (agent.load_failed_sha256, agent.load_error, agent.load_error_line) == (
        b.script_sha256,
        "behavior:3: unexpected symbol",
        3,
    )
    assert agent.load_failed_at == refused.failed_at
    assert agent.loaded_sha256 == a.script_sha256, "the runtime keeps its last good script"

    # The same report again (a runtime repeats its status): still the failure. Its repeated
    # confirmation of the old script (loaded before the failure) does not clear it.
    await registry.confirm_loaded("ns/agent", a.script_sha256, t0)
    assert await registry.record_load_failure("ns/agent", refused)
    assert (await registry.get_by_agent_id("ns/agent")).load_failed_sha256 == b.script_sha256

    # An older failure, or one from before the last confirmed load, is stale.
    older = Failure(a.script_sha256, "old", None, t0 - timedelta(seconds=5))
    assert not await registry.record_load_failure("ns/agent", older)
    assert (
        await registry.get_by_agent_id("ns/agent")
    ).load_error == "behavior:3: unexpected symbol"

    # The refused script loads after all (e.g. a limit was raised): cleared.
    await registry.confirm_loaded("ns/agent", b.script_sha256, t0 + timedelta(seconds=2))
    agent = await registry.get_by_agent_id("ns/agent")
    assert (agent.load_error, agent.load_error_line, agent.load_failed_sha256) == (None, None, None)
    assert agent.load_failed_at is None
    assert not await registry.record_load_failure("ns/agent", refused), "older than that load"

    with pytest.raises(AgentNotFound):
        await registry.record_load_failure("ns/missing", refused)


async def test_a_newer_load_clears_a_failure_of_another_script(
    registry: RegistryService, setup: tuple[BehaviorRecord, BehaviorRecord]
) -> None:
    a, b = setup
    t0 = datetime.now(UTC)
    await registry.assign_behavior("ns/agent", b.id)
    assert await registry.record_load_failure(
        "ns/agent", Failure(b.script_sha256, "boom", None, t0)
    )
    # Spec moved back to a, which the runtime loads after the failure.
    await registry.assign_behavior("ns/agent", a.id)
    await registry.confirm_loaded("ns/agent", a.script_sha256, t0 + timedelta(seconds=1))
    assert (await registry.get_by_agent_id("ns/agent")).load_failed_sha256 is None
