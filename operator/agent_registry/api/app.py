"""The registry API application: the endpoint table, error rendering, and `create_app`."""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web

from agent_registry.api import reading, reporting, system
from agent_registry.api.auth import Authenticator
from agent_registry.api.context import AUTHENTICATOR, METRICS, OPENAPI, REGISTRY
from agent_registry.api.endpoints import Endpoint, Handler, Param, path_params
from agent_registry.api.openapi import OPENAPI_PATH, build_document
from agent_registry.api.problems import Problem, from_http_exception
from agent_registry.api.schemas import (
    AgentList,
    AgentView,
    AssignmentList,
    Health,
    Lineage,
    UnderperformerList,
)
from agent_registry.metrics import Metrics
from agent_registry.registry import RegistryService
from agent_registry.reports import OutcomeReport, ReportAccepted

log = logging.getLogger("agent_registry.api")

# A full report (10,000 outcomes with timestamps) is about 1 MiB of JSON; refuse anything
# much larger before reading it.
MAX_BODY_BYTES: Final = 2 * 1024 * 1024

_READ_ERRORS = (401, 403, 404, 422, 503)
_NS_FILTER = Param("namespace", "query", {"type": "string"}, "Only agents of this namespace.")

ENDPOINTS: Final[tuple[Endpoint, ...]] = (
    Endpoint(
        "POST",
        "/v1/agents/{namespace}/{name}/reports",
        reporting.post_report,
        "postReport",
        "Report task outcomes and the loaded behavior of an agent",
        ReportAccepted,
        status=202,
        request=OutcomeReport,
        params=path_params("namespace", "name"),
        errors=(401, 403, 404, 413, 422, 503),
        tags=("reports",),
        description=(
            "Sent by the agent runtime with its ServiceAccount token. The token must be the "
            "Agent's own ServiceAccount: spec.serviceAccountName, else the pod template's "
            "serviceAccountName, else the ServiceAccount named like the Agent (operators may "
            "opt out with `agentreg run --report-auth=namespace`). A batch is counted once per "
            "batch_id; retry on 5xx with the same id."
        ),
    ),
    Endpoint(
        "GET",
        "/v1/agents",
        reading.list_agents,
        "listAgents",
        "List agents",
        AgentList,
        params=(
            _NS_FILTER,
            Param(
                "status",
                "query",
                {"type": "string", "enum": ["active", "paused", "stopped"]},
                "Only agents in this status.",
            ),
        ),
        errors=_READ_ERRORS,
        tags=("agents",),
    ),
    Endpoint(
        "GET",
        "/v1/agents/{namespace}/{name}",
        reading.get_agent,
        "getAgent",
        "Get one agent's registry record and stats",
        AgentView,
        params=path_params("namespace", "name"),
        errors=_READ_ERRORS,
        tags=("agents",),
    ),
    Endpoint(
        "GET",
        "/v1/agents/{namespace}/{name}/assignments",
        reading.list_assignments,
        "listAssignments",
        "An agent's behavior assignment history",
        AssignmentList,
        params=path_params("namespace", "name"),
        errors=_READ_ERRORS,
        tags=("agents",),
    ),
    Endpoint(
        "GET",
        "/v1/underperformers",
        reading.list_underperformers,
        "listUnderperformers",
        "Active agents whose current assignment succeeds less than the threshold",
        UnderperformerList,
        params=(
            Param(
                "threshold",
                "query",
                {"type": "number", "minimum": 0, "maximum": 1, "default": 0.7},
                "Success rate below which an agent underperforms.",
            ),
            Param(
                "min_tasks",
                "query",
                {"type": "integer", "minimum": 0, "maximum": reading.MAX_MIN_TASKS, "default": 10},
                "Tasks the current assignment needs before it is judged.",
            ),
            Param(
                "limit",
                "query",
                {"type": "integer", "minimum": 1, "maximum": reading.MAX_LIMIT},
                "The worst N only (default: every flagged agent).",
            ),
            _NS_FILTER,
        ),
        errors=_READ_ERRORS,
        tags=("agents",),
    ),
    Endpoint(
        "GET",
        "/v1/behaviors/{namespace}/{name}/lineage",
        reading.behavior_lineage,
        "getBehaviorLineage",
        "A behavior and its ancestors (parentRef chain)",
        Lineage,
        params=path_params("namespace", "name"),
        errors=_READ_ERRORS,
        tags=("behaviors",),
    ),
    Endpoint(
        "GET",
        OPENAPI_PATH,
        system.openapi,
        "getOpenAPI",
        "This document",
        None,
        secured=False,
        tags=("system",),
    ),
    Endpoint(
        "GET",
        "/healthz",
        system.healthz,
        "getHealth",
        "Liveness of the API",
        Health,
        secured=False,
        tags=("system",),
    ),
    Endpoint(
        "GET",
        "/metrics",
        system.metrics,
        "getMetrics",
        "Prometheus metrics",
        None,
        secured=False,
        media_type="text/plain",
        tags=("system",),
    ),
)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as problem+json: ours, aiohttp's (404/405/413), and crashes."""
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return from_http_exception(exc).response()
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return Problem(500, "Internal Server Error", "unexpected error; see the logs").response()


def create_app(
    registry: RegistryService,
    authenticator: Authenticator,
    *,
    metrics: Metrics | None = None,
    client_max_size: int = MAX_BODY_BYTES,
) -> web.Application:
    """The registry API as an aiohttp application.

    The caller owns `registry` (and closes it); the app closes `authenticator`'s HTTP
    session on cleanup. Pass the operator's `metrics` so controller and API share one
    /metrics; a fresh Metrics is made otherwise.
    """
    app = web.Application(middlewares=[problem_middleware], client_max_size=client_max_size)
    app[REGISTRY] = registry
    app[AUTHENTICATOR] = authenticator
    app[METRICS] = metrics if metrics is not None else Metrics()
    app[OPENAPI] = build_document(ENDPOINTS)
    for endpoint in ENDPOINTS:
        if endpoint.method == "GET":
            app.router.add_get(endpoint.path, endpoint.handler, allow_head=False)
        else:
            app.router.add_route(endpoint.method, endpoint.path, endpoint.handler)

    async def close_authenticator(_: web.Application) -> None:
        await authenticator.close()

    app.on_cleanup.append(close_authenticator)
    return app


__all__ = ["ENDPOINTS", "MAX_BODY_BYTES", "create_app"]
