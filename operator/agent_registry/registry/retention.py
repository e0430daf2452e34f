"""Pruning the idempotency records of report batches (processed_report_batches).

Each counted batch leaves a row so that a retry of it counts once. A runtime retries a batch
only until the registry answers it (runtime/reporter.py), so a row has to outlive that retry,
not the registry: rows older than the retention are deleted. Without it the table grows by
one row per report forever (10,000 busy agents reporting every 5 s: about 170 million rows a
day). The deletes go in chunks, each its own short transaction, so that reports (and SQLite's
single writer) are never held up for long."""

from __future__ import annotations

import asyncio
from datetime import datetime

from sqlalchemy import delete, select

from agent_registry.registry.models import BATCHES
from agent_registry.registry.transactions import Database

_B = BATCHES


async def prune_processed_batches(db: Database, before: datetime, *, chunk: int = 5000) -> int:
    """Delete the batch records processed before `before`; how many were deleted."""
    total = 0
    while True:
        oldest = select(_B.c.batch_id).where(_B.c.processed_at < before).limit(chunk)
        async with db.write("prune_processed_batches") as conn:
            result = await conn.execute(
                delete(_B).where(_B.c.batch_id.in_(oldest.scalar_subquery()))
            )
        deleted = int(result.rowcount or 0)
        total += deleted
        if deleted < chunk:
            return total
        await asyncio.sleep(0)  # let the writers queued meanwhile go first


__all__ = ["prune_processed_batches"]
