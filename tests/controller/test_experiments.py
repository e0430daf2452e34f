"""BehaviorExperiment's pure parts: validation, who takes part, when their tasks count, the
phases, and the grants the arbiter gets (no servers: the evaluation is a function of the
declared objects and the registry's lifetime counts, which these tests hand in directly).

`World` plays the rest of the operator between two evaluations: it stores the status the way
the apiserver would (JSON, null removes a key) and shows on each Agent the assignment its
grant leads to, as the status loop would once the bundle is applied."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest

from agent_registry.controller.experiments import (
    BehaviorInfo,
    Inputs,
    Step,
    advance,
    balanced_arm,
    claims,
    declared_behaviors,
    delivered,
    eligible,
    experiment_grant,
    grant_keys,
    grant_of,
    parse_spec,
    reason_prefix,
    spec_problems,
)
from agent_registry.controller.indexes import ABORT_ANNOTATION, PIN_ANNOTATION, ObjectState
from agent_registry.controller.webhook import validate_experiment
from agent_registry.decisions.arbiter import AgentFacts, BehaviorFacts, Revision, decide
from agent_registry.decisions.evidence import Counts

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SHA = {name: (letter * 64) for name, letter in (("steady", "a"), ("hasty", "b"), ("other", "c"))}
ROLE = "coder"


def revision(name: str, number: int = 1) -> Revision:
    return Revision(name, number, SHA[name] if number == 1 else f"{number:064x}")


def behaviors(**revisions: int) -> dict[str, BehaviorInfo]:
    numbers = {"steady": 1, "hasty": 1, **revisions}
    return {name: BehaviorInfo(name, ROLE, revision(name, n)) for name, n in numbers.items()}


def agent(
    name: str,
    *,
    role: str = ROLE,
    labels: dict[str, str] | None = None,
    pin: str | None = None,
    phase: str = "Active",
    behavior: dict[str, Any] | None = None,
) -> ObjectState:
    return ObjectState(
        kind="Agent",
        namespace="ns",
        name=name,
        uid=f"uid-{name}",
        generation=1,
        spec={"role": role, "behaviorRef": {"name": "steady"}},
        status={"phase": phase, **({"behavior": behavior} if behavior else {})},
        annotations={PIN_ANNOTATION: pin} if pin else {},
        labels=labels or {},
    )


def experiment_state(
    name: str = "ab",
    *,
    status: dict[str, Any] | None = None,
    generation: int = 1,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> ObjectState:
    body = {
        "role": ROLE,
        "arms": [{"behaviorRef": {"name": "steady"}}, {"behaviorRef": {"name": "hasty"}}],
        "minTasksPerArm": 100,
        **spec,
    }
    return ObjectState(
        kind="BehaviorExperiment",
        namespace="ns",
        name=name,
        uid=f"uid-{name}",
        generation=generation,
        spec=body,
        status=status or {},
        annotations=annotations or {},
    )


def stored(status: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch of top-level keys, as the apiserver applies it."""
    merged = {**status, **changes}
    result: dict[str, Any] = json.loads(
        json.dumps({k: v for k, v in merged.items() if v is not None})
    )
    return result


