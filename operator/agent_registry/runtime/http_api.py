"""The sidecar's local HTTP API, so an agent in any language can use its behavior.

POST /v1/decide   body: a JSON object (the task) -> 200 with on_task's result as JSON;
                  422 {"error", "kind", "line", "behavior_sha256"} when the script fails or
                  exceeds a limit (counted as a failed task); 503 before any script loaded.
                  Both carry the header X-Behavior-Sha256: the script that ran the task
                  (the 200 body is the script's result alone, so it cannot carry it).
POST /v1/outcome  body: {"success": bool, "duration_ms"?: number, "finished_at"?: time,
                  "behavior_sha256"?: the decide answer's X-Behavior-Sha256}
                  -> 202 {"recorded": 1}; 400 on a malformed outcome.
GET  /healthz     -> {"sha256", "loaded_at", "revision", "last_error", "scripts"}; 200 once a
                  script runs, 503 before. `scripts` lists a multi-script bundle's scripts
                  with their effective weights ([] for one script).

Lua runs on one dedicated thread (the executor), never on the event loop: a call may take up
to the script's timeout, and the loop must keep answering /healthz meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from agent_registry.lua import LuaLimitExceeded
from agent_registry.reports import TaskOutcome
from agent_registry.runtime.host import BehaviorHost, NoBehaviorLoaded
from agent_registry.runtime.reporter import OutcomeReporter

log = logging.getLogger(__name__)

SHA256_HEADER = "X-Behavior-Sha256"
HOST_KEY = web.AppKey("host", BehaviorHost)
REPORTER_KEY = web.AppKey("reporter", OutcomeReporter)
EXECUTOR_KEY = web.AppKey("executor", Executor)


def create_app(
    host: BehaviorHost, reporter: OutcomeReporter, executor: Executor
) -> web.Application:
    app = web.Application(client_max_size=1 << 20)
    app[HOST_KEY] = host
    app[REPORTER_KEY] = reporter
    app[EXECUTOR_KEY] = executor
    app.router.add_post("/v1/decide", decide)
    app.router.add_post("/v1/outcome", outcome)
    app.router.add_get("/healthz", healthz)
    return app


def _error(
    status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


async def decide(request: web.Request) -> web.Response:
    try:
        task = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _error(400, f"body is not JSON: {exc}")
    if not isinstance(task, dict):
        return _error(400, "the task must be a JSON object")
    host = request.app[HOST_KEY]
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    try:
        run = await loop.run_in_executor(request.app[EXECUTOR_KEY], host.run_task, task)
    except NoBehaviorLoaded as exc:
        return _error(503, str(exc))
    except Exception as exc:
        # Whatever a script does, the sidecar answers; an unexpected host error is ours.
        log.exception("on_task failed unexpectedly")
        _record_failure(request, started, None)
        return _error(500, f"internal error: {type(exc).__name__}")
    headers = {SHA256_HEADER: run.sha256}
    if run.error is not None:
        _record_failure(request, started, run.sha256)
        error = run.error
        kind = error.kind if isinstance(error, LuaLimitExceeded) else "error"
        return _error(
            422,
            str(error),
            kind=kind,
            line=getattr(error, "line", None),
            behavior_sha256=run.sha256,
            headers=headers,
        )
    try:
        body = json.dumps(run.result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        # on_task returned something JSON cannot carry (NaN, a function...).
        _record_failure(request, started, run.sha256)
        return _error(
            422,
            f"on_task result is not JSON: {exc}",
            kind="result",
            line=None,
            behavior_sha256=run.sha256,
            headers=headers,
        )
    return web.Response(text=body, content_type="application/json", headers=headers)


def _record_failure(request: web.Request, started: float, sha256: str | None) -> None:
    # The caller got no decision: that task failed, whatever it reports later.
    request.app[REPORTER_KEY].record(
        False, (time.perf_counter() - started) * 1000.0, behavior_sha256=sha256
    )


async def outcome(request: web.Request) -> web.Response:
    try:
        raw = await request.read()
        parsed = TaskOutcome.model_validate_json(raw)
    except ValidationError as exc:
        return _error(400, "invalid outcome", details=json.loads(exc.json()))
    if parsed.finished_at is None:
        parsed = parsed.model_copy(update={"finished_at": datetime.now(UTC)})
    request.app[REPORTER_KEY].record_outcome(parsed)
    return web.json_response({"recorded": 1}, status=202)


async def healthz(request: web.Request) -> web.Response:
    host = request.app[HOST_KEY]
    loaded = host.loaded
    failure = host.load_failure
    body = {
        "sha256": loaded.sha256 if loaded else None,
        "loaded_at": loaded.loaded_at.isoformat() if loaded else None,
        "revision": loaded.revision if loaded else None,
        "last_error": failure.error if failure else None,
        "scripts": [script.model_dump() for script in loaded.scripts] if loaded else [],
    }
    return web.json_response(body, status=200 if loaded else 503)
