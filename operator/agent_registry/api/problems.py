"""Errors as HTTP problem details (RFC 9457, `application/problem+json`).

Views raise `Problem`; the middleware in app.py renders it. Every error the API returns has
the same shape, so clients (the runtime) need one parser.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"
RETRY_AFTER_SECONDS: Final = 5


class FieldError(BaseModel):
    """One invalid field of a request, located as pydantic locates it."""

    model_config = ConfigDict(frozen=True)

    loc: list[str | int] = Field(description='Where, e.g. ["body", "outcomes", 3, "success"].')
    msg: str
    type: str


class ProblemDetails(BaseModel):
    """An error answer (RFC 9457)."""

    model_config = ConfigDict(frozen=True)

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] | None = Field(
        default=None, description="The invalid fields (422 only)."
    )


class Problem(Exception):
    """An HTTP error answer to raise from a view."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        errors: Sequence[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.details = ProblemDetails(
            title=title, status=status, detail=detail, errors=list(errors) if errors else None
        )
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = self.details.model_dump(mode="json", exclude_none=True)
        return web.Response(
            status=self.details.status,
            text=json.dumps(body),
            content_type=PROBLEM_CONTENT_TYPE,
            headers=self.headers,
        )


def unauthorized(detail: str) -> Problem:
    return Problem(
        401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="agent-registry"'}
    )


def forbidden(detail: str) -> Problem:
    return Problem(403, "Forbidden", detail)


def not_found(detail: str) -> Problem:
    return Problem(404, "Not Found", detail)


def unavailable(detail: str, retry_after: int = RETRY_AFTER_SECONDS) -> Problem:
    return Problem(503, "Service Unavailable", detail, headers={"Retry-After": str(retry_after)})


def invalid(errors: Sequence[FieldError], detail: str = "the request is invalid") -> Problem:
    return Problem(422, "Unprocessable Content", detail, errors=errors)


def from_validation_error(exc: ValidationError, prefix: str) -> Problem:
    """A 422 listing pydantic's errors, located under `prefix` ("body", "query", "path")."""
    errors = [
        FieldError(loc=[prefix, *error["loc"]], msg=error["msg"], type=error["type"])
        for error in exc.errors(include_url=False, include_input=False)
    ]
    return invalid(errors, f"{len(errors)} invalid field(s) in the {prefix}")


def from_http_exception(exc: web.HTTPException) -> Problem:
    """aiohttp's own errors (404 route, 405, 413 body too large) in the same shape."""
    headers: dict[str, Any] = {}
    if "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
    detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else None
    return Problem(exc.status, exc.reason, detail, headers=headers)


__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "FieldError",
    "Problem",
    "ProblemDetails",
    "forbidden",
    "from_http_exception",
    "from_validation_error",
    "invalid",
    "not_found",
    "unauthorized",
    "unavailable",
]
