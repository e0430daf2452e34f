"""The bulk operations the fleet reconciler uses (register_agents, assign_behaviors,
get_agents, current_assignments, agent_ids_changed_since) give what the one-agent calls give,
on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agent_registry.registry import AssignRequest, RegistryService

SCRIPT_A = "function on_task(t, ctx) return {accept = true, effort = 0.2} end"
SCRIPT_B = "function on_task(t, ctx) return {accept = true, effort = 0.8} end"


async def test_register_agents_registers_reactivates_and_keeps(registry: RegistryService) -> None:
    await registry.register_agent("ns/old", "dev")
    await registry.unregister_agent("ns/old")
    await registry.register_agent("ns/paused", "dev")
    await registry.set_status("ns/paused", "paused")
    found = await registry.register_agents(
        [("ns/new", "dev", "New"), ("ns/old", "ops", "Old"), ("ns/paused", "dev", None)],
        created_by="op",
    )
    assert found["ns/new"].status == "active"
    assert found["ns/new"].agent_name == "New"
    assert found["ns/old"].status == "active"
    assert found["ns/old"].agent_role == "ops"
    assert found["ns/paused"].status == "paused", "a registered agent is left as it is"
    assert set(await registry.get_agents(["ns/new", "ns/old", "ns/none"])) == {"ns/new", "ns/old"}


async def test_assign_behaviors_matches_assign_behavior(registry: RegistryService) -> None:
    a = await registry.create_behavior("a", "dev", SCRIPT_A, namespace="ns")
    ids = [f"ns/agent-{i}" for i in range(3)]
    await registry.register_agents([(i, "dev", None) for i in ids])
    first = await registry.assign_behaviors(
        [AssignRequest(i, a.id, assigned_by="op", reason="spec", source="Spec") for i in ids]
    )
    assert [r.agent_id for r in first] == ids
    assert all(r.behavior_revision == 1 and r.script_sha256 == a.script_sha256 for r in first)
    await registry.record_task("ns/agent-0", True, duration_ms=10.0)
    await registry.record_task("ns/agent-0", False, duration_ms=30.0)

    # The same decision again: no new history row.
    again = await registry.assign_behaviors(
        [AssignRequest(ids[0], a.id, assigned_by="op", reason="spec", source="Spec")]
    )
    assert again[0].id == first[0].id
    assert len(await registry.assignment_history(ids[0])) == 1

    # A new revision: the open assignment closes with its counts, a new one opens.
    b = await registry.create_behavior("a", "dev", SCRIPT_B, namespace="ns")
    assert b.revision == 2
    second = await registry.assign_behaviors(
        [AssignRequest(i, a.id, assigned_by="op", reason="reload", source="Spec") for i in ids]
    )
    assert all(r.behavior_revision == 2 and r.script_sha256 == b.script_sha256 for r in second)
    history = await registry.assignment_history(ids[0])
    assert len(history) == 2
    closed = next(h for h in history if h.unassigned_at is not None)
    assert closed.tasks_completed == 2
    assert closed.success_rate == 0.5
    assert closed.outcome_notes
    current = await registry.current_assignments(ids)
    assert {i: r.behavior_revision for i, r in current.items()} == dict.fromkeys(ids, 2)
    assert current[ids[0]].tasks_completed == 0
    agent = await registry.get_by_agent_id(ids[0])
    assert agent.tasks_completed == 2, "lifetime counters keep counting"
    # The old script's counts went to its own row.
    stats = {s.script_sha256: s for s in await registry.agent_revision_stats(agent_ids=[ids[0]])}
    assert stats[a.script_sha256].tasks == 2
    assert stats[b.script_sha256].tasks == 0


async def test_agents_changed_since(registry: RegistryService) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    await registry.register_agents([("ns/a", "dev", None), ("ns/b", "dev", None)])
    assert await registry.agent_ids_changed_since(before) == ["ns/a", "ns/b"]
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert await registry.agent_ids_changed_since(later) == []
