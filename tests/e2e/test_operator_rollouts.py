"""Canary rollouts end to end: real kube-apiserver, real PostgreSQL, the operator as a process,
and one agent runtime per Agent as a local process (no kubelet here, so no pods: the runtimes
watch their ConfigMaps through the API with TokenRequest tokens, run the simulated workload
and report to the operator's registry API).

The workload: a task succeeds iff the behavior accepts it and effort + noise >= difficulty,
difficulty ~ U(0, 1), so `effort = 0.9` succeeds about 90% of the time and `effort = 0.75`
about 75%: a canary 0.15 worse than stable. Small minTasks, short pauses and a 1 s rollout
interval keep each test within tens of seconds.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import (
    GROUP,
    Kubectl,
    OperatorFactory,
    OperatorProcess,
    condition,
    diagnose,
    wait_for,
)
from e2e.test_operator_examples import history
from e2e.test_operator_reload import RuntimeProcess, runtime_processes

pytestmark = [pytest.mark.e2e, pytest.mark.kube, pytest.mark.postgres]

BEHAVIOR = "reviewer"
AGENTS = ["rev-1", "rev-2", "rev-3"]
SERVICE_ACCOUNT = "reviewer-runtime"
PROMOTE = f"{GROUP}/promote"
ABORT = f"{GROUP}/abort"
# At maxRegression 0.05 the analysis advances an equal canary after ~300-600 canary tasks and
# aborts one 0.15 worse after ~200 (decisions.canary_analysis); minTasks stays below both.
ANALYSIS = {"minTasks": 100, "maxRegression": 0.05, "alpha": 0.05}


def script(effort: float, marker: str) -> str:
    # The marker makes revisions of equal effort distinct scripts (distinct sha256).
    return (
        f"-- {marker}\n"
        "function on_task(task, ctx)\n"
        f"  return {{accept = true, effort = {effort}}}\n"
        "end\n"
    )


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def behavior_manifest(lua: str, steps: list[dict[str, Any]]) -> str:
    return json.dumps(
        {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "AgentBehavior",
            "metadata": {"name": BEHAVIOR},
            "spec": {
                "roleType": "code_reviewer",
                "lua": {"script": lua},
                "rollout": {"strategy": "Canary", "steps": steps, "analysis": ANALYSIS},
            },
        }
    )


def agent_manifests() -> str:
    return "\n---\n".join(
        json.dumps(
            {
                "apiVersion": f"{GROUP}/v1alpha1",
                "kind": "Agent",
                "metadata": {"name": name},
                "spec": {
                    "role": "code_reviewer",
                    "behaviorRef": {"name": BEHAVIOR},
                    "serviceAccountName": SERVICE_ACCOUNT,
                },
            }
        )
        for name in AGENTS
    )


class Fleet:
    """The behavior, its Agents, their runtimes, and ways to look at them."""

    def __init__(
        self, kubectl: Kubectl, operator: OperatorProcess, runtimes: list[RuntimeProcess]
    ) -> None:
        self.kubectl = kubectl
        self.operator = operator
        self.runtimes = runtimes
        self.explain = diagnose(kubectl, operator)

    def diagnose(self) -> str:
        behavior = self.kubectl("get", "agb", BEHAVIOR, "-o", "yaml", check=False)
        return "\n".join([self.explain(), behavior, *(r.log_tail() for r in self.runtimes)])

    def wait(self, probe: Callable[[], Any], what: str, timeout: float = 90) -> Any:
        return wait_for(probe, timeout=timeout, interval=0.2, what=what, diagnose=self.diagnose)

    def start(self, lua: str, steps: list[dict[str, Any]]) -> None:
        self.kubectl("apply", "-f", "-", input=behavior_manifest(lua, steps))
        self.kubectl("create", "serviceaccount", SERVICE_ACCOUNT)
        self.kubectl("apply", "-f", "-", input=agent_manifests())
        token = self.kubectl("create", "token", SERVICE_ACCOUNT).strip()
        for name, runtime in zip(AGENTS, self.runtimes, strict=True):
            configmap = f"{name}-behavior"
            self.wait(functools.partial(self.kubectl.get, "configmap", configmap), configmap)
            runtime.start(
                f"{self.kubectl.namespace}/{name}", f"{name}-behavior", self.operator.api_url, token
            )
        self.wait(lambda: self.all_run([sha(lua)]), "every runtime on the first revision")
        self.wait(
            lambda: (self.rollout() or {}).get("phase") == "Promoted",
            "the first revision promoted at once",
        )

    def edit(self, lua: str) -> None:
        patch = {"spec": {"lua": {"script": lua}}}
        self.kubectl("patch", "agb", BEHAVIOR, "--type=merge", "-p", json.dumps(patch))

    def behavior(self) -> dict[str, Any]:
        found = self.kubectl.get("agb", BEHAVIOR)
        assert found is not None
        return found

    def rollout(self) -> dict[str, Any] | None:
        shown: dict[str, Any] | None = (self.behavior().get("status") or {}).get("rollout")
        return shown

    def scripts(self, runtime: RuntimeProcess) -> list[str]:
        """The sha256 of every script the runtime runs now (its own /healthz)."""
        health = runtime.health()
        listed = [s["sha256"] for s in health.get("scripts") or []]
        return sorted(listed or [health["sha256"]])

    def all_run(self, shas: list[str]) -> bool:
        return all(self.scripts(r) == sorted(shas) for r in self.runtimes)

    def agents_confirm(self, sha256: str) -> bool:
        """Every Agent's status: the runtime confirmed this primary script."""
        for name in AGENTS:
            status = (self.kubectl.get("agent", name) or {}).get("status") or {}
            if (status.get("loadedBehavior") or {}).get("sha256") != sha256:
                return False
        return True

    def shown(self, agent: str) -> tuple[Any, Any, Any]:
        """The Agent's status.behavior: (revision, sha256, source)."""
        found = ((self.kubectl.get("agent", agent) or {}).get("status") or {}).get("behavior")
        shown = found or {}
        return shown.get("revision"), shown.get("sha256"), shown.get("source")

    def at(self, phase: str, step: int | None = None) -> dict[str, Any] | None:
        rollout = self.rollout() or {}
        if rollout.get("phase") != phase:
            return None
        if step is not None and rollout.get("currentStep") != step:
            return None
        return rollout

    def annotate(self, key: str, value: str) -> None:
        self.kubectl("annotate", "agb", BEHAVIOR, f"{key}={value}", "--overwrite")

    def annotations(self) -> dict[str, str]:
        found: dict[str, str] = self.behavior()["metadata"].get("annotations") or {}
        return found

    def events(self) -> str:
        return self.kubectl("get", "events", "--field-selector", f"involvedObject.name={BEHAVIOR}")

    def metric(self, name: str) -> float | None:
        with urllib.request.urlopen(f"{self.operator.api_url}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        labels = f'behavior="{BEHAVIOR}",namespace="{self.kubectl.namespace}"'
        match = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, flags=re.M)
        return float(match.group(1)) if match else None


