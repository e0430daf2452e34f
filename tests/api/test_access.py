"""The pure access rules: who may report for which Agent (no servers needed)."""

from __future__ import annotations

import pytest

from agent_registry.api.access import (
    AgentRef,
    Identity,
    ReportAuth,
    Verdict,
    is_namespace,
    is_object_name,
    report_decision,
)

RUNNER = Identity(username="system:serviceaccount:team-a:runner", uid="u1")


def test_service_account_parsed_from_username() -> None:
    assert RUNNER.service_account == ("team-a", "runner")
    assert Identity(username="alice").service_account is None
    assert Identity(username="system:serviceaccount:only-namespace").service_account is None


def test_identity_from_token_review() -> None:
    status = {
        "authenticated": True,
        "user": {
            "username": "system:serviceaccount:team-a:runner",
            "uid": "abc",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:team-a"],
            "extra": {"authentication.kubernetes.io/pod-name": ["p1"]},
        },
    }
    identity = Identity.from_token_review(status)
    assert identity is not None
    assert identity.service_account == ("team-a", "runner")
    assert identity.groups == ("system:serviceaccounts", "system:serviceaccounts:team-a")
    spec = identity.access_review_spec({"verb": "get"})
    assert spec["extra"] == {"authentication.kubernetes.io/pod-name": ["p1"]}
    assert spec["uid"] == "abc"


@pytest.mark.parametrize(
    "status",
    [
        {"authenticated": False, "error": "invalid bearer token"},
        {},
        {"authenticated": True, "user": {}},
    ],
)
def test_unauthenticated_token_review(status: dict[str, object]) -> None:
    assert Identity.from_token_review(status) is None


def test_by_default_only_the_service_account_named_like_the_agent() -> None:
    assert report_decision(RUNNER, "team-a", AgentRef("team-a", "runner", None)).allowed
    decision = report_decision(RUNNER, "team-a", AgentRef("team-a", "a1", None))
    assert decision.verdict is Verdict.FORBIDDEN
    assert decision.reason == (
        "Agent team-a/a1 accepts reports only from ServiceAccount team-a/a1 (the Agent's name: "
        "spec.serviceAccountName is not set); this token is ServiceAccount team-a/runner"
    )


def test_the_spec_then_the_pod_template_name_the_reporting_service_account() -> None:
    both = AgentRef("team-a", "a1", "runner", template_service_account="pod-sa")
    assert both.reporter == ("runner", "spec.serviceAccountName")
    assert report_decision(RUNNER, "team-a", both).allowed
    template = AgentRef("team-a", "a1", None, template_service_account="runner")
    assert template.reporter == ("runner", "spec.template.spec.serviceAccountName")
    assert report_decision(RUNNER, "team-a", template).allowed
    other = AgentRef("team-a", "a1", None, template_service_account="pod-sa")
    assert not report_decision(RUNNER, "team-a", other).allowed


def test_namespace_mode_lets_any_service_account_of_the_namespace_report() -> None:
    agent = AgentRef("team-a", "a1", None, template_service_account="pod-sa")
    assert report_decision(RUNNER, "team-a", agent, ReportAuth.NAMESPACE).allowed
    # Still bound by an explicit spec.serviceAccountName, and still by the namespace.
    named = AgentRef("team-a", "a1", "other")
    assert not report_decision(RUNNER, "team-a", named, ReportAuth.NAMESPACE).allowed
    assert not report_decision(RUNNER, "team-b", agent, ReportAuth.NAMESPACE).allowed


def test_other_namespace_is_forbidden_even_for_a_missing_agent() -> None:
    decision = report_decision(RUNNER, "team-b", None)
    assert decision.verdict is Verdict.FORBIDDEN
    assert "team-a" in decision.reason


def test_missing_agent_is_not_found() -> None:
    assert report_decision(RUNNER, "team-a", None).verdict is Verdict.NOT_FOUND


def test_agent_service_account_must_match() -> None:
    assert report_decision(RUNNER, "team-a", AgentRef("team-a", "a1", "runner")).allowed
    decision = report_decision(RUNNER, "team-a", AgentRef("team-a", "a1", "other"))
    assert decision.verdict is Verdict.FORBIDDEN
    assert "other" in decision.reason


def test_users_that_are_not_service_accounts_may_not_report() -> None:
    admin = Identity(username="kubernetes-admin", groups=("system:masters",))
    decision = report_decision(admin, "team-a", AgentRef("team-a", "a1", None))
    assert decision.verdict is Verdict.FORBIDDEN


def test_agent_ref_from_object() -> None:
    obj = {"metadata": {"namespace": "n", "name": "a"}, "spec": {"serviceAccountName": "sa"}}
    assert AgentRef.from_object(obj) == AgentRef("n", "a", "sa")
    assert AgentRef.from_object({"metadata": {"namespace": "n", "name": "a"}, "spec": {}}) == (
        AgentRef("n", "a", None)
    )
    templated = {
        "metadata": {"namespace": "n", "name": "a"},
        "spec": {"template": {"spec": {"serviceAccountName": "pod-sa"}}},
    }
    assert AgentRef.from_object(templated) == AgentRef("n", "a", None, "pod-sa")
    odd = {"metadata": {"namespace": "n", "name": "a"}, "spec": {"template": {"spec": None}}}
    assert AgentRef.from_object(odd) == AgentRef("n", "a", None)


@pytest.mark.parametrize(
    ("value", "namespace", "name"),
    [
        ("team-a", True, True),
        ("a.b", False, True),
        ("..", False, False),
        ("UPPER", False, False),
        ("-x", False, False),
        ("x" * 64, False, True),
    ],
)
def test_kubernetes_names(value: str, namespace: bool, name: bool) -> None:
    assert is_namespace(value) is namespace
    assert is_object_name(value) is name
