"""The registry's database handle: its engine, one transaction per operation (outages
translated, see outages.py), row locks where the dialect has them, and on PostgreSQL the
record_tasks fast path (see pgfast.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agent_registry.registry.engine import WRITE_OPTION
from agent_registry.registry.outages import translated_errors
from agent_registry.registry.pgfast import PgFastPath


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._writer = engine.execution_options(**{WRITE_OPTION: True})
        self.dialect: str = engine.dialect.name
        # SQLite has one writer: writers of this process queue here, in order, instead of
        # all taking BEGIN IMMEDIATE at once and sleeping in SQLite's busy handler (which
        # backs off up to 100 ms per try: with 32 concurrent reconciles the writes spent
        # most of their time asleep). Other processes still meet the busy timeout.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.dialect == "sqlite" else None
        self.fast: PgFastPath | None = None
        if self.dialect == "postgresql":
            # As many hot-path connections as the engine's pool has (its own, see pgfast.py).
            size = getattr(engine.pool, "size", lambda: 10)()
            self.fast = PgFastPath(engine, size=max(int(size), 1))

    async def close(self) -> None:
        if self.fast is not None:
            await self.fast.close()
        await self.engine.dispose()

    @asynccontextmanager
    async def write(self, operation: str) -> AsyncIterator[AsyncConnection]:
        if self._write_lock is None:
            async with translated_errors(operation), self._writer.begin() as conn:
                yield conn
            return
        async with self._write_lock, translated_errors(operation), self._writer.begin() as conn:
            yield conn

    @asynccontextmanager
    async def read(self, operation: str) -> AsyncIterator[AsyncConnection]:
        async with translated_errors(operation), self.engine.connect() as conn:
            yield conn

    def for_update(self, stmt: Any) -> Any:
        # SQLite has no row locks: its write transactions (BEGIN IMMEDIATE) are serialized.
        return stmt.with_for_update() if self.dialect == "postgresql" else stmt


__all__ = ["Database"]
