"""Sample ratio mismatch: do the units per arm match the declared split?

A mismatch (p < 0.001) means the randomization or the counting itself is broken (a crash loop
on one arm, a filter dropping one arm's reports): no comparison of the arms can be trusted
then, however significant, so it stops promotion instead of being weighed against the effect.

Two tests of the same hypothesis (the units fall in the arms with probabilities = weights):

- `sample_ratio_check`: Pearson's chi-square goodness of fit, a fixed-sample test. Checked
  after every report, its false alarms add up over the looks (docs/benchmarks.md measures
  about 3 % of A/A experiments flagged at some look over 1,000 looks, not 0.1 %).
- `sequential_srm_p_value`: the always-valid version (Lindon & Malek, "Anytime-valid inference
  for multinomial count data", 2022): a Dirichlet-multinomial mixture likelihood ratio, a test
  martingale under the declared split, so P(ever < 0.001) <= 0.001 however often it is read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .distributions import chi2_sf

SRM_THRESHOLD = 0.001

# Pearson's chi-square is a large-sample test; below ~5 expected units in a cell its p-values
# are unreliable, so no verdict is given there (a broken split shows soon enough).
MIN_EXPECTED = 5.0


@dataclass(frozen=True)
class SrmCheck:
    chi_square: float
    p_value: float
    mismatch: bool


def normalized(weights: Sequence[float]) -> tuple[float, ...]:
    if not weights or any(not w > 0.0 for w in weights):
        raise ValueError(f"weights must be positive, got {list(weights)}")
    total = sum(weights)
    return tuple(w / total for w in weights)


def sample_ratio_check(
    observed: Sequence[int], weights: Sequence[float], *, threshold: float = SRM_THRESHOLD
) -> SrmCheck | None:
    """Chi-square test of `observed` units per arm against `weights` (normalized here).
    None while some arm expects fewer than MIN_EXPECTED units: too early to tell."""
    if len(observed) != len(weights) or len(observed) < 2:
        raise ValueError("need one observed count per weight, and at least two arms")
    if any(n < 0 for n in observed):
        raise ValueError(f"observed counts must be >= 0, got {list(observed)}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    shares = normalized(weights)
    total = sum(observed)
    expected = [total * w for w in shares]
    if min(expected) < MIN_EXPECTED:
        return None
    chi_square = sum((n - e) ** 2 / e for n, e in zip(observed, expected, strict=True))
    p_value = chi2_sf(chi_square, len(observed) - 1)
    return SrmCheck(chi_square, p_value, p_value < threshold)


# Total pseudo-count of the Dirichlet mixture, centred on the weights: its spread, about
# sqrt(w (1 - w) / 1000) (1.6 points at w = 0.5), sets the imbalance it is quickest to detect.
# A broken split is usually grosser than that; any value keeps the test valid.
DIRICHLET_CONCENTRATION = 1000.0


def sequential_srm_p_value(
    observed: Sequence[int],
    weights: Sequence[float],
    *,
    concentration: float = DIRICHLET_CONCENTRATION,
) -> float:
    """Always-valid p-value of "units per arm follow the weights": min(1, 1 / BF) with
    BF = Gamma(c) / Gamma(c + n) * prod Gamma(c w_k + n_k) / Gamma(c w_k) / prod w_k^n_k,
    the Dirichlet(c w) mixture over the arms' probabilities against the declared ones."""
    if len(observed) != len(weights) or len(observed) < 2:
        raise ValueError("need one observed count per weight, and at least two arms")
    if any(n < 0 for n in observed):
        raise ValueError(f"observed counts must be >= 0, got {list(observed)}")
    if not concentration > 0.0:
        raise ValueError(f"concentration must be positive, got {concentration}")
    shares = normalized(weights)
    lgamma = math.lgamma
    total = sum(observed)
    log_bf = lgamma(concentration) - lgamma(concentration + total)
    for n, w in zip(observed, shares, strict=True):
        a = concentration * w
        log_bf += lgamma(a + n) - lgamma(a) - n * math.log(w)
    return 1.0 if log_bf <= 0.0 else math.exp(-log_bf)


__all__ = [
    "DIRICHLET_CONCENTRATION",
    "MIN_EXPECTED",
    "SRM_THRESHOLD",
    "SrmCheck",
    "normalized",
    "sample_ratio_check",
    "sequential_srm_p_value",
]
