"""The read endpoints: RBAC decides (SubjectAccessReview on agents.singularity.dev)."""

from __future__ import annotations

from api.harness import Api, Kube, report_body

SCRIPT_V1 = "function on_task(task, ctx) return {accept = true, effort = 0.2} end\n"
SCRIPT_V2 = "function on_task(task, ctx) return {accept = true, effort = 0.9} end\n"


async def _populate(api: Api, kube: Kube, namespace: str) -> None:
    """Two agents, a behavior with a child, one agent switched to the child, some outcomes."""
    registry = api.registry
    parent = await registry.create_behavior("base", "tester", SCRIPT_V1, namespace=namespace)
    child = await registry.create_behavior(
        "tuned", "tester", SCRIPT_V2, namespace=namespace, parent_behavior_id=parent.id
    )
    for name in ("good", "bad"):
        kube.agent(namespace, name)
        await registry.register_agent(f"{namespace}/{name}", "tester")
        await registry.assign_behavior(f"{namespace}/{name}", parent.id)
    await registry.assign_behavior(
        f"{namespace}/good",
        child.id,
        reason="performance",
        source="Policy",
        evidence={"policy": "promote-tuned", "rate": 0.4},
    )
    # Each agent reports as its own ServiceAccount, named like it.
    good, bad = kube.token(namespace, "good"), kube.token(namespace, "bad")
    assert (await api.report(namespace, "good", report_body(12, 0), good))[0] == 202
    assert (await api.report(namespace, "bad", report_body(2, 10), bad))[0] == 202


async def test_reads_with_rbac_permission(api: Api, kube: Kube, namespace: str) -> None:
    await _populate(api, kube, namespace)
    reader = kube.reader(namespace)

    status, agents = await api.get(f"/v1/agents?namespace={namespace}", reader)
    assert status == 200, agents
    assert sorted(a["name"] for a in agents["items"]) == ["bad", "good"]
    assert {a["namespace"] for a in agents["items"]} == {namespace}

    status, agent = await api.get(f"/v1/agents/{namespace}/good", reader)
    assert status == 200, agent
    assert agent["agent_id"] == f"{namespace}/good"
    assert agent["tasks_completed"] == 12
    assert agent["success_rate"] == 1.0

    status, history = await api.get(f"/v1/agents/{namespace}/good/assignments", reader)
    assert status == 200, history
    assert [a["reason"] for a in history["items"]] == ["performance", "manual"]
    assert [a["source"] for a in history["items"]] == ["Policy", None]
    assert history["items"][0]["evidence"] == {"policy": "promote-tuned", "rate": 0.4}
    assert history["items"][0]["unassigned_at"] is None
    assert history["items"][1]["unassigned_at"] is not None

    status, under = await api.get(
        f"/v1/underperformers?threshold=0.5&min_tasks=10&namespace={namespace}", reader
    )
    assert status == 200, under
    assert [a["name"] for a in under["items"]] == ["bad"]

    status, lineage = await api.get(f"/v1/behaviors/{namespace}/tuned/lineage", reader)
    assert status == 200, lineage
    assert [b["name"] for b in lineage["items"]] == ["tuned", "base"]
    assert "lua_script" not in lineage["items"][0]


async def test_reads_without_permission_are_403(api: Api, kube: Kube, namespace: str) -> None:
    await _populate(api, kube, namespace)
    reader = kube.reader(namespace)
    runner = kube.token(namespace, "good")  # may report, but has no RBAC to read agents

    assert (await api.get(f"/v1/agents?namespace={namespace}", runner))[0] == 403
    assert (await api.get(f"/v1/agents/{namespace}/good", runner))[0] == 403
    assert (await api.get(f"/v1/behaviors/{namespace}/tuned/lineage", runner))[0] == 403
    # A namespaced reader may not list every namespace.
    status, problem = await api.get("/v1/agents", reader)
    assert status == 403, problem
    assert "all namespaces" in problem["detail"]
    assert (await api.get("/v1/agents", None))[0] == 401


async def test_read_errors(api: Api, kube: Kube, namespace: str) -> None:
    reader = kube.reader(namespace)
    status, problem = await api.get(f"/v1/agents/{namespace}/ghost", reader)
    assert status == 404, problem
    status, problem = await api.get(f"/v1/behaviors/{namespace}/ghost/lineage", reader)
    assert status == 404, problem
    status, problem = await api.get(
        f"/v1/underperformers?threshold=2&namespace={namespace}", reader
    )
    assert status == 422, problem
    assert problem["errors"][0]["loc"] == ["query", "threshold"]
    status, problem = await api.get("/v1/agents/Not_A_Namespace/x", reader)
    assert status == 422, problem
    assert problem["errors"][0]["loc"] == ["path", "namespace"]
