"""The leader's report batch retention: how often it prunes, and that it forgets old ids
(on a real SQLite registry; the pruning itself is tested on both backends in
tests/registry/test_record_tasks.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from agent_registry.controller.batch_retention import prune_interval, run_batch_retention
from agent_registry.registry import RegistryService

SCRIPT = "function on_task(t, ctx) return {accept = true, effort = 1} end"


def test_prune_interval_is_an_hour_or_a_tenth_of_a_shorter_retention() -> None:
    assert prune_interval(7 * 86400) == 3600
    assert prune_interval(600) == 60
    assert prune_interval(0.5) == 1


@pytest.fixture
async def registry(sqlite_url: str) -> AsyncIterator[RegistryService]:
    service = RegistryService.from_url(sqlite_url)
    await service.register_agent("ns/a", "dev")
    behavior = await service.create_behavior("b", "dev", SCRIPT)
    await service.assign_behavior("ns/a", behavior.id)
    try:
        yield service
    finally:
        await service.close()


async def counts_again(registry: RegistryService, batch: uuid.UUID, within: float) -> bool:
    """Whether a replay of `batch` is counted (its id forgotten) within `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if (await registry.record_tasks("ns/a", [(True, 1.0)], batch_id=batch)).recorded:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_ids_older_than_the_retention_are_forgotten(registry: RegistryService) -> None:
    batch = uuid.uuid4()
    assert (await registry.record_tasks("ns/a", [(True, 1.0)], batch_id=batch)).recorded == 1
    task = asyncio.create_task(run_batch_retention(registry, retention=0.5))
    try:
        assert await counts_again(registry, batch, within=10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_retention_zero_keeps_every_id(registry: RegistryService) -> None:
    batch = uuid.uuid4()
    assert (await registry.record_tasks("ns/a", [(True, 1.0)], batch_id=batch)).recorded == 1
    await asyncio.wait_for(run_batch_retention(registry, retention=0), timeout=1)
    assert not await counts_again(registry, batch, within=1.5)
