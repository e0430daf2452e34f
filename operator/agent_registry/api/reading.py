"""The read endpoints. Who may read is Kubernetes RBAC's answer (see access.py): the caller
needs `list`/`get` on agents (or agentbehaviors) of agents.singularity.dev in the namespace."""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent_registry.api.access import Identity, is_namespace
from agent_registry.api.context import (
    AUTHENTICATOR,
    REGISTRY,
    identify,
    kube_call,
    object_path,
    registry_call,
)
from agent_registry.api.problems import (
    FieldError,
    forbidden,
    from_validation_error,
    invalid,
    not_found,
)
from agent_registry.api.schemas import (
    AgentList,
    AssignmentList,
    AssignmentView,
    BehaviorView,
    Lineage,
    UnderperformerList,
    agent_view,
    project,
    underperformer_view,
)
from agent_registry.registry import AgentNotFound, BehaviorNotFound

Q = TypeVar("Q", bound=BaseModel)


MAX_MIN_TASKS = 2**63 - 1
# Bound to a 64-bit LIMIT in the database, like MAX_MIN_TASKS.
MAX_LIMIT = 2**63 - 1


class UnderperformersQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(default=0.7, ge=0.0, le=1.0)
    # Compared with 64-bit counters in the database: a larger number fails there (500).
    min_tasks: int = Field(default=10, ge=0, le=MAX_MIN_TASKS)
    limit: int | None = Field(default=None, ge=1, le=MAX_LIMIT)
    namespace: str | None = None


class AgentsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str | None = None
    status: str | None = Field(default=None, pattern="^(active|paused|stopped)$")


def _query(request: web.Request, model: type[Q]) -> Q:
    try:
        query = model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise from_validation_error(exc, "query") from exc
    namespace = getattr(query, "namespace", None)
    if namespace is not None and not is_namespace(namespace):
        raise invalid([FieldError(loc=["query", "namespace"], msg="not a namespace", type="value")])
    return query


async def _require(
    request: web.Request, identity: Identity, verb: str, resource: str, namespace: str | None
) -> None:
    allowed = await kube_call(
        request.app[AUTHENTICATOR].can(identity, verb, resource, namespace),
        "reviewing access",
    )
    if not allowed:
        where = f"namespace {namespace!r}" if namespace else "all namespaces"
        raise forbidden(
            f"{identity.username} may not {verb} {resource}.agents.singularity.dev in {where}"
        )


def _json(model: BaseModel) -> web.Response:
    return web.json_response(model.model_dump(mode="json"))


async def list_agents(request: web.Request) -> web.Response:
    query = _query(request, AgentsQuery)
    identity = await identify(request)
    await _require(request, identity, "list", "agents", query.namespace)
    records: Any = await registry_call(
        request,
        "list_agents",
        request.app[REGISTRY].list_agents(namespace=query.namespace, status=query.status),
    )
    return _json(AgentList(items=[agent_view(record) for record in records]))


async def get_agent(request: web.Request) -> web.Response:
    namespace, name = object_path(request)
    identity = await identify(request)
    await _require(request, identity, "get", "agents", namespace)
    try:
        record = await registry_call(
            request, "get_by_agent_id", request.app[REGISTRY].get_by_agent_id(f"{namespace}/{name}")
        )
    except AgentNotFound as exc:
        raise not_found(f"no agent {namespace}/{name} in the registry") from exc
    return _json(agent_view(record))


async def list_assignments(request: web.Request) -> web.Response:
    namespace, name = object_path(request)
    identity = await identify(request)
    await _require(request, identity, "get", "agents", namespace)
    try:
        records: Any = await registry_call(
            request,
            "assignment_history",
            request.app[REGISTRY].assignment_history(f"{namespace}/{name}"),
        )
    except AgentNotFound as exc:
        raise not_found(f"no agent {namespace}/{name} in the registry") from exc
    return _json(AssignmentList(items=[project(AssignmentView, r) for r in records]))


async def list_underperformers(request: web.Request) -> web.Response:
    query = _query(request, UnderperformersQuery)
    identity = await identify(request)
    await _require(request, identity, "list", "agents", query.namespace)
    records: Any = await registry_call(
        request,
        "list_underperforming_agents",
        request.app[REGISTRY].list_underperforming_agents(
            query.threshold,
            min_tasks=query.min_tasks,
            limit=query.limit,
            namespace=query.namespace,
        ),
    )
    return _json(UnderperformerList(items=[underperformer_view(r) for r in records]))


async def behavior_lineage(request: web.Request) -> web.Response:
    namespace, name = object_path(request)
    identity = await identify(request)
    await _require(request, identity, "get", "agentbehaviors", namespace)
    registry = request.app[REGISTRY]
    try:
        behavior = await registry_call(
            request, "get_behavior_by_name", registry.get_behavior_by_name(namespace, name)
        )
        records: Any = await registry_call(
            request, "behavior_lineage", registry.behavior_lineage(behavior.id)
        )
    except BehaviorNotFound as exc:
        raise not_found(f"no behavior {namespace}/{name} in the registry") from exc
    return _json(Lineage(items=[project(BehaviorView, r) for r in records]))


__all__ = [
    "AgentsQuery",
    "UnderperformersQuery",
    "behavior_lineage",
    "get_agent",
    "list_agents",
    "list_assignments",
    "list_underperformers",
]
