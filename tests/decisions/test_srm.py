"""Sample ratio mismatch checks (srm.py)."""

from __future__ import annotations

import random

import pytest

from agent_registry.decisions.srm import (
    SRM_THRESHOLD,
    sample_ratio_check,
    sequential_srm_p_value,
)


def test_chi_square_known_answer() -> None:
    # 5,200 / 4,800 against 50/50: chi-square = 2 * 200^2 / 5,000 = 16, df 1.
    check = sample_ratio_check([5200, 4800], [1, 1])
    assert check is not None
    assert check.chi_square == pytest.approx(16.0)
    assert check.p_value == pytest.approx(6.334e-5, rel=1e-3)
    assert check.mismatch


def test_weights_are_normalized_and_matching_splits_pass() -> None:
    check = sample_ratio_check([2010, 990, 1000], [0.5, 0.25, 0.25])
    same = sample_ratio_check([2010, 990, 1000], [2, 1, 1])
    assert check == same
    assert check is not None
    assert not check.mismatch
    assert check.p_value > 0.5


def test_a_broken_split_is_detected_and_a_slight_one_is_not() -> None:
    broken = sample_ratio_check([1100, 900], [1, 1])
    slight = sample_ratio_check([1030, 970], [1, 1])
    assert broken is not None
    assert broken.mismatch
    assert slight is not None
    assert not slight.mismatch
    # The threshold is 0.001, not 0.05: p of the slight imbalance is ~0.18.
    assert SRM_THRESHOLD == 0.001


def test_no_verdict_with_too_few_expected_units() -> None:
    assert sample_ratio_check([3, 0], [1, 1]) is None
    assert sample_ratio_check([100, 3], [0.97, 0.03]) is None  # 3.09 expected in arm 1
    assert sample_ratio_check([200, 0], [0.97, 0.03]) is not None


def test_sequential_p_value_is_one_on_the_declared_split_and_tiny_on_a_broken_one() -> None:
    assert sequential_srm_p_value([5000, 5000], [1, 1]) == 1.0
    assert sequential_srm_p_value([0, 0], [1, 1]) == 1.0
    assert sequential_srm_p_value([5500, 4500], [1, 1]) < 1e-10
    # It pays for being always-valid: where chi-square already flags, it may not yet.
    check = sample_ratio_check([1080, 920], [1, 1])
    assert check is not None
    assert check.mismatch
    assert sequential_srm_p_value([1080, 920], [1, 1]) > SRM_THRESHOLD


def test_sequential_srm_false_alarms_stay_rare_under_repeated_looks() -> None:
    """300 honest 50/50 splits of 5,000 units, both tests read after every 10 units. The
    chi-square check at 0.001 fires at some look in 7 of them with this seed, > 20 times its
    nominal 0.1 % (its error adds up over 500 looks); the always-valid one may fire in <= 0.1 %
    of them, none here."""
    rng = random.Random(5)
    chi_alarms = sequential_alarms = 0
    for _ in range(300):
        counts = [0, 0]
        chi = seq = False
        for n in range(1, 5001):
            counts[rng.random() < 0.5] += 1
            if n % 10:
                continue
            check = sample_ratio_check(counts, [1, 1])
            chi = chi or (check is not None and check.mismatch)
            seq = seq or sequential_srm_p_value(counts, [1, 1]) < SRM_THRESHOLD
        chi_alarms += chi
        sequential_alarms += seq
    assert sequential_alarms == 0
    assert chi_alarms >= 3  # 1 % of 300, ten times the nominal rate


def test_srm_input_errors() -> None:
    with pytest.raises(ValueError, match="one observed count per weight"):
        sample_ratio_check([10, 10], [1, 1, 1])
    with pytest.raises(ValueError, match="at least two arms"):
        sample_ratio_check([10], [1])
    with pytest.raises(ValueError, match="weights must be positive"):
        sample_ratio_check([10, 10], [1, 0])
    with pytest.raises(ValueError, match=">= 0"):
        sample_ratio_check([10, -1], [1, 1])
    with pytest.raises(ValueError, match="threshold"):
        sample_ratio_check([10, 10], [1, 1], threshold=0.0)
    with pytest.raises(ValueError, match="concentration"):
        sequential_srm_p_value([10, 10], [1, 1], concentration=0.0)
