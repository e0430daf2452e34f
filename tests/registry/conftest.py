"""Registry test fixtures: a RegistryService on a fresh migrated database per test, for each
backend (`database_url` is parametrized over PostgreSQL and SQLite)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agent_registry.registry import RegistryService


@pytest.fixture
async def registry(database_url: str) -> AsyncIterator[RegistryService]:
    service = RegistryService.from_url(database_url)
    try:
        yield service
    finally:
        await service.close()


@pytest.fixture
async def pg_registry(postgres_url: str) -> AsyncIterator[RegistryService]:
    service = RegistryService.from_url(postgres_url)
    try:
        yield service
    finally:
        await service.close()
