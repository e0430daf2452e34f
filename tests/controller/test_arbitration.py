"""The pure parts around the arbiter in the controller: reading pins and policy grants from the
declared objects, the Pinned condition, and what status.behavior shows (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agent_registry.controller.arbitration import agent_facts, named_behaviors, pin_condition
from agent_registry.controller.indexes import (
    PIN_ANNOTATION,
    PIN_REASON_ANNOTATION,
    ObjectState,
    agents_by_behavior,
    state_of,
)
from agent_registry.controller.policies import PolicyEvaluation, _switched, policy_grant
from agent_registry.controller.status import AgentView, AssignmentView, desired_agent_status
from agent_registry.decisions.arbiter import BehaviorFacts, Revision, decide

NOW = datetime(2026, 12, 3, tzinfo=UTC)


def agent_body(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": "coder-3",
            "uid": "u",
            "annotations": {
                "kopf.zalando.org/last-handled-configuration": "{}",
                "kopf.agents.singularity.dev/reconcile": "{}",
                **(annotations or {}),
            },
            "labels": {"team": "a"},
        },
        "spec": {"role": "code_developer", "behaviorRef": {"name": "quick"}, **spec},
    }


def test_only_user_annotations_are_kept_in_the_index() -> None:
    state = state_of("Agent", agent_body({PIN_ANNOTATION: "careful@2"}))
    assert dict(state.annotations) == {PIN_ANNOTATION: "careful@2"}
    assert dict(state.labels) == {"team": "a"}


def test_pin_annotations_become_a_pin_request_with_its_reason() -> None:
    state = state_of(
        "Agent", agent_body({PIN_ANNOTATION: "careful@2", PIN_REASON_ANNOTATION: " incident "})
    )
    facts = agent_facts(state)
    assert facts.pin is not None
    assert (facts.pin.behavior, facts.pin.revision, facts.pin.reason) == ("careful", 2, "incident")
    assert named_behaviors(facts) == ["careful", "quick"]


def test_a_pinned_agent_is_indexed_under_both_behaviors() -> None:
    keys = agents_by_behavior(agent_body({PIN_ANNOTATION: "careful"}))
    assert keys == {("ns", "quick"): "coder-3", ("ns", "careful"): "coder-3"}


def test_an_agent_is_indexed_under_the_behavior_it_runs() -> None:
    """A policy-switched agent must hot-reload the new revision of what it runs."""
    body = agent_body()
    body["status"] = {"behavior": {"name": "balanced", "source": "Policy"}}
    assert agents_by_behavior(body) == {("ns", "quick"): "coder-3", ("ns", "balanced"): "coder-3"}


def _behaviors() -> dict[str, BehaviorFacts]:
    careful = Revision("careful", 1, "c" * 64)
    quick = Revision("quick", 1, "q" * 64)
    return {
        "careful": BehaviorFacts("careful", "code_developer", careful, {1: careful}),
        "quick": BehaviorFacts("quick", "code_developer", quick, {1: quick}),
    }


def test_pinned_condition_true_false_or_absent() -> None:
    pinned = agent_facts(state_of("Agent", agent_body({PIN_ANNOTATION: "careful"})))
    cond = pin_condition(pinned, decide(pinned, _behaviors()))
    assert cond is not None
    assert (cond.status, cond.reason) == ("True", "Pinned")

    refused = agent_facts(state_of("Agent", agent_body({PIN_ANNOTATION: "careful@9"})))
    cond = pin_condition(refused, decide(refused, _behaviors()))
    assert cond is not None
    assert (cond.status, cond.reason) == ("False", "UnknownRevision")

    plain = agent_facts(state_of("Agent", agent_body()))
    assert pin_condition(plain, decide(plain, _behaviors())) is None


def _policy(mode: str = "Auto", role: str = "code_developer") -> ObjectState:
    return state_of(
        "BehaviorPolicy",
        {
            "metadata": {"namespace": "ns", "name": "coders", "uid": "p"},
            "spec": {"role": role, "mode": mode},
            "status": {
                "switched": [
                    {
                        "agent": "coder-3",
                        "from": "quick",
                        "to": "careful",
                        "at": "2026-12-03T00:00:00Z",
                        "reason": "quick 0.43 < careful 0.97",
                    }
                ]
            },
        },
    )


def test_policy_grant_only_from_an_auto_policy_of_the_agents_role() -> None:
    agent = state_of("Agent", agent_body())
    grant = policy_grant(agent, {("ns", "coders"): [_policy()]})
    assert grant is not None
    assert (grant.source, grant.behavior) == ("Policy", "careful")
    assert grant.reason == "BehaviorPolicy coders: quick 0.43 < careful 0.97"
    assert policy_grant(agent, {("ns", "coders"): [_policy(mode="Recommend")]}) is None
    assert policy_grant(agent, {("ns", "coders"): [_policy(role="reviewer")]}) is None
    assert policy_grant(agent, {("other", "coders"): [_policy()]}) is None


def _view(source: str, name: str) -> AgentView:
    return AgentView(
        status="active",
        assignment=AssignmentView(
            name=name, revision=1, sha256="c" * 64, reason="why", source=source
        ),
        loaded_sha256="c" * 64,
    )


def test_status_shows_source_and_a_pin_is_not_a_pending_assignment() -> None:
    status = desired_agent_status({}, behavior_ref="quick", view=_view("Pin", "careful"), now=NOW)
    assert status["behavior"]["source"] == "Pin"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["BehaviorAssigned"]["status"] == "True"
    assert "Reconciling" not in conditions


def test_a_spec_assignment_of_another_behavior_is_still_pending() -> None:
    status = desired_agent_status({}, behavior_ref="quick", view=_view("Spec", "careful"), now=NOW)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["BehaviorAssigned"]["reason"] == "AssignmentPending"


def test_a_new_switch_reaches_the_status_but_not_the_snapshot_it_was_decided_on() -> None:
    """The switched map is derived once per snapshot and shared by policy_grant: an
    evaluation's new switch must wait for the status it writes."""
    from typing import cast

    from agent_registry.controller.context import OperatorContext
    from agent_registry.decisions.policy import Recommendation

    policy = _policy()
    agents = []
    for name in ("coder-3", "coder-4"):
        body = agent_body()
        body["metadata"]["name"] = name
        agents.append(state_of("Agent", body))
    evaluation = PolicyEvaluation(cast(OperatorContext, None), policy)
    switch = Recommendation("ns/coder-4", "quick", "careful", 0.99, "quick < careful")
    now = datetime(2026, 12, 4, tzinfo=UTC)
    status = evaluation._status(now, agents, [], [switch], _switched(policy))
    assert [entry["agent"] for entry in status["switched"]] == ["coder-3", "coder-4"]
    assert policy_grant(agents[1], {("ns", "coders"): [policy]}) is None
    assert policy_grant(agents[0], {("ns", "coders"): [policy]}) is not None
