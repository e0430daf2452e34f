"""The leader forgets report batch ids older than `--report-batch-retention`.

A runtime retries a batch until the registry answers it, so its id only has to be remembered
for longer than any retry; kept forever, the ids grow by one row per report
(registry/retention.py). One prune every hour (or every tenth of a shorter retention) keeps
the table at about one retention's worth of reports."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from agent_registry.registry import RegistryService, RegistryUnavailable

logger = logging.getLogger(__name__)


def prune_interval(retention: float) -> float:
    """Seconds between two prunes: an hour, a tenth of a shorter retention, at least 1 s."""
    return max(1.0, min(3600.0, retention / 10))


async def run_batch_retention(registry: RegistryService, retention: float) -> None:
    """Prune every prune_interval(retention) seconds, until cancelled; 0 keeps every id."""
    if retention <= 0:
        return
    while True:
        await asyncio.sleep(prune_interval(retention))
        before = datetime.now(UTC) - timedelta(seconds=retention)
        try:
            forgotten = await registry.prune_report_batches(before)
        except RegistryUnavailable as exc:
            logger.warning(f"report batch retention: {exc}; trying again later")
            continue
        if forgotten:
            logger.info(
                f"report batch retention: forgot {forgotten} batch id(s) processed before "
                f"{before:%Y-%m-%dT%H:%M:%SZ}"
            )


__all__ = ["prune_interval", "run_batch_retention"]
