"""Polling helpers: wait for a condition with a generous deadline (correctness, not speed),
and a thread-safe collector of what a behavior source delivers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from agent_registry.runtime.bundle import BehaviorBundle


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


class Collector:
    """A source's listener that records every bundle it is given (from the source's thread)."""

    def __init__(self) -> None:
        self.bundles: list[BehaviorBundle] = []
        self.lock = threading.Lock()

    def __call__(self, bundle: BehaviorBundle) -> None:
        with self.lock:
            self.bundles.append(bundle)

    @property
    def revisions(self) -> list[int | None]:
        with self.lock:
            return [b.revision for b in self.bundles]
