"""Sidecar: one agent's runtime as a process (what `agentreg runtime` runs).

Wires a behavior source into a BehaviorHost, the host's loads into the reporter (a reload
is reported at once), the local HTTP API, and optionally the simulated workload. Shutdown
order matters: stop taking work (simulation, HTTP), stop the source, then flush the reporter
so the last outcomes and the last load confirmation reach the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from agent_registry.runtime.host import BehaviorHost, TaskRun
from agent_registry.runtime.http_api import create_app
from agent_registry.runtime.reporter import OutcomeReporter
from agent_registry.runtime.simulate import simulate
from agent_registry.runtime.source import BehaviorSource

log = logging.getLogger(__name__)


class Sidecar:
    def __init__(
        self,
        host: BehaviorHost,
        source: BehaviorSource,
        reporter: OutcomeReporter,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        simulate_rate: float | None = None,
        flush_timeout: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self.source = source
        self.reporter = reporter
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.simulate_rate = simulate_rate
        self.flush_timeout = flush_timeout
        self.simulated = 0
        self._rng = rng or random.Random()
        # One thread runs all Lua: the host serializes calls anyway, and a sandbox then
        # always runs on the same OS thread.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="behavior")
        self._runner: web.AppRunner | None = None
        self._reporter_task: asyncio.Task[None] | None = None
        self._simulate_task: asyncio.Task[int] | None = None
        self.port: int | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.host.subscribe(lambda _event: self.reporter.wake())
        self._reporter_task = asyncio.create_task(
            self.reporter.run(flush_timeout=self.flush_timeout), name="reporter"
        )
        # start() reads the directory / lists the ConfigMap: blocking I/O, off the loop.
        await loop.run_in_executor(None, self.source.start, self.host.load)
        app = create_app(self.host, self.reporter, self._executor)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.listen_host, self.listen_port)
        await site.start()
        self.port = _bound_port(site)
        log.info(
            "agent %s runtime listening on %s:%s", self.reporter.agent, self.listen_host, self.port
        )
        if self.simulate_rate:
            self._simulate_task = asyncio.create_task(self._simulate(), name="simulate")

    async def _simulate(self) -> int:
        loop = asyncio.get_running_loop()

        async def decide(task: dict[str, Any]) -> TaskRun:
            return await loop.run_in_executor(self._executor, self.host.run_task, task)

        def record(success: bool, duration_ms: float, sha256: str | None) -> None:
            self.simulated += 1
            self.reporter.record(success, duration_ms, behavior_sha256=sha256)
            self.reporter.record_cycle()

        assert self.simulate_rate is not None
        return await simulate(decide, record, self.simulate_rate, rng=self._rng)

    async def stop(self) -> None:
        if self._simulate_task is not None:
            self._simulate_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._simulate_task
        if self._runner is not None:
            await self._runner.cleanup()
        await asyncio.get_running_loop().run_in_executor(None, self.source.stop)
        self.reporter.stop()
        if self._reporter_task is not None:
            await self._reporter_task
        self._executor.shutdown(wait=True)
        self.host.close()

    async def run_until_signalled(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
            log.info("signal received; flushing and stopping")
        finally:
            await self.stop()


def _bound_port(site: web.TCPSite) -> int | None:
    server = site._server  # aiohttp exposes no public accessor for the bound socket
    sockets = getattr(server, "sockets", None) or []
    for sock in sockets:
        return int(sock.getsockname()[1])
    return None
