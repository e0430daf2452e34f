"""A database outage surfaces as RegistryUnavailable (callers retry), never as a raw driver
error, and the service recovers when the database is back."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent_registry.registry import RegistryError, RegistryService, RegistryUnavailable

T = TypeVar("T")


async def assigned(registry: RegistryService, agent_id: str) -> None:
    """A registered agent with an assignment (its outcomes count)."""
    await registry.register_agent(agent_id, "dev")
    behavior = await registry.create_behavior("b", "dev", "function on_task() end")
    await registry.assign_behavior(agent_id, behavior.id)


async def eventually(call: Callable[[], Awaitable[T]], attempts: int = 5) -> T:
    """Pooled connections from before the outage fail once each; a retry gets a new one."""
    for _ in range(attempts - 1):
        try:
            return await call()
        except RegistryUnavailable:
            continue
    return await call()


async def test_postgres_outage_and_recovery(postgres_server: Any, postgres_url: str) -> None:
    registry = RegistryService.from_url(postgres_url)
    try:
        await assigned(registry, "ns/a")
        await registry.record_task("ns/a", True)  # the hot path has a live connection now
        postgres_server.stop()
        try:
            with pytest.raises(RegistryUnavailable):
                await registry.get_by_agent_id("ns/a")
            with pytest.raises(RegistryUnavailable):
                await registry.record_task("ns/a", True)
            with pytest.raises(RegistryUnavailable):
                await registry.record_tasks("ns/a", [(True, 1.0)], batch_id=uuid.uuid4())
            with pytest.raises(RegistryUnavailable):
                await registry.register_agent("ns/b", "dev")
        finally:
            postgres_server.start()
        await eventually(lambda: registry.record_task("ns/a", False))
        agent = await eventually(lambda: registry.get_by_agent_id("ns/a"))
        assert (agent.tasks_completed, agent.successes) == (2, 1)
    finally:
        await registry.close()


async def test_sqlite_locked_longer_than_the_busy_timeout(sqlite_url: str) -> None:
    path = sqlite_url.split("///", 1)[1]
    registry = RegistryService.from_url(f"{sqlite_url}?timeout=0.2")
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        await assigned(registry, "ns/a")
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(RegistryUnavailable) as caught:
            await registry.record_task("ns/a", True)
        assert isinstance(caught.value, RegistryError)
        assert caught.value.__cause__ is not None
        blocker.execute("ROLLBACK")
        await registry.record_task("ns/a", True)
        assert (await registry.get_by_agent_id("ns/a")).tasks_completed == 1
    finally:
        blocker.close()
        await registry.close()


async def test_unmigrated_database_is_an_error_not_an_outage(tmp_path: Path) -> None:
    registry = RegistryService.from_url(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(RegistryError) as caught:
            await registry.list_active_agents()
        assert not isinstance(caught.value, RegistryUnavailable)
    finally:
        await registry.close()


async def test_every_hot_path_connection_is_renewed_after_a_restart(
    postgres_server: Any, postgres_url: str
) -> None:
    """After an outage, one failed call is enough: the hot path drops all its idle
    connections, not only the one that failed."""
    registry = RegistryService.from_url(postgres_url, pool_size=4)
    try:
        await assigned(registry, "ns/a")
        # Four concurrent writes: four hot-path connections, all idle afterwards.
        await asyncio.gather(
            *(registry.record_tasks("ns/a", [(True, 1.0)], batch_id=uuid.uuid4()) for _ in range(4))
        )
        postgres_server.stop()
        postgres_server.start()
        with pytest.raises(RegistryUnavailable):
            await registry.record_tasks("ns/a", [(True, 1.0)])
        assert (await registry.record_tasks("ns/a", [(True, 1.0)])).recorded == 1
    finally:
        await registry.close()
