"""Creating the async engine for a database URL, tuned per backend.

SQLite (the embedded default) needs care to be safe with several processes: WAL so readers
never block the writer, a busy timeout so a writer waits for the lock instead of failing with
"database is locked", and BEGIN IMMEDIATE for write transactions, so the write lock is taken
at the start (a deferred transaction that reads and then writes can fail with SQLITE_BUSY
without waiting, when another writer got in between).
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./agent-registry.db"
DATABASE_URL_ENV = "AGENTREG_DATABASE_URL"
SQLITE_BUSY_TIMEOUT_MS = 30_000

# Execution option marking a write transaction (SQLite: BEGIN IMMEDIATE).
WRITE_OPTION = "agentreg_write"


def default_database_url() -> str:
    return os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL


def async_url(url: str | URL) -> URL:
    """The async-driver form of a URL: postgresql:// -> psycopg 3, sqlite:// -> aiosqlite."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    raise ValueError(f"unsupported database {parsed.drivername!r}: use PostgreSQL or SQLite")


def sync_url(url: str | URL) -> URL:
    """The blocking-driver form (migrations run with it): psycopg 3 sync, or sqlite3."""
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite")
    return (
        parsed  # "postgresql+psycopg" is sync under create_engine, async under create_async_engine
    )


def is_sqlite(url: str | URL) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def tune_sqlite(sync_engine: Any, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> None:
    """Install the SQLite connection pragmas and BEGIN handling on a (sync) engine."""

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy (the "begin" hook below) emit BEGIN, not the sqlite3 module, which
        # would only ever emit a deferred BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL mode
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def create_engine_for(url: str | URL, **engine_kwargs: Any) -> AsyncEngine:
    parsed = async_url(url)
    if parsed.get_backend_name() == "sqlite":
        # ?timeout=SECONDS in the URL (sqlite3's own parameter) also sets the busy timeout.
        timeout = parsed.query.get("timeout")
        busy_ms = int(float(str(timeout)) * 1000) if timeout else SQLITE_BUSY_TIMEOUT_MS
        engine = create_async_engine(parsed, **engine_kwargs)
        tune_sqlite(engine.sync_engine, busy_ms)
        return engine
    engine_kwargs.setdefault("pool_size", 10)
    engine_kwargs.setdefault("max_overflow", 20)
    return create_async_engine(parsed, **engine_kwargs)


__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_DATABASE_URL",
    "WRITE_OPTION",
    "async_url",
    "create_engine_for",
    "default_database_url",
    "is_sqlite",
    "sync_url",
    "tune_sqlite",
]
