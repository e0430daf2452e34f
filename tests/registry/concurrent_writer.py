"""One writer process of the concurrency test (run as a script, not collected by pytest).

Usage: concurrent_writer.py URL AGENT_ID WORKER_NUMBER SINGLES BATCHES BATCH_SIZE
Prints "ready", waits for a line on stdin (so all writers start together), then records
SINGLES outcomes with record_task and BATCHES batches with record_tasks (each batch sent
twice: the repeat must count zero), from 4 coroutines at once. Prints a JSON line with what it sent.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from agent_registry.registry import RegistryService, RegistryUnavailable

T = TypeVar("T")


async def retrying(call: Callable[[], Awaitable[T]]) -> T:
    # SQLite under heavy contention may exceed the busy timeout; the contract is that this
    # surfaces as RegistryUnavailable and a retry succeeds.
    for _ in range(50):
        try:
            return await call()
        except RegistryUnavailable:
            await asyncio.sleep(0.05)
    raise RuntimeError("still unavailable after 50 tries")


async def main(url: str, agent_id: str, worker: int, singles: int, batches: int, size: int) -> None:
    registry = RegistryService.from_url(url)
    sent = {"tasks": 0, "successes": 0, "recorded": 0, "duplicates_counted": 0}

    async def single_writer(lane: int) -> None:
        for i in range(lane, singles, 4):
            success = (worker + i) % 3 != 0
            counted = await retrying(
                functools.partial(registry.record_task, agent_id, success, duration_ms=2.0)
            )
            sent["tasks"] += 1
            sent["successes"] += int(success)
            sent["recorded"] += int(counted)

    async def batch_writer(lane: int) -> None:
        for i in range(lane, batches, 4):
            outcomes = [((worker + i + j) % 4 != 0, 1.0) for j in range(size)]
            batch_id = uuid.uuid4()
            send = functools.partial(registry.record_tasks, agent_id, outcomes, batch_id=batch_id)
            first = await retrying(send)
            repeat = await retrying(send)
            sent["tasks"] += size
            sent["successes"] += sum(1 for ok, _ in outcomes if ok)
            sent["recorded"] += first.recorded
            sent["duplicates_counted"] += repeat.recorded

    await registry.get_by_agent_id(agent_id)  # connected and warm
    print("ready", flush=True)
    sys.stdin.readline()
    await asyncio.gather(
        *(single_writer(n) for n in range(4)), *(batch_writer(n) for n in range(4))
    )
    await registry.close()
    print(json.dumps(sent), flush=True)


if __name__ == "__main__":
    url, agent_id, worker, singles, batches, size = sys.argv[1:7]
    asyncio.run(main(url, agent_id, int(worker), int(singles), int(batches), int(size)))
