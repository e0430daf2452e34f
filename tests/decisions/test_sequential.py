"""Always-valid machinery (sequential.py) and the distribution functions under it."""

from __future__ import annotations

import math
import random

import pytest

from agent_registry.decisions.distributions import (
    chi2_sf,
    normal_quantile_upper,
    normal_two_sided_tail,
    t_matching_z,
    t_quantile_two_sided,
    t_two_sided_tail,
    z_matching_t,
)
from agent_registry.decisions.evidence import Counts
from agent_registry.decisions.sequential import (
    mixture_halfwidth,
    mixture_log_lr,
    mixture_p_value,
    one_sided_boundary,
    one_sided_halfwidth,
    one_sided_log_lr,
    rate_interval,
    smoothed_variance,
    two_sided_boundary,
)

# Printed tables (Abramowitz & Stegun 26.7 / any t table): two-sided tail -> quantile.
T_TABLE = [
    (1, 0.05, 12.706),
    (2, 0.05, 4.303),
    (3, 0.05, 3.182),
    (5, 0.01, 4.032),
    (9, 0.001, 4.781),
    (10, 0.05, 2.228),
    (30, 0.05, 2.042),
]


@pytest.mark.parametrize(("df", "tail", "quantile"), T_TABLE)
def test_t_quantiles_match_the_table(df: int, tail: float, quantile: float) -> None:
    assert t_quantile_two_sided(tail, df) == pytest.approx(quantile, abs=6e-4)
    assert t_two_sided_tail(quantile, df) == pytest.approx(tail, rel=2e-3)


def test_t_tail_known_values_and_non_integer_df_rounds_down() -> None:
    assert t_two_sided_tail(2.0, 10) == pytest.approx(0.07339, abs=1e-5)
    assert t_two_sided_tail(0.0, 7) == 1.0
    # floor(9.7) = 9: heavier tails than t(9.7), the conservative side.
    assert t_two_sided_tail(3.0, 9.7) == t_two_sided_tail(3.0, 9)


def test_t_tends_to_normal_and_matching_is_an_inverse_pair() -> None:
    assert t_quantile_two_sided(0.05, 200) == pytest.approx(1.972, abs=1e-3)
    z = 3.1
    t = t_matching_z(z, 12)
    assert t > z  # heavier tails need a larger statistic for the same evidence
    assert z_matching_t(t, 12) == pytest.approx(z, rel=1e-9)
    assert normal_two_sided_tail(1.959964) == pytest.approx(0.05, rel=1e-5)
    assert normal_quantile_upper(0.025) == pytest.approx(1.959964, rel=1e-6)


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [(3.841, 1, 0.05), (5.991, 2, 0.05), (7.815, 3, 0.05), (9.488, 4, 0.05), (10.828, 1, 0.001)],
)
def test_chi_square_survival_matches_the_table(x: float, df: int, p: float) -> None:
    assert chi2_sf(x, df) == pytest.approx(p, rel=1e-3)


def test_distribution_input_errors() -> None:
    with pytest.raises(ValueError, match="df >= 1"):
        chi2_sf(1.0, 0)
    with pytest.raises(ValueError, match="df >= 1"):
        t_two_sided_tail(1.0, 0.5)
    with pytest.raises(ValueError, match="tail probability"):
        t_quantile_two_sided(0.0, 5)
    with pytest.raises(ValueError, match="tail probability"):
        normal_quantile_upper(1.0)


def test_mixture_boundary_and_p_value_agree() -> None:
    """The CS half-width is exactly where the p-value reaches alpha (so 'reject' and '0 is
    outside the interval' are the same decision), with and without the t correction."""
    variance = 0.2875 / 1000
    for df in (None, 7.0, 40.0):
        half = mixture_halfwidth(variance, alpha=0.05, df=df)
        assert mixture_p_value(half, variance, df=df) == pytest.approx(0.05, rel=1e-6)
        assert mixture_p_value(0.9 * half, variance, df=df) > 0.05
        assert mixture_p_value(1.1 * half, variance, df=df) < 0.05
    # The closed form of the two-sided boundary: Lambda(z*) = 1 / alpha.
    z = two_sided_boundary(0.05, 10.0)
    assert mixture_log_lr(z, 10.0) == pytest.approx(math.log(20.0), rel=1e-12)


def test_mixture_is_stricter_than_a_fixed_sample_test_and_t_is_stricter_still() -> None:
    variance = 0.16 / 500
    z_fixed = 1.959964 * math.sqrt(variance)
    h = mixture_halfwidth(variance, alpha=0.05)
    h_t = mixture_halfwidth(variance, alpha=0.05, df=9)
    assert z_fixed < h < h_t
    assert mixture_p_value(0.0, variance) == 1.0


