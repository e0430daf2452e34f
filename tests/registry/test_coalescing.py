"""Group commit of record_task (no database: a fake write function records the batches)."""

from __future__ import annotations

import asyncio

import pytest

from agent_registry.registry.coalescing import Coalescer


class Writes:
    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.fail_on = fail_on

    async def __call__(self, key: str, items: list[int]) -> None:
        await asyncio.sleep(0.01)  # the write is in flight: others queue meanwhile
        self.batches.append((key, list(items)))
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError("write failed")


async def test_sequential_calls_write_one_by_one() -> None:
    writes = Writes()
    coalescer = Coalescer(writes)
    for i in range(3):
        await coalescer.submit("a", i)
    assert writes.batches == [("a", [0]), ("a", [1]), ("a", [2])]


async def test_concurrent_calls_are_merged_and_each_written_once() -> None:
    writes = Writes()
    coalescer = Coalescer(writes)
    await asyncio.gather(*(coalescer.submit("a", i) for i in range(50)))
    written = [item for _, items in writes.batches for item in items]
    assert sorted(written) == list(range(50))
    assert len(writes.batches) < 10


async def test_every_caller_gets_the_result_of_the_write_that_carried_its_item() -> None:
    async def write(key: str, items: list[int]) -> tuple[int, ...]:
        await asyncio.sleep(0.01)
        return tuple(items)

    coalescer: Coalescer[int, tuple[int, ...]] = Coalescer(write)
    results = await asyncio.gather(*(coalescer.submit("a", i) for i in range(20)))
    assert len(set(results)) < 20, "some writes carried several items"
    for i, carried in enumerate(results):
        assert i in carried


async def test_keys_are_independent() -> None:
    writes = Writes()
    coalescer = Coalescer(writes)
    await asyncio.gather(coalescer.submit("a", 1), coalescer.submit("b", 2))
    assert sorted(writes.batches) == [("a", [1]), ("b", [2])]


async def test_a_failed_write_fails_every_caller_in_it_only() -> None:
    writes = Writes(fail_on=3)
    coalescer = Coalescer(writes)
    results = await asyncio.gather(
        *(coalescer.submit("a", i) for i in range(6)), return_exceptions=True
    )
    failed_batch = next(items for _, items in writes.batches if 3 in items)
    for i, result in enumerate(results):
        if i in failed_batch:
            assert isinstance(result, RuntimeError)
        else:
            assert result is None
    # The queue recovers: later calls work.
    await coalescer.submit("a", 99)
    assert writes.batches[-1] == ("a", [99])


async def test_a_cancelled_waiter_is_not_written() -> None:
    writes = Writes()
    coalescer = Coalescer(writes)
    leader = asyncio.create_task(coalescer.submit("a", 1))
    await asyncio.sleep(0)  # the leader is writing
    waiter = asyncio.create_task(coalescer.submit("a", 2))
    other = asyncio.create_task(coalescer.submit("a", 3))
    await asyncio.sleep(0)
    waiter.cancel()
    await leader
    await other
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert writes.batches == [("a", [1]), ("a", [3])]
