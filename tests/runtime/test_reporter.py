"""OutcomeReporter against a real local HTTP server (a fake registry endpoint: the protocol is
under test, see fake_registry.py): retry with the same batch id, counted once, overflow,
permanent rejections, flush on stop, token re-read."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent_registry.reports import LoadedBehavior, LoadFailure, TaskOutcome
from agent_registry.runtime.backoff import RETRY_AFTER_SPREAD, Backoff, after_server
from agent_registry.runtime.host import BehaviorHost
from agent_registry.runtime.reporter import AgentRef, OutcomeReporter
from agent_registry.runtime.reporter_thread import ReporterThread
from runtime.bundles import Script, identifying, make_bundle
from runtime.fake_registry import FakeRegistry, fake_registry
from runtime.waiting import wait_until

AGENT = AgentRef("team-a", "scout-1")
FAST = Backoff(base=0.01, factor=2.0, cap=0.05)


class Status:
    def __init__(self) -> None:
        self.loaded: LoadedBehavior | None = None
        self.load_failure: LoadFailure | None = None


def make_reporter(registry: FakeRegistry, **kwargs: object) -> OutcomeReporter:
    options: dict[str, object] = {
        "token_file": None,
        "interval": 0.05,
        "backoff": FAST,
        "rng": random.Random(1),
    }
    options.update(kwargs)
    return OutcomeReporter(AGENT, registry.url, **options)  # type: ignore[arg-type]


async def test_sends_outcomes_to_the_agents_report_url() -> None:
    async with fake_registry() as registry:
        reporter = make_reporter(registry)
        task = asyncio.create_task(reporter.run())
        reporter.record(True, 12.5)
        reporter.record(False, 3.0)
        reporter.record_cycle(2)
        await wait_until(lambda: registry.outcomes_counted == 2)
        reporter.stop()
        await task
    assert registry.paths == ["/v1/agents/team-a/scout-1/reports"]
    (report,) = registry.counted.values()
    assert [o.success for o in report.outcomes] == [True, False]
    assert report.outcomes[0].duration_ms == 12.5
    assert report.cycles == 2
    assert report.dropped == 0


@pytest.mark.parametrize("failures", [[503, 503, 500], ["drop", "drop"], [429, 408, 502]])
async def test_retries_keep_the_batch_id_and_the_batch_counts_once(
    failures: list[int | str],
) -> None:
    async with fake_registry() as registry:
        registry.script = list(failures)
        reporter = make_reporter(registry)
        for i in range(5):
            reporter.record(i % 2 == 0, float(i))
        task = asyncio.create_task(reporter.run())
        await wait_until(lambda: registry.outcomes_counted == 5)
        reporter.stop()
        await task
    assert len(registry.requests) == len(failures) + 1
    batch_ids = {request["batch_id"] for request in registry.requests}
    assert len(batch_ids) == 1, "a retried batch must keep its id"
    assert reporter.stats.retries == len(failures)
    assert reporter.stats.acked == 1
    assert reporter.stats.unavailable == failures.count(503)
    assert reporter.stats.failed == failures.count("drop")


async def test_an_answer_lost_after_counting_is_retried_and_counted_once() -> None:
    """The registry counted the batch but its answer never arrived: the reporter cannot tell
    that from a failure, resends the same batch_id, and the registry says duplicate."""
    async with fake_registry() as registry:
        registry.script = ["count-then-drop"]
        reporter = make_reporter(registry)
        reporter.record(True, 1.0)
        reporter.record(False, 2.0)
        task = asyncio.create_task(reporter.run())
        await wait_until(lambda: reporter.stats.acked == 1)
        reporter.stop()
        await task
    assert len(registry.requests) == 2
    assert registry.requests[0]["batch_id"] == registry.requests[1]["batch_id"]
    assert registry.outcomes_counted == 2
    assert reporter.stats.duplicates == 1


async def test_retry_after_is_honoured() -> None:
    async with fake_registry() as registry:
        registry.script = [429]
        registry.retry_after = "0.3"
        reporter = make_reporter(registry, backoff=Backoff(base=0.001, cap=5.0))
        reporter.record(True, 1.0)
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(reporter.run())
        await wait_until(lambda: len(registry.requests) == 1)
        first_at = loop.time()
        await wait_until(lambda: len(registry.requests) == 2)
        waited = loop.time() - first_at
        reporter.stop()
        await task
    # Not a timing assertion on speed: a lower bound the client must respect.
    assert waited >= 0.25


def test_retry_after_is_a_floor_with_a_spread() -> None:
    """Agents told the same Retry-After at the same moment do not all retry in step."""
    rng = random.Random(7)
    delays = [after_server(5.0, rng) for _ in range(200)]
    assert all(5.0 <= d <= 5.0 * (1 + RETRY_AFTER_SPREAD) for d in delays)
    assert max(delays) - min(delays) > 0.5  # spread over most of the second allowed


async def test_permanent_rejection_drops_the_batch_and_goes_on() -> None:
    async with fake_registry() as registry:
        registry.script = [403]
        reporter = make_reporter(registry)
        reporter.record(True, 1.0)
        task = asyncio.create_task(reporter.run())
        await wait_until(lambda: reporter.stats.rejected == 1)
        reporter.record(False, 2.0)
        await wait_until(lambda: registry.outcomes_counted == 1)
        reporter.stop()
        await task
    (report,) = registry.counted.values()
    assert [o.success for o in report.outcomes] == [False]
    assert len({r["batch_id"] for r in registry.requests}) == 2


async def test_overflow_drops_the_oldest_and_reports_the_drop_count() -> None:
    async with fake_registry() as registry:
        registry.script = [503] * 3
        reporter = make_reporter(registry, capacity=10, batch_size=100)
        for i in range(25):
            reporter.record(True, float(i))  # never blocks, although nothing is sent yet
        assert len(reporter.buffer) == 10
        assert reporter.buffer.dropped == 15
        task = asyncio.create_task(reporter.run())
        await wait_until(lambda: registry.outcomes_counted == 10)
        reporter.stop()
        await task
    (report,) = registry.counted.values()
    assert [o.duration_ms for o in report.outcomes] == [float(i) for i in range(15, 25)]
    assert report.dropped == 15
    assert reporter.buffer.peak == 10, "the fullest the buffer got: its capacity"
    assert len(reporter.buffer) == 0


async def test_recording_while_the_registry_is_down_never_blocks() -> None:
    async with fake_registry() as registry:
        registry.script = ["drop"] * 1000
        reporter = make_reporter(registry, capacity=100, batch_size=10)
        reporter.record(True, 1.0)
        task = asyncio.create_task(reporter.run())
        await wait_until(lambda: len(registry.requests) >= 2)

        def produce() -> int:
            for i in range(5000):
                reporter.record(i % 3 == 0, 1.0)
            return 5000

        # From another thread, as an agent's worker would: completes although every send fails.
        produced = await asyncio.wait_for(asyncio.to_thread(produce), timeout=30)
        assert produced == 5000
        assert len(reporter.buffer) <= 100
        assert reporter.buffer.dropped >= 5000 - 100
        registry.script.clear()
        await wait_until(lambda: len(reporter.buffer) == 0 and registry.outcomes_counted > 0)
        reporter.stop()
        await task
    assert registry.counted, "reporting resumes once the registry is back"
    assert max(r.dropped for r in registry.counted.values()) == reporter.buffer.dropped


async def test_stop_flushes_what_is_left() -> None:
    async with fake_registry() as registry:
        reporter = make_reporter(registry, interval=3600.0, batch_size=7)
        task = asyncio.create_task(reporter.run())
        await asyncio.sleep(0.05)
        for i in range(20):
            reporter.record(True, float(i))
        reporter.stop()
        await asyncio.wait_for(task, timeout=10)
    assert registry.outcomes_counted == 20
    assert len(registry.counted) == 3  # batches of at most 7


async def test_stop_gives_up_after_the_flush_deadline() -> None:
    async with fake_registry() as registry:
        registry.script = [503] * 10_000
        reporter = make_reporter(registry, interval=3600.0)
        task = asyncio.create_task(reporter.run(flush_timeout=0.5))
        await asyncio.sleep(0.05)
        reporter.record(True, 1.0)
        reporter.stop()
        await asyncio.wait_for(task, timeout=10)
    assert registry.outcomes_counted == 0
    assert len(registry.requests) >= 1


async def test_load_confirmation_is_sent_once_until_it_changes() -> None:
    sha = "a" * 64
    async with fake_registry() as registry:
        status = Status()
        reporter = make_reporter(registry, status=status)
        task = asyncio.create_task(reporter.run())
        status.loaded = LoadedBehavior(sha256=sha, loaded_at=datetime.now(UTC), revision=3)
        reporter.wake()
        await wait_until(lambda: len(registry.counted) == 1)
        await asyncio.sleep(0.3)  # several intervals: nothing new, nothing sent
        assert len(registry.requests) == 1
        status.load_failure = LoadFailure(
            sha256="b" * 64, error="boom", line=2, failed_at=datetime.now(UTC)
        )
        reporter.wake()
        await wait_until(lambda: len(registry.counted) == 2)
        reporter.stop()
        await task
    first, second = registry.counted.values()
    assert first.loaded is not None
    assert first.loaded.sha256 == sha
    assert first.loaded.revision == 3
    assert second.load_failure is not None
    assert second.load_failure.line == 2
    assert second.loaded == first.loaded  # still running the last good script


async def test_token_file_is_reread_on_every_send(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    async with fake_registry() as registry:
        reporter = make_reporter(registry, token_file=token)
        task = asyncio.create_task(reporter.run())
        reporter.record(True, 1.0)
        await wait_until(lambda: len(registry.counted) == 1)
        token.write_text("rotated-token")
        reporter.record(True, 1.0)
        await wait_until(lambda: len(registry.counted) == 2)
        reporter.stop()
        await task
    assert registry.tokens == ["first-token", "rotated-token"]


async def test_reporter_thread_for_synchronous_agents() -> None:
    async with fake_registry() as registry:
        reporter = make_reporter(registry, interval=3600.0)

        def agent() -> None:
            with ReporterThread(reporter):
                for i in range(10):
                    reporter.record(True, float(i))
            # leaving the block flushed everything

        await asyncio.to_thread(agent)
    assert registry.outcomes_counted == 10


async def test_every_outcome_carries_the_script_that_ran_it_and_loaded_lists_the_scripts() -> None:
    stable = Script(identifying("stable"), weight=0.7, name="stable", revision=1)
    canary = Script(identifying("canary"), weight=0.3, name="stable", revision=2)
    host = BehaviorHost(rng=random.Random(23))
    host.load(make_bundle(stable, canary))
    ran: list[str] = []
    async with fake_registry() as registry:
        reporter = make_reporter(registry, status=host)
        task = asyncio.create_task(reporter.run())
        for i in range(200):
            run = host.run_task({"id": i})
            ran.append(run.sha256)
            reporter.record(run.ok, 1.0, behavior_sha256=run.sha256)
        await wait_until(lambda: registry.outcomes_counted == 200)
        reporter.stop()
        await task
    outcomes = [o for r in registry.counted.values() for o in r.outcomes]
    assert [o.behavior_sha256 for o in outcomes] == ran
    assert set(ran) == {stable.sha256, canary.sha256}
    # On the wire too (not only in the parsed model): an older registry reads the same JSON.
    assert all(o["behavior_sha256"] in ran for req in registry.requests for o in req["outcomes"])
    loaded = next(iter(registry.counted.values())).loaded
    assert loaded is not None
    assert loaded.sha256 == stable.sha256
    assert [(s.sha256, s.revision) for s in loaded.scripts] == [
        (stable.sha256, 1),
        (canary.sha256, 2),
    ]
    assert [s.weight for s in loaded.scripts] == pytest.approx([0.7, 0.3])


async def test_an_outcome_recorded_without_a_sha_is_credited_to_the_only_script() -> None:
    only = Script(identifying("only"))
    host = BehaviorHost()
    async with fake_registry() as registry:
        reporter = make_reporter(registry, status=host)
        reporter.record(True, 1.0)  # before any load: nothing to credit
        host.load(make_bundle(only))
        reporter.record(True, 2.0)
        reporter.record_outcome(TaskOutcome(success=False))
        host.load(make_bundle(only, Script(identifying("other"), 0.5, "other")))
        reporter.record(True, 3.0)  # two scripts run: unknown, left to the registry
        task = asyncio.create_task(reporter.run())
        await wait_until(lambda: registry.outcomes_counted == 4)
        reporter.stop()
        await task
    outcomes = [o for r in registry.counted.values() for o in r.outcomes]
    assert [o.behavior_sha256 for o in outcomes] == [None, only.sha256, only.sha256, None]
