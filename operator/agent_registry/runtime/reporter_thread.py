"""Run an OutcomeReporter from synchronous code: its own event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import threading

from agent_registry.runtime.reporter import OutcomeReporter


class ReporterThread:
    """`start()` runs `reporter.run()` in a background thread; `stop()` flushes and joins.
    For agents without an asyncio loop of their own (with one, just create a task)."""

    def __init__(self, reporter: OutcomeReporter, *, flush_timeout: float = 5.0) -> None:
        self.reporter = reporter
        self.flush_timeout = flush_timeout
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="outcome-reporter", daemon=True)

    def start(self) -> ReporterThread:
        self._thread.start()
        self._started.wait(timeout=10)
        return self

    def _main(self) -> None:
        async def body() -> None:
            task = asyncio.create_task(self.reporter.run(flush_timeout=self.flush_timeout))
            await asyncio.sleep(0)  # let run() set up its loop hooks before start() returns
            self._started.set()
            await task

        asyncio.run(body())

    def stop(self, timeout: float | None = None) -> None:
        self.reporter.stop()
        self._thread.join(timeout if timeout is not None else self.flush_timeout + 10)

    def __enter__(self) -> ReporterThread:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
