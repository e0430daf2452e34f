"""The fleet reconciler's queue and its parallel batches, with the reconcile itself replaced
(no registry, no apiserver: what is tested is which agents go into which batch and when the
callers waiting for them are answered)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from agent_registry.controller.fleet import FleetReconciler, StatusSink
from agent_registry.controller.indexes import Key, ObjectState
from agent_registry.controller.throttle import RateLimiter


def _agent(name: str, generation: int = 1) -> ObjectState:
    return ObjectState("Agent", "ns", name, f"uid-{name}", generation, {}, {})


class RecordingFleet(FleetReconciler):
    """Batches are recorded; each waits until the test lets it finish."""

    def __init__(self, **kwargs: Any) -> None:
        ctx = cast(Any, None)
        super().__init__(ctx, StatusSink(ctx, RateLimiter(0)), linger=0, **kwargs)
        self.batches_seen: list[list[Key]] = []
        self.running: set[Key] = set()
        self.overlaps: list[Key] = []
        self.release = asyncio.Event()

    async def reconcile_batch(self, batch: list[ObjectState]) -> dict[Key, BaseException]:
        keys = [(s.namespace, s.name) for s in batch]
        self.overlaps += [k for k in keys if k in self.running]
        self.running.update(keys)
        self.batches_seen.append(keys)
        await self.release.wait()
        self.running.difference_update(keys)
        return {}


async def _until(predicate: Any) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def test_two_batches_run_at_once_and_never_share_an_agent() -> None:
    fleet = RecordingFleet(batch_size=3, parallel=2)
    worker = asyncio.create_task(fleet.run())
    try:
        for i in range(8):
            fleet.offer(_agent(f"a{i}"))
        await _until(lambda: len(fleet.batches_seen) == 2)
        # Two batches hold six agents; queued again meanwhile, one waits for a later batch.
        assert fleet.offer(_agent("a0", generation=2))
        await asyncio.sleep(0)
        assert len(fleet.batches_seen) == 2, "a third batch waits for a free slot"
        fleet.release.set()
        await _until(lambda: fleet.idle())
        assert fleet.overlaps == []
        seen = [key for batch in fleet.batches_seen for key in batch]
        assert sorted(seen) == sorted([("ns", f"a{i}") for i in range(8)] + [("ns", "a0")])
        assert all(len(batch) <= 3 for batch in fleet.batches_seen)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)


async def test_sync_returns_once_its_agents_are_reconciled() -> None:
    fleet = RecordingFleet(batch_size=2, parallel=2)
    fleet.release.set()
    worker = asyncio.create_task(fleet.run())
    try:
        await asyncio.wait_for(fleet.sync([_agent(f"b{i}") for i in range(5)]), timeout=5)
        assert {key for batch in fleet.batches_seen for key in batch} == {
            ("ns", f"b{i}") for i in range(5)
        }
        # Reconciled with this fingerprint: the same state offered again is not queued.
        assert not fleet.offer(_agent("b1"))
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
