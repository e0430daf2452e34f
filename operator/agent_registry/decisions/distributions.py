"""The few distribution functions the tests need, in pure Python (no SciPy dependency).

Normal (from `math.erfc` and `statistics.NormalDist`), chi-square survival for the SRM check,
and Student's t for the agent-level analysis. The t functions use the finite series of
Abramowitz & Stegun 26.7.3/26.7.4, exact for integer degrees of freedom; callers round the
degrees of freedom DOWN to an integer and cap them at `T_DF_CAP`, both of which only make the
tails heavier, so the tests they feed stay on the conservative side.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

_SQRT2 = math.sqrt(2.0)
_STANDARD = NormalDist()

# Beyond 200 degrees of freedom t and normal quantiles differ by < 0.5 % at the z of 3-4 the
# sequential boundaries sit at; capping there keeps the t series short (its length is df / 2).
T_DF_CAP = 200

# Two-sided tails below this cannot be told apart from 0 by 1 - A(t) in double precision.
_TINY_TAIL = 1e-15


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / _SQRT2)


def normal_sf(x: float) -> float:
    """P(Z > x), accurate in the far upper tail (erfc, no 1 - cdf cancellation)."""
    return 0.5 * math.erfc(x / _SQRT2)


def normal_two_sided_tail(z: float) -> float:
    """P(|Z| > |z|)."""
    return math.erfc(abs(z) / _SQRT2)


def normal_quantile_upper(tail: float) -> float:
    """The z with P(Z > z) = tail, for 0 < tail < 1."""
    if not 0.0 < tail < 1.0:
        raise ValueError(f"tail probability must be in (0, 1), got {tail}")
    # Taking the lower-tail quantile and negating keeps precision when tail is tiny.
    return -_STANDARD.inv_cdf(tail)


def chi2_sf(x: float, df: int) -> float:
    """P(X > x) for X ~ chi-square(df): the regularized upper incomplete gamma Q(df/2, x/2),
    by its closed form for integer and half-integer shapes (exact, no series truncation)."""
    if df < 1:
        raise ValueError(f"chi-square needs df >= 1, got {df}")
    if x <= 0.0:
        return 1.0
    y = x / 2.0
    if df % 2 == 0:
        # Q(m, y) = e^-y * sum_{i<m} y^i / i!
        term = math.exp(-y)
        total = term
        for i in range(1, df // 2):
            term *= y / i
            total += term
    else:
        # Q(1/2, y) = erfc(sqrt y); Q(a + 1, y) = Q(a, y) + y^a e^-y / Gamma(a + 1)
        total = math.erfc(math.sqrt(y))
        a = 0.5
        term = math.exp(-y) * math.sqrt(y) / math.gamma(1.5)
        for _ in range((df - 1) // 2):
            total += term
            a += 1.0
            term *= y / (a + 0.5)
    return min(1.0, max(0.0, total))


def _t_df(df: float) -> int:
    if not df >= 1.0:
        raise ValueError(f"Student's t needs df >= 1, got {df}")
    return min(T_DF_CAP, math.floor(df))


def t_two_sided_tail(t: float, df: float) -> float:
    """P(|T| > |t|) for T ~ t(floor(df)), df capped at T_DF_CAP."""
    return _t_tail(abs(t), _t_df(df))


def _t_tail(t: float, nu: int) -> float:
    cos_theta = math.sqrt(nu / (nu + t * t))
    sin_theta = t / math.sqrt(nu + t * t)
    c = cos_theta * cos_theta
    term = series = 1.0
    if nu % 2 == 1:
        for k in range(1, (nu - 1) // 2):
            term *= c * (2 * k) / (2 * k + 1)
            series += term
        if nu == 1:
            series = 0.0
        inside = (2.0 / math.pi) * (math.atan(t / math.sqrt(nu)) + sin_theta * cos_theta * series)
    else:
        for k in range(1, nu // 2):
            term *= c * (2 * k - 1) / (2 * k)
            series += term
        inside = sin_theta * series
    return max(_TINY_TAIL, min(1.0, 1.0 - inside))


@lru_cache(maxsize=256)
def _t_log_norm(nu: int) -> float:
    return math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)


def _t_pdf(t: float, nu: int) -> float:
    return math.exp(_t_log_norm(nu) - (nu + 1) / 2 * math.log1p(t * t / nu))


def _cornish_fisher(z: float, nu: int) -> float:
    """Abramowitz & Stegun 26.7.5: the t quantile from the normal one, a starting point."""
    z2 = z * z
    g1 = (z2 + 1) * z / 4
    g2 = ((5 * z2 + 16) * z2 + 3) * z / 96
    g3 = (((3 * z2 + 19) * z2 + 17) * z2 - 15) * z / 384
    return z + g1 / nu + g2 / nu**2 + g3 / nu**3


def t_quantile_two_sided(tail: float, df: float) -> float:
    """The t >= 0 with P(|T| > t) = tail for T ~ t(floor(df)), df capped at T_DF_CAP."""
    if not 0.0 < tail <= 1.0:
        raise ValueError(f"tail probability must be in (0, 1], got {tail}")
    nu = _t_df(df)
    if tail == 1.0:
        return 0.0
    if nu == 1:
        return 1.0 / math.tan(math.pi * tail / 2)
    if nu == 2:
        keep = 1.0 - tail
        return math.sqrt(2.0 * keep * keep / (1.0 - keep * keep))
    # The tail is convex and decreasing in t > 0, so a Newton step from the right of the root
    # lands on its left, and the normal quantile is always left of it (t tails are heavier):
    # clamping there keeps every iterate in range. Cornish-Fisher is usually close; Halley's
    # correction (the tail's curvature is known in closed form) makes it 2-3 steps.
    z = normal_quantile_upper(tail / 2)
    t = max(z, _cornish_fisher(z, nu))
    for _ in range(100):
        excess = _t_tail(t, nu) - tail
        slope = -2.0 * _t_pdf(t, nu)
        curvature = -slope * (nu + 1) * t / (nu + t * t)
        newton = excess / slope
        denominator = 1.0 - newton * curvature / (2.0 * slope)
        step = newton / denominator if denominator > 0.5 else newton
        t = max(z, t - step)
        if abs(step) <= 1e-10 * t:
            break
    return t


def z_matching_t(t: float, df: float) -> float:
    """The |z| whose two-sided normal tail equals the two-sided t(df) tail of |t|."""
    return normal_quantile_upper(t_two_sided_tail(t, df) / 2)


def t_matching_z(z: float, df: float) -> float:
    """The t(df) quantile with the same two-sided tail as |z| under the normal."""
    return t_quantile_two_sided(max(_TINY_TAIL, normal_two_sided_tail(z)), df)


__all__ = [
    "T_DF_CAP",
    "chi2_sf",
    "normal_cdf",
    "normal_quantile_upper",
    "normal_sf",
    "normal_two_sided_tail",
    "t_matching_z",
    "t_quantile_two_sided",
    "t_two_sided_tail",
    "z_matching_t",
]
