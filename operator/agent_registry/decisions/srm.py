"""Sample ratio mismatch: do the units per arm match the declared split?

A Pearson chi-square goodness-of-fit test of the observed units per arm against the weights.
A mismatch (p < 0.001) means the randomization or the counting itself is broken (a crash loop
on one arm, a filter dropping one arm's reports): no comparison of the arms can be trusted
then, however significant, so it stops promotion instead of being weighed against the effect.
"""

from __future__ import annotations

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


__all__ = ["MIN_EXPECTED", "SRM_THRESHOLD", "SrmCheck", "normalized", "sample_ratio_check"]
