"""POST /v1/agents/{namespace}/{name}/reports: an agent runtime's batch of outcomes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiohttp import web
from pydantic import ValidationError

from agent_registry.api.access import Verdict
from agent_registry.api.context import (
    AUTHENTICATOR,
    METRICS,
    REGISTRY,
    identify,
    kube_call,
    object_path,
    registry_call,
)
from agent_registry.api.problems import (
    Problem,
    forbidden,
    from_validation_error,
    not_found,
    unavailable,
)
from agent_registry.registry import AgentNotFound
from agent_registry.reports import OutcomeReport, RefusedOutcome, ReportAccepted

log = logging.getLogger("agent_registry.api.reports")

_RESULT_BY_STATUS = {401: "unauthenticated", 403: "forbidden", 404: "not_found", 503: "unavailable"}


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; the registry stores UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def post_report(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    try:
        response, result = await _ingest(request)
    except Problem as problem:
        status = problem.details.status
        metrics.count_report(
            _RESULT_BY_STATUS.get(status, "invalid" if 400 <= status < 500 else "error")
        )
        raise
    except web.HTTPException as exc:  # 413 from aiohttp's body size limit
        metrics.count_report("invalid" if exc.status < 500 else "error")
        raise
    metrics.count_report(result)
    return response


async def _ingest(request: web.Request) -> tuple[web.Response, str]:
    namespace, name = object_path(request)
    identity = await identify(request)
    decision = await kube_call(
        request.app[AUTHENTICATOR].authorize_report(identity, namespace, name),
        "reading the Agent",
    )
    if decision.verdict is Verdict.NOT_FOUND:
        raise not_found(f"no Agent {namespace}/{name}")
    if not decision.allowed:
        raise forbidden(decision.reason)

    try:
        report = OutcomeReport.model_validate_json(await request.read())
    except ValidationError as exc:
        raise from_validation_error(exc, "body") from exc

    registry = request.app[REGISTRY]
    metrics = request.app[METRICS]
    agent_id = f"{namespace}/{name}"
    try:
        # Outcomes first, then the load confirmation: both are idempotent, so a retry after a
        # failure between them records nothing twice (the batch is a duplicate, the
        # confirmation is no longer new).
        # Outcomes without behavior_sha256 (older runtimes) count for the loaded script.
        # loaded.scripts changes nothing: the registry counts only scripts it delivered.
        result = await registry_call(
            request,
            "record_tasks",
            registry.record_tasks(
                agent_id,
                report.outcomes,
                batch_id=report.batch_id,
                cycles=report.cycles,
                loaded_sha256=report.loaded.sha256 if report.loaded is not None else None,
            ),
        )
        if report.loaded is not None:
            confirmation = await registry_call(
                request,
                "confirm_loaded",
                registry.confirm_loaded(agent_id, report.loaded.sha256, report.loaded.loaded_at),
            )
            if (
                confirmation.new
                and confirmation.matches_assignment
                and confirmation.assigned_at is not None
            ):
                latency = _utc(report.loaded.loaded_at) - _utc(confirmation.assigned_at)
                metrics.observe_reload_latency(latency.total_seconds())
        if report.load_failure is not None:
            # After the confirmation: a report carries both the script still running (loaded
            # before the failure, which must not clear it) and the refused one.
            await registry_call(
                request,
                "record_load_failure",
                registry.record_load_failure(agent_id, report.load_failure),
            )
    except AgentNotFound as exc:
        # The Agent exists in Kubernetes (authorization read it) but the controller has not
        # registered it yet: a moment's wait fixes that, so ask the runtime to retry.
        raise unavailable(f"Agent {agent_id} is not registered yet", retry_after=2) from exc

    if report.load_failure is not None:
        failure = report.load_failure
        log.warning(
            "agent %s refused script %s at line %s: %s (keeps its last good script)",
            agent_id,
            failure.sha256,
            failure.line,
            failure.error,
        )
    if report.dropped:
        log.warning("agent %s dropped %d outcomes on buffer overflow", agent_id, report.dropped)
    if result.refused and not result.duplicate:
        first = result.refused[0]
        log.warning(
            "agent %s: %d of %d outcomes refused (first: %s)",
            agent_id,
            len(result.refused),
            len(report.outcomes),
            first.reason,
        )

    metrics.count_outcomes(result.recorded)
    accepted = ReportAccepted(
        batch_id=report.batch_id,
        recorded=result.recorded,
        duplicate=result.duplicate,
        refused=[
            RefusedOutcome(index=r.index, behavior_sha256=r.sha256, reason=r.reason)
            for r in result.refused
        ],
    )
    response = web.json_response(accepted.model_dump(mode="json"), status=202)
    return response, "duplicate" if result.duplicate else "accepted"


__all__ = ["post_report"]