def test_mixture_p_value_decreases_with_evidence() -> None:
    """Same observed difference, more tasks: smaller p; larger difference, same tasks:
    smaller p."""
    by_n = [mixture_p_value(0.03, 0.3 / n) for n in (500, 1000, 2000, 4000, 8000)]
    assert by_n == sorted(by_n, reverse=True)
    assert by_n[0] > by_n[-1]
    by_effect = [mixture_p_value(d, 0.3 / 2000) for d in (0.01, 0.02, 0.04, 0.08)]
    assert by_effect == sorted(by_effect, reverse=True)
    assert by_effect[0] > by_effect[-1]


def test_one_sided_boundary_solves_its_equation_and_is_below_the_two_sided_one() -> None:
    for r in (0.5, 3.0, 10.0, 100.0):
        z = one_sided_boundary(0.05, r)
        assert one_sided_log_lr(z, r) == pytest.approx(math.log(20.0), abs=1e-9)
        # One direction only: cheaper than the two-sided boundary at the same alpha, dearer
        # than the two-sided one at 2 alpha.
        assert two_sided_boundary(0.1, r) < z < two_sided_boundary(0.05, r)
    assert one_sided_halfwidth(1e-4, alpha=0.05) < mixture_halfwidth(1e-4, alpha=0.05)


def test_sequential_input_errors() -> None:
    with pytest.raises(ValueError, match="variance"):
        mixture_p_value(0.1, 0.0)
    with pytest.raises(ValueError, match="mixing_sd"):
        mixture_p_value(0.1, 0.01, mixing_sd=0.0)
    with pytest.raises(ValueError, match="alpha"):
        mixture_halfwidth(0.01, alpha=1.0)
    with pytest.raises(ValueError, match="alpha"):
        rate_interval(Counts(10, 5), alpha=0.0)
    with pytest.raises(ValueError, match="at least one task"):
        smoothed_variance(Counts())


def test_rate_interval_known_answers() -> None:
    """With a uniform prior M_n(p) has closed forms for one task: after one success,
    M(p) = (1/2) / p, so the interval starts where that is 1 / alpha = 20: p = 1/40."""
    assert rate_interval(Counts(), alpha=0.05) == (0.0, 1.0)
    low, high = rate_interval(Counts(1, 1), alpha=0.05)
    assert low == pytest.approx(1 / 40, rel=1e-9)
    assert high == 1.0
    low, high = rate_interval(Counts(1, 0), alpha=0.05)
    assert low == 0.0
    assert high == pytest.approx(1 - 1 / 40, rel=1e-9)
    # All successes: M(p) = 1 / ((n + 1) p^n), so the lower end is (20 (n + 1))^(-1/n).
    low, _ = rate_interval(Counts(100, 100), alpha=0.05)
    assert low == pytest.approx((20 * 101) ** (-1 / 100), rel=1e-9)


def test_rate_interval_brackets_the_rate_and_shrinks() -> None:
    widths = []
    for n in (10, 100, 1000, 10_000, 100_000):
        counts = Counts(n, round(0.8 * n))
        low, high = rate_interval(counts, alpha=0.05)
        assert 0.0 <= low < counts.rate < high <= 1.0
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True)
    # Always-valid costs width: wider than the fixed-sample Wald interval at the same n.
    low, high = rate_interval(Counts(1000, 800), alpha=0.05)
    assert high - low > 2 * 1.96 * math.sqrt(0.16 / 1000)
    # A smaller alpha widens it.
    low_1, high_1 = rate_interval(Counts(1000, 800), alpha=0.01)
    assert low_1 < low
    assert high_1 > high


def test_rate_interval_covers_under_continuous_monitoring_where_wald_does_not() -> None:
    """200 streams of 2,000 tasks at p = 0.8, each interval checked after every 10 tasks.
    The always-valid interval may exclude 0.8 at SOME look in <= alpha of the streams (2 % with
    this seed; the bound 10 % is loose); the fixed-sample Wald interval looked at the same way
    excludes it in about half of them."""
    rng = random.Random(11)
    ours = wald = 0
    for _ in range(200):
        successes = 0
        ours_missed = wald_missed = False
        for n in range(1, 2001):
            successes += rng.random() < 0.8
            if n % 10:
                continue
            low, high = rate_interval(Counts(n, successes), alpha=0.05)
            ours_missed = ours_missed or not low <= 0.8 <= high
            p = successes / n
            half = 1.96 * math.sqrt(p * (1 - p) / n)
            wald_missed = wald_missed or not p - half <= 0.8 <= p + half
        ours += ours_missed
        wald += wald_missed
    assert ours / 200 <= 0.10
    assert wald / 200 > 0.30
