"""The OpenAPI 3.1 document, generated from the endpoint table and the pydantic models."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from agent_registry.api.endpoints import Endpoint
from agent_registry.api.problems import PROBLEM_CONTENT_TYPE, ProblemDetails

OPENAPI_PATH: Final = "/openapi.json"
_REF: Final = "#/components/schemas/{model}"
_ERROR_TEXT: Final[dict[int, str]] = {
    400: "Malformed request.",
    401: "Missing or invalid bearer token.",
    403: "The token may not do this.",
    404: "No such object.",
    413: "Request body too large.",
    422: "Invalid request; `errors` locates each invalid field.",
    500: "Unexpected server error.",
    503: "Registry or Kubernetes API unavailable; retry after Retry-After seconds.",
}

Mode = Literal["validation", "serialization"]


def _models(endpoints: Iterable[Endpoint]) -> list[tuple[type[BaseModel], Mode]]:
    seen: dict[tuple[type[BaseModel], Mode], None] = {(ProblemDetails, "serialization"): None}
    for endpoint in endpoints:
        if endpoint.request is not None:
            seen[(endpoint.request, "validation")] = None
        if endpoint.response is not None:
            seen[(endpoint.response, "serialization")] = None
    return list(seen)


def _content(schema: dict[str, Any], media_type: str = "application/json") -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _operation(endpoint: Endpoint, refs: Mapping[tuple[Any, Mode], Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
    }
    if endpoint.description:
        operation["description"] = endpoint.description
    if endpoint.tags:
        operation["tags"] = list(endpoint.tags)
    if endpoint.params:
        operation["parameters"] = [
            {
                "name": p.name,
                "in": p.location,
                "required": p.required or p.location == "path",
                "description": p.description,
                "schema": p.schema,
            }
            for p in endpoint.params
        ]
    if endpoint.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": _content(refs[(endpoint.request, "validation")]),
        }
    if endpoint.response is not None:
        ok_schema = refs[(endpoint.response, "serialization")]
    elif endpoint.media_type == "application/json":
        ok_schema = {"type": "object"}
    else:
        ok_schema = {"type": "string"}
    responses: dict[str, Any] = {
        str(endpoint.status): {
            "description": "OK" if endpoint.status == 200 else "Accepted",
            "content": _content(ok_schema, endpoint.media_type),
        }
    }
    problem = _content(refs[(ProblemDetails, "serialization")], PROBLEM_CONTENT_TYPE)
    for status in sorted(endpoint.errors):
        response: dict[str, Any] = {
            "description": _ERROR_TEXT.get(status, "Error."),
            "content": problem,
        }
        if status == 503:
            response["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}
            }
        responses[str(status)] = response
    operation["responses"] = responses
    operation["security"] = [{"bearerAuth": []}] if endpoint.secured else []
    return operation


def build_document(
    endpoints: Sequence[Endpoint], *, title: str = "agent-registry API", version: str = "v1"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `endpoints`."""
    models = _models(endpoints)
    refs, definitions = models_json_schema(models, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "The registry API of the agent-registry operator: agent runtimes report task "
                "outcomes and the behavior they loaded; people and tools read agents, "
                "assignments, underperformers and behavior lineage."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Kubernetes ServiceAccount token, checked by TokenReview.",
                }
            },
        },
    }


__all__ = ["OPENAPI_PATH", "build_document"]
