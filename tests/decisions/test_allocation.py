"""Thompson weights (allocation.py)."""

from __future__ import annotations

import random

import pytest

from agent_registry.decisions.allocation import thompson_weights
from agent_registry.decisions.evidence import Counts


def test_weights_sum_to_one_and_respect_the_floor() -> None:
    arms = [Counts(1000, 850), Counts(1000, 700), Counts(1000, 600)]
    weights = thompson_weights(arms, rng=random.Random(1), floor=0.05)
    assert sum(weights) == pytest.approx(1.0, abs=1e-12)
    assert min(weights) == pytest.approx(0.05)  # the two hopeless arms sit on the floor
    assert weights[0] == pytest.approx(0.90)


def test_a_clear_leader_gets_most_and_equal_arms_share() -> None:
    clear = thompson_weights([Counts(300, 250), Counts(300, 210)], rng=random.Random(2))
    assert clear[0] > 0.9
    equal = thompson_weights([Counts(300, 240)] * 3, rng=random.Random(3), draws=6000)
    assert all(w == pytest.approx(1 / 3, abs=0.03) for w in equal)


def test_no_data_is_uniform_in_expectation_and_uncertain_arms_keep_a_share() -> None:
    fresh = thompson_weights([Counts(), Counts()], rng=random.Random(4), draws=8000)
    assert fresh[0] == pytest.approx(0.5, abs=0.03)
    # 3/4 vs 30/40 (same rate): the small arm is uncertain, so still often drawn best.
    mixed = thompson_weights([Counts(4, 3), Counts(40, 30)], rng=random.Random(5))
    assert 0.3 < mixed[0] < 0.7


def test_seeded_rng_makes_it_reproducible_and_no_floor_is_pure_thompson() -> None:
    arms = [Counts(50, 40), Counts(50, 35)]
    assert thompson_weights(arms, rng=random.Random(6)) == thompson_weights(
        arms, rng=random.Random(6)
    )
    pure = thompson_weights([Counts(5000, 4500), Counts(5000, 3000)], rng=random.Random(7), floor=0)
    assert pure == (1.0, 0.0)
    assert thompson_weights([Counts(5, 1)], rng=random.Random(8)) == (1.0,)


def test_allocation_input_errors() -> None:
    rng = random.Random(9)
    with pytest.raises(ValueError, match="at least one arm"):
        thompson_weights([], rng=rng)
    with pytest.raises(ValueError, match="draws"):
        thompson_weights([Counts(), Counts()], rng=rng, draws=0)
    with pytest.raises(ValueError, match="floor"):
        thompson_weights([Counts()] * 5, rng=rng, floor=0.25)
    with pytest.raises(ValueError, match="floor"):
        thompson_weights([Counts(), Counts()], rng=rng, floor=-0.1)