@dataclass
class World:
    experiment: ObjectState
    agents: dict[str, ObjectState]
    behaviors: dict[str, BehaviorInfo] = field(default_factory=behaviors)
    # Lifetime counts per (agent, sha), as the registry keeps them.
    lifetime: dict[tuple[str, str], Counts] = field(default_factory=dict)
    now: datetime = T0
    others: list[ObjectState] = field(default_factory=list)

    def evaluate(self) -> Step:
        index = {(e.namespace, e.name): [e] for e in [self.experiment, *self.others]}
        step = advance(
            Inputs(
                experiment=self.experiment,
                now=self.now,
                agents=list(self.agents.values()),
                behaviors=self.behaviors,
                stats=dict(self.lifetime),
                claimed=claims(index, "ns", self.experiment.name),
            )
        )
        annotations = dict(self.experiment.annotations)
        if step.consumed_abort:
            annotations.pop(ABORT_ANNOTATION, None)
        self.experiment = replace(
            self.experiment,
            status=stored(dict(self.experiment.status), step.status),
            annotations=annotations,
        )
        self.now += timedelta(seconds=10)
        return step

    def deliver(self) -> None:
        """Every agent shows the assignment its grant (or its spec) leads to."""
        index = {(e.namespace, e.name): [e] for e in [self.experiment, *self.others]}
        for name, state in self.agents.items():
            grant = experiment_grant(state, index)
            if grant is None:
                shown = {"name": "steady", "revision": 1, "sha256": SHA["steady"], "source": "Spec"}
            else:
                primary = grant.scripts[0].revision
                shown = {
                    "name": primary.behavior,
                    "revision": primary.revision,
                    "sha256": primary.sha256,
                    "source": "Experiment",
                    "reason": grant.reason,
                }
            self.agents[name] = replace(state, status={**state.status, "behavior": shown})

    def run_tasks(self, name: str, sha: str, tasks: int, successes: int) -> None:
        key = (name, sha)
        self.lifetime[key] = self.lifetime.get(key, Counts()) + Counts(tasks, successes)

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.experiment.status)

    def arm(self, behavior: str) -> dict[str, Any]:
        arms: list[dict[str, Any]] = self.status["arms"]
        return next(a for a in arms if a["behavior"] == behavior)

    def participant(self, name: str) -> dict[str, Any]:
        entries: list[dict[str, Any]] = self.status["participants"]
        return next(p for p in entries if p["agent"] == name)

    def grant(self, name: str) -> Any:
        return grant_of(self.experiment, name)


def world(*names: str, **spec: Any) -> World:
    return World(experiment_state(**spec), {n: agent(n) for n in names})


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = status["conditions"]
    return next(c for c in conditions if c["type"] == type_)


def started(w: World) -> None:
    """Start, deliver the grants, and let one evaluation see them: counting begins."""
    w.evaluate()
    w.deliver()
    w.evaluate()


# --- validation ---------------------------------------------------------------------


def test_spec_problems_name_the_field() -> None:
    spec, errors = parse_spec(
        {
            "role": ROLE,
            "arms": [
                {"behaviorRef": {"name": "steady"}, "weight": 2},
                {"behaviorRef": {"name": "reviewer-one"}},
                {"behaviorRef": {"name": "ghost"}},
                {"behaviorRef": {"name": "steady"}, "weight": 1},
            ],
            "minTasksPerArm": 500,
            "maxTasksPerArm": 200,
        }
    )
    assert spec is not None
    assert errors == []
    known = {
        "steady": BehaviorInfo("steady", ROLE, revision("steady")),
        "reviewer-one": BehaviorInfo("reviewer-one", "reviewer"),
    }
    assert spec_problems(spec, known, need_revisions=True) == [
        "spec.arms[1].behaviorRef.name: AgentBehavior reviewer-one is for role reviewer, "
        "the experiment for role coder",
        "spec.arms[2].behaviorRef.name: no AgentBehavior ghost in the namespace",
        "spec.arms[3].behaviorRef.name: AgentBehavior steady is already arm 0",
        "spec.arms[1].weight: give a weight to every arm or to none (none: equal weights)",
        "spec.maxTasksPerArm: 200 is below minTasksPerArm 500",
    ]


def test_a_behavior_without_a_valid_revision_blocks_the_start_but_not_admission() -> None:
    spec, _ = parse_spec(experiment_state().spec)
    assert spec is not None
    known = {**behaviors(), "hasty": BehaviorInfo("hasty", ROLE, None)}
    assert spec_problems(spec, known, need_revisions=False) == []
    assert spec_problems(spec, known, need_revisions=True) == [
        "spec.arms[1].behaviorRef.name: AgentBehavior hasty has no valid revision yet"
    ]


def test_schema_errors_name_the_field() -> None:
    _, errors = parse_spec({"role": ROLE, "arms": [{"behaviorRef": {"name": "steady"}}]})
    assert len(errors) == 1
    assert errors[0].startswith("spec.arms: List should have at least 2")
    _, errors = parse_spec(
        {
            "role": ROLE,
            "arms": [
                {"behaviorRef": {"name": "steady"}, "weight": 0},
                {"behaviorRef": {"name": "hasty"}, "weight": 1},
            ],
        }
    )
    assert errors == ["spec.arms[0].weight: Input should be greater than 0"]


