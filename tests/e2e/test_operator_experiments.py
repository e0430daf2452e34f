"""BehaviorExperiment end to end (real apiserver, real PostgreSQL, the operator as a process).

No kubelet runs here: each Agent's runtime is a local `agentreg runtime` process with a
TokenRequest token and the simulated workload (task difficulty ~ U(0, 1), success iff
effort + noise >= difficulty). The test's two behaviors put in effort 0.9 (`steady`) and 0.7
(`hasty`): true success rates about 0.9 and 0.7, a difference of 0.2.

The Agents run `hasty` by spec, so "back to their spec" and "keeps the winner" are
different behaviors to see.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.conftest import (
    GROUP,
    Kubectl,
    OperatorFactory,
    OperatorProcess,
    condition,
    condition_is,
    diagnose,
    wait_for,
)
from e2e.test_operator_examples import history
from e2e.test_operator_reload import RuntimeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.kube, pytest.mark.postgres]

ROLE = "code_developer"
ABORT = f"{GROUP}/abort"
PIN = f"{GROUP}/pin"


def behavior(name: str, effort: float, role: str = ROLE) -> dict[str, Any]:
    script = f"function on_task(task, ctx)\n  return {{accept = true, effort = {effort}}}\nend\n"
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "AgentBehavior",
        "metadata": {"name": name},
        "spec": {"roleType": role, "lua": {"script": script}},
    }


def agent(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name, "annotations": annotations or {}},
        # The runtimes' token is ServiceAccount `coder`'s: reports are accepted from it.
        "spec": {"role": ROLE, "behaviorRef": {"name": "hasty"}, "serviceAccountName": "coder"},
    }


def experiment(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "BehaviorExperiment",
        "metadata": {"name": name},
        "spec": {
            "role": ROLE,
            "arms": [{"behaviorRef": {"name": "hasty"}}, {"behaviorRef": {"name": "steady"}}],
            "minTasksPerArm": 60,
            **spec,
        },
    }


def apply(kubectl: Kubectl, *objects: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl.run("apply", "-f", "-", input=yaml.safe_dump_all(objects))


def must_apply(kubectl: Kubectl, *objects: dict[str, Any]) -> None:
    result = apply(kubectl, *objects)
    assert result.returncode == 0, result.stderr


def shown(kubectl: Kubectl, name: str) -> tuple[str | None, str | None]:
    """(source, behavior) of the Agent's status.behavior."""
    status = (kubectl.get("agent", name) or {}).get("status") or {}
    behavior_ = status.get("behavior") or {}
    return behavior_.get("source"), behavior_.get("name")


def wait_shown(
    kubectl: Kubectl,
    names: list[str],
    expected: tuple[str, str],
    what: str,
    explain: Callable[[], str],
) -> None:
    wait_for(
        lambda: all(shown(kubectl, n) == expected for n in names),
        timeout=30,
        what=f"{', '.join(names)}: {what}",
        diagnose=explain,
    )


def bx(kubectl: Kubectl, name: str) -> dict[str, Any]:
    return dict((kubectl.get("bx", name) or {}).get("status") or {})


def in_phase(kubectl: Kubectl, name: str, *phases: str) -> dict[str, Any] | None:
    status = bx(kubectl, name)
    return status if status.get("phase") in phases else None


def participants(status: dict[str, Any], *, active: bool = True) -> list[str]:
    return sorted(
        p["agent"] for p in status.get("participants") or [] if not active or "leftAt" not in p
    )


def script_counts(database_url: str, namespace: str) -> dict[tuple[str, str], int]:
    """Lifetime tasks per (agent, script) straight from the registry."""
    from agent_registry.registry import RegistryService

    async def read() -> dict[tuple[str, str], int]:
        registry = RegistryService.from_url(database_url)
        try:
            rows = await registry.agent_revision_stats(namespace=namespace)
        finally:
            await registry.close()
        return {(r.agent_id.partition("/")[2], r.script_sha256): r.tasks for r in rows}

    return asyncio.run(read())


def events_of(kubectl: Kubectl, name: str) -> str:
    return kubectl("get", "events", "--field-selector", f"involvedObject.name={name}")


