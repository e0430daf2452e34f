"""Attribution: each outcome counts for the script that ran it (its row in
agent_revision_stats), an assignment's results only for its own script, and an outcome of a
script the registry never delivered to the agent is refused, alone. Both backends."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from agent_registry.registry import (
    AgentNotFound,
    AgentRevisionStatsRecord,
    BehaviorRecord,
    BehaviorRevisionNotFound,
    RecordResult,
    RegistryService,
    ScriptCounts,
    ScriptRef,
)
from agent_registry.reports import TaskOutcome

SCRIPT_A = "function on_task(t, ctx) return {accept = true, effort = 0.2} end"
SCRIPT_B = "function on_task(t, ctx) return {accept = true, effort = 0.8} end"
UNKNOWN = "f" * 64


@dataclass(frozen=True)
class Scripts:
    a: BehaviorRecord
    b: BehaviorRecord


@pytest.fixture
async def scripts(registry: RegistryService) -> Scripts:
    await registry.register_agent("ns/agent", "dev")
    a = await registry.create_behavior("a", "dev", SCRIPT_A)
    b = await registry.create_behavior("b", "dev", SCRIPT_B)
    return Scripts(a, b)


def ran(sha: str, success: bool = True, ms: float | None = 10.0) -> TaskOutcome:
    return TaskOutcome(success=success, duration_ms=ms, behavior_sha256=sha)


async def rows(registry: RegistryService, agent_id: str) -> dict[str, AgentRevisionStatsRecord]:
    return {r.script_sha256: r for r in await registry.agent_revision_stats(agent_ids=[agent_id])}


async def test_late_outcomes_of_the_old_script_stay_with_it(
    registry: RegistryService, scripts: Scripts
) -> None:
    a, b = scripts.a.script_sha256, scripts.b.script_sha256
    await registry.assign_behavior("ns/agent", scripts.a.id)
    await registry.record_tasks("ns/agent", [ran(a), ran(a, False)])
    await registry.assign_behavior("ns/agent", scripts.b.id, reason="switch")
    # The runtime still ran A for a while and reports those outcomes after the switch,
    # together with B's first ones.
    late = [ran(a, False), ran(a, False), ran(a, False), ran(b), ran(b, True, 30.0)]
    assert await registry.record_tasks("ns/agent", late) == RecordResult(recorded=5)

    stats = await rows(registry, "ns/agent")
    assert (stats[a].tasks, stats[a].successes, stats[a].timed_tasks) == (5, 1, 5)
    assert (stats[a].behavior_id, stats[a].revision) == (scripts.a.id, 1)
    assert (stats[b].tasks, stats[b].successes, stats[b].total_response_time_ms) == (2, 2, 40.0)

    current, closed = await registry.assignment_history("ns/agent")
    assert (closed.script_sha256, closed.tasks_completed, closed.successes) == (a, 2, 1)
    assert (current.script_sha256, current.tasks_completed, current.successes) == (b, 2, 2)
    assert current.avg_response_time_ms == 20.0
    agent = await registry.get_by_agent_id("ns/agent")
    assert agent.current_sha256 == b
    assert (agent.current_tasks_completed, agent.current_successes) == (2, 2)
    assert (agent.tasks_completed, agent.successes) == (7, 3)  # lifetime: everything counted


async def test_a_duplicate_batch_counts_once_on_every_row(
    registry: RegistryService, scripts: Scripts
) -> None:
    a, b = scripts.a.script_sha256, scripts.b.script_sha256
    await registry.assign_behavior("ns/agent", scripts.a.id)
    await registry.allow_scripts("ns/agent", [ScriptRef(scripts.b.id, 1, b)])
    batch = uuid.uuid4()
    outcomes = [ran(a), ran(b, False), ran(UNKNOWN), ran(a)]
    first = await registry.record_tasks("ns/agent", outcomes, batch_id=batch, cycles=2)
    assert (first.recorded, first.duplicate, [r.index for r in first.refused]) == (3, False, [2])
    again = await registry.record_tasks("ns/agent", outcomes, batch_id=batch, cycles=2)
    assert (again.recorded, again.duplicate, [r.index for r in again.refused]) == (0, True, [2])

    stats = await rows(registry, "ns/agent")
    assert (stats[a].tasks, stats[b].tasks) == (2, 1)
    agent = await registry.get_by_agent_id("ns/agent")
    assert (agent.tasks_completed, agent.current_tasks_completed) == (3, 2)
    assert agent.cycles_completed == 2


async def test_an_unknown_script_is_refused_per_outcome(
    registry: RegistryService, scripts: Scripts
) -> None:
    a = scripts.a.script_sha256
    await registry.assign_behavior("ns/agent", scripts.a.id)
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    outcomes = [
        TaskOutcome(success=True, finished_at=t0, behavior_sha256=a),
        TaskOutcome(success=False, finished_at=t0 + timedelta(minutes=1), behavior_sha256=a),
        # Never delivered to this agent: B exists but was not given to it, UNKNOWN nowhere.
        TaskOutcome(success=True, finished_at=t0 + timedelta(minutes=2), behavior_sha256=UNKNOWN),
        TaskOutcome(
            success=True,
            finished_at=t0 + timedelta(minutes=3),
            behavior_sha256=scripts.b.script_sha256,
        ),
    ]
    result = await registry.record_tasks("ns/agent", outcomes)
    assert result.recorded == 2
    assert [(r.index, r.sha256) for r in result.refused] == [
        (2, UNKNOWN),
        (3, scripts.b.script_sha256),
    ]
    assert all("never delivered" in r.reason for r in result.refused)
    agent = await registry.get_by_agent_id("ns/agent")
    # The refused successes neither count nor end the failure streak or move last_task_at.
    assert (agent.tasks_completed, agent.successes, agent.consecutive_failures) == (2, 1, 1)
    assert agent.last_task_at == t0 + timedelta(minutes=1)
    assert set(await rows(registry, "ns/agent")) == {a}
    stats = (await rows(registry, "ns/agent"))[a]
    assert (stats.first_task_at, stats.last_task_at) == (t0, t0 + timedelta(minutes=1))


async def test_outcomes_without_a_script_fall_back_to_loaded_then_to_the_assignment(
    registry: RegistryService, scripts: Scripts
) -> None:
    a, b = scripts.a.script_sha256, scripts.b.script_sha256
    await registry.register_agent("ns/new", "dev")
    # No assignment and no script: nothing to count it for.
    refused = await registry.record_tasks("ns/new", [(True, 1.0)])
    assert (refused.recorded, refused.refused[0].sha256) == (0, None)

    await registry.assign_behavior("ns/agent", scripts.a.id)
    await registry.allow_scripts("ns/agent", [ScriptRef(scripts.b.id, 1, b)])
    # No sha256 and nothing loaded: the current assignment's script.
    await registry.record_tasks("ns/agent", [(True, 1.0)])
    # No sha256, loaded B (delivered): B, although A is assigned.
    await registry.record_tasks("ns/agent", [(True, 1.0), (False, 1.0)], loaded_sha256=b)
    # Loaded a script never delivered: refused, whatever is assigned.
    unknown = await registry.record_tasks("ns/agent", [(True, 1.0)], loaded_sha256=UNKNOWN)
    assert [(r.index, r.sha256) for r in unknown.refused] == [(0, UNKNOWN)]
    assert "loaded script" in unknown.refused[0].reason
    # An outcome's own sha256 wins over the loaded one.
    await registry.record_tasks("ns/agent", [ran(a, False)], loaded_sha256=b)

    stats = await rows(registry, "ns/agent")
    assert (stats[a].tasks, stats[a].successes) == (2, 1)
    assert (stats[b].tasks, stats[b].successes) == (2, 1)
    current = await registry.current_assignment("ns/agent")
    assert (current.tasks_completed, current.successes) == (2, 1)


async def test_canary_outcomes_count_on_their_own_row_not_the_assignment(
    registry: RegistryService, scripts: Scripts
) -> None:
    stable = scripts.a
    canary = await registry.create_behavior("a", "dev", SCRIPT_A + "\n-- canary")
    assert canary.revision == 2
    refs = [
        ScriptRef(stable.id, 1, stable.script_sha256),
        ScriptRef(canary.id, 2, canary.script_sha256),
    ]
    await registry.allow_scripts("ns/agent", refs)
    await registry.allow_scripts("ns/agent", refs)  # idempotent
    await registry.assign_behavior("ns/agent", stable.id, revision=1, source="Rollout")
    await registry.record_tasks(
        "ns/agent", [ran(stable.script_sha256), ran(canary.script_sha256, False)]
    )
    current = await registry.current_assignment("ns/agent")
    assert (current.behavior_revision, current.tasks_completed) == (1, 1)
    by_revision = {
        r.revision: (r.agents, r.tasks, r.successes)
        for r in await registry.revision_stats(behavior_id=stable.id)
    }
    assert by_revision == {1: (1, 1, 1), 2: (1, 1, 0)}


async def test_allow_scripts_checks_what_it_is_given(
    registry: RegistryService, scripts: Scripts
) -> None:
    a = scripts.a
    with pytest.raises(AgentNotFound):
        await registry.allow_scripts("ns/missing", [ScriptRef(a.id, 1, a.script_sha256)])
    with pytest.raises(BehaviorRevisionNotFound):
        await registry.allow_scripts("ns/agent", [ScriptRef(a.id, 7, a.script_sha256)])
    with pytest.raises(ValueError, match="has script"):
        await registry.allow_scripts("ns/agent", [ScriptRef(a.id, 1, UNKNOWN)])
    await registry.allow_scripts("ns/agent", [])
    assert await registry.agent_revision_stats(agent_ids=["ns/agent"]) == []


async def test_assign_a_specific_older_revision(
    registry: RegistryService, scripts: Scripts
) -> None:
    a1 = scripts.a
    a2 = await registry.create_behavior("a", "dev", SCRIPT_A + "\n-- v2")
    first = await registry.assign_behavior("ns/agent", a1.id)
    assert (first.behavior_revision, first.script_sha256) == (2, a2.script_sha256)
    pinned = await registry.assign_behavior(
        "ns/agent", a1.id, revision=1, reason="pinned to a@1", source="Pin"
    )
    assert (pinned.behavior_revision, pinned.script_sha256) == (1, a1.script_sha256)
    assert (await registry.get_by_agent_id("ns/agent")).current_sha256 == a1.script_sha256
    # The same revision again is a no-op; so is the same revision and source.
    assert (await registry.assign_behavior("ns/agent", a1.id, revision=1)).id == pinned.id
    same = await registry.assign_behavior("ns/agent", a1.id, revision=1, source="Pin")
    assert same.id == pinned.id
    with pytest.raises(BehaviorRevisionNotFound) as caught:
        await registry.assign_behavior("ns/agent", a1.id, revision=9)
    assert caught.value.revision == 9
    assert len(await registry.assignment_history("ns/agent")) == 2
    await registry.record_tasks("ns/agent", [(True, 1.0)])
    stats = await rows(registry, "ns/agent")
    assert (stats[a1.script_sha256].revision, stats[a1.script_sha256].tasks) == (1, 1)
    assert stats[a2.script_sha256].tasks == 0


async def test_source_and_evidence_are_kept_in_the_history(
    registry: RegistryService, scripts: Scripts
) -> None:
    a = scripts.a
    spec = await registry.assign_behavior("ns/agent", a.id, reason="spec", source="Spec")
    assert (spec.source, spec.evidence) == ("Spec", {})
    evidence = {"experiment": "exp-1", "arm": "control", "counts": (10, 7), "p": 0.03}
    decided = await registry.assign_behavior(
        "ns/agent",
        a.id,
        assigned_by="arbiter",
        reason="experiment exp-1, arm control",
        source="Experiment",
        evidence=evidence,
    )
    # Same script, a new decision: a new history row, counted from zero.
    assert decided.id != spec.id
    history = await registry.assignment_history("ns/agent")
    assert [(h.source, h.is_open) for h in history] == [("Experiment", True), ("Spec", False)]
    assert history[0].evidence == {**evidence, "counts": [10, 7]}
    assert history[0].assigned_by == "arbiter"
    assert (await registry.current_assignment("ns/agent")).evidence == history[0].evidence
    with pytest.raises(ValueError, match="JSON"):
        await registry.assign_behavior(
            "ns/agent", a.id, source="Policy", evidence={"when": datetime.now(UTC)}
        )
    assert len(await registry.assignment_history("ns/agent")) == 2


async def test_a_reverted_script_takes_its_newest_label(
    registry: RegistryService, scripts: Scripts
) -> None:
    """A revert makes a new revision with an older script: outcomes carry only the sha256,
    so the script's one row now reports under the revision it was last delivered as."""
    a1 = scripts.a
    await registry.assign_behavior("ns/agent", a1.id)
    await registry.record_tasks("ns/agent", [ran(a1.script_sha256)])
    await registry.create_behavior("a", "dev", SCRIPT_A + "\n-- v2")
    await registry.assign_behavior("ns/agent", a1.id)
    a3 = await registry.create_behavior("a", "dev", SCRIPT_A)
    assert (a3.revision, a3.script_sha256) == (3, a1.script_sha256)
    await registry.assign_behavior("ns/agent", a1.id)
    stats = await rows(registry, "ns/agent")
    assert (stats[a1.script_sha256].revision, stats[a1.script_sha256].tasks) == (3, 1)


