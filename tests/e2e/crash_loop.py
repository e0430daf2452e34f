"""The operator SIGKILLed mid-work, over and over: the rounds, the model of what must result,
and the convergence check (used by tests/e2e/test_operator_resilience.py and
tests/benchmarks/bench_crashes.py).

Each round triggers work, waits a random moment, kills the operator (SIGKILL of its process
group), restarts it and waits until everything is converged. The work of a round, chosen so
that what must result does not depend on when the kill lands:
- a script edit of one behavior (a new revision: fan-out to every agent that references it);
- behaviorRef switches of a few agents between the two other behaviors;
- new Agents (fresh names) and deleted Agents, neither on the edited behavior.
Each agent is touched at most once per round, so after convergence its assignment history
must have gained exactly one row per change: none lost, none twice, one open row.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from e2e.conftest import Kubectl, OperatorProcess, condition_is

AGENT_API = "agents.singularity.dev/v1alpha1"
ROLE = "code_developer"


@dataclass
class Model:
    """What the cluster and the registry must show once converged."""

    behaviors: dict[str, int]  # behavior -> current revision
    live: dict[str, str] = field(default_factory=dict)  # agent -> behaviorRef
    history: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # oldest first
    deleted: set[str] = field(default_factory=set)
    created: int = 0
    protected: set[str] = field(default_factory=set)  # never switched or deleted (report load)

    def assign(self, agent: str, behavior: str) -> None:
        self.live[agent] = behavior
        entry = (behavior, self.behaviors[behavior])
        rows = self.history.setdefault(agent, [])
        if not rows or rows[-1] != entry:
            rows.append(entry)


def agent_doc(name: str, behavior: str) -> dict[str, Any]:
    return {
        "apiVersion": AGENT_API,
        "kind": "Agent",
        "metadata": {"name": name, "labels": {"crash-loop": "yes"}},
        "spec": {"role": ROLE, "behaviorRef": {"name": behavior}},
    }


def apply_docs(kubectl: Kubectl, docs: list[dict[str, Any]]) -> None:
    if docs:
        body = {"apiVersion": "v1", "kind": "List", "items": docs}
        kubectl("apply", "-f", "-", input=json.dumps(body))


EXAMPLE_AGENTS = {"coder-1": "careful", "coder-2": "balanced", "coder-3": "quick"}


def setup(kubectl: Kubectl, examples: str, agents: int) -> Model:
    """manifests/examples (3 behaviors at revision 1, 3 Agents, one with a Deployment) and
    `agents` generated Agents over the behaviors."""
    kubectl("apply", "-f", examples)
    behaviors = sorted(set(EXAMPLE_AGENTS.values()))
    model = Model(behaviors=dict.fromkeys(behaviors, 1))
    for name, behavior in EXAMPLE_AGENTS.items():
        model.assign(name, behavior)
    docs = []
    for i in range(agents):
        name, behavior = f"crash-{i}", behaviors[i % len(behaviors)]
        docs.append(agent_doc(name, behavior))
        model.assign(name, behavior)
    model.created = agents
    apply_docs(kubectl, docs)
    return model


@dataclass
class Round:
    edited: str
    switches: dict[str, str]
    created: dict[str, str]
    deleted: list[str]

    def describe(self) -> str:
        return (
            f"edit {self.edited}, {len(self.switches)} switches, {len(self.created)} new, "
            f"{len(self.deleted)} deleted"
        )


def plan_round(
    model: Model, number: int, rng: random.Random, *, switches: int, creates: int, deletes: int
) -> Round:
    names = sorted(model.behaviors)
    edited = names[number % len(names)]
    others = [b for b in names if b != edited]
    candidates = sorted(
        a for a, b in model.live.items() if b != edited and a not in model.protected
    )
    rng.shuffle(candidates)
    switched = {a: next(b for b in others if b != model.live[a]) for a in candidates[:switches]}
    deleted = candidates[switches : switches + deletes]
    created = {f"crash-{model.created + i}": rng.choice(others) for i in range(creates)}
    return Round(edited, switched, created, deleted)


def trigger(kubectl: Kubectl, model: Model, plan: Round, number: int) -> list[str]:
    """Send the round's work to the apiserver and update the model to its outcome; the
    agents whose ConfigMap must change."""
    body = kubectl.get("agentbehavior", plan.edited)
    assert body is not None
    script = body["spec"]["lua"]["script"].rstrip("\n") + f"\n-- crash round {number}\n"
    kubectl(
        "patch",
        "agentbehavior",
        plan.edited,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"lua": {"script": script}}}),
    )
    apply_docs(
        kubectl,
        [agent_doc(a, b) for a, b in {**plan.switches, **plan.created}.items()],
    )
    if plan.deleted:
        kubectl("delete", "agent", *plan.deleted, "--wait=false")
    model.behaviors[plan.edited] += 1
    touched = [a for a, b in model.live.items() if b == plan.edited]
    touched += [*plan.switches, *plan.created]
    for agent in touched:
        model.assign(agent, plan.switches.get(agent) or plan.created.get(agent) or plan.edited)
    model.created += len(plan.created)
    for agent in plan.deleted:
        del model.live[agent]
        model.deleted.add(agent)
    return touched


def progress(kubectl: Kubectl, model: Model, touched: list[str]) -> tuple[int, int]:
    """How many of the agents a round changes have their ConfigMap right (of how many):
    taken right after a kill, it says whether the kill landed mid-fan-out."""
    shown = {}
    for cm in kubectl.items("configmaps"):
        data = cm.get("data") or {}
        if "behavior.json" in data:
            meta = json.loads(data["behavior.json"])
            shown[cm["metadata"]["name"]] = (meta.get("name"), meta.get("revision"))
    wanted = {a: (model.live[a], model.behaviors[model.live[a]]) for a in touched}
    done = sum(1 for agent, want in wanted.items() if shown.get(f"{agent}-behavior") == want)
    return done, len(touched)


def stored_revision(database_url: str, namespace: str, behavior: str) -> int:
    """The behavior's current revision in the registry."""
    from agent_registry.registry import RegistryService

    async def read() -> int:
        registry = RegistryService.from_url(database_url)
        try:
            return (await registry.get_behavior_by_name(namespace, behavior)).revision
        finally:
            await registry.close()

    return asyncio.run(read())


