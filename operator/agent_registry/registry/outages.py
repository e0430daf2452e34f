"""Turning driver errors into registry errors: an outage (server down, connection lost,
pool exhausted, SQLite busy) becomes `RegistryUnavailable`, which callers retry; any other
database error becomes a plain `RegistryError`. No raw driver error leaves the registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import exc as sa_exc

from agent_registry.registry.errors import RegistryError, RegistryUnavailable


def _is_outage(error: BaseException) -> bool:
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
            # SQLite reports a missing table as OperationalError: that is a schema problem
            # (not migrated), retrying will not help.
            return "no such table" not in str(error.orig)
        return False
    return isinstance(error, sa_exc.TimeoutError | sa_exc.DisconnectionError | OSError)


@asynccontextmanager
async def translated_errors(operation: str) -> AsyncIterator[None]:
    try:
        yield
    except RegistryError:
        raise
    except (sa_exc.SQLAlchemyError, OSError) as error:
        if _is_outage(error):
            raise RegistryUnavailable(f"{operation}: database unavailable: {error}") from error
        raise RegistryError(f"{operation}: database error: {error}") from error


__all__ = ["translated_errors"]