@pytest.fixture
def fast_operator(operator_factory: OperatorFactory, postgres_url: str) -> OperatorProcess:
    return operator_factory(postgres_url, extra=("--experiment-interval", "1"))


@pytest.fixture
def runtimes(tmp_path: Path, kube_cluster: Any) -> Iterator[Callable[..., None]]:
    """Start local runtimes for Agents (simulated workload, 50 tasks/s each)."""
    started: list[RuntimeProcess] = []

    def start(kubectl: Kubectl, api_url: str, *names: str) -> None:
        kubectl("create", "serviceaccount", "coder", check=False)
        token = kubectl("create", "token", "coder").strip()
        for name in names:
            directory = tmp_path / name
            directory.mkdir()
            process = RuntimeProcess(directory, kube_cluster.kubeconfig)
            process.start(f"{kubectl.namespace}/{name}", f"{name}-behavior", api_url, token)
            started.append(process)

    yield start
    for process in started:
        process.stop()


def explainer(kubectl: Kubectl, operator: OperatorProcess) -> Callable[[], str]:
    base = diagnose(kubectl, operator)

    def explain() -> str:
        return base() + "\n" + kubectl("get", "bx", "-o", "yaml", check=False)[-8000:]

    return explain


def converged(kubectl: Kubectl, names: list[str]) -> bool:
    agents = {a["metadata"]["name"]: a for a in kubectl.items("agents")}
    return all(
        name in agents and condition_is(agents[name], "BehaviorAssigned", "True") for name in names
    )


def test_task_experiment_concludes_promotes_and_lets_go_when_deleted(
    kubectl: Kubectl,
    fast_operator: OperatorProcess,
    runtimes: Callable[..., None],
    postgres_url: str,
) -> None:
    explain = explainer(kubectl, fast_operator)
    must_apply(
        kubectl,
        behavior("steady", 0.9),
        behavior("hasty", 0.7),
        agent("x-1"),
        agent("x-2"),
        agent("x-3", {PIN: "hasty"}),
    )
    wait_for(
        lambda: converged(kubectl, ["x-1", "x-2", "x-3"]),
        timeout=90,
        what="agents assigned",
        diagnose=explain,
    )
    must_apply(kubectl, experiment("steady-vs-hasty", onConclusion="Promote"))
    running = wait_for(
        lambda: (
            (s := bx(kubectl, "steady-vs-hasty")).get("phase") == "Running"
            and participants(s) == ["x-1", "x-2"]
            and s
        ),
        timeout=30,
        what="the experiment running on x-1 and x-2",
        diagnose=explain,
    )
    assert [(a["behavior"], a["revision"]) for a in running["arms"]] == [
        ("hasty", 1),
        ("steady", 1),
    ]
    wait_shown(
        kubectl, ["x-1", "x-2"], ("Experiment", "hasty"), "on the experiment's bundle", explain
    )
    bundle = json.loads(
        ((kubectl.get("configmap", "x-1-behavior") or {}).get("data") or {})["behavior.json"]
    )
    assert [(s["name"], s["weight"]) for s in bundle["scripts"]] == [
        ("hasty", 0.5),
        ("steady", 0.5),
    ]
    assert shown(kubectl, "x-3") == ("Pin", "hasty")  # pinned: never takes part

    # Membership while it runs (before any task, so it cannot conclude first).
    must_apply(kubectl, agent("x-4"))
    wait_for(
        lambda: "x-4" in participants(bx(kubectl, "steady-vs-hasty")),
        timeout=30,
        what="x-4 joining",
        diagnose=explain,
    )
    kubectl("delete", "agent", "x-2", "--wait=false")
    wait_for(
        lambda: participants(bx(kubectl, "steady-vs-hasty")) == ["x-1", "x-4"],
        timeout=30,
        what="x-2 leaving",
        diagnose=explain,
    )
    wait_for(
        lambda: shown(kubectl, "x-4") == ("Experiment", "hasty"),
        timeout=30,
        what="x-4 on the bundle",
        diagnose=explain,
    )

    runtimes(kubectl, fast_operator.api_url, "x-1", "x-3", "x-4")
    concluded = wait_for(
        lambda: in_phase(kubectl, "steady-vs-hasty", "Concluded", "Inconclusive"),
        timeout=120,
        what="a verdict",
        diagnose=explain,
    )
    assert concluded["phase"] == "Concluded", concluded.get("reason")
    assert concluded["winner"] == "steady"
    assert concluded["pValue"] <= 0.05
    arms = {a["behavior"]: a for a in concluded["arms"]}
    assert min(a["tasks"] for a in arms.values()) >= 60
    assert arms["steady"]["successRate"] > arms["hasty"]["successRate"]
    assert condition_is({"status": concluded}, "SampleRatioMismatch", "False")
    # Only participants' tasks count: x-3 (pinned, on hasty all along) adds none. After the
    # verdict x-1 and x-4 run steady alone, so their hasty counts now bound the arm's.
    counts = script_counts(postgres_url, kubectl.namespace)
    hasty_sha = arms["hasty"]["sha256"]
    assert counts[("x-3", hasty_sha)] > 0
    assert arms["hasty"]["tasks"] <= counts[("x-1", hasty_sha)] + counts.get(("x-4", hasty_sha), 0)

    # Promote: the participants keep the winner, alone, while the object exists.
    wait_shown(kubectl, ["x-1", "x-4"], ("Experiment", "steady"), "on the winner", explain)
    assert shown(kubectl, "x-3") == ("Pin", "hasty")
    rows = history(postgres_url, f"{kubectl.namespace}/x-1")
    assert (rows[0].source, rows[0].unassigned_at) == ("Experiment", None)
    assert rows[0].evidence["experiment"] == "steady-vs-hasty"
    assert rows[0].evidence["winner"] == "steady@1"
    table = kubectl("get", "bx").splitlines()
    assert table[0].split() == [
        "NAME",
        "ROLE",
        "ARMS",
        "PHASE",
        "WINNER",
        "P-VALUE",
        "TASKS",
        "AGE",
    ]
    row = table[1].split()
    assert row[:5] == ["steady-vs-hasty", ROLE, "hasty,steady", "Concluded", "steady"]
    events = events_of(kubectl, "steady-vs-hasty")
    for reason in ("Started", "AgentsJoined", "AgentsLeft", "Concluded"):
        assert reason in events, events

    kubectl("delete", "bx", "steady-vs-hasty")
    wait_shown(kubectl, ["x-1", "x-4"], ("Spec", "hasty"), "back on its spec", explain)


