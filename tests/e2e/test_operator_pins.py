"""Manual pins end to end (real apiserver, real PostgreSQL, the operator as a process): the
pin annotation changes what an Agent runs without touching its spec; status, Events, the
ConfigMap and the registry's history say so; removing it returns the Agent to its spec; a
pin that cannot apply changes nothing and says why."""

from __future__ import annotations

import json
from typing import Any

import pytest

from e2e.conftest import GROUP, Kubectl, OperatorProcess, condition, diagnose, wait_for
from e2e.test_operator_examples import apply_examples, converged, history

pytestmark = [pytest.mark.e2e, pytest.mark.kube, pytest.mark.postgres]

PIN = f"{GROUP}/pin"
PIN_REASON = f"{GROUP}/pin-reason"


def behavior_of(kubectl: Kubectl, agent: str) -> dict[str, Any]:
    shown: dict[str, Any] = ((kubectl.get("agent", agent) or {}).get("status") or {}).get(
        "behavior"
    ) or {}
    return shown


def configmap_behavior(kubectl: Kubectl, agent: str) -> dict[str, Any]:
    configmap = kubectl.get("configmap", f"{agent}-behavior") or {}
    meta: dict[str, Any] = json.loads((configmap.get("data") or {}).get("behavior.json", "{}"))
    return meta


def events_of(kubectl: Kubectl, agent: str) -> str:
    return kubectl("get", "events", "--field-selector", f"involvedObject.name={agent}")


def test_pin_and_unpin_round_trip(
    kubectl: Kubectl, operator: OperatorProcess, postgres_url: str
) -> None:
    apply_examples(kubectl)
    explain = diagnose(kubectl, operator)
    wait_for(lambda: converged(kubectl), timeout=90, what="examples converged", diagnose=explain)
    spec_before = (kubectl.get("agent", "coder-3") or {})["spec"]
    assert behavior_of(kubectl, "coder-3")["source"] == "Spec"

    kubectl("annotate", "agent", "coder-3", f"{PIN}=careful", f"{PIN_REASON}=incident 42")
    pinned = wait_for(
        lambda: (b := behavior_of(kubectl, "coder-3")).get("source") == "Pin" and b,
        timeout=30,
        what="coder-3 pinned",
        diagnose=explain,
    )
    assert pinned["name"] == "careful"
    assert pinned["reason"] == "pinned to careful@1: incident 42"
    assert configmap_behavior(kubectl, "coder-3")["name"] == "careful"
    agent = kubectl.get("agent", "coder-3")
    assert agent is not None
    assert agent["spec"] == spec_before  # the GitOps rule: spec is never edited
    pin_condition = condition(agent, "Pinned")
    assert pin_condition is not None
    assert (pin_condition["status"], pin_condition["reason"]) == ("True", "Pinned")
    assigned = condition(agent, "BehaviorAssigned")
    assert assigned is not None
    assert assigned["status"] == "True"  # a pin is not a pending spec assignment
    wait_for(
        lambda: "Pin: careful revision 1" in events_of(kubectl, "coder-3"),
        timeout=20,
        what="an Event for the pin",
        diagnose=explain,
    )
    rows = history(postgres_url, f"{kubectl.namespace}/coder-3")
    assert [(r.source, r.unassigned_at is None) for r in rows[:2]] == [
        ("Pin", True),
        ("Spec", False),
    ]
    assert rows[0].reason == "pinned to careful@1: incident 42"
    assert rows[0].evidence == {"pin": "careful"}

    kubectl("annotate", "agent", "coder-3", f"{PIN}-", f"{PIN_REASON}-")
    back = wait_for(
        lambda: (b := behavior_of(kubectl, "coder-3")).get("source") == "Spec" and b,
        timeout=30,
        what="coder-3 unpinned",
        diagnose=explain,
    )
    assert back["name"] == "quick"
    assert configmap_behavior(kubectl, "coder-3")["name"] == "quick"
    wait_for(
        lambda: condition(kubectl.get("agent", "coder-3"), "Pinned") is None,
        timeout=20,
        what="the Pinned condition gone",
        diagnose=explain,
    )
    rows = history(postgres_url, f"{kubectl.namespace}/coder-3")
    assert [r.source for r in rows[:3]] == ["Spec", "Pin", "Spec"]
    assert rows[1].unassigned_at is not None


@pytest.mark.parametrize(
    ("pin", "reason"),
    [("nosuch", "UnknownBehavior"), ("careful@7", "UnknownRevision"), ("careful@x", "InvalidPin")],
)
def test_a_pin_that_cannot_apply_changes_nothing_and_says_why(
    kubectl: Kubectl, operator: OperatorProcess, postgres_url: str, pin: str, reason: str
) -> None:
    apply_examples(kubectl)
    explain = diagnose(kubectl, operator)
    wait_for(lambda: converged(kubectl), timeout=90, what="examples converged", diagnose=explain)
    kubectl("annotate", "agent", "coder-2", f"{PIN}={pin}")
    refused = wait_for(
        lambda: condition(kubectl.get("agent", "coder-2"), "Pinned"),
        timeout=30,
        what="the Pinned condition",
        diagnose=explain,
    )
    assert (refused["status"], refused["reason"]) == ("False", reason)
    assert behavior_of(kubectl, "coder-2")["source"] == "Spec"
    assert behavior_of(kubectl, "coder-2")["name"] == "balanced"
    wait_for(
        lambda: "PinRefused" in events_of(kubectl, "coder-2"),
        timeout=20,
        what="a PinRefused Event",
        diagnose=explain,
    )
    assert [r.source for r in history(postgres_url, f"{kubectl.namespace}/coder-2")] == ["Spec"]


def test_pin_at_an_older_revision_survives_a_script_edit(
    kubectl: Kubectl, operator: OperatorProcess, postgres_url: str
) -> None:
    apply_examples(kubectl)
    explain = diagnose(kubectl, operator)
    wait_for(lambda: converged(kubectl), timeout=90, what="examples converged", diagnose=explain)
    body = kubectl.get("agentbehavior", "careful")
    assert body is not None
    script = body["spec"]["lua"]["script"].replace("effort = 0.95", "effort = 0.9")
    kubectl(
        "patch",
        "agentbehavior",
        "careful",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"lua": {"script": script}}}),
    )
    wait_for(
        lambda: behavior_of(kubectl, "coder-1").get("revision") == 2,
        timeout=30,
        what="coder-1 on careful@2",
        diagnose=explain,
    )
    kubectl("annotate", "agent", "coder-1", f"{PIN}=careful@1")
    wait_for(
        lambda: (
            (b := behavior_of(kubectl, "coder-1")).get("source") == "Pin" and b.get("revision") == 1
        ),
        timeout=30,
        what="coder-1 pinned to careful@1",
        diagnose=explain,
    )
    assert configmap_behavior(kubectl, "coder-1")["revision"] == 1
    # A further edit does not move the pinned agent.
    kubectl(
        "patch",
        "agentbehavior",
        "careful",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"lua": {"script": script.replace("0.9", "0.85")}}}),
    )
    wait_for(
        lambda: (
            (kubectl.get("agentbehavior", "careful") or {}).get("status", {}).get("revision") == 3
        ),
        timeout=30,
        what="careful@3",
        diagnose=explain,
    )
    assert behavior_of(kubectl, "coder-1")["revision"] == 1
    assert configmap_behavior(kubectl, "coder-1")["revision"] == 1
