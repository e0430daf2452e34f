"""Beta quantiles in pure Python, for the Jeffreys interval of a candidate's fleet rate."""

from __future__ import annotations

import math

from agent_registry.decisions.evidence import Counts

_EPS = 1.0e-15
_TINY = 1.0e-300


def _continued_fraction(a: float, b: float, x: float) -> float:
    """Lentz's evaluation of the incomplete beta continued fraction (Numerical Recipes 6.4);
    it converges fast for x < (a + 1) / (a + b + 2), which the caller arranges."""

    def guard(v: float) -> float:
        return v if abs(v) > _TINY else _TINY

    c = 1.0
    d = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0))
    h = d
    for m in range(1, 10_000):
        even = m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m))
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0))
        for numerator in (even, odd):
            d = 1.0 / guard(1.0 + numerator * d)
            c = guard(1.0 + numerator / c)
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            break
    return h


def beta_cdf(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _continued_fraction(b, a, 1.0 - x) / b


def beta_quantile(q: float, a: float, b: float) -> float:
    """The x with I_x(a, b) = q, by bisection: the cdf is monotone, and 60 halvings reach
    double precision on [0, 1] whatever the shape (Newton can overshoot near the edges)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if beta_cdf(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def jeffreys_interval(counts: Counts, confidence: float) -> tuple[float, float]:
    """Equal-tailed interval of Beta(s + 1/2, f + 1/2); the bound at an edge (no success,
    or no failure) is the edge itself, as in Brown, Cai and DasGupta (2001)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if counts.tasks == 0:
        return (0.0, 1.0)
    a = counts.successes + 0.5
    b = counts.failures + 0.5
    tail = (1.0 - confidence) / 2.0
    lower = 0.0 if counts.successes == 0 else beta_quantile(tail, a, b)
    upper = 1.0 if counts.failures == 0 else beta_quantile(1.0 - tail, a, b)
    return (lower, upper)


__all__ = ["beta_cdf", "beta_quantile", "jeffreys_interval"]
