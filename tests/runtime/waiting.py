"""Polling helpers: wait for a condition with a generous deadline (correctness, not speed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_until(predicate: Callable[[], object], within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached within {within}s")
        await asyncio.sleep(0.01)


def wait_until_sync(predicate: Callable[[], object], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {within}s")
        time.sleep(0.005)