@pytest.fixture
def runtimes(tmp_path: Path, kube_cluster: Any) -> Iterator[list[RuntimeProcess]]:
    with runtime_processes(tmp_path, kube_cluster.kubeconfig, AGENTS) as started:
        yield started


@pytest.fixture
def fast_operator(operator_factory: OperatorFactory, postgres_url: str) -> OperatorProcess:
    return operator_factory(postgres_url, extra=("--rollout-interval", "1"))


@pytest.fixture
def fleet(
    kubectl: Kubectl, fast_operator: OperatorProcess, runtimes: list[RuntimeProcess]
) -> Fleet:
    return Fleet(kubectl, fast_operator, runtimes)


def watch_steps(fleet: Fleet, until: Callable[[dict[str, Any]], bool], timeout: float) -> list[Any]:
    """The (phase, step) sequence status.rollout goes through, until `until(rollout)`."""
    seen: list[tuple[str, int | None]] = []

    def probe() -> bool:
        rollout = fleet.rollout() or {}
        here = (rollout.get("phase"), rollout.get("currentStep"))
        if not seen or seen[-1] != here:
            seen.append(here)  # type: ignore[arg-type]
        return until(rollout)

    fleet.wait(probe, "the rollout to finish", timeout=timeout)
    return seen


def test_a_good_canary_walks_every_step_and_is_promoted(fleet: Fleet, postgres_url: str) -> None:
    stable, canary = script(0.9, "stable"), script(0.9, "same rate, new text")
    steps: list[dict[str, Any]] = [
        {"setWeight": 20},
        {"pause": {"duration": "2s"}},
        {"setWeight": 50},
    ]
    fleet.start(stable, steps)
    fleet.edit(canary)
    # Task unit: every agent runs both scripts, the canary for 20% of its tasks.
    fleet.wait(lambda: fleet.all_run([sha(stable), sha(canary)]), "stable + canary everywhere")
    edited = time.monotonic()
    seen = watch_steps(fleet, lambda r: r.get("phase") == "Promoted", timeout=150)
    took = time.monotonic() - edited
    print(f"good canary: promoted after {took:.1f}s, steps {seen}")
    assert [s for s in seen if s[0] != "Promoted"] == [
        ("Progressing", 0),
        ("Paused", 1),
        ("Progressing", 2),
    ]
    rollout = fleet.rollout()
    assert rollout is not None
    assert (rollout["stableRevision"], rollout["stableSha256"]) == (2, sha(canary))
    assert rollout["weight"] == 100
    # The evidence of the last step: at least minTasks canary tasks, not credibly worse.
    assert rollout["canary"]["tasks"] >= ANALYSIS["minTasks"]
    assert rollout["reason"].startswith("promoted: every step passed")

    fleet.wait(lambda: fleet.all_run([sha(canary)]), "the canary alone everywhere")
    fleet.wait(lambda: fleet.agents_confirm(sha(canary)), "Agents confirm the promoted script")
    degraded = condition(fleet.behavior(), "Degraded")
    assert degraded is not None
    assert (degraded["status"], degraded["reason"]) == ("False", "RolloutPromoted")
    assert condition(fleet.behavior(), "Reconciling") is None
    rows = history(postgres_url, f"{fleet.kubectl.namespace}/{AGENTS[0]}")
    assert [(r.source, r.behavior_revision) for r in rows] == [
        ("Spec", 2),
        ("Rollout", 1),
        ("Spec", 1),
    ]
    assert rows[0].evidence["rollout"] == "Promoted"
    assert rows[1].evidence["canary"] == f"{BEHAVIOR}@2"
    events = fleet.events()
    for reason in ("RolloutStarted", "RolloutPaused", "RolloutStep", "RolloutPromoted"):
        assert reason in events
    assert fleet.metric("rollout_promotions_total") == 1.0