async def test_a_script_delivered_by_another_process_is_known(
    database_url: str, registry: RegistryService, scripts: Scripts
) -> None:
    """The delivered-scripts cache only remembers what is true forever; a script delivered
    elsewhere after it was filled is found by reading again."""
    await registry.assign_behavior("ns/agent", scripts.a.id)
    await registry.record_tasks("ns/agent", [ran(scripts.a.script_sha256)])  # cache filled
    other = RegistryService.from_url(database_url)
    try:
        await other.assign_behavior("ns/agent", scripts.b.id)
    finally:
        await other.close()
    result = await registry.record_tasks("ns/agent", [ran(scripts.b.script_sha256), (True, 1.0)])
    assert result == RecordResult(recorded=2)
    current = await registry.current_assignment("ns/agent")
    assert (current.script_sha256, current.tasks_completed) == (scripts.b.script_sha256, 2)


async def test_revision_stats_and_agent_revision_stats_filters(
    registry: RegistryService,
) -> None:
    a = await registry.create_behavior("a", "dev", SCRIPT_A, namespace="one")
    b = await registry.create_behavior("b", "dev", SCRIPT_B, namespace="one")
    t0 = datetime.now(UTC) - timedelta(hours=1)
    agents = {"one/x": "dev", "one/y": "ops", "two/z": "dev", "one2/w": "dev"}
    for agent_id, role in agents.items():
        await registry.register_agent(agent_id, role)
        await registry.assign_behavior(agent_id, a.id)
        await registry.record_tasks(
            agent_id,
            [
                TaskOutcome(success=True, duration_ms=4.0, finished_at=t0),
                TaskOutcome(success=agent_id != "one/y", finished_at=t0 + timedelta(minutes=1)),
            ],
        )
    await registry.assign_behavior("one/x", b.id)
    await registry.record_tasks("one/x", [(False, 2.0)])

    everything = await registry.revision_stats()
    assert [(r.behavior_id, r.agents, r.tasks, r.successes) for r in everything] == sorted(
        [(a.id, 4, 8, 7), (b.id, 1, 1, 0)]
    )
    summed = next(r for r in everything if r.behavior_id == a.id)
    assert (summed.revision, summed.script_sha256) == (1, a.script_sha256)
    assert (summed.timed_tasks, summed.total_response_time_ms) == (4, 16.0)
    assert (summed.first_task_at, summed.last_task_at) == (t0, t0 + timedelta(minutes=1))
    assert summed.success_rate == 7 / 8
    assert summed.avg_response_time_ms == 4.0

    # Namespace "one" is not "one2"; roles come from the agent rows.
    one = await registry.revision_stats(namespace="one")
    assert [(r.behavior_id, r.agents, r.tasks) for r in one] == sorted([(a.id, 2, 4), (b.id, 1, 1)])
    dev_a = await registry.revision_stats(role="dev", behavior_id=a.id)
    assert [(r.agents, r.tasks, r.successes) for r in dev_a] == [(3, 6, 6)]
    ops_in_one = await registry.revision_stats(namespace="one", role="ops")
    assert [(r.behavior_id, r.agents, r.successes) for r in ops_in_one] == [(a.id, 1, 1)]
    listed = await registry.revision_stats(agent_ids=["two/z", "one2/w"], behavior_id=b.id)
    assert listed == []
    assert await registry.revision_stats(namespace="three") == []

    per_agent = await registry.agent_revision_stats(namespace="one")
    assert [(r.agent_id, r.behavior_id, r.tasks) for r in per_agent] == sorted(
        [("one/x", a.id, 2), ("one/x", b.id, 1), ("one/y", a.id, 2)]
    )
    assert all(r.delivered_at is not None for r in per_agent)
    only_b = await registry.agent_revision_stats(behavior_id=b.id)
    assert [(r.agent_id, r.script_sha256, r.revision) for r in only_b] == [
        ("one/x", b.script_sha256, 1)
    ]
    listed_agents = await registry.agent_revision_stats(agent_ids=["two/z"], namespace="two")
    assert [(r.agent_id, r.tasks, r.successes) for r in listed_agents] == [("two/z", 2, 2)]

    # The policies' tuples: the same counts (the open assignment's share included), in the
    # same order, of a namespace and optionally of a role.
    counts = await registry.agent_script_counts(namespace="one")
    assert counts == [
        ScriptCounts(r.agent_id, r.behavior_id, r.revision, r.script_sha256, r.tasks, r.successes)
        for r in per_agent
    ]
    assert sorted((c.agent_id, c.behavior_id, c.tasks, c.successes) for c in counts) == sorted(
        [("one/x", a.id, 2, 2), ("one/x", b.id, 1, 0), ("one/y", a.id, 2, 1)]
    )
    ops = await registry.agent_script_counts(namespace="one", role="ops")
    assert [(c.agent_id, c.behavior_id, c.tasks, c.successes) for c in ops] == [
        ("one/y", a.id, 2, 1)
    ]
    assert await registry.agent_script_counts(namespace="one2", role="ops") == []
    listed_counts = await registry.agent_script_counts(
        namespace="one", agent_ids=["one/y", "two/z"]
    )
    assert [(c.agent_id, c.tasks, c.successes) for c in listed_counts] == [("one/y", 2, 1)]