def behavior_index(**roles: str) -> dict[tuple[str, str], list[ObjectState]]:
    return {
        ("ns", name): [
            ObjectState("AgentBehavior", "ns", name, f"uid-{name}", 1, {"roleType": role}, {})
        ]
        for name, role in roles.items()
    }


def test_the_webhook_refuses_another_role_and_a_missing_behavior() -> None:
    index = behavior_index(steady=ROLE, hasty="reviewer")
    spec = experiment_state().spec
    with pytest.raises(kopf.AdmissionError, match=r"spec\.arms\[1\]\.behaviorRef\.name: .*role"):
        validate_experiment(spec, "ns", index)
    with pytest.raises(kopf.AdmissionError, match=r"spec\.arms\[1\]\.behaviorRef\.name: no Agent"):
        validate_experiment(spec, "ns", behavior_index(steady=ROLE))
    with pytest.raises(kopf.AdmissionError, match=r"spec\.arms\[0\]\.weight"):
        validate_experiment(
            {**spec, "arms": [{**spec["arms"][0], "weight": -1}, spec["arms"][1]]}, "ns", index
        )
    validate_experiment(spec, "ns", behavior_index(steady=ROLE, hasty=ROLE))
    assert declared_behaviors(index, "other-ns", ["steady"])["steady"].role is None


def test_the_webhook_lets_metadata_patches_through_when_a_behavior_went_away() -> None:
    # hasty was deleted after the experiment was admitted: removing the finalizer or the
    # abort annotation must not be refused, a spec edit still is.
    spec = experiment_state().spec
    gone = behavior_index(steady=ROLE)
    validate_experiment(spec, "ns", gone, operation="UPDATE", old={"spec": dict(spec)})
    edited = {**spec, "minTasksPerArm": 5}
    with pytest.raises(kopf.AdmissionError, match="no AgentBehavior hasty"):
        validate_experiment(edited, "ns", gone, operation="UPDATE", old={"spec": dict(spec)})


# --- who takes part -----------------------------------------------------------------


def test_participants_are_the_active_unpinned_agents_of_the_role_and_selector() -> None:
    spec, _ = parse_spec({**experiment_state().spec, "selector": {"matchLabels": {"team": "a"}}})
    assert spec is not None
    team = {"team": "a"}
    assert eligible(agent("a", labels=team), spec)
    assert not eligible(agent("b"), spec)  # no label
    assert not eligible(agent("c", labels=team, role="reviewer"), spec)
    assert not eligible(agent("d", labels=team, pin="steady"), spec)
    assert not eligible(agent("e", labels=team, phase="Paused"), spec)


def test_start_freezes_the_arms_and_enrolls_without_counting_yet() -> None:
    w = World(
        experiment_state(),
        {
            "a1": agent("a1"),
            "a2": agent("a2"),
            "pinned": agent("pinned", pin="hasty"),
            "reviewer": agent("reviewer", role="reviewer"),
        },
    )
    step = w.evaluate()
    status = w.status
    assert status["phase"] == "Running"
    assert status["armNames"] == "steady,hasty"
    assert [(a["behavior"], a["revision"], a["sha256"], a["weight"]) for a in status["arms"]] == [
        ("steady", 1, SHA["steady"], 0.5),
        ("hasty", 1, SHA["hasty"], 0.5),
    ]
    assert [p["agent"] for p in status["participants"]] == ["a1", "a2"]
    assert all("countingSince" not in p for p in status["participants"])
    assert [n.reason for n in step.notes] == ["Started", "AgentsJoined"]
    assert condition(status, "Running")["status"] == "True"
    assert condition(status, "Ready")["reason"] == "Valid"
    assert w.grant("pinned") is None
    assert w.grant("reviewer") is None


