"""The TTL cache behind TokenReview/Agent caching: expiry and bounded size."""

from __future__ import annotations

import pytest

from agent_registry.api.cache import TTLCache


class Clock:
    """A hand-advanced clock: the cache's time seam, so expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entry_expires_after_its_ttl() -> None:
    clock = Clock()
    cache: TTLCache[str, int | None] = TTLCache(10, clock=clock)
    cache.put("a", 1, 30)
    cache.put("b", None, 5)  # a cached negative answer
    clock.now += 4.9
    assert cache.get("a") == (True, 1)
    assert cache.get("b") == (True, None)
    clock.now += 0.2
    assert cache.get("b") == (False, None)
    clock.now += 30
    assert cache.get("a") == (False, None)
    assert len(cache) == 0


def test_size_is_bounded_least_recently_used_first() -> None:
    cache: TTLCache[int, int] = TTLCache(3, clock=Clock())
    for key in range(3):
        cache.put(key, key, 60)
    assert cache.get(0) == (True, 0)  # 0 is now the most recently used
    cache.put(3, 3, 60)
    assert len(cache) == 3
    assert cache.get(1) == (False, None)
    assert cache.get(0) == (True, 0)


def test_zero_ttl_is_not_stored_and_size_must_be_positive() -> None:
    cache: TTLCache[str, int] = TTLCache(1, clock=Clock())
    cache.put("a", 1, 0)
    assert cache.get("a") == (False, None)
    with pytest.raises(ValueError, match="max_entries"):
        TTLCache(0)