async def test_a_script_counts_across_all_its_assignments(
    registry: RegistryService, scripts: Scripts
) -> None:
    """A -> B -> A: while an assignment is open its counts are on the agent row, folded into
    the script's row when it closes; every read shows the script's whole count meanwhile."""
    a, b = scripts.a.script_sha256, scripts.b.script_sha256
    t0 = datetime.now(UTC) - timedelta(hours=2)
    t1 = t0 + timedelta(hours=1)
    await registry.assign_behavior("ns/agent", scripts.a.id)
    first = TaskOutcome(success=True, finished_at=t0, behavior_sha256=a)
    await registry.record_tasks("ns/agent", [first, first])
    await registry.assign_behavior("ns/agent", scripts.b.id)
    await registry.record_tasks("ns/agent", [ran(b, False)])
    await registry.assign_behavior("ns/agent", scripts.a.id)
    last = TaskOutcome(success=False, finished_at=t1, behavior_sha256=a)
    await registry.record_tasks("ns/agent", [last])

    stats = await rows(registry, "ns/agent")
    assert (stats[a].tasks, stats[a].successes) == (3, 2)
    assert (stats[b].tasks, stats[b].successes) == (1, 0)
    assert [h.tasks_completed for h in await registry.assignment_history("ns/agent")] == [1, 1, 2]
    summed = await registry.revision_stats(behavior_id=scripts.a.id)
    assert [(r.agents, r.tasks, r.successes) for r in summed] == [(1, 3, 2)]
    # Task times from both parts: the folded assignment's first, the open one's last.
    assert (stats[a].first_task_at, stats[a].last_task_at) == (t0, t1)
    assert (summed[0].first_task_at, summed[0].last_task_at) == (t0, t1)


async def test_the_current_script_keeps_its_assignments_label(
    registry: RegistryService, scripts: Scripts
) -> None:
    """allow_scripts naming the current script under another revision (a revert makes two
    revisions of one script) leaves its label to the open assignment."""
    a1 = scripts.a
    await registry.create_behavior("a", "dev", SCRIPT_A + "\n-- v2")
    a3 = await registry.create_behavior("a", "dev", SCRIPT_A)
    await registry.assign_behavior("ns/agent", a1.id)  # revision 3
    await registry.allow_scripts("ns/agent", [ScriptRef(a1.id, 1, a1.script_sha256)])
    await registry.record_tasks("ns/agent", [ran(a1.script_sha256)])
    assert (await rows(registry, "ns/agent"))[a3.script_sha256].revision == 3
    summed = await registry.revision_stats(behavior_id=a1.id)
    assert [(r.revision, r.agents, r.tasks) for r in summed] == [(3, 1, 1)]
