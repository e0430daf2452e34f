"""The fleet-wide token bucket (pure apart from the clock; no timing asserted)."""

from __future__ import annotations

import asyncio

from agent_registry.controller.throttle import RateLimiter


def test_a_burst_is_spent_then_refused_until_refilled() -> None:
    bucket = RateLimiter(rate=0.001, burst=3)  # refills one token in 1,000 s: not in this test
    assert [bucket.try_acquire() for _ in range(4)] == [True, True, True, False]


def test_no_limit_at_rate_zero() -> None:
    bucket = RateLimiter(rate=0)
    assert bucket.unlimited
    assert all(bucket.try_acquire() for _ in range(10_000))


def test_acquire_waits_for_a_token_instead_of_refusing() -> None:
    bucket = RateLimiter(rate=1000.0, burst=1)

    async def take(n: int) -> int:
        for _ in range(n):
            await bucket.acquire()
        return n

    # Ten tokens from a bucket that holds one: every acquire returns, none is refused.
    assert asyncio.run(take(10)) == 10