def wait_for_revision(
    database_url: str, namespace: str, behavior: str, revision: int, timeout: float = 30.0
) -> None:
    """Poll the registry's table directly (one connection, every 20 ms) until the behavior's
    current revision reaches `revision`."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    deadline = time.monotonic() + timeout
    with psycopg.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database, autocommit=True
    ) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT revision FROM agent_behaviors WHERE namespace = %s AND name = %s",
                (namespace, behavior),
            ).fetchone()
            if row is not None and row[0] >= revision:
                return
            time.sleep(0.02)


def kube_problems(kubectl: Kubectl, model: Model) -> list[str]:
    problems: list[str] = []
    agents = {a["metadata"]["name"]: a for a in kubectl.items("agents")}
    behaviors = {b["metadata"]["name"]: b for b in kubectl.items("agentbehaviors")}
    configmaps = {c["metadata"]["name"]: c for c in kubectl.items("configmaps")}
    for name, revision in model.behaviors.items():
        status = (behaviors.get(name) or {}).get("status") or {}
        generation = (behaviors.get(name) or {}).get("metadata", {}).get("generation")
        if status.get("revision") != revision or status.get("observedGeneration") != generation:
            problems.append(f"behavior {name}: status {status.get('revision')} != {revision}")
    shas = {n: ((b.get("status") or {}).get("scriptSha256")) for n, b in behaviors.items()}
    extra = sorted(set(agents) - set(model.live))
    if extra:
        problems.append(f"agents that should be gone: {extra}")
    uids = {a["metadata"]["uid"] for a in agents.values()}
    for name, behavior in model.live.items():
        agent = agents.get(name)
        if agent is None:
            problems.append(f"agent {name} missing")
            continue
        status = agent.get("status") or {}
        shown = status.get("behavior") or {}
        revision = model.behaviors[behavior]
        if (shown.get("name"), shown.get("revision")) != (behavior, revision):
            problems.append(f"agent {name}: status.behavior {shown} != {behavior}@{revision}")
        elif shown.get("sha256") != shas.get(behavior):
            problems.append(f"agent {name}: status sha256 is not {behavior}'s")
        if status.get("observedGeneration") != agent["metadata"]["generation"]:
            problems.append(f"agent {name}: observedGeneration behind")
        if not condition_is(agent, "BehaviorAssigned", "True"):
            problems.append(f"agent {name}: BehaviorAssigned not True")
        cm = configmaps.get(f"{name}-behavior")
        if cm is None:
            problems.append(f"agent {name}: no ConfigMap")
            continue
        meta = json.loads((cm.get("data") or {}).get("behavior.json") or "{}")
        if (meta.get("name"), meta.get("revision"), meta.get("sha256")) != (
            behavior,
            revision,
            shas.get(behavior),
        ):
            problems.append(f"agent {name}: ConfigMap shows {meta} != {behavior}@{revision}")
        owners = cm["metadata"].get("ownerReferences") or []
        if [o.get("uid") for o in owners] != [agent["metadata"]["uid"]]:
            problems.append(f"agent {name}: ConfigMap owners {owners}")
    for cm_name, cm in configmaps.items():
        if "behavior.json" not in (cm.get("data") or {}):
            continue
        owners = cm["metadata"].get("ownerReferences") or []
        if not owners:
            problems.append(f"orphan ConfigMap {cm_name}: no ownerReferences")
        elif cm_name.removesuffix("-behavior") not in model.live and (
            cm_name.removesuffix("-behavior") not in model.deleted
        ):
            problems.append(f"ConfigMap {cm_name} of an agent that never existed")
        elif any(o.get("uid") not in uids for o in owners) and (
            cm_name.removesuffix("-behavior") in model.live
        ):
            problems.append(f"ConfigMap {cm_name} owned by a gone object")
    return problems


def registry_problems(database_url: str, namespace: str, model: Model) -> list[str]:
    """History exactly as the model says, for live and deleted agents; one open row per
    live agent; deleted agents stopped."""
    from agent_registry.registry import RegistryService

    async def read() -> list[str]:
        registry = RegistryService.from_url(database_url)
        problems = []
        try:
            names = {}
            for behavior in model.behaviors:
                record = await registry.get_behavior_by_name(namespace, behavior)
                names[record.id] = behavior
            for agent, expected in model.history.items():
                agent_id = f"{namespace}/{agent}"
                rows = await registry.assignment_history(agent_id)
                got = [(names.get(r.behavior_id, "?"), r.behavior_revision) for r in rows]
                if got != expected[::-1]:
                    problems.append(f"{agent}: history {got} != {expected[::-1]}")
                open_rows = sum(1 for r in rows if r.unassigned_at is None)
                if agent in model.live and open_rows != 1:
                    problems.append(f"{agent}: {open_rows} open rows")
                if agent in model.deleted:
                    agent_record = await registry.get_by_agent_id(agent_id)
                    if agent_record.status != "stopped":
                        problems.append(
                            f"{agent}: deleted but {agent_record.status} in the registry"
                        )
        finally:
            await registry.close()
        return problems

    return asyncio.run(read())


def problems(kubectl: Kubectl, database_url: str, model: Model) -> list[str]:
    found = kube_problems(kubectl, model)
    return found or registry_problems(database_url, kubectl.namespace, model)


@dataclass
class KillRecord:
    number: int
    work: str
    mode: str  # "request": timed from the first request; "fanout": from the stored revision
    kill_after_s: float
    done_at_kill: int  # of the ConfigMaps the round changes, those already right at the kill
    changes: int
    stored_at_kill: bool  # the edit's new revision was in the registry at the kill
    restart_s: float  # SIGKILL -> the restarted operator answers /healthz
    converge_s: float | None  # SIGKILL -> everything converged (None: never, within timeout)
    left: list[str]  # what was still wrong at the timeout


def converge(
    kubectl: Kubectl,
    database_url: str,
    model: Model,
    *,
    timeout: float,
    since: float,
    interval: float = 0.25,
) -> tuple[float | None, list[str]]:
    found: list[str] = []
    while time.monotonic() - since < timeout:
        try:
            found = problems(kubectl, database_url, model)
        except Exception as error:  # half-written state or a registry read racing a write
            found = [repr(error)]
        if not found:
            return time.monotonic() - since, []
        time.sleep(interval)
    return None, found


def crash_round(
    kubectl: Kubectl,
    database_url: str,
    operator: OperatorProcess,
    model: Model,
    number: int,
    rng: random.Random,
    *,
    max_delay: float,
    timeout: float,
    mode: str = "request",
    switches: int = 3,
    creates: int = 2,
    deletes: int = 2,
    say: Callable[[str], None] = print,
) -> KillRecord:
    plan = plan_round(model, number, rng, switches=switches, creates=creates, deletes=deletes)
    # The kill runs in another thread, timed from the first request of the round (`request`:
    # it may land while the work is still being sent, mid-reconcile or after it), or from
    # the moment the edit's new revision is in the registry (`fanout`: the behavior handler
    # has stored it and is about to fan it out to the agents, or is doing so).
    delay = rng.uniform(0.0, max_delay)
    target = model.behaviors[plan.edited] + 1
    killed_at: list[float] = []

    def kill() -> None:
        if mode == "fanout":
            wait_for_revision(database_url, kubectl.namespace, plan.edited, target)
        time.sleep(delay)
        operator.kill()
        killed_at.append(time.monotonic())

    killer = threading.Thread(target=kill, name="killer")
    killer.start()
    try:
        touched = trigger(kubectl, model, plan, number)
    finally:
        killer.join()
    killed = killed_at[0]
    done, total = progress(kubectl, model, touched)
    stored = stored_revision(database_url, kubectl.namespace, plan.edited) == target
    operator.start()
    restart = time.monotonic() - killed
    converged, left = converge(kubectl, database_url, model, timeout=timeout, since=killed)
    record = KillRecord(
        number, plan.describe(), mode, delay, done, total, stored, restart, converged, left
    )
    since = "the first request" if mode == "request" else "the new revision was stored"
    say(
        f"kill {number}: {plan.describe()}; killed {delay:.2f} s after {since}, "
        f"{done}/{total} ConfigMaps right at the kill (new revision "
        f"{'stored' if stored else 'not stored yet'}); restart {restart:.1f} s, converged "
        + (f"{converged:.1f} s after the kill" if converged is not None else f"NEVER: {left[:5]}")
    )
    return record


__all__ = [
    "KillRecord",
    "Model",
    "converge",
    "crash_round",
    "problems",
    "setup",
]