def test_task_unit_grant_runs_every_arm_by_weight_with_fixed_revisions() -> None:
    w = world(
        "a1",
        arms=[
            {"behaviorRef": {"name": "steady"}, "weight": 3},
            {"behaviorRef": {"name": "hasty"}, "weight": 1},
        ],
    )
    w.evaluate()
    grant = w.grant("a1")
    assert grant is not None
    assert grant.source == "Experiment"
    assert grant.owner == "ab"
    assert grant.reason.startswith(reason_prefix("ab"))
    assert [(s.revision, s.weight) for s in grant.scripts] == [
        (revision("steady"), 0.75),
        (revision("hasty"), 0.25),
    ]
    # The arbiter takes the experiment's revisions as they are, over the agent's spec.
    facts = AgentFacts("ns", "a1", ROLE, "steady", experiment=grant)
    known = {
        "steady": BehaviorFacts("steady", ROLE, revision("steady", 2)),
        "hasty": BehaviorFacts("hasty", ROLE, revision("hasty")),
    }
    decision = decide(facts, known)
    assert decision.source == "Experiment"
    assert [s.revision for s in decision.scripts] == [revision("steady"), revision("hasty")]


def test_counting_starts_once_the_bundle_is_seen_and_subtracts_lifetime_counts() -> None:
    w = world("a1", "a2")
    # a1 ran steady's script for a long time before: none of it may count.
    w.run_tasks("a1", SHA["steady"], 1000, 990)
    w.evaluate()
    w.run_tasks("a1", SHA["steady"], 20, 20)  # still its old single script: not the bundle
    w.evaluate()  # nothing delivered yet: still not counting
    assert "countingSince" not in w.participant("a1")
    w.deliver()
    w.evaluate()
    entry = w.participant("a1")
    assert entry["countingSince"]
    assert entry["baseline"] == [{"sha256": SHA["steady"], "tasks": 1020, "successes": 1010}]
    assert "baseline" not in w.participant("a2")  # nothing ran before: nothing to subtract
    w.run_tasks("a1", SHA["steady"], 30, 27)
    w.run_tasks("a1", SHA["hasty"], 25, 15)
    w.run_tasks("a2", SHA["hasty"], 5, 1)
    w.evaluate()
    assert (w.arm("steady")["tasks"], w.arm("steady")["successes"]) == (30, 27)
    assert (w.arm("hasty")["tasks"], w.arm("hasty")["successes"]) == (30, 16)
    assert w.status["tasks"] == 60
    assert w.arm("steady")["agents"] == 2


def test_a_delivery_of_another_experiment_does_not_count() -> None:
    shown = {"source": "Experiment", "reason": reason_prefix("abc") + "x", "sha256": SHA["steady"]}
    assert not delivered(agent("a", behavior=shown), "ab", SHA["steady"])
    assert delivered(agent("a", behavior=shown), "abc", SHA["steady"])
    assert not delivered(agent("a", behavior=shown), "abc", SHA["hasty"])


def test_agents_join_during_the_run_and_a_deleted_agent_leaves_with_its_counts() -> None:
    w = world("a1", "a2")
    started(w)
    w.run_tasks("a2", SHA["steady"], 10, 9)
    w.run_tasks("a2", SHA["hasty"], 10, 4)
    w.agents["a3"] = agent("a3")
    del w.agents["a2"]
    step = w.evaluate()
    assert {n.reason: n.message for n in step.notes} == {
        "AgentsJoined": "1 joined: a3",
        "AgentsLeft": "1 left: a2",
    }
    left = w.participant("a2")
    assert left["leftAt"]
    assert left["counts"] == [
        {"sha256": SHA["steady"], "tasks": 10, "successes": 9},
        {"sha256": SHA["hasty"], "tasks": 10, "successes": 4},
    ]
    assert w.grant("a2") is None
    assert w.grant("a3") is not None
    # Its tasks stay in the arms (they happened in the experiment); it does not rejoin.
    w.agents["a2"] = agent("a2")
    w.run_tasks("a2", SHA["steady"], 50, 50)
    w.evaluate()
    assert w.arm("steady")["tasks"] == 10
    assert [p["agent"] for p in w.status["participants"]] == ["a1", "a2", "a3"]


def test_a_pinned_agent_leaves_and_a_pinned_newcomer_never_joins() -> None:
    w = world("a1", "a2")
    started(w)
    w.agents["a1"] = agent("a1", pin="hasty")
    w.agents["a9"] = agent("a9", pin="steady")
    w.evaluate()
    assert w.participant("a1")["leftAt"]
    assert "a9" not in [p["agent"] for p in w.status["participants"]]


