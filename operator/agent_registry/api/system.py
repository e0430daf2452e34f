"""Unauthenticated operational endpoints: health, metrics, the OpenAPI document.

/metrics is open like most in-cluster Prometheus targets (it holds counts, no agent data);
restrict it with a NetworkPolicy if needed.
"""

from __future__ import annotations

from aiohttp import web

from agent_registry.api.context import METRICS, OPENAPI
from agent_registry.api.schemas import Health
from agent_registry.metrics import CONTENT_TYPE


async def healthz(request: web.Request) -> web.Response:
    # Liveness of the API process only: a database outage must not get the operator killed,
    # reports answer 503 meanwhile.
    return web.json_response(Health().model_dump(mode="json"))


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    response = web.Response(body=body)
    # CONTENT_TYPE carries parameters (version, charset) that content_type= refuses.
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


__all__ = ["healthz", "metrics", "openapi"]
