"""Always-valid inference: tests and confidence sequences that may be looked at after every
report without inflating the error rate (docs/statistics.md has the derivations).

Two constructions, both test martingales bounded by Ville's inequality, P(sup_n M_n >= 1/alpha)
<= alpha, so "reject as soon as M_n >= 1/alpha" keeps the false-positive rate at or below alpha
however often, and whenever, the data is looked at:

- `rate_interval`: the beta-binomial mixture for ONE success rate. M_n(p) = marginal likelihood
  under a Beta(1, 1) prior / likelihood at p. Exact for independent Bernoulli tasks at any n.
- the normal mixture SPRT (mSPRT, the construction of Optimizely's Stats Engine) for an
  estimate with an (estimated) variance V: Lambda = sqrt(V / (V + tau^2)) *
  exp(tau^2 theta^2 / (2 V (V + tau^2))), the likelihood ratio of the Gaussian approximation
  mixed over effects theta ~ N(0, tau^2). Asymptotically valid (the CLT for the estimate, a
  consistent V); `df` switches the boundary to Student's t when V comes from few clusters.
"""

from __future__ import annotations

import math

from .distributions import normal_cdf, t_matching_z, z_matching_t
from .evidence import Counts

# The mixing scale tau of the normal mixture, on the difference of two success rates. Any
# tau gives a valid test; it only moves where the boundary is tightest (near V = tau^2 / 10,
# about 1,000 tasks per arm at rates near 0.8): differences of a few points between scripts
# are what experiments here look for.
DEFAULT_MIXING_SD = 0.05

_LOG2 = math.log(2.0)


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _check_variance(variance: float, mixing_sd: float) -> None:
    if not variance > 0.0 or math.isinf(variance):
        raise ValueError(f"variance must be positive and finite, got {variance}")
    if not mixing_sd > 0.0:
        raise ValueError(f"mixing_sd must be positive, got {mixing_sd}")


def smoothed_variance(counts: Counts) -> float:
    """Variance of the observed rate of independent tasks, p(1-p)/n with p smoothed to
    (s + 1) / (n + 2): never 0, so 20 successes of 20 tasks is not taken as certainty."""
    if counts.tasks <= 0:
        raise ValueError("the variance of a rate needs at least one task")
    p = (counts.successes + 1) / (counts.tasks + 2)
    return p * (1.0 - p) / counts.tasks


def mixture_log_lr(z: float, r: float) -> float:
    """log Lambda of the two-sided normal mixture for z = estimate / sqrt(V), r = tau^2 / V."""
    return 0.5 * z * z * r / (1.0 + r) - 0.5 * math.log1p(r)


def two_sided_boundary(alpha: float, r: float) -> float:
    """The |z| at which the two-sided mixture reaches 1/alpha (closed form)."""
    return math.sqrt((1.0 + 1.0 / r) * (2.0 * math.log(1.0 / alpha) + math.log1p(r)))


def one_sided_log_lr(z: float, r: float) -> float:
    """log Lambda+ of the half-normal mixture (effects theta >= 0 only): 2 Phi(z s) Lambda with
    s = sqrt(r / (1 + r)); large when z is large and positive."""
    s = math.sqrt(r / (1.0 + r))
    phi = normal_cdf(z * s)
    if phi <= 0.0:
        return -math.inf
    return _LOG2 + math.log(phi) + mixture_log_lr(z, r)


def one_sided_boundary(alpha: float, r: float) -> float:
    """The z at which the one-sided (half-normal) mixture reaches 1/alpha."""
    _check_alpha(alpha)
    target = math.log(1.0 / alpha)
    s = math.sqrt(r / (1.0 + r))
    # The two-sided boundary at 2 alpha is a lower bound (there log Phi(z s) is all that is
    # missing, and it is < 0); Newton climbs from it on an increasing, nearly quadratic curve.
    z = two_sided_boundary(min(2.0 * alpha, 0.999), r) if alpha < 0.5 else 0.0
    for _ in range(50):
        excess = one_sided_log_lr(z, r) - target
        if abs(excess) < 1e-12:
            break
        x = z * s
        density = math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        slope = s * density / normal_cdf(x) + z * s * s
        z -= excess / slope
    return z


