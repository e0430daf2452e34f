"""A fake registry endpoint for the reporter's protocol tests.

Not the real API (that is tested by the API work against PostgreSQL): what is under test here
is the runtime's side of the protocol (retries, batch ids, backoff, overflow, flush), so the
server is a real aiohttp server on a real socket whose failures the test scripts: answer
with given statuses, or drop the connection, for the next N requests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from agent_registry.reports import OutcomeReport, ReportAccepted


@dataclass
class FakeRegistry:
    url: str = ""
    # Scripted answers for the next requests: an int status, "drop" (close the socket), or
    # "count-then-drop" (count the batch, then close the socket: the answer is lost).
    script: list[int | str] = field(default_factory=list)
    retry_after: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    counted: dict[str, OutcomeReport] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    tokens: list[str | None] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def outcomes_counted(self) -> int:
        return sum(len(report.outcomes) for report in self.counted.values())

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.text()
        self.paths.append(request.path)
        auth = request.headers.get("Authorization")
        self.tokens.append(auth.removeprefix("Bearer ") if auth else None)
        self.requests.append(json.loads(body))
        self.arrived.set()
        action = self.script.pop(0) if self.script else None
        if action is not None and action != "count-then-drop":
            if action == "drop":
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)  # never reaches the client
            assert isinstance(action, int)
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            if action != 202:
                return web.json_response({"error": "scripted"}, status=action, headers=headers)
        report = OutcomeReport.model_validate_json(body)
        key = str(report.batch_id)
        duplicate = key in self.counted
        if not duplicate:
            self.counted[key] = report
        if action == "count-then-drop":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)  # never reaches the client
        accepted = ReportAccepted(
            batch_id=report.batch_id,
            recorded=0 if duplicate else len(report.outcomes),
            duplicate=duplicate,
        )
        return web.Response(
            status=202, text=accepted.model_dump_json(), content_type="application/json"
        )


@asynccontextmanager
async def fake_registry() -> AsyncIterator[FakeRegistry]:
    registry = FakeRegistry()
    app = web.Application()
    app.router.add_post("/v1/agents/{namespace}/{name}/reports", registry.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    registry.url = f"http://127.0.0.1:{port}"
    try:
        yield registry
    finally:
        await runner.cleanup()
