"""The status write-back loop against a real registry (SQLite): it computes a patch only when
the status should change, from one bulk read, and never moves observedGeneration."""

from __future__ import annotations

from typing import Any

from agent_registry.controller.context import OperatorConfig, OperatorContext
from agent_registry.controller.indexes import ObjectState
from agent_registry.controller.writeback import StatusWriter
from agent_registry.registry import RegistryService

SCRIPT = "function on_task(task, ctx) return {accept = true, effort = 1} end"


def _agent(status: dict[str, Any]) -> ObjectState:
    return ObjectState(
        kind="Agent",
        namespace="team",
        name="a1",
        uid="uid-1",
        generation=3,
        spec={"role": "coder", "behaviorRef": {"name": "careful"}},
        status=status,
    )


def _behavior(status: dict[str, Any]) -> ObjectState:
    return ObjectState(
        kind="AgentBehavior",
        namespace="team",
        name="careful",
        uid="uid-b",
        generation=1,
        spec={"roleType": "coder", "lua": {"script": SCRIPT}},
        status=status,
    )


async def test_patches_only_what_changed(sqlite_url: str) -> None:
    registry = RegistryService.from_url(sqlite_url)
    try:
        ctx = OperatorContext(
            config=OperatorConfig(database_url=sqlite_url, registry_url="http://x"),
            registry=registry,
            kube=None,  # type: ignore[arg-type]  # patches are computed, not sent, here
        )
        behavior = await registry.create_behavior("careful", "coder", SCRIPT, namespace="team")
        await registry.register_agent("team/a1", "coder")
        await registry.assign_behavior("team/a1", behavior.id, assigned_by="op", reason="spec")
        writer = StatusWriter(ctx)

        ((agent_state, changes),) = await writer.agent_patches([_agent({"observedGeneration": 3})])
        assert agent_state.name == "a1"
        assert changes["phase"] == "Active"
        assert changes["behavior"]["revision"] == 1
        assert changes["stats"]["tasksCompleted"] == 0
        assert "observedGeneration" not in changes, "the loop never moves observedGeneration"
        types = {c["type"]: c["status"] for c in changes["conditions"]}
        assert types == {
            "BehaviorAssigned": "True",
            "BehaviorLoaded": "False",
            "Ready": "False",
            "Reconciling": "True",  # kstatus: the assigned script is not confirmed yet
            "Underperforming": "False",
        }

        applied = {"observedGeneration": 3, **changes}
        assert await writer.agent_patches([_agent(applied)]) == []

        await registry.record_tasks("team/a1", [(True, 10.0), (False, 20.0)])
        await registry.confirm_loaded("team/a1", behavior.script_sha256, behavior.updated_at)
        ((_, more),) = await writer.agent_patches([_agent(applied)])
        assert more["stats"]["tasksCompleted"] == 2
        assert more["stats"]["successRate"] == 0.5
        assert more["loadedBehavior"]["sha256"] == behavior.script_sha256
        ready = {c["type"]: c["status"] for c in more["conditions"]}
        assert ready["Ready"] == "True"
        assert "Reconciling" not in ready, "kstatus: present only while True"
        assert "Stalled" not in ready

        ((_, counts),) = await writer.behavior_patches([_behavior({"revision": 1})])
        assert counts["agentCount"] == 1
        assert counts["stats"] == {"tasksCompleted": 2, "successRate": 0.5}
    finally:
        await registry.close()


async def test_underperforming_from_the_bulk_read_with_configured_policy(sqlite_url: str) -> None:
    registry = RegistryService.from_url(sqlite_url)
    try:
        ctx = OperatorContext(
            config=OperatorConfig(
                database_url=sqlite_url,
                registry_url="http://x",
                underperforming_threshold=0.5,
                underperforming_min_tasks=4,
            ),
            registry=registry,
            kube=None,  # type: ignore[arg-type]  # patches are computed, not sent, here
        )
        behavior = await registry.create_behavior("careful", "coder", SCRIPT, namespace="team")
        await registry.register_agent("team/a1", "coder")
        await registry.assign_behavior("team/a1", behavior.id, reason="spec")
        await registry.confirm_loaded("team/a1", behavior.script_sha256, behavior.updated_at)
        writer = StatusWriter(ctx)

        # 3 tasks (1 success): below the configured min_tasks of 4.
        await registry.record_tasks("team/a1", [(True, 1.0), (False, 1.0), (False, 1.0)])
        ((_, few),) = await writer.agent_patches([_agent({"observedGeneration": 3})])
        flags = {c["type"]: c for c in few["conditions"]}
        assert (flags["Underperforming"]["status"], flags["Underperforming"]["reason"]) == (
            "False",
            "TooFewTasks",
        )
        # A 4th failure: 1/4 = 0.25 < 0.5 over 4 tasks. Flagged; still Ready.
        await registry.record_tasks("team/a1", [(False, 1.0)])
        ((_, low),) = await writer.agent_patches([_agent({"observedGeneration": 3, **few})])
        flags = {c["type"]: c for c in low["conditions"]}
        assert (flags["Underperforming"]["status"], flags["Underperforming"]["reason"]) == (
            "True",
            "LowSuccessRate",
        )
        assert "0.25 over 4 tasks of careful revision 1" in flags["Underperforming"]["message"]
        assert flags["Ready"]["status"] == "True", "Underperforming never makes it not Ready"

        # Judged on the current assignment: a new revision starts from zero.
        better = await registry.create_behavior(
            "careful", "coder", SCRIPT + " -- v2", namespace="team"
        )
        await registry.assign_behavior("team/a1", better.id, reason="spec")
        ((_, fresh),) = await writer.agent_patches([_agent({"observedGeneration": 3, **low})])
        flags = {c["type"]: c for c in fresh["conditions"]}
        assert flags["Underperforming"]["reason"] == "TooFewTasks"
    finally:
        await registry.close()
