"""Concurrent writers of the same registration, behavior or assignment (one process, many
connections): exactly one wins where one must, nothing is duplicated."""

from __future__ import annotations

import asyncio

from agent_registry.registry import AgentAlreadyRegistered, RegistryService


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
