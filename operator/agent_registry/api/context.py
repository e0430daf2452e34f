"""What views share: the app's keys, the caller's identity, and registry calls that turn an
outage into a 503 the runtime retries."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, Final, TypeVar

from aiohttp import web

from agent_registry.api.access import Identity, is_namespace, is_object_name
from agent_registry.api.auth import Authenticator
from agent_registry.api.kube import KubeError, KubeUnavailable
from agent_registry.api.problems import (
    FieldError,
    Problem,
    invalid,
    unauthorized,
    unavailable,
)
from agent_registry.metrics import Metrics
from agent_registry.registry import RegistryError, RegistryService, RegistryUnavailable

log = logging.getLogger("agent_registry.api")

REGISTRY: Final = web.AppKey("registry", RegistryService)
AUTHENTICATOR: Final = web.AppKey("authenticator", Authenticator)
METRICS: Final = web.AppKey("metrics", Metrics)
OPENAPI: Final = web.AppKey("openapi", dict[str, Any])

T = TypeVar("T")


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def kube_call(awaitable: Awaitable[T], what: str) -> T:
    """Await a Kubernetes API call; unreachable -> 503, refused -> 500 (misconfigured RBAC)."""
    try:
        return await awaitable
    except KubeUnavailable as exc:
        log.warning("Kubernetes API unavailable while %s: %s", what, exc)
        raise unavailable(f"the Kubernetes API is unavailable ({what})") from exc
    except KubeError as exc:
        log.error("Kubernetes API refused %s: %s", what, exc)
        raise Problem(500, "Internal Server Error", f"cannot check access: {what}") from exc


async def identify(request: web.Request) -> Identity:
    """The caller, authenticated by TokenReview; 401 without a valid bearer token."""
    token = bearer_token(request)
    if token is None:
        raise unauthorized("a bearer token (the ServiceAccount token) is required")
    identity = await kube_call(
        request.app[AUTHENTICATOR].authenticate(token), "reviewing the token"
    )
    if identity is None:
        raise unauthorized("the token was not accepted by the Kubernetes API")
    return identity


async def registry_call(request: web.Request, operation: str, awaitable: Awaitable[T]) -> T:
    """Await a registry call; a database outage becomes 503 + Retry-After and is counted."""
    try:
        return await awaitable
    except RegistryUnavailable as exc:
        request.app[METRICS].count_registry_error(operation)
        log.warning("registry unavailable during %s: %s", operation, exc)
        raise unavailable("the registry database is unavailable") from exc
    except RegistryError as exc:
        # Lookups that find nothing (AgentNotFound, ...) are answers, mapped by the views;
        # anything else is a registry failure worth counting (it then answers 500).
        if not isinstance(exc, LookupError):
            request.app[METRICS].count_registry_error(operation)
        raise


def object_path(request: web.Request) -> tuple[str, str]:
    """(namespace, name) from the path, 422 when they are not Kubernetes names."""
    namespace = request.match_info["namespace"]
    name = request.match_info["name"]
    errors = []
    if not is_namespace(namespace):
        errors.append(FieldError(loc=["path", "namespace"], msg="not a namespace", type="value"))
    if not is_object_name(name):
        errors.append(FieldError(loc=["path", "name"], msg="not an object name", type="value"))
    if errors:
        raise invalid(errors, "the path does not name a Kubernetes object")
    return namespace, name


__all__ = [
    "AUTHENTICATOR",
    "METRICS",
    "OPENAPI",
    "REGISTRY",
    "bearer_token",
    "identify",
    "kube_call",
    "object_path",
    "registry_call",
]
