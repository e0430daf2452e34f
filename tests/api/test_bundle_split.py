"""A two-script bundle, from the controller's rendering through the runtime's sandboxes to the
registry's per-script counts: weights 0.9/0.1 over 10,000 simulated tasks give counts within
the binomial 99.9 % interval, every outcome credited to the script that ran it.

Real pieces: the ConfigMap rendering and parsing, the runtime host (lupa sandboxes), the
registry API with a real TokenRequest token (TokenReview on the real apiserver) and the
registry on PostgreSQL and SQLite. No kubelet: the ConfigMap's data is handed to the parser.
"""

from __future__ import annotations

import math
import random
import uuid

from agent_registry.controller.rendering import (
    BehaviorSnapshot,
    Owner,
    WeightedBehavior,
    render_bundle_configmap,
)
from agent_registry.registry import ScriptRef
from agent_registry.runtime.bundle import parse_bundle
from agent_registry.runtime.host import BehaviorHost
from agent_registry.runtime.simulate import judge, make_task
from api.harness import Api, Kube

TASKS = 10_000
CANARY_WEIGHT = 0.1
Z_999 = 3.2905  # two-sided 99.9 % normal quantile

STABLE = """
function on_task(task, ctx)
  ctx.state.n = (ctx.state.n or 0) + 1
  return {accept = true, effort = 0.9}
end
"""
CANARY = """
function on_task(task, ctx)
  ctx.state.n = (ctx.state.n or 0) + 1
  return {accept = true, effort = 0.5}
end
"""


def binomial_interval(n: int, p: float) -> tuple[float, float]:
    """99.9 % interval of a Binomial(n, p) count (normal approximation; n p (1-p) = 900)."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - Z_999 * sd, n * p + Z_999 * sd


async def test_weights_split_the_tasks_and_each_script_gets_its_own_outcomes(
    api: Api, kube: Kube, namespace: str
) -> None:
    registry = api.registry
    agent_id = f"{namespace}/coder"
    kube.agent(namespace, "coder")
    await registry.register_agent(agent_id, "tester")
    stable = await registry.create_behavior("stable", "tester", STABLE, namespace=namespace)
    canary = await registry.create_behavior("canary", "tester", CANARY, namespace=namespace)
    await registry.assign_behavior(agent_id, stable.id, assigned_by="test", reason="spec")
    await registry.allow_scripts(
        agent_id,
        [
            ScriptRef(behavior_id=b.id, revision=b.revision, sha256=b.script_sha256)
            for b in (stable, canary)
        ],
    )
    configmap = render_bundle_configmap(
        Owner(name="coder", namespace=namespace, uid=str(uuid.uuid4())),
        [
            WeightedBehavior(
                BehaviorSnapshot("stable", namespace, 1, stable.script_sha256, STABLE),
                1 - CANARY_WEIGHT,
            ),
            WeightedBehavior(
                BehaviorSnapshot("canary", namespace, 1, canary.script_sha256, CANARY),
                CANARY_WEIGHT,
            ),
        ],
    )
    rng = random.Random(20261203)
    host = BehaviorHost(rng=random.Random(7))
    loaded = host.load(parse_bundle(configmap["data"], origin="test"))
    assert loaded is not None
    outcomes = []
    for sequence in range(TASKS):
        task = make_task(sequence, rng)
        run = host.run_task(task)
        success, duration = judge(run.result, task["difficulty"], rng.uniform(-0.05, 0.05))
        outcomes.append(
            {"success": success, "duration_ms": duration, "behavior_sha256": run.sha256}
        )
    token = kube.token(namespace, "coder")
    for start in range(0, TASKS, 1000):
        body = {"batch_id": str(uuid.uuid4()), "outcomes": outcomes[start : start + 1000]}
        status, answer, _ = await api.report(namespace, "coder", body, token)
        assert status == 202, answer
        assert answer["refused"] == []

    rows = {r.script_sha256: r for r in await registry.revision_stats(agent_ids=[agent_id])}
    low, high = binomial_interval(TASKS, CANARY_WEIGHT)
    assert low <= rows[canary.script_sha256].tasks <= high
    assert rows[stable.script_sha256].tasks + rows[canary.script_sha256].tasks == TASKS
    # Each script's own outcomes: effort 0.9 succeeds far more often than effort 0.5.
    assert rows[stable.script_sha256].successes / rows[stable.script_sha256].tasks > 0.85
    assert rows[canary.script_sha256].successes / rows[canary.script_sha256].tasks < 0.65
    # The assignment (the stable script) counts only its own script's outcomes.
    agent = await registry.get_by_agent_id(agent_id)
    assert agent.current_tasks_completed == rows[stable.script_sha256].tasks
    assert agent.tasks_completed == TASKS
    host.close()