def mixture_p_value(
    estimate: float,
    variance: float,
    *,
    mixing_sd: float = DEFAULT_MIXING_SD,
    df: float | None = None,
) -> float:
    """Always-valid two-sided p-value of H0: theta = 0, min(1, 1 / Lambda).

    With `df`, the z-statistic is first mapped to the normal z with the same tail as a t(df)
    statistic: the variance estimate's own noise (few clusters) then widens the test as a
    t-test would, instead of being ignored."""
    _check_variance(variance, mixing_sd)
    z = abs(estimate) / math.sqrt(variance)
    if df is not None:
        z = z_matching_t(z, df)
    log_lr = mixture_log_lr(z, mixing_sd * mixing_sd / variance)
    return 1.0 if log_lr <= 0.0 else math.exp(-log_lr)


def mixture_halfwidth(
    variance: float,
    *,
    alpha: float,
    mixing_sd: float = DEFAULT_MIXING_SD,
    df: float | None = None,
) -> float:
    """Half-width of the two-sided 1 - alpha confidence sequence estimate +- h: the values
    theta0 the mixture test would not reject (consistent with `mixture_p_value`)."""
    _check_alpha(alpha)
    _check_variance(variance, mixing_sd)
    z = two_sided_boundary(alpha, mixing_sd * mixing_sd / variance)
    if df is not None:
        z = t_matching_z(z, df)
    return z * math.sqrt(variance)


def one_sided_halfwidth(
    variance: float, *, alpha: float, mixing_sd: float = DEFAULT_MIXING_SD
) -> float:
    """h such that estimate - h is an always-valid lower confidence bound at level 1 - alpha
    (and estimate + h an upper one): the boundary of the half-normal mixture."""
    _check_variance(variance, mixing_sd)
    return one_sided_boundary(alpha, mixing_sd * mixing_sd / variance) * math.sqrt(variance)


def _lbeta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _lower_root(successes: int, failures: int, log_threshold: float, prior: float) -> float:
    """The smallest p with log M(p) < log_threshold, where log M(p) = log B(prior + s,
    prior + f) - log B(prior, prior) - s log p - f log(1 - p), convex in p."""
    if successes == 0:
        return 0.0
    n = successes + failures
    constant = _lbeta(prior + successes, prior + failures) - _lbeta(prior, prior)
    constant -= log_threshold
    if failures == 0:
        # log M(p) = constant' - s log p: the root in closed form.
        return min(1.0, math.exp(constant / successes))
    p_hat = successes / n
    log, log1p = math.log, math.log1p
    at_mle = constant - successes * log(p_hat) - failures * log1p(-p_hat)
    if at_mle >= 0.0:
        return 0.0  # cannot happen for a proper prior (M(p_hat) <= 1); kept for safety
    # Start from the quadratic approximation of log M around p_hat; Newton on the convex
    # function then lands left of the root and climbs back to it monotonically.
    p = p_hat - math.sqrt(-2.0 * at_mle * p_hat * (1.0 - p_hat) / n)
    previous = p_hat
    for _ in range(100):
        if p <= 0.0:
            p = previous / 16.0
            if p < 1e-300:
                return 0.0
        value = constant - successes * log(p) - failures * log1p(-p)
        if abs(value) < 1e-10:
            break
        slope = failures / (1.0 - p) - successes / p
        previous = p
        p -= value / slope
        if abs(p - previous) < 1e-14 * previous:
            break
    return min(max(p, 0.0), p_hat)


def rate_interval(counts: Counts, *, alpha: float, prior: float = 1.0) -> tuple[float, float]:
    """Always-valid 1 - alpha confidence sequence for a success rate from independent tasks:
    {p : M_n(p) < 1/alpha} for the beta-binomial mixture martingale with a Beta(prior, prior)
    mixing distribution. Exact (no normal approximation); (0, 1) with no task."""
    _check_alpha(alpha)
    if not prior > 0.0:
        raise ValueError(f"prior must be positive, got {prior}")
    if counts.tasks == 0:
        return (0.0, 1.0)
    log_threshold = math.log(1.0 / alpha)
    low = _lower_root(counts.successes, counts.failures, log_threshold, prior)
    high = 1.0 - _lower_root(counts.failures, counts.successes, log_threshold, prior)
    return (low, high)


__all__ = [
    "DEFAULT_MIXING_SD",
    "mixture_halfwidth",
    "mixture_log_lr",
    "mixture_p_value",
    "one_sided_boundary",
    "one_sided_halfwidth",
    "one_sided_log_lr",
    "rate_interval",
    "smoothed_variance",
    "two_sided_boundary",
]