# --- unit Agent ---------------------------------------------------------------------


def test_balanced_arm_follows_the_weights() -> None:
    assert balanced_arm([0, 0], [0.5, 0.5]) == 0
    assert balanced_arm([1, 0], [0.5, 0.5]) == 1
    assert balanced_arm([2, 1], [0.75, 0.25]) == 0
    assert balanced_arm([3, 0], [0.75, 0.25]) == 1


def test_agent_unit_assigns_each_agent_one_arm_balanced_and_stable() -> None:
    w = world("a1", "a2", "a3", unit="Agent")
    w.evaluate()
    assigned = {p["agent"]: p["arm"] for p in w.status["participants"]}
    assert assigned == {"a1": 0, "a2": 1, "a3": 0}
    w.agents["a4"] = agent("a4")
    w.evaluate()
    assert {p["agent"]: p["arm"] for p in w.status["participants"]} == {**assigned, "a4": 1}
    grant = w.grant("a2")
    assert grant is not None
    assert [s.revision for s in grant.scripts] == [revision("hasty")]
    assert w.arm("steady")["agents"] == 2
    assert w.arm("hasty")["agents"] == 2


def test_agent_unit_counts_only_the_agents_own_arm() -> None:
    w = world("a1", "a2", unit="Agent")
    started(w)
    assert w.participant("a2")["countingSince"]
    w.run_tasks("a1", SHA["steady"], 10, 10)
    w.run_tasks("a1", SHA["hasty"], 7, 0)  # not its arm (a stale script): ignored
    w.run_tasks("a2", SHA["hasty"], 10, 5)
    w.evaluate()
    assert (w.arm("steady")["tasks"], w.arm("hasty")["tasks"]) == (10, 10)


# --- verdicts -----------------------------------------------------------------------


def test_a_clear_difference_concludes_and_promote_keeps_the_winner() -> None:
    w = world("a1", "a2", onConclusion="Promote")
    started(w)
    for name in ("a1", "a2"):
        w.run_tasks(name, SHA["steady"], 150, 140)
        w.run_tasks(name, SHA["hasty"], 150, 90)
    step = w.evaluate()
    status = w.status
    assert status["phase"] == "Concluded"
    assert status["winner"] == "steady"
    assert status["pValue"] <= 0.05
    assert status["concludedAt"]
    assert condition(status, "Concluded")["status"] == "True"
    assert condition(status, "Running")["status"] == "False"
    low, high = w.arm("hasty")["interval"]
    assert low < 0.6 < high
    assert [n.reason for n in step.notes] == ["Concluded"]
    grant = w.grant("a1")
    assert grant is not None
    assert [s.revision for s in grant.scripts] == [revision("steady")]
    assert "winner steady@1 promoted" in grant.reason
    # Finished: later evaluations change nothing (new tasks do not reopen it).
    w.run_tasks("a1", SHA["hasty"], 500, 500)
    assert w.evaluate().notes == ()
    assert w.status["winner"] == "steady"


def test_report_returns_the_participants_at_conclusion() -> None:
    w = world("a1", onConclusion="Report")
    started(w)
    w.run_tasks("a1", SHA["steady"], 300, 280)
    w.run_tasks("a1", SHA["hasty"], 300, 180)
    w.evaluate()
    assert w.status["phase"] == "Concluded"
    assert w.grant("a1") is None


def test_the_horizon_without_a_winner_is_inconclusive() -> None:
    w = world("a1", maxTasksPerArm=200)
    started(w)
    w.run_tasks("a1", SHA["steady"], 200, 100)
    w.run_tasks("a1", SHA["hasty"], 200, 100)
    step = w.evaluate()
    assert w.status["phase"] == "Inconclusive"
    assert "winner" not in w.status
    assert [n.reason for n in step.notes] == ["Inconclusive"]
    assert w.grant("a1") is None


