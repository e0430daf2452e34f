"""Registration, status and agent queries (both backends)."""

from __future__ import annotations

import pytest

from agent_registry.registry import (
    AgentAlreadyRegistered,
    AgentNotFound,
    InvalidStatus,
    RegistryError,
    RegistryService,
)


async def test_register_returns_a_seed_shaped_record(registry: RegistryService) -> None:
    agent = await registry.register_agent("ns/a", "code_developer", name="Agent A")
    assert agent.agent_id == "ns/a"
    assert agent.agent_role == "code_developer"
    assert agent.agent_name == "Agent A"
    assert agent.status == "active"
    assert agent.created_by == "system"
    assert agent.tasks_completed == 0
    assert agent.success_rate == 1.0  # the seed's default before any task
    assert agent.avg_response_time_ms == 0.0
    assert agent.consecutive_failures == 0
    assert agent.behavior_id is None
    assert agent.inserted_at.tzinfo is not None
    dumped = agent.model_dump()
    assert {"success_rate", "avg_response_time_ms", "last_task_at"} <= set(dumped)


async def test_register_active_agent_twice_raises(registry: RegistryService) -> None:
    await registry.register_agent("ns/a", "dev")
    with pytest.raises(AgentAlreadyRegistered) as caught:
        await registry.register_agent("ns/a", "dev")
    assert caught.value.agent_id == "ns/a"
    assert isinstance(caught.value, RegistryError)
    await registry.set_status("ns/a", "paused")
    with pytest.raises(AgentAlreadyRegistered):
        await registry.register_agent("ns/a", "dev")


async def test_register_stopped_agent_reactivates_and_keeps_history(
    registry: RegistryService,
) -> None:
    await registry.register_agent("ns/a", "dev", name="old")
    behavior = await registry.create_behavior("b", "dev", "function on_task() end")
    await registry.assign_behavior("ns/a", behavior.id)
    assert await registry.record_task("ns/a", True)
    stopped = await registry.unregister_agent("ns/a")
    assert stopped.status == "stopped"
    again = await registry.register_agent("ns/a", "reviewer", name="new")
    assert again.status == "active"
    assert again.id == stopped.id
    assert again.agent_role == "reviewer"
    assert again.agent_name == "new"
    assert again.tasks_completed == 1


async def test_unregister_unknown_agent(registry: RegistryService) -> None:
    with pytest.raises(AgentNotFound):
        await registry.unregister_agent("ns/missing")


async def test_set_status(registry: RegistryService) -> None:
    await registry.register_agent("ns/a", "dev")
    assert (await registry.set_status("ns/a", "paused")).status == "paused"
    assert (await registry.set_status("ns/a", "active")).status == "active"
    with pytest.raises(InvalidStatus) as caught:
        await registry.set_status("ns/a", "sleeping")
    assert caught.value.status == "sleeping"
    with pytest.raises(AgentNotFound):
        await registry.set_status("ns/missing", "paused")


async def test_update_agent(registry: RegistryService) -> None:
    await registry.register_agent("ns/a", "dev", name="A")
    updated = await registry.update_agent("ns/a", role="ops", notes="on call")
    assert (updated.agent_role, updated.agent_name, updated.notes) == ("ops", "A", "on call")
    with pytest.raises(AgentNotFound):
        await registry.update_agent("ns/missing", role="x")
    with pytest.raises(AgentNotFound):
        await registry.update_agent("ns/missing")


async def test_get_by_agent_id(registry: RegistryService) -> None:
    await registry.register_agent("ns/a", "dev")
    assert (await registry.get_by_agent_id("ns/a")).agent_id == "ns/a"
    with pytest.raises(AgentNotFound) as caught:
        await registry.get_by_agent_id("ns/b")
    assert caught.value.agent_id == "ns/b"


async def test_list_active_agents_newest_first(registry: RegistryService) -> None:
    for name in ("a", "b", "c"):
        await registry.register_agent(f"ns/{name}", "dev")
    await registry.set_status("ns/b", "paused")
    active = await registry.list_active_agents()
    assert [a.agent_id for a in active] == ["ns/c", "ns/a"]


async def test_list_agents_by_role_only_active(registry: RegistryService) -> None:
    await registry.register_agent("ns/a", "dev")
    await registry.register_agent("ns/b", "dev")
    await registry.register_agent("ns/c", "ops")
    await registry.unregister_agent("ns/b")
    assert [a.agent_id for a in await registry.list_agents_by_role("dev")] == ["ns/a"]
    assert await registry.list_agents_by_role("nobody") == []


async def test_list_agents_by_namespace_and_status(registry: RegistryService) -> None:
    # "ns0/x" and "ns-x/y" sort near "ns/...": they must not leak into namespace "ns".
    for agent_id in ("ns/a", "ns/b", "ns0/x", "ns-x/y", "n/z"):
        await registry.register_agent(agent_id, "dev")
    await registry.set_status("ns/b", "stopped")
    assert [a.agent_id for a in await registry.list_agents(namespace="ns")] == ["ns/a", "ns/b"]
    stopped = await registry.list_agents(namespace="ns", status="stopped")
    assert [a.agent_id for a in stopped] == ["ns/b"]
    assert len(await registry.list_agents()) == 5
    with pytest.raises(InvalidStatus):
        await registry.list_agents(status="bogus")


async def test_live_agent_ids_are_the_creators_agents_not_stopped(
    registry: RegistryService,
) -> None:
    await registry.register_agent("a/one", "dev", created_by="operator")
    await registry.register_agent("a/two", "dev", created_by="operator")
    await registry.register_agent("b/one", "dev", created_by="operator")
    await registry.register_agent("a/mine", "dev", created_by="someone-else")
    await registry.set_status("a/two", "paused")
    await registry.register_agent("a/gone", "dev", created_by="operator")
    await registry.unregister_agent("a/gone")

    assert await registry.live_agent_ids(created_by="operator") == ["a/one", "a/two", "b/one"]
    assert await registry.live_agent_ids(created_by="operator", namespace="a") == [
        "a/one",
        "a/two",
    ]
    assert await registry.live_agent_ids(created_by="nobody") == []