def test_abort_and_report_return_the_participants_at_once(
    kubectl: Kubectl,
    fast_operator: OperatorProcess,
    runtimes: Callable[..., None],
) -> None:
    explain = explainer(kubectl, fast_operator)
    must_apply(kubectl, behavior("steady", 0.9), behavior("hasty", 0.7), agent("x-1"), agent("x-2"))
    wait_for(
        lambda: converged(kubectl, ["x-1", "x-2"]), timeout=90, what="agents", diagnose=explain
    )

    # Without the webhook the controller refuses to run a spec it cannot run, naming the field.
    must_apply(
        kubectl,
        {
            **experiment("broken"),
            "spec": {
                **experiment("broken")["spec"],
                "arms": [
                    {"behaviorRef": {"name": "hasty"}},
                    {"behaviorRef": {"name": "missing"}},
                ],
            },
        },
    )
    pending = wait_for(
        lambda: in_phase(kubectl, "broken", "Pending"),
        timeout=30,
        what="the broken experiment marked invalid",
        diagnose=explain,
    )
    ready = condition({"status": pending}, "Ready")
    assert ready is not None
    assert ready["reason"] == "InvalidSpec"
    assert ready["message"] == (
        "spec.arms[1].behaviorRef.name: no AgentBehavior missing in the namespace"
    )
    kubectl("delete", "bx", "broken")

    runtimes(kubectl, fast_operator.api_url, "x-1", "x-2")
    # Never concludes on its own: only the annotation ends it.
    must_apply(kubectl, experiment("abort-me", minTasksPerArm=1_000_000, maxTasksPerArm=2_000_000))
    wait_shown(kubectl, ["x-1", "x-2"], ("Experiment", "hasty"), "in the experiment", explain)
    wait_for(
        lambda: bx(kubectl, "abort-me").get("tasks", 0) > 0,
        timeout=30,
        what="tasks counted",
        diagnose=explain,
    )
    kubectl("annotate", "bx", "abort-me", f"{ABORT}=wrong arms")
    aborted = wait_for(
        lambda: in_phase(kubectl, "abort-me", "Aborted"),
        timeout=30,
        what="the experiment aborted",
        diagnose=explain,
    )
    assert "wrong arms" in aborted["reason"]
    wait_shown(kubectl, ["x-1", "x-2"], ("Spec", "hasty"), "restored", explain)
    wait_for(
        lambda: (
            ABORT
            not in ((kubectl.get("bx", "abort-me") or {})["metadata"].get("annotations") or {})
        ),
        timeout=30,
        what="the abort annotation consumed",
        diagnose=explain,
    )
    assert "Aborted" in events_of(kubectl, "abort-me")

    # Report, with Thompson allocation: the better arm gets more tasks; at the verdict the
    # participants return to their spec at once. 200 tasks per arm: far more than one
    # evaluation sees, so the weights have moved before any verdict.
    must_apply(
        kubectl,
        experiment("report", allocation="Thompson", onConclusion="Report", minTasksPerArm=200),
    )
    concluded = wait_for(
        lambda: in_phase(kubectl, "report", "Concluded", "Inconclusive"),
        timeout=120,
        what="a verdict",
        diagnose=explain,
    )
    assert concluded["phase"] == "Concluded", concluded.get("reason")
    assert concluded["winner"] == "steady"
    arms = {a["behavior"]: a for a in concluded["arms"]}
    assert arms["steady"]["weight"] > arms["hasty"]["weight"]
    assert arms["steady"]["tasks"] > arms["hasty"]["tasks"]
    wait_shown(kubectl, ["x-1", "x-2"], ("Spec", "hasty"), "back on its spec", explain)