def test_a_sample_ratio_mismatch_stops_any_winner() -> None:
    w = world("a1", onConclusion="Promote")
    started(w)
    # A broken split (steady drawn 3x as often as its weight says) with a large difference.
    w.run_tasks("a1", SHA["steady"], 900, 880)
    w.run_tasks("a1", SHA["hasty"], 300, 100)
    step = w.evaluate()
    status = w.status
    assert status["phase"] == "Running"
    assert "winner" not in status
    assert condition(status, "SampleRatioMismatch")["status"] == "True"
    assert status["srmPValue"] < 0.001
    assert [(n.reason, n.warning) for n in step.notes] == [("SampleRatioMismatch", True)]
    assert w.evaluate().notes == ()  # only on the transition
    grant = w.grant("a1")
    assert grant is not None
    assert len(grant.scripts) == 2


def test_thompson_moves_tasks_to_the_better_arm_and_is_deterministic() -> None:
    w = world("a1", allocation="Thompson", minTasksPerArm=10_000, maxTasksPerArm=20_000)
    started(w)
    w.run_tasks("a1", SHA["steady"], 60, 55)
    w.run_tasks("a1", SHA["hasty"], 60, 30)
    w.evaluate()
    weights = [w.arm("steady")["weight"], w.arm("hasty")["weight"]]
    assert weights[0] > 0.9
    assert weights[1] >= 0.05
    assert condition(w.status, "SampleRatioMismatch")["reason"] == "NotChecked"
    before = w.status
    w.evaluate()  # the same counts: the same weights, nothing to write
    assert [w.arm("steady")["weight"], w.arm("hasty")["weight"]] == weights
    assert {k: v for k, v in w.status.items() if k != "conditions"} == {
        k: v for k, v in before.items() if k != "conditions"
    }
    grant = w.grant("a1")
    assert grant is not None
    assert [s.weight for s in grant.scripts] == weights


# --- restarts, invalid specs, aborts ------------------------------------------------


def test_a_new_revision_restarts_the_experiment_and_never_mixes_counts() -> None:
    w = world("a1", "a2")
    started(w)
    w.run_tasks("a1", SHA["steady"], 40, 38)
    w.run_tasks("a1", SHA["hasty"], 40, 20)
    w.evaluate()
    assert w.status["tasks"] == 80
    w.behaviors = behaviors(hasty=2)
    step = w.evaluate()
    status = w.status
    assert status["restarts"] == 1
    assert status["tasks"] == 0
    assert (w.arm("hasty")["revision"], w.arm("hasty")["sha256"]) == (
        2,
        revision("hasty", 2).sha256,
    )
    assert all("countingSince" not in p for p in status["participants"])
    assert [n.reason for n in step.notes] == ["Restarted"]
    assert "hasty revision 1 -> 2" in step.notes[0].message
    grant = w.grant("a1")
    assert grant is not None
    assert grant.scripts[1].revision == revision("hasty", 2)
    # Counting resumes from new baselines: the old revision's tasks stay out.
    w.deliver()
    w.evaluate()
    w.run_tasks("a1", revision("hasty", 2).sha256, 10, 10)
    w.run_tasks("a1", SHA["steady"], 10, 9)
    w.evaluate()
    assert (w.arm("steady")["tasks"], w.arm("hasty")["tasks"]) == (10, 10)


def test_a_spec_change_restarts_and_reassigns_agents() -> None:
    w = world("a1", "a2", unit="Agent")
    started(w)
    w.experiment = replace(
        w.experiment,
        generation=2,
        spec={**w.experiment.spec, "arms": list(reversed(w.experiment.spec["arms"]))},
    )
    step = w.evaluate()
    assert "the spec changed (generation 2)" in step.notes[0].message
    assert [a["behavior"] for a in w.status["arms"]] == ["hasty", "steady"]
    assert {p["agent"]: p["arm"] for p in w.status["participants"]} == {"a1": 0, "a2": 1}
    assert w.status["observedGeneration"] == 2


