"""The arbiter's precedence and fall-through rules (pure: no servers)."""

from __future__ import annotations

import pytest

from agent_registry.decisions.arbiter import (
    AgentFacts,
    BehaviorFacts,
    Grant,
    PinRequest,
    Revision,
    Rollout,
    ScriptShare,
    decide,
    parse_pin,
)

ROLE = "code_developer"


def _behavior(name: str, *revisions: int, role: str = ROLE, rollout: bool = False) -> BehaviorFacts:
    revs = {r: Revision(name, r, f"{name}-{r}".ljust(64, "0")) for r in revisions}
    current = revs[max(revs)] if revs else None
    plan = None
    if rollout:
        plan = Rollout(stable=revs[min(revs)], canary=revs[max(revs)], weight=0.1, step=0)
    return BehaviorFacts(name, role, current, revs, rollout=plan)


BEHAVIORS = {
    "careful": _behavior("careful", 1, 2),
    "quick": _behavior("quick", 1),
    "balanced": _behavior("balanced", 1, 2, 3, rollout=True),
    "other-role": _behavior("other-role", 1, role="reviewer"),
}

EXPERIMENT = Grant(
    source="Experiment",
    behavior="quick",
    reason="experiment ab: arm quick",
    scripts=(
        ScriptShare(BEHAVIORS["quick"].revisions[1], 1),
        ScriptShare(BEHAVIORS["careful"].revisions[2], 1),
    ),
    owner="ab",
)
POLICY = Grant(source="Policy", behavior="careful", reason="quick 0.43 < careful 0.97")


def _agent(**kwargs: object) -> AgentFacts:
    base: dict[str, object] = {
        "namespace": "ns",
        "name": "coder-1",
        "role": ROLE,
        "behavior_ref": "quick",
    }
    base.update(kwargs)
    return AgentFacts(**base)  # type: ignore[arg-type]


# (pin, experiment, policy) -> expected source and behavior: Pin > Experiment > Policy > Spec.
PRECEDENCE = [
    (PinRequest("careful", 1), EXPERIMENT, POLICY, "Pin", "careful"),
    (PinRequest("careful"), None, POLICY, "Pin", "careful"),
    (None, EXPERIMENT, POLICY, "Experiment", "quick"),
    (None, None, POLICY, "Policy", "careful"),
    (None, None, None, "Spec", "quick"),
]


@pytest.mark.parametrize(("pin", "experiment", "policy", "source", "behavior"), PRECEDENCE)
def test_precedence(
    pin: PinRequest | None,
    experiment: Grant | None,
    policy: Grant | None,
    source: str,
    behavior: str,
) -> None:
    decision = decide(_agent(pin=pin, experiment=experiment, policy=policy), BEHAVIORS)
    assert (decision.source, decision.behavior) == (source, behavior)
    assert decision.problems == ()


def test_pin_at_revision_runs_that_revision_even_when_older() -> None:
    decision = decide(_agent(pin=PinRequest("careful", 1, "incident 42")), BEHAVIORS)
    assert decision.primary == BEHAVIORS["careful"].revisions[1]
    assert decision.reason == "pinned to careful@1: incident 42"
    assert [s.weight for s in decision.scripts] == [1.0]


def test_pin_without_revision_takes_stable_not_the_canary() -> None:
    decision = decide(_agent(pin=PinRequest("balanced")), BEHAVIORS)
    assert decision.source == "Pin"
    assert decision.scripts == (ScriptShare(BEHAVIORS["balanced"].revisions[1], 1.0),)


@pytest.mark.parametrize(
    ("pin", "reason"),
    [
        (PinRequest("nope"), "UnknownBehavior"),
        (PinRequest("careful", 9), "UnknownRevision"),
        (PinRequest("other-role"), "RoleMismatch"),
    ],
)
def test_bad_pin_falls_through_and_says_why(pin: PinRequest, reason: str) -> None:
    decision = decide(_agent(pin=pin, policy=POLICY), BEHAVIORS)
    assert decision.source == "Policy"  # the next rule applies
    assert [(p.condition, p.reason) for p in decision.problems] == [("Pinned", reason)]


def test_unknown_revision_message_lists_known_ones() -> None:
    decision = decide(_agent(pin=PinRequest("careful", 9)), BEHAVIORS)
    assert "known: 1, 2" in decision.problems[0].message


def test_experiment_arms_are_normalized_and_not_touched_by_a_rollout() -> None:
    grant = Grant(
        source="Experiment",
        behavior="balanced",
        reason="arms",
        scripts=(
            ScriptShare(BEHAVIORS["balanced"].revisions[3], 3),
            ScriptShare(BEHAVIORS["careful"].revisions[2], 1),
        ),
    )
    decision = decide(_agent(experiment=grant), BEHAVIORS)
    assert [(s.revision.label(), s.weight) for s in decision.scripts] == [
        ("balanced@3", 0.75),
        ("careful@2", 0.25),
    ]


def test_task_unit_rollout_splits_the_spec_behavior() -> None:
    decision = decide(_agent(behavior_ref="balanced"), BEHAVIORS)
    assert decision.source == "Rollout"
    assert [s.revision.label() for s in decision.scripts] == ["balanced@1", "balanced@3"]
    assert [s.weight for s in decision.scripts] == pytest.approx([0.9, 0.1])
    assert decision.evidence["canary"] == "balanced@3"


def test_policy_grant_of_a_behavior_in_rollout_gets_the_rollout() -> None:
    grant = Grant(source="Policy", behavior="balanced", reason="better")
    decision = decide(_agent(policy=grant), BEHAVIORS)
    assert decision.source == "Rollout"
    assert len(decision.scripts) == 2
    assert "behavior from better" in decision.reason


def test_agent_unit_rollout_moves_a_stable_share_of_agents() -> None:
    facts = _behavior("balanced", 1, 2)
    assert facts.current is not None
    names = [f"coder-{i}" for i in range(2000)]

    def canaries(weight: float) -> set[str]:
        plan = Rollout(facts.revisions[1], facts.revisions[2], weight, unit="Agent")
        behaviors = {
            "balanced": BehaviorFacts(
                "balanced", ROLE, facts.current, facts.revisions, rollout=plan
            )
        }
        return {
            n
            for n in names
            if decide(_agent(name=n, behavior_ref="balanced"), behaviors).primary
            == facts.revisions[2]
        }

    ten, fifty = canaries(0.1), canaries(0.5)
    assert 140 <= len(ten) <= 260  # binomial(2000, 0.1): mean 200, sd 13.4
    assert ten <= fifty  # growing the weight never moves an agent back


def test_spec_without_a_valid_revision_runs_nothing() -> None:
    decision = decide(_agent(behavior_ref="missing"), BEHAVIORS)
    assert (decision.source, decision.scripts) == ("Spec", ())
    assert "no valid revision" in decision.reason
    assert decide(_agent(behavior_ref=None), BEHAVIORS).scripts == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("careful", PinRequest("careful")),
        (" careful@3 ", PinRequest("careful", 3)),
        ("", None),
        (None, None),
    ],
)
def test_parse_pin(value: str | None, expected: PinRequest | None) -> None:
    assert parse_pin(value) == (expected, None)


@pytest.mark.parametrize("value", ["@3", "careful@", "careful@x", "careful@0"])
def test_parse_pin_refuses_malformed(value: str) -> None:
    request, error = parse_pin(value)
    assert request is None
    assert error is not None
    assert "pin" in error
