"""The canary rollout's step logic (controller.rollouts), without servers: every transition
from status to status, manual promote and abort, pauses with and without a duration, a newer
revision replacing the canary, the first revision, and the conditions a rollout implies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from agent_registry.controller.indexes import ABORT_ANNOTATION, PROMOTE_ANNOTATION
from agent_registry.controller.rollouts import (
    Observation,
    RevisionRef,
    Transition,
    fingerprint,
    next_rollout_state,
    on_new_revision,
    rollout_conditions,
    serving,
    window,
)
from agent_registry.controller.status import desired_behavior_status, validity_condition
from agent_registry.decisions.canary_analysis import CanaryVerdict, analyze_canary
from agent_registry.decisions.evidence import Counts
from agent_registry.resources.behavior import AgentBehaviorSpec, RolloutStatus, RolloutStep

NAME = "careful"
SHA1, SHA2, SHA3, SHA4 = ("1" * 64, "2" * 64, "3" * 64, "4" * 64)
T0 = datetime(2026, 12, 3, 9, 0, 0, tzinfo=UTC)
STEPS = [{"setWeight": 10}, {"pause": {"duration": "2m"}}, {"setWeight": 50}, {"pause": {}}]
AGENTS = fingerprint(["ns/a", "ns/b"], [])


def spec(steps: list[dict[str, Any]] | None = None, **rollout: Any) -> dict[str, Any]:
    return {
        "roleType": "coder",
        "lua": {"script": "function on_task(t, c) end"},
        "rollout": {"strategy": "Canary", "steps": STEPS if steps is None else steps, **rollout},
    }


def verdict(action: str, reason: str = "") -> CanaryVerdict:
    return CanaryVerdict(
        action,  # type: ignore[arg-type]
        (0.8, 0.9),
        (0.7, 0.95),
        reason or f"verdict {action}",
    )


def observed(stable: tuple[int, int], canary: tuple[int, int], **kw: Any) -> Observation:
    return Observation(Counts(*stable), Counts(*canary), agents=kw.pop("agents", AGENTS), **kw)


def started(steps: list[dict[str, Any]] | None = None, **kw: Any) -> dict[str, Any]:
    """The status right after revision 3 started a rollout from stable revision 2."""
    status: dict[str, Any] = {"revision": 2, "scriptSha256": SHA2, **kw}
    transition = on_new_revision(NAME, spec(steps), status, RevisionRef(3, SHA3), T0)
    assert transition is not None
    return {"revision": 3, "scriptSha256": SHA3, "rollout": transition.rollout}


def tick(
    status: dict[str, Any],
    result: CanaryVerdict | None,
    obs: Observation,
    *,
    at: datetime = T0,
    annotations: dict[str, str] | None = None,
    steps: list[dict[str, Any]] | None = None,
) -> Transition | None:
    return next_rollout_state(
        NAME, spec(steps), status, result, at, annotations or {}, observation=obs
    )


def applied(status: dict[str, Any], transition: Transition | None) -> dict[str, Any]:
    assert transition is not None
    return {**status, "rollout": transition.rollout}


def rollout(status: dict[str, Any]) -> RolloutStatus:
    return RolloutStatus.model_validate(status["rollout"])


def opened(status: dict[str, Any], obs: Observation, at: datetime = T0) -> dict[str, Any]:
    """The first tick of a step records the baseline (the window opens)."""
    return applied(status, tick(status, verdict("Continue"), obs, at=at))


# ---- the spec ------------------------------------------------------------------------------


def test_a_step_has_exactly_one_of_set_weight_and_pause() -> None:
    parsed = AgentBehaviorSpec.model_validate(spec())
    assert parsed.rollout is not None
    assert parsed.rollout.steps is not None
    assert [s.to_wire() for s in parsed.rollout.steps] == STEPS  # pause {} stays an object
    for bad in ({}, {"setWeight": 10, "pause": {}}):
        with pytest.raises(ValidationError, match="exactly one of setWeight and pause"):
            RolloutStep.model_validate(bad)
    with pytest.raises(ValidationError):
        RolloutStep.model_validate({"setWeight": 101})
    with pytest.raises(ValidationError):
        RolloutStep.model_validate({"pause": {"duration": "two minutes"}})


# ---- a new revision ------------------------------------------------------------------------


def test_first_revision_is_promoted_at_once() -> None:
    transition = on_new_revision(NAME, spec(), {}, RevisionRef(1, SHA1), T0)
    assert transition is not None
    state = RolloutStatus.model_validate(transition.rollout)
    assert (state.phase, state.stable_revision, state.stable_sha256) == ("Promoted", 1, SHA1)
    assert state.canary_revision is None
    assert [e.reason for e in transition.events] == ["RolloutPromoted"]
    assert serving(NAME, spec(), {"rollout": transition.rollout}).served == RevisionRef(1, SHA1)


def test_a_new_revision_starts_from_the_revision_agents_run() -> None:
    status = started()
    state = rollout(status)
    assert (state.phase, state.stable_revision, state.canary_revision) == ("Progressing", 2, 3)
    assert (state.current_step, state.steps, state.weight) == (0, 4, 10)
    assert state.baseline is None  # the first tick reads the registry's counts
    plan = serving(NAME, spec(), status)
    assert (plan.served, plan.canary, plan.weight) == (
        RevisionRef(2, SHA2),
        RevisionRef(3, SHA3),
        0.1,
    )


def test_the_same_revision_again_changes_nothing() -> None:
    status = started()
    assert on_new_revision(NAME, spec(), status, RevisionRef(3, SHA3), T0) is None
    promoted = {
        "revision": 2,
        "rollout": {"phase": "Promoted", "stableRevision": 2, "stableSha256": SHA2},
    }
    assert on_new_revision(NAME, spec(), promoted, RevisionRef(2, SHA2), T0) is None


def test_a_newer_revision_replaces_the_canary_and_restarts_its_counts() -> None:
    status = started()
    obs = observed((100, 90), (10, 9))
    status = opened(status, obs)
    status = applied(status, tick(status, verdict("Advance"), observed((300, 270), (40, 36))))
    assert rollout(status).current_step == 1
    transition = on_new_revision(NAME, spec(), status, RevisionRef(4, SHA4), T0)
    assert transition is not None
    state = RolloutStatus.model_validate(transition.rollout)
    assert (state.stable_revision, state.canary_revision, state.canary_sha256) == (2, 4, SHA4)
    assert (state.current_step, state.weight, state.baseline) == (0, 10, None)
    assert state.canary is not None
    assert state.canary.tasks == 0
    assert [e.reason for e in transition.events] == ["CanaryReplaced"]


def test_after_an_abort_a_new_revision_starts_again_from_stable() -> None:
    status = started()
    status = applied(status, tick(status, None, Observation(), annotations={ABORT_ANNOTATION: "x"}))
    assert rollout(status).phase == "Aborted"
    # The aborted revision reconciled again (a restart) stays aborted.
    assert on_new_revision(NAME, spec(), status, RevisionRef(3, SHA3), T0) is None
    transition = on_new_revision(NAME, spec(), status, RevisionRef(4, SHA4), T0)
    assert transition is not None
    state = RolloutStatus.model_validate(transition.rollout)
    assert (state.phase, state.stable_revision, state.canary_revision) == ("Progressing", 2, 4)
    assert [e.reason for e in transition.events] == ["RolloutStarted"]


def test_a_revert_to_the_stable_script_is_promoted_at_once() -> None:
    status = started()
    transition = on_new_revision(NAME, spec(), status, RevisionRef(4, SHA2), T0)
    assert transition is not None
    state = RolloutStatus.model_validate(transition.rollout)
    assert (state.phase, state.stable_revision, state.stable_sha256) == ("Promoted", 4, SHA2)


def test_immediate_strategy_drops_the_rollout() -> None:
    status = started()
    immediate = {**spec(), "rollout": {"strategy": "Immediate"}}
    transition = on_new_revision(NAME, immediate, status, RevisionRef(4, SHA4), T0)
    assert transition is not None
    assert transition.rollout is None
    assert [e.reason for e in transition.events] == ["RolloutCancelled"]
    assert serving(NAME, immediate, status).served is None  # the newest revision
    no_rollout = {"roleType": "coder", "lua": {"script": "x"}}
    assert on_new_revision(NAME, no_rollout, {"revision": 1}, RevisionRef(2, SHA2), T0) is None


def test_steps_of_weight_zero_are_passed_and_weight_100_promotes() -> None:
    status = started(steps=[{"setWeight": 0}, {"pause": {}}, {"setWeight": 100}])
    state = rollout(status)
    assert (state.phase, state.current_step, state.weight) == ("Paused", 1, 0)
    status = applied(
        status,
        tick(
            status,
            None,
            Observation(),
            annotations={PROMOTE_ANNOTATION: "true"},
            steps=[{"setWeight": 0}, {"pause": {}}, {"setWeight": 100}],
        ),
    )
    assert (rollout(status).phase, rollout(status).stable_revision) == ("Promoted", 3)


# ---- the analysis window -----------------------------------------------------------------


def test_window_counts_since_the_baseline_over_the_same_agents() -> None:
    status = opened(started(), observed((100, 90), (10, 9)))
    state = rollout(status)
    assert window(state, observed((150, 130), (30, 25))) == (Counts(50, 40), Counts(20, 16), False)
    # Another set of agents, or counts that went backwards: a new window.
    other = fingerprint(["ns/a", "ns/b", "ns/c"], [])
    assert window(state, observed((150, 130), (30, 25), agents=other))[2] is True
    assert window(state, observed((90, 80), (30, 25)))[2] is True


def test_the_first_look_opens_the_window_and_never_advances() -> None:
    status = started()
    transition = tick(status, verdict("Advance"), observed((100, 90), (10, 9)))
    state = RolloutStatus.model_validate(applied(status, transition)["rollout"])
    assert state.current_step == 0
    assert state.baseline is not None
    assert (state.baseline.stable_tasks, state.baseline.canary_tasks) == (100, 10)


def test_a_fleet_change_reopens_the_window_instead_of_deciding() -> None:
    status = opened(started(), observed((100, 90), (10, 9)))
    other = fingerprint(["ns/a"], [])
    transition = tick(status, verdict("Abort"), observed((400, 100), (300, 10), agents=other))
    assert transition is not None
    state = RolloutStatus.model_validate(transition.rollout)
    assert (state.phase, state.current_step) == ("Progressing", 0)
    assert state.baseline is not None
    assert state.baseline.agents == other
    assert transition.outcome is None


# ---- the verdicts --------------------------------------------------------------------------


def test_continue_keeps_the_step_and_shows_the_counts() -> None:
    status = opened(started(), observed((100, 90), (10, 9)))
    transition = tick(status, verdict("Continue", "waiting"), observed((160, 144), (20, 18)))
    assert transition is not None
    assert transition.events == ()
    state = RolloutStatus.model_validate(transition.rollout)
    assert (state.phase, state.current_step, state.reason) == ("Progressing", 0, "waiting")
    assert state.stable is not None
    assert state.canary is not None
    assert (state.stable.tasks, state.stable.successes, state.stable.success_rate) == (60, 54, 0.9)
    assert (state.canary.tasks, state.canary.interval) == (10, [0.7, 0.95])
    # Looking again at the same counts changes nothing: no status patch.
    again = tick(
        applied(status, transition), verdict("Continue", "waiting"), observed((160, 144), (20, 18))
    )
    assert again is None


def test_advance_moves_to_the_next_step_and_opens_a_new_window() -> None:
    status = opened(started(), observed((100, 90), (10, 9)))
    transition = tick(
        status, verdict("Advance"), observed((300, 270), (40, 36)), at=T0 + timedelta(seconds=30)
    )
    assert transition is not None
    state = RolloutStatus.model_validate(transition.rollout)
    assert (state.phase, state.current_step, state.weight) == ("Paused", 1, 10)
    assert state.step_started_at == T0 + timedelta(seconds=30)
    assert state.pause_until == T0 + timedelta(seconds=150)
    assert state.baseline is not None
    assert (state.baseline.stable_tasks, state.baseline.canary_tasks) == (300, 40)
    assert [e.reason for e in transition.events] == ["RolloutPaused"]


def test_abort_verdict_rolls_back() -> None:
    status = opened(started(), observed((100, 90), (10, 9)))
    transition = tick(status, verdict("Abort", "worse by 0.15"), observed((300, 270), (60, 40)))
    assert transition is not None
    assert transition.outcome == "Aborted"
    state = RolloutStatus.model_validate(transition.rollout)
    assert (state.phase, state.weight, state.stable_revision) == ("Aborted", 0, 2)
    assert state.reason == "aborted: worse by 0.15"
    assert state.canary is not None
    assert state.canary.tasks == 50  # the evidence stays in status
    assert [(e.reason, e.warning) for e in transition.events] == [("RolloutAborted", True)]
    aborted = {**status, "rollout": transition.rollout}
    plan = serving(NAME, spec(), aborted)
    assert (plan.served, plan.canary) == (RevisionRef(2, SHA2), None)
    assert plan.note is not None
    assert "worse by 0.15" in plan.note
    assert plan.evidence["canary"] == "careful@3"


def test_a_timed_pause_waits_for_its_duration_and_still_aborts_a_bad_canary() -> None:
    status = opened(started(), observed((100, 90), (10, 9)))
    status = applied(status, tick(status, verdict("Advance"), observed((300, 270), (40, 36))))
    waiting = tick(
        status, verdict("Advance"), observed((300, 270), (40, 36)), at=T0 + timedelta(seconds=60)
    )
    assert waiting is None or rollout(applied(status, waiting)).current_step == 1
    later = tick(
        status, verdict("Continue"), observed((300, 270), (40, 36)), at=T0 + timedelta(seconds=121)
    )
    state = rollout(applied(status, later))
    assert (state.phase, state.current_step, state.weight) == ("Progressing", 2, 50)
    bad = tick(
        status, verdict("Abort"), observed((400, 360), (80, 50)), at=T0 + timedelta(seconds=60)
    )
    assert rollout(applied(status, bad)).phase == "Aborted"


def test_a_pause_without_duration_waits_for_a_manual_promote() -> None:
    status = started(steps=[{"setWeight": 50}, {"pause": {}}, {"setWeight": 80}])
    steps: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}, {"setWeight": 80}]
    status = applied(status, tick(status, None, observed((0, 0), (0, 0)), steps=steps))
    status = applied(
        status, tick(status, verdict("Advance"), observed((300, 270), (300, 270)), steps=steps)
    )
    assert (rollout(status).phase, rollout(status).pause_until) == ("Paused", None)
    a_day_later = T0 + timedelta(days=1)
    stays = tick(
        status, verdict("Advance"), observed((300, 270), (300, 270)), at=a_day_later, steps=steps
    )
    assert stays is None or rollout(applied(status, stays)).phase == "Paused"
    promoted = tick(
        status,
        verdict("Continue"),
        observed((300, 270), (300, 270)),
        at=a_day_later,
        annotations={PROMOTE_ANNOTATION: "true"},
        steps=steps,
    )
    assert promoted is not None
    assert promoted.consumed == {PROMOTE_ANNOTATION: "true"}
    state = RolloutStatus.model_validate(promoted.rollout)
    assert (state.phase, state.current_step, state.weight) == ("Progressing", 2, 80)
    assert state.last_action is not None
    assert (state.last_action.action, state.last_action.at) == ("Promote", a_day_later)
    assert [e.reason for e in promoted.events] == ["ManualPromote", "RolloutStep"]


def test_manual_promote_outside_a_pause_skips_the_remaining_steps() -> None:
    status = opened(started(), observed((100, 90), (10, 9)))
    transition = tick(
        status,
        verdict("Continue"),
        observed((100, 90), (10, 9)),
        annotations={PROMOTE_ANNOTATION: "true"},
    )
    assert transition is not None
    assert transition.outcome == "Promoted"
    state = RolloutStatus.model_validate(transition.rollout)
    assert (state.phase, state.stable_revision, state.stable_sha256) == ("Promoted", 3, SHA3)
    # promote=full skips the rest from a pause too.
    status = applied(status, tick(status, verdict("Advance"), observed((300, 270), (40, 36))))
    full = tick(
        status, None, observed((300, 270), (40, 36)), annotations={PROMOTE_ANNOTATION: "full"}
    )
    assert rollout(applied(status, full)).phase == "Promoted"


def test_manual_abort_records_the_reason() -> None:
    status = opened(started(), observed((100, 90), (10, 9)))
    transition = tick(
        status,
        verdict("Advance"),
        observed((300, 270), (40, 36)),
        annotations={ABORT_ANNOTATION: "latency is up"},
    )
    assert transition is not None
    assert (transition.outcome, transition.consumed) == (
        "Aborted",
        {ABORT_ANNOTATION: "latency is up"},
    )
    state = RolloutStatus.model_validate(transition.rollout)
    assert state.phase == "Aborted"
    assert state.reason == "aborted: manual abort: latency is up"
    assert state.last_action is not None
    assert (state.last_action.action, state.last_action.reason) == ("Abort", "latency is up")
    assert [e.reason for e in transition.events] == ["ManualAbort", "RolloutAborted"]


def test_annotations_without_a_rollout_in_progress_are_consumed_and_ignored() -> None:
    promoted = {"rollout": {"phase": "Promoted", "stableRevision": 2, "stableSha256": SHA2}}
    transition = tick(promoted, None, Observation(), annotations={PROMOTE_ANNOTATION: "true"})
    assert transition is not None
    assert transition.rollout == promoted["rollout"]  # unchanged: no status patch
    assert transition.consumed == {PROMOTE_ANNOTATION: "true"}
    assert [(e.reason, e.warning) for e in transition.events] == [("AnnotationIgnored", True)]
    assert tick(promoted, None, Observation()) is None
    status = opened(started(), observed((100, 90), (10, 9)))
    undo = tick(
        status,
        verdict("Continue"),
        observed((100, 90), (10, 9)),
        annotations={ABORT_ANNOTATION: "false"},
    )
    assert undo is not None
    assert rollout(applied(status, undo)).phase == "Progressing"
    assert undo.consumed == {ABORT_ANNOTATION: "false"}


def test_a_good_canary_walks_every_step_to_promoted() -> None:
    """The whole of STEPS: analysis advances the setWeight steps, time ends the timed pause,
    a manual promote the last one; promoted, the canary is stable."""
    status = started()
    clock = T0
    seen: list[tuple[str, int | None]] = []
    stable, canary = Counts(0, 0), Counts(0, 0)
    for _ in range(40):
        state = rollout(status)
        seen.append((state.phase, state.current_step))
        if state.phase == "Promoted":
            break
        clock += timedelta(seconds=30)
        stable += Counts(90, 81)
        canary += Counts(10 * (state.weight or 0) // 10, 9 * (state.weight or 0) // 10)
        obs = Observation(stable, canary, agents=AGENTS)
        found, lifted, _ = window(state, obs)
        result = (
            analyze_canary(found, lifted, min_tasks=30, max_regression=0.2)
            if state.weight
            else None
        )
        annotations = (
            {PROMOTE_ANNOTATION: "true"}
            if state.phase == "Paused" and state.pause_until is None
            else {}
        )
        transition = tick(status, result, obs, at=clock, annotations=annotations)
        if transition is not None:
            status = applied(status, transition)
    assert rollout(status).phase == "Promoted"
    assert rollout(status).stable_revision == 3
    assert [s for s in dict.fromkeys(seen)] == [
        ("Progressing", 0),
        ("Paused", 1),
        ("Progressing", 2),
        ("Paused", 3),
        ("Promoted", 4),
    ]


def test_a_canary_that_fails_to_load_everywhere_aborts_at_once() -> None:
    status = opened(started(), observed((100, 90), (0, 0), canary_agents=2))
    obs = observed((130, 117), (0, 0), canary_agents=2, canary_load_failures=2)
    stable, canary, _ = window(rollout(status), obs)
    result = analyze_canary(stable, canary, canary_agents=2, canary_load_failures=2)
    transition = tick(status, result, obs)
    assert transition is not None
    assert transition.outcome == "Aborted"
    assert "failed to load on all 2 agents" in (rollout(applied(status, transition)).reason or "")


# ---- conditions ----------------------------------------------------------------------------


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []}


def test_an_aborted_rollout_is_degraded_stalled_and_not_ready() -> None:
    status = started()
    status = applied(status, tick(status, None, Observation(), annotations={ABORT_ANNOTATION: "x"}))
    written = desired_behavior_status(status, observed_generation=2, now=T0, generation=2)
    shown = conditions(written)
    assert shown["Degraded"] == ("True", "RolloutAborted")
    assert shown["Stalled"] == ("True", "RolloutAborted")
    assert shown["Ready"] == ("False", "RolloutAborted")
    assert "Reconciling" not in shown


def test_a_rollout_in_progress_is_reconciling() -> None:
    status = started()
    valid = validity_condition(True, None, None)
    written = desired_behavior_status(
        status, observed_generation=2, valid=valid, now=T0, generation=2
    )
    shown = conditions(written)
    assert shown["Reconciling"] == ("True", "RolloutProgressing")
    assert shown["Degraded"] == ("False", "RolloutProgressing")
    assert shown["Ready"] == ("True", "Ready")
    assert "Stalled" not in shown
    manual = {**rollout(status).to_wire(), "phase": "Paused"}
    assert rollout_conditions(manual).progressing is not None
    assert rollout_conditions(manual).progressing.reason == "RolloutAwaitingPromote"  # type: ignore[union-attr]
    timed = {**manual, "pauseUntil": "2026-12-03T09:02:00Z"}
    assert rollout_conditions(timed).progressing.reason == "RolloutPaused"  # type: ignore[union-attr]


def test_a_promoted_rollout_is_current_and_no_rollout_has_no_degraded() -> None:
    promoted = {
        "rollout": {"phase": "Promoted", "stableRevision": 3, "stableSha256": SHA3},
        "conditions": [
            {
                "type": "Degraded",
                "status": "True",
                "reason": "RolloutAborted",
                "message": "",
                "lastTransitionTime": "2026-12-03T08:00:00Z",
            }
        ],
    }
    shown = conditions(
        desired_behavior_status(promoted, observed_generation=1, now=T0, generation=1)
    )
    assert shown["Degraded"] == ("False", "RolloutPromoted")
    assert not {"Reconciling", "Stalled"} & set(shown)
    removed = desired_behavior_status(promoted, observed_generation=1, now=T0, rollout=None)
    assert removed["rollout"] is None
    assert "Degraded" not in conditions(removed)


# ---- the arbiter's inputs, from status and the registry (real PostgreSQL) -------------------


@pytest.mark.postgres
async def test_the_catalog_builds_the_rollout_from_status_and_reads_the_stable_script(
    postgres_url: str,
) -> None:
    """BehaviorCatalog (controller.arbitration) hands the arbiter the rollout recorded in the
    AgentBehavior's status; the stable revision's script comes from the registry's stored
    revisions; after an abort the decision says why its agents run stable."""
    from typing import cast

    from agent_registry.controller.arbitration import BehaviorCatalog, agent_facts, decide_agent
    from agent_registry.controller.context import Indexes, OperatorConfig, OperatorContext
    from agent_registry.controller.indexes import ObjectState
    from agent_registry.decisions.arbiter import Revision
    from agent_registry.registry import RegistryService

    old, new = "-- 1\nfunction on_task(t, c) end\n", "-- 2\nfunction on_task(t, c) end\n"
    registry = RegistryService.from_url(postgres_url)
    try:
        first = await registry.create_behavior("careful", "coder", old, namespace="ns")
        second = await registry.create_behavior("careful", "coder", new, namespace="ns")
        before = {"revision": 1, "scriptSha256": first.script_sha256}
        begun = on_new_revision(NAME, spec(), before, RevisionRef(2, second.script_sha256), T0)
        assert begun is not None

        def catalog_for(status: dict[str, Any], unit: str = "Task") -> BehaviorCatalog:
            behavior = ObjectState("AgentBehavior", "ns", NAME, "u", 2, spec(unit=unit), status)
            ctx = OperatorContext(
                config=OperatorConfig(database_url=postgres_url, registry_url=""),
                registry=registry,
                kube=cast(Any, None),
                indexes=Indexes(
                    agent_states={}, behavior_states={("ns", NAME): [behavior]}, policy_states={}
                ),
            )
            return BehaviorCatalog(ctx, "ns")

        agent = ObjectState(
            "Agent", "ns", "a-1", "u", 1, {"role": "coder", "behaviorRef": {"name": NAME}}, {}
        )
        in_progress = {"revision": 2, "rollout": begun.rollout}
        catalog = catalog_for(in_progress)
        facts = await catalog.facts(NAME, with_revisions=False)
        assert facts is not None
        stable = Revision(NAME, 1, first.script_sha256)
        assert facts.current == Revision(NAME, 2, second.script_sha256)  # Git's newest
        assert facts.rollout is not None
        assert (facts.rollout.stable, facts.rollout.weight) == (stable, 0.1)
        decision, _ = await decide_agent(catalog, agent_facts(agent))
        assert decision.source == "Rollout"
        assert [(s.revision.revision, s.weight) for s in decision.scripts] == [(1, 0.9), (2, 0.1)]
        assert await catalog.script(decision.scripts[0].revision) == old

        aborted_status = applied(
            in_progress, tick(in_progress, None, Observation(), annotations={ABORT_ANNOTATION: "x"})
        )
        catalog = catalog_for(aborted_status)
        decision, _ = await decide_agent(catalog, agent_facts(agent))
        assert (decision.source, decision.primary) == ("Spec", stable)
        assert "rollout of careful@2 aborted, back on careful@1" in decision.reason
        assert decision.evidence["rollout"] == "Aborted"
        assert await catalog.script(stable) == old
    finally:
        await registry.close()