def test_an_invalid_spec_stays_pending_and_a_run_that_turns_invalid_lets_go() -> None:
    w = World(
        experiment_state(),
        {"a1": agent("a1")},
        behaviors={"steady": BehaviorInfo("steady", ROLE, revision("steady"))},
    )
    step = w.evaluate()
    assert w.status["phase"] == "Pending"
    ready = condition(w.status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert (
        ready["message"] == "spec.arms[1].behaviorRef.name: no AgentBehavior hasty in the namespace"
    )
    assert [(n.reason, n.warning) for n in step.notes] == [("InvalidSpec", True)]
    assert w.evaluate().notes == ()  # the same problem: no new Event
    w.behaviors = behaviors()
    w.evaluate()
    assert w.status["phase"] == "Running"
    assert w.grant("a1") is not None
    w.behaviors = {"steady": BehaviorInfo("steady", ROLE, revision("steady"))}  # hasty deleted
    step = w.evaluate()
    assert w.status["phase"] == "Pending"
    assert "participants" not in w.status
    assert w.grant("a1") is None
    assert [n.reason for n in step.notes] == ["InvalidSpec", "Stopped"]


def test_the_abort_annotation_aborts_is_consumed_and_returns_the_participants() -> None:
    w = world("a1", onConclusion="Promote")
    started(w)
    w.experiment = replace(w.experiment, annotations={ABORT_ANNOTATION: "wrong arms"})
    step = w.evaluate()
    assert step.consumed_abort
    assert ABORT_ANNOTATION not in w.experiment.annotations
    status = w.status
    assert status["phase"] == "Aborted"
    assert status["reason"].startswith(f"aborted by the {ABORT_ANNOTATION} annotation: wrong arms")
    assert status["concludedAt"]
    assert condition(status, "Running")["reason"] == "Aborted"
    assert [n.reason for n in step.notes] == ["Aborted"]
    assert w.grant("a1") is None
    # Aborted is final: evaluations keep it, a second annotation is only removed.
    w.evaluate()
    assert w.status["phase"] == "Aborted"
    w.experiment = replace(w.experiment, annotations={ABORT_ANNOTATION: "again"})
    step = w.evaluate()
    assert step.consumed_abort
    assert [n.reason for n in step.notes] == ["AbortIgnored"]


# --- several experiments, and what the event handler re-decides ---------------------


def test_two_experiments_never_run_one_agent() -> None:
    first = world("a1", "a2")
    first.experiment = replace(first.experiment, name="aa")
    first.evaluate()
    second = World(experiment_state("bb"), first.agents, others=[first.experiment])
    second.agents["a3"] = agent("a3")
    second.evaluate()
    assert [p["agent"] for p in second.status["participants"]] == ["a3"]
    index = {("ns", e.name): [e] for e in (first.experiment, second.experiment)}
    grant = experiment_grant(agent("a1"), index)
    assert grant is not None
    assert grant.owner == "aa"
    grant = experiment_grant(agent("a3"), index)
    assert grant is not None
    assert grant.owner == "bb"
    assert experiment_grant(agent("a1", role="reviewer"), index) is None


def test_grant_keys_change_only_for_the_agents_whose_grant_changed() -> None:
    w = world("a1", "a2", unit="Agent")
    w.evaluate()
    before = grant_keys(w.experiment)
    assert sorted(before) == ["a1", "a2"]
    w.agents["a3"] = agent("a3")
    del w.agents["a2"]
    w.evaluate()
    after = grant_keys(w.experiment)
    changed = {a for a in set(before) | set(after) if before.get(a) != after.get(a)}
    assert changed == {"a2", "a3"}


def test_the_first_entry_without_left_at_is_the_agents_and_a_new_snapshot_is_read_anew() -> None:
    w = world("a1", "a2", unit="Agent")
    w.evaluate()
    entries = w.experiment.status["participants"]
    a1 = next(p for p in entries if p["agent"] == "a1")
    status = {
        **w.experiment.status,
        "participants": [
            {**a1, "arm": 1 - a1["arm"], "leftAt": "2026-01-01T00:00:00Z"},  # an earlier stay
            a1,
            {**a1, "arm": 1 - a1["arm"]},  # a duplicate later entry does not count
        ],
    }
    snapshot = replace(w.experiment, status=status)
    grant = grant_of(snapshot, "a1")
    assert grant is not None
    assert grant.evidence["arm"] == w.grant("a1").evidence["arm"]
    assert grant_of(snapshot, "a2") is None
    # A new snapshot (every watch event makes one) is not answered from the old one's memo.
    gone = replace(snapshot, status={**status, "participants": []})
    assert grant_of(gone, "a1") is None
    assert grant_of(snapshot, "a1") == grant
