"""Behaviors: upsert with revisions, deletion and revival, lineage, summary."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from agent_registry.registry import BehaviorNotFound, RegistryService

SCRIPT_1 = "function on_task(task, ctx) return {accept = true, effort = 0.5} end"
SCRIPT_2 = "function on_task(task, ctx) return {accept = true, effort = 0.9} end"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_create_new_behavior_is_revision_1(registry: RegistryService) -> None:
    behavior = await registry.create_behavior(
        "reviewer", "code_developer", SCRIPT_1, namespace="team", description="first"
    )
    assert behavior.namespace == "team"
    assert behavior.name == "reviewer"
    assert behavior.role_type == "code_developer"
    assert behavior.revision == 1
    assert behavior.script_sha256 == sha(SCRIPT_1)
    assert behavior.description == "first"
    assert behavior.deleted_at is None
    revisions = await registry.behavior_revisions(behavior.id)
    assert [(r.revision, r.script_sha256) for r in revisions] == [(1, sha(SCRIPT_1))]


async def test_same_script_makes_no_new_revision(registry: RegistryService) -> None:
    first = await registry.create_behavior("b", "dev", SCRIPT_1)
    again = await registry.create_behavior("b", "dev", SCRIPT_1, description="now described")
    assert again.id == first.id
    assert again.revision == 1
    assert again.description == "now described"
    assert len(await registry.behavior_revisions(first.id)) == 1


async def test_changed_script_makes_a_new_revision_and_keeps_the_old(
    registry: RegistryService,
) -> None:
    first = await registry.create_behavior("b", "dev", SCRIPT_1)
    second = await registry.create_behavior("b", "dev", SCRIPT_2)
    third = await registry.create_behavior("b", "dev", SCRIPT_1)  # back to the first script
    assert (second.revision, third.revision) == (2, 3)
    assert second.id == first.id
    assert third.lua_script == SCRIPT_1
    revisions = await registry.behavior_revisions(first.id)
    assert [r.revision for r in revisions] == [1, 2, 3]
    old = await registry.get_behavior_revision(first.id, 2)
    assert old.lua_script == SCRIPT_2
    with pytest.raises(BehaviorNotFound):
        await registry.get_behavior_revision(first.id, 9)


async def test_same_name_in_two_namespaces(registry: RegistryService) -> None:
    a = await registry.create_behavior("b", "dev", SCRIPT_1, namespace="one")
    b = await registry.create_behavior("b", "dev", SCRIPT_1, namespace="two")
    assert a.id != b.id
    assert (await registry.get_behavior_by_name("two", "b")).id == b.id
    assert [x.namespace for x in await registry.list_behaviors()] == ["one", "two"]
    assert [x.id for x in await registry.list_behaviors(namespace="one")] == [a.id]


async def test_get_behavior_errors(registry: RegistryService) -> None:
    with pytest.raises(BehaviorNotFound):
        await registry.get_behavior(uuid.uuid4())
    with pytest.raises(BehaviorNotFound):
        await registry.get_behavior_by_name("default", "missing")
    with pytest.raises(BehaviorNotFound):
        await registry.behavior_revisions(uuid.uuid4())


async def test_unknown_parent_is_refused(registry: RegistryService) -> None:
    with pytest.raises(BehaviorNotFound):
        await registry.create_behavior("b", "dev", SCRIPT_1, parent_behavior_id=uuid.uuid4())
    assert await registry.list_behaviors() == []


async def test_mark_deleted_keeps_history_and_create_revives(registry: RegistryService) -> None:
    created = await registry.create_behavior("b", "dev", SCRIPT_1)
    deleted = await registry.mark_behavior_deleted("default", "b")
    assert deleted.deleted_at is not None
    assert (await registry.get_behavior(created.id)).deleted_at is not None
    assert await registry.list_behaviors() == []
    assert len(await registry.list_behaviors(include_deleted=True)) == 1
    revived = await registry.create_behavior("b", "dev", SCRIPT_2)
    assert revived.id == created.id
    assert revived.deleted_at is None
    assert revived.revision == 2
    with pytest.raises(BehaviorNotFound):
        await registry.mark_behavior_deleted("default", "missing")


async def test_lineage_walks_to_the_root(registry: RegistryService) -> None:
    root = await registry.create_behavior("v1", "dev", SCRIPT_1)
    child = await registry.create_behavior("v2", "dev", SCRIPT_2, parent_behavior_id=root.id)
    grandchild = await registry.create_behavior(
        "v3", "dev", SCRIPT_2 + " ", parent_behavior_id=child.id
    )
    lineage = await registry.behavior_lineage(grandchild.id)
    assert [b.name for b in lineage] == ["v3", "v2", "v1"]
    assert [b.name for b in await registry.behavior_lineage(root.id)] == ["v1"]
    with pytest.raises(BehaviorNotFound):
        await registry.behavior_lineage(uuid.uuid4())


async def test_lineage_survives_a_parent_cycle(registry: RegistryService) -> None:
    a = await registry.create_behavior("a", "dev", SCRIPT_1)
    b = await registry.create_behavior("b", "dev", SCRIPT_1, parent_behavior_id=a.id)
    await registry.create_behavior("a", "dev", SCRIPT_1, parent_behavior_id=b.id)
    assert [x.name for x in await registry.behavior_lineage(a.id)] == ["a", "b"]


async def test_behavior_summary(registry: RegistryService) -> None:
    behavior = await registry.create_behavior("b", "dev", SCRIPT_1)
    other = await registry.create_behavior("o", "dev", SCRIPT_2)
    for name in ("x", "y", "z"):
        await registry.register_agent(f"ns/{name}", "dev")
        await registry.assign_behavior(f"ns/{name}", behavior.id)
    await registry.record_tasks("ns/x", [(True, 1.0), (False, 1.0)])
    await registry.record_tasks("ns/y", [(True, 1.0)])
    await registry.unregister_agent("ns/z")
    await registry.assign_behavior("ns/y", other.id)  # its past results still count
    summary = await registry.behavior_summary(behavior.id)
    assert summary.agent_count == 1  # x (y switched away, z stopped)
    assert (summary.tasks_completed, summary.successes) == (3, 2)
    assert summary.success_rate == pytest.approx(2 / 3)
    with pytest.raises(BehaviorNotFound):
        await registry.behavior_summary(uuid.uuid4())
