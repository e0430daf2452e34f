"""Retry delays: exponential backoff with jitter (pure)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delay before retry number `attempt` (0-based): half of min(cap, base * factor**attempt)
    plus a uniform random part up to the other half ("equal jitter"). The random half spreads
    a fleet of agents that lost the registry at the same moment; the fixed half keeps each
    one from retrying in a tight loop."""

    base: float = 0.2
    factor: float = 2.0
    cap: float = 30.0

    def ceiling(self, attempt: int) -> float:
        # min() before the power would overflow for very long outages.
        exponent = min(attempt, 64)
        return float(min(self.cap, self.base * self.factor**exponent))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = self.ceiling(attempt)
        draw = (rng or random).random()
        return ceiling / 2 + draw * ceiling / 2


# A server's Retry-After is a floor; up to this share of it more spreads the agents it told
# the same thing at the same moment (a registry whose database came back), which would
# otherwise all retry in step.
RETRY_AFTER_SPREAD = 0.2


def after_server(retry_after: float, rng: random.Random | None = None) -> float:
    """The delay for a server's Retry-After: at least it, at most RETRY_AFTER_SPREAD more."""
    return retry_after * (1.0 + RETRY_AFTER_SPREAD * (rng or random).random())


def retry_after_seconds(header: str | None, *, cap: float) -> float | None:
    """The server's Retry-After (delta-seconds form only), capped; None if absent/invalid."""
    if not header:
        return None
    try:
        seconds = float(header.strip())
    except ValueError:
        return None
    if seconds < 0:
        return None
    return min(seconds, cap)
