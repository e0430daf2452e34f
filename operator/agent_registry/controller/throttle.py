"""Fleet-wide rate limits: one token bucket per kind of write, shared by every code path that
makes it (a limit per object does not bound what 10,000 objects do together)."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """A token bucket: `rate` tokens per second, at most `burst` saved up.

    `acquire()` waits for a token (writes that must happen, such as status); `try_acquire()`
    takes one only if available (writes worth dropping under a flood, such as Events).
    A rate of 0 or less means no limit."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._tokens = self.burst
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_acquire(self) -> bool:
        if self.unlimited:
            return True
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self.unlimited:
            return
        async with self._lock:  # first come, first served
            if self.try_acquire():
                return
            # Not enough saved: wait until the bucket has refilled one token, then take it.
            await asyncio.sleep((1 - self._tokens) / self.rate)
            self._refill()
            self._tokens -= 1


__all__ = ["RateLimiter"]
