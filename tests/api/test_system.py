"""/openapi.json, /healthz and /metrics of the served app."""

from __future__ import annotations

from openapi_spec_validator import validate

from api.harness import Api, Kube, report_body


async def test_openapi_lists_every_route_of_the_app(api: Api) -> None:
    response = await api.client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    validate(document)
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in api.client.app.router.routes()
        if route.resource is not None
    }
    assert len(routes) >= 9
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert routes <= documented, routes - documented


async def test_healthz_needs_no_token(api: Api) -> None:
    response = await api.client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_unknown_route_is_a_problem_404(api: Api) -> None:
    response = await api.client.get("/v1/nothing")
    assert response.status == 404
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert (await response.json())["status"] == 404


async def test_metrics_exposition(api: Api, kube: Kube, namespace: str) -> None:
    kube.agent(namespace, "a1")
    await api.registry.register_agent(f"{namespace}/a1", "tester")
    spec = await api.registry.create_behavior("spec", "tester", "function on_task() end")
    await api.registry.assign_behavior(f"{namespace}/a1", spec.id)
    token = kube.token(namespace, "a1")
    assert (await api.report(namespace, "a1", report_body(4, 1), token))[0] == 202
    api.metrics.count_reconcile("Agent", "success")

    response = await api.client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert 'reports_ingested_total{result="accepted"} 1.0' in text
    assert "outcomes_ingested_total 5.0" in text
    assert 'reconciles_total{kind="Agent",result="success"} 1.0' in text
    assert 'reload_latency_seconds_bucket{le="120.0"} 0.0' in text
    assert "# TYPE registry_errors_total counter" in text
