"""OutcomeReporter: sends task outcomes and load confirmations to the registry API.

The agent's work calls `record()` (thread-safe, O(1), never waits on the network), with the
sha256 of the script that ran the task (several may run: a canary, experiment arms). `run()`
is an asyncio task that every `interval` seconds, or at once when woken (a reload, a full
batch), turns the buffer into OutcomeReport batches and POSTs them to
`{registry_url}/v1/agents/{ns}/{name}/reports`.

A batch, once built, is sent until the registry answers it: connection errors, timeouts,
408, 429 and 5xx are retried with exponential backoff and jitter (Retry-After honoured), with
the same batch_id, so the registry counts it once however often it arrives. Other 4xx answers
mean the batch can never be accepted: it is dropped and logged. While a batch is retried,
new outcomes wait in the bounded buffer, which drops its oldest on overflow and counts them
(`dropped` in every report). `stop()` flushes what is left, within a deadline.

The ServiceAccount token file is re-read on every send: projected tokens rotate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import aiohttp

from agent_registry.reports import (
    LoadedBehavior,
    LoadFailure,
    OutcomeReport,
    ReportAccepted,
    TaskOutcome,
)
from agent_registry.runtime.backoff import Backoff, after_server, retry_after_seconds
from agent_registry.runtime.outcome_buffer import OutcomeBuffer

log = logging.getLogger(__name__)

DEFAULT_TOKEN_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
_RETRYABLE_4XX = {408, 429}


@dataclass(frozen=True)
class AgentRef:
    namespace: str
    name: str

    @classmethod
    def parse(cls, value: str) -> AgentRef:
        namespace, sep, name = value.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise ValueError(f"agent must be NAMESPACE/NAME, not {value!r}")
        return cls(namespace, name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class LoadStatus(Protocol):
    """What the reporter confirms: BehaviorHost fits."""

    @property
    def loaded(self) -> LoadedBehavior | None: ...

    @property
    def load_failure(self) -> LoadFailure | None: ...


@dataclass
class ReporterStats:
    attempts: int = 0  # POSTs made, retries included
    acked: int = 0  # batches the registry accepted (duplicates included)
    duplicates: int = 0  # accepted batches the registry had already counted
    rejected: int = 0  # batches dropped on a permanent 4xx
    retries: int = 0
    unavailable: int = 0  # answers 503 (the registry's database is down, or not ready yet)
    failed: int = 0  # POSTs with no answer (connection refused or lost, timeout)
    outcomes_sent: int = 0  # outcomes in acked batches


class OutcomeReporter:
    def __init__(
        self,
        agent: AgentRef,
        registry_url: str,
        *,
        token_file: Path | None = DEFAULT_TOKEN_FILE,
        status: LoadStatus | None = None,
        capacity: int = 10_000,
        batch_size: int = 1_000,
        interval: float = 5.0,
        backoff: Backoff | None = None,
        request_timeout: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self.agent = agent
        self.url = f"{registry_url.rstrip('/')}/v1/agents/{agent.namespace}/{agent.name}/reports"
        self.token_file = token_file
        self.status = status
        self.buffer = OutcomeBuffer(capacity)
        self.batch_size = batch_size
        self.interval = interval
        self.backoff = backoff or Backoff()
        self.request_timeout = request_timeout
        self.stats = ReporterStats()
        self._rng = rng or random.Random()
        self._inflight: OutcomeReport | None = None
        # Nothing loaded, nothing dropped: nothing to say until that changes.
        self._acked_status: tuple[object, ...] = (None, None, 0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._token_warned = False
        self._unstamped_warned = False

    # -- the agent's side (any thread) ---------------------------------------------------

    def record(
        self,
        success: bool,
        duration_ms: float | None = None,
        finished_at: datetime | None = None,
        *,
        behavior_sha256: str | None = None,
    ) -> None:
        """Record one task's outcome. Never blocks on I/O. `behavior_sha256` is the script
        that ran the task (`BehaviorHost.run_task(...).sha256`); without it, see
        `record_outcome`."""
        self.record_outcome(
            TaskOutcome(
                success=success,
                duration_ms=duration_ms,
                finished_at=finished_at or datetime.now(UTC),
                behavior_sha256=behavior_sha256 or self._only_script(),
            )
        )

    def record_outcome(self, outcome: TaskOutcome) -> None:
        """Buffer `outcome`. One without behavior_sha256 is credited to the loaded script
        when only one runs; with several the script is unknown here, so it stays unset (the
        registry then credits the primary) and that is logged once."""
        if outcome.behavior_sha256 is None:
            sha = self._only_script()
            if sha is not None:
                outcome = outcome.model_copy(update={"behavior_sha256": sha})
        self.buffer.add(outcome)
        if len(self.buffer) == self.batch_size:
            self.wake()  # a full batch is ready: do not wait for the interval

    def _only_script(self) -> str | None:
        loaded = self.status.loaded if self.status is not None else None
        if loaded is None:
            return None
        if not loaded.scripts:
            return loaded.sha256
        if not self._unstamped_warned:
            self._unstamped_warned = True
            log.warning(
                "outcomes recorded without behavior_sha256 while %d scripts run: the registry "
                "credits them to the primary; pass the sha256 of the script that ran the task",
                len(loaded.scripts),
            )
        return None

    def record_cycle(self, count: int = 1) -> None:
        self.buffer.add_cycles(count)

    def wake(self) -> None:
        """Send now (thread-safe): e.g. after a reload, so the registry hears at once."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed in between
            loop.call_soon_threadsafe(wake.set)

    # -- the sending side (one asyncio task) ---------------------------------------------

    async def run(self, *, flush_timeout: float = 5.0) -> None:
        """Report until `stop()`, then flush within `flush_timeout` seconds."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._stopping.is_set():
                await self._wait_for_work()
                self._wake.clear()
                if self._stopping.is_set():
                    break
                await self._send_pending(session, deadline=None)
            flushed = await self._send_pending(session, deadline=self._loop.time() + flush_timeout)
            if not flushed:
                log.warning(
                    "reporter stopped with %d outcomes unsent (registry unreachable)",
                    len(self.buffer) + (len(self._inflight.outcomes) if self._inflight else 0),
                )

    def stop(self) -> None:
        """Ask `run()` to flush and return (thread-safe)."""
        loop, stopping = self._loop, self._stopping
        if loop is None or stopping is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(stopping.set)
        self.wake()

    async def _wait_for_work(self) -> None:
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=self.interval)

    async def _send_pending(
        self, session: aiohttp.ClientSession, *, deadline: float | None
    ) -> bool:
        """Send batches until nothing is left; False if one could not be delivered (yet)."""
        while True:
            if self._inflight is None:
                self._inflight = self._next_batch()
                if self._inflight is None:
                    return True
            if not await self._deliver(session, self._inflight, deadline=deadline):
                return False
            self._inflight = None

    def _status_now(self) -> tuple[LoadedBehavior | None, LoadFailure | None]:
        if self.status is None:
            return None, None
        return self.status.loaded, self.status.load_failure

    def _next_batch(self) -> OutcomeReport | None:
        outcomes, cycles = self.buffer.take(self.batch_size)
        loaded, failure = self._status_now()
        status_key = (loaded, failure, self.buffer.dropped)
        if not outcomes and not cycles and status_key == self._acked_status:
            return None  # nothing new to say
        return OutcomeReport(
            batch_id=uuid.uuid4(),
            outcomes=outcomes,
            cycles=cycles,
            loaded=loaded,
            load_failure=failure,
            dropped=self.buffer.dropped,
        )

    async def _deliver(
        self, session: aiohttp.ClientSession, batch: OutcomeReport, *, deadline: float | None
    ) -> bool:
        """POST `batch` until answered; True once acked or permanently rejected."""
        assert self._loop is not None
        attempt = 0
        body = batch.model_dump_json()
        while True:
            verdict, retry_after = await self._post(session, body, batch)
            if verdict != "retry":
                if verdict == "acked":
                    self._acked_status = (batch.loaded, batch.load_failure, batch.dropped)
                return True
            delay = (
                after_server(retry_after, self._rng)
                if retry_after is not None
                else self.backoff.delay(attempt, self._rng)
            )
            attempt += 1
            self.stats.retries += 1
            if deadline is not None:
                if self._loop.time() + delay > deadline:
                    return False
                await asyncio.sleep(delay)
            elif await self._sleep_unless_stopping(delay):
                return False  # stopping: the flush takes over this batch, with a deadline

    async def _sleep_unless_stopping(self, delay: float) -> bool:
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except TimeoutError:
            return False
        return True

    async def _post(
        self, session: aiohttp.ClientSession, body: str, batch: OutcomeReport
    ) -> tuple[str, float | None]:
        headers = {"Content-Type": "application/json"}
        token = self._read_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.stats.attempts += 1
        try:
            async with session.post(self.url, data=body, headers=headers) as response:
                text = await response.text()
                status = response.status
                retry_after = retry_after_seconds(
                    response.headers.get("Retry-After"), cap=self.backoff.cap
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.stats.failed += 1
            log.warning("report %s to %s failed: %s; will retry", batch.batch_id, self.url, exc)
            return "retry", None
        if 200 <= status < 300:
            self.stats.acked += 1
            self.stats.outcomes_sent += len(batch.outcomes)
            try:
                accepted = ReportAccepted.model_validate_json(text)
            except ValueError:
                accepted = None
            if accepted is not None and accepted.duplicate:
                self.stats.duplicates += 1
            return "acked", None
        if status >= 500 or status in _RETRYABLE_4XX:
            if status == 503:
                self.stats.unavailable += 1
            log.warning("registry answered %d to report %s; will retry", status, batch.batch_id)
            return "retry", retry_after
        self.stats.rejected += 1
        log.error(
            "registry refused report %s (%d outcomes) with %d: %s",
            batch.batch_id,
            len(batch.outcomes),
            status,
            text[:500],
        )
        return "rejected", None

    def _read_token(self) -> str | None:
        if self.token_file is None:
            return None
        try:
            return self.token_file.read_text().strip() or None
        except OSError as exc:
            if not self._token_warned:
                log.warning("no token at %s (%s); reporting without one", self.token_file, exc)
                self._token_warned = True
            return None
