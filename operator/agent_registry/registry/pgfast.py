"""The PostgreSQL write path of record_tasks, below SQLAlchemy.

SQLAlchemy's async layer costs about a millisecond of CPU per statement here (pool checkout
through greenlets, cache-key generation of a large statement, result wrapping): more than
the database needs for the hot-row UPDATE itself. This module runs the one statement of
hotpath.py (SQL text for psycopg: %(name)s placeholders, explicit casts) on its own small
set of psycopg 3 connections in autocommit mode, with server-side prepared statements.
Nothing else uses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_registry.registry.errors import RegistryError, RegistryUnavailable


class PgFastPath:
    def __init__(self, engine: AsyncEngine, *, size: int) -> None:
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        self._args: tuple[Any, ...] = tuple(args)
        self._kwargs: dict[str, Any] = dict(kwargs)
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is None:
                try:
                    conn = await psycopg.AsyncConnection.connect(
                        *self._args, **self._kwargs, autocommit=True
                    )
                except psycopg.OperationalError as error:
                    raise RegistryUnavailable(f"record_tasks: cannot connect: {error}") from error
            healthy = False
            try:
                yield conn
                healthy = True
            finally:
                if healthy and not self._closed and not conn.closed:
                    self._idle.append(conn)
                else:
                    await conn.close()

    async def fetch_one(self, sql: str, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Run one statement (autocommit: it is its own transaction); its first row."""
        try:
            async with self._connection() as conn:
                cursor = await conn.execute(sql, params, prepare=True)
                return await cursor.fetchone()
        except psycopg.OperationalError as error:
            # The server went away or restarted: the idle connections are as dead as this one.
            await self._discard_idle()
            raise RegistryUnavailable(f"record_tasks: database unavailable: {error}") from error
        except psycopg.Error as error:
            raise RegistryError(f"record_tasks: database error: {error}") from error

    async def _discard_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    async def close(self) -> None:
        self._closed = True
        await self._discard_idle()


__all__ = ["PgFastPath"]