def test_admission_refuses_experiments_that_cannot_run(
    kubectl: Kubectl, operator_factory: OperatorFactory, postgres_url: str
) -> None:
    operator = operator_factory(postgres_url, webhook=True)
    explain = explainer(kubectl, operator)
    must_apply(
        kubectl, behavior("steady", 0.9), behavior("hasty", 0.7), behavior("rev", 0.5, "reviewer")
    )

    def arms(*names: str, weights: list[float] | None = None) -> dict[str, Any]:
        body = experiment("x")
        body["spec"]["arms"] = [
            {"behaviorRef": {"name": n}, **({"weight": weights[i]} if weights else {})}
            for i, n in enumerate(names)
        ]
        return body

    def refused(body: dict[str, Any]) -> str | None:
        result = apply(kubectl, body)
        if result.returncode == 0:
            # Admitted before the operator's webhook (or its index) was ready: retry.
            kubectl("delete", "bx", "x", "--wait=false", check=False)
            return None
        return str(result.stderr)

    message = wait_for(
        lambda: refused(arms("steady", "rev")), timeout=60, interval=1, what="webhook refusal"
    )
    assert "denied the request" in message, message
    assert "spec.arms[1].behaviorRef.name: AgentBehavior rev is for role reviewer" in message
    message = wait_for(lambda: refused(arms("steady", "nope")), timeout=30, what="refusal")
    assert "spec.arms[1].behaviorRef.name: no AgentBehavior nope" in message
    # The schema's own rules: arity, weights, distinct arms.
    message = wait_for(lambda: refused(arms("steady")), timeout=30, what="refusal")
    assert "spec.arms" in message
    assert "at least 2 items" in message
    message = wait_for(lambda: refused(arms("steady", "hasty", weights=[0, 1])), timeout=30)
    assert "spec.arms[0].weight" in message
    message = wait_for(lambda: refused(arms("steady", "steady")), timeout=30)
    assert "every arm names a different AgentBehavior" in message
    body = arms("steady", "hasty")
    body["spec"]["arms"][0]["weight"] = 2
    message = wait_for(lambda: refused(body), timeout=30)
    assert "give a weight to every arm or to none" in message
    # A good one is admitted, and `kubectl explain` documents the fields.
    must_apply(kubectl, arms("steady", "hasty"))
    assert kubectl.get("bx", "x") is not None, explain()
    explained = kubectl("explain", "behaviorexperiments.spec.unit")
    assert "one drawn per task by weight" in explained