def test_a_bad_canary_is_aborted_at_the_first_step_and_every_agent_returns_to_stable(
    fleet: Fleet, postgres_url: str
) -> None:
    stable, bad = script(0.9, "stable"), script(0.75, "a bad edit")
    steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}]
    fleet.start(stable, steps)
    fleet.edit(bad)
    edited = time.monotonic()
    aborted = fleet.wait(lambda: fleet.at("Aborted"), "the rollout aborted", timeout=120)
    took = time.monotonic() - edited
    fleet.wait(lambda: fleet.all_run([sha(stable)]), "every runtime back on stable alone")
    confirmed = time.monotonic() - edited
    fleet.wait(lambda: fleet.agents_confirm(sha(stable)), "Agents confirm the stable script")
    print(
        f"bad canary: aborted after {took:.1f}s and {aborted['canary']['tasks']} canary tasks "
        f"(stable {aborted['stable']['tasks']}); every runtime on stable after {confirmed:.1f}s"
    )
    assert aborted["currentStep"] == 0  # at the first step
    assert (aborted["stableRevision"], aborted["canaryRevision"]) == (1, 2)
    assert aborted["weight"] == 0
    assert "worse than stable by more than maxRegression" in aborted["reason"]
    assert aborted["canary"]["successRate"] < aborted["stable"]["successRate"]

    behavior = fleet.behavior()
    for type_, status in (("Degraded", "True"), ("Stalled", "True"), ("Ready", "False")):
        found = condition(behavior, type_)
        assert found is not None, type_
        assert (found["status"], found["reason"]) == (status, "RolloutAborted")
    assert behavior["status"]["revision"] == 2  # Git's newest revision, which no agent runs
    # Task unit: the primary script was stable all along, so the Agents' status says the
    # return by its source (written back within a status interval).
    back = (1, sha(stable), "Spec")
    fleet.wait(lambda: all(fleet.shown(name) == back for name in AGENTS), "Agents on Spec again")
    # The registry records the return to stable with the abort's evidence.
    rows = history(postgres_url, f"{fleet.kubectl.namespace}/{AGENTS[0]}")
    assert [(r.source, r.behavior_revision) for r in rows[:2]] == [("Spec", 1), ("Rollout", 1)]
    assert rows[0].evidence["rollout"] == "Aborted"
    assert rows[0].evidence["canary"] == f"{BEHAVIOR}@2"
    assert rows[0].evidence["canaryResults"]["tasks"] == aborted["canary"]["tasks"]
    assert "aborted" in (rows[0].reason or "")
    assert "RolloutAborted" in fleet.events()
    assert fleet.metric("rollout_aborts_total") == 1.0
    assert fleet.metric("rollouts_aborted") == 1.0
    table = fleet.kubectl("get", "agb", BEHAVIOR)
    assert "Aborted" in table.splitlines()[1]


