"""The sidecar's local HTTP API, so an agent in any language can use its behavior.

POST /v1/decide   body: a JSON object (the task) -> 200 with on_task's result as JSON;
                  422 {"error", "kind", "line"} when the script fails or exceeds a limit
                  (counted as a failed task); 503 before any script loaded.
POST /v1/outcome  body: {"success": bool, "duration_ms"?: number, "finished_at"?: time}
                  -> 202 {"recorded": 1}; 400 on a malformed outcome.
GET  /healthz     -> {"sha256", "loaded_at", "revision", "last_error"}; 200 once a script
                  runs, 503 before.

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

from agent_registry.lua import LuaError, LuaLimitExceeded
from agent_registry.reports import TaskOutcome
from agent_registry.runtime.host import BehaviorHost, NoBehaviorLoaded
from agent_registry.runtime.reporter import OutcomeReporter

log = logging.getLogger(__name__)

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


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


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
        result = await loop.run_in_executor(request.app[EXECUTOR_KEY], host.on_task, task)
        body = json.dumps(result)
    except NoBehaviorLoaded as exc:
        return _error(503, str(exc))
    except LuaError as exc:
        _record_failure(request, started)
        kind = exc.kind if isinstance(exc, LuaLimitExceeded) else "error"
        return _error(422, str(exc), kind=kind, line=getattr(exc, "line", None))
    except (TypeError, ValueError) as exc:
        # on_task returned something JSON cannot carry (NaN, a function...).
        _record_failure(request, started)
        return _error(422, f"on_task result is not JSON: {exc}", kind="result", line=None)
    except Exception as exc:
        # Whatever a script does, the sidecar answers; an unexpected host error is ours.
        log.exception("on_task failed unexpectedly")
        _record_failure(request, started)
        return _error(500, f"internal error: {type(exc).__name__}")
    return web.Response(text=body, content_type="application/json")


def _record_failure(request: web.Request, started: float) -> None:
    # The caller got no decision: that task failed, whatever it reports later.
    request.app[REPORTER_KEY].record(False, (time.perf_counter() - started) * 1000.0)


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
    }
    return web.json_response(body, status=200 if loaded else 503)
