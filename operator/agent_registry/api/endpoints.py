"""How an endpoint is described: once, for both the router and the OpenAPI document, so the
document cannot forget a route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Param:
    """A path or query parameter."""

    name: str
    location: Literal["path", "query"]
    schema: dict[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    response: type[BaseModel] | None
    status: int = 200
    request: type[BaseModel] | None = None
    params: tuple[Param, ...] = ()
    secured: bool = True
    errors: tuple[int, ...] = ()
    media_type: str = "application/json"
    tags: tuple[str, ...] = field(default=())
    description: str = ""


def path_params(*names: str) -> tuple[Param, ...]:
    """The usual namespace/name pair (or any names) as required path parameters."""
    descriptions = {
        "namespace": "Kubernetes namespace of the object.",
        "name": "Kubernetes name of the object.",
    }
    return tuple(
        Param(n, "path", {"type": "string"}, descriptions.get(n, n), required=True) for n in names
    )


__all__ = ["Endpoint", "Handler", "Param", "path_params"]