def test_manual_promote_in_a_pause_a_newer_revision_and_a_manual_abort(fleet: Fleet) -> None:
    first, second, third = (script(0.9, f"revision {n}") for n in (1, 2, 3))
    steps: list[dict[str, Any]] = [
        {"setWeight": 20},
        {"pause": {}},
        {"setWeight": 50},
        {"pause": {}},
    ]
    fleet.start(first, steps)
    fleet.edit(second)
    paused = fleet.wait(lambda: fleet.at("Paused", 1), "the pause without duration", 150)
    assert "pauseUntil" not in paused
    reconciling = condition(fleet.behavior(), "Reconciling")
    assert reconciling is not None
    assert reconciling["reason"] == "RolloutAwaitingPromote"
    time.sleep(3)  # a pause without duration holds: nothing moves it but a human
    held = fleet.rollout()
    assert held is not None
    assert (held["phase"], held["currentStep"], held["stepStartedAt"]) == (
        "Paused",
        1,
        paused["stepStartedAt"],
    )

    fleet.annotate(PROMOTE, "true")
    moved = fleet.wait(lambda: fleet.at("Progressing", 2), "the promote to end the pause")
    assert moved["weight"] == 50
    assert moved["lastAction"]["action"] == "Promote"
    fleet.wait(lambda: PROMOTE not in fleet.annotations(), "the promote annotation consumed")
    assert "ManualPromote" in fleet.events()

    # A newer revision mid-rollout replaces the canary: back to the first step, counts anew.
    fleet.edit(third)
    replaced = fleet.wait(
        lambda: (r := fleet.rollout() or {}).get("canaryRevision") == 3 and r,
        "revision 3 replaces the canary",
    )
    assert (replaced["stableRevision"], replaced["currentStep"], replaced["weight"]) == (1, 0, 20)
    assert replaced["canary"]["tasks"] < ANALYSIS["minTasks"]
    fleet.wait(lambda: fleet.all_run([sha(first), sha(third)]), "stable + revision 3 everywhere")
    assert "CanaryReplaced" in fleet.events()

    fleet.annotate(ABORT, "latency regression seen on the dashboard")
    aborted = fleet.wait(lambda: fleet.at("Aborted"), "the manual abort")
    assert aborted["currentStep"] == 0
    assert aborted["reason"] == "aborted: manual abort: latency regression seen on the dashboard"
    assert aborted["lastAction"]["action"] == "Abort"
    fleet.wait(lambda: ABORT not in fleet.annotations(), "the abort annotation consumed")
    fleet.wait(lambda: fleet.all_run([sha(first)]), "every runtime back on revision 1")
    fleet.wait(lambda: fleet.agents_confirm(sha(first)), "Agents confirm revision 1")
    assert "ManualAbort" in fleet.events()


def test_an_operator_killed_mid_rollout_resumes_at_the_same_step(
    fleet: Fleet, operator_factory: OperatorFactory, postgres_url: str
) -> None:
    stable, canary = script(0.9, "stable"), script(0.9, "canary")
    steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}]
    fleet.start(stable, steps)
    fleet.edit(canary)
    fleet.wait(lambda: fleet.at("Paused", 1), "the pause", timeout=150)
    # The analysis keeps counting during the pause: let the window grow before the crash.
    counted = fleet.wait(
        lambda: (r := fleet.at("Paused", 1)) and r["canary"]["tasks"] >= 50 and r,
        "canary tasks during the pause",
    )
    fleet.operator.kill()
    time.sleep(2)  # the runtimes keep working and reporting is retried
    fleet.operator.start()

    # Same step, same window: the state is in status and the registry, not in memory.
    def continued() -> dict[str, Any] | None:
        rollout = fleet.at("Paused", 1)
        if rollout is None or rollout["canary"]["tasks"] <= counted["canary"]["tasks"]:
            return None
        return rollout

    resumed = fleet.wait(continued, "the resumed operator counting on")
    assert resumed["stepStartedAt"] == counted["stepStartedAt"]
    assert resumed["baseline"] == counted["baseline"]
    assert fleet.all_run([sha(stable), sha(canary)])
    fleet.annotate(PROMOTE, "true")
    promoted = fleet.wait(lambda: fleet.at("Promoted"), "the rest of the rollout", timeout=150)
    assert (promoted["stableRevision"], promoted["stableSha256"]) == (2, sha(canary))
    fleet.wait(lambda: fleet.all_run([sha(canary)]), "the canary alone everywhere")
    # No row of the history was lost or doubled by the crash.
    rows = history(postgres_url, f"{fleet.kubectl.namespace}/{AGENTS[1]}")
    assert [(r.source, r.behavior_revision) for r in rows] == [
        ("Spec", 2),
        ("Rollout", 1),
        ("Spec", 1),
    ]


def test_a_step_with_both_set_weight_and_pause_is_refused_by_the_apiserver(
    kubectl: Kubectl,
) -> None:
    result = kubectl.run(
        "apply",
        "-f",
        "-",
        input=behavior_manifest(script(0.9, "x"), [{"setWeight": 10, "pause": {}}]),
    )
    assert result.returncode != 0
    assert "a step has exactly one of setWeight and pause" in result.stderr
