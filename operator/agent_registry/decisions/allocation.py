"""Thompson allocation: send more tasks to the arms likely to be best, while the experiment
still runs.

Each arm's success rate has a Beta(1 + successes, 1 + failures) posterior (uniform prior);
the weight of an arm is the posterior probability that it is the best, estimated from `draws`
joint draws. A floor keeps every arm sampled: the sequential test still needs evidence on the
worse arms to declare a winner, and a starved arm would also hide a drift in its rate.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .evidence import Counts


def thompson_weights(
    arms: Sequence[Counts], *, rng: random.Random, draws: int = 2000, floor: float = 0.05
) -> tuple[float, ...]:
    """Probability each arm is best, floored and normalized.

    The floored weights are floor + (1 - k * floor) * P(best): every arm gets at least
    `floor`, the weights sum to 1, and their order is that of P(best). In other words, a
    fraction k * floor of tasks is spread uniformly and the rest follows Thompson sampling."""
    k = len(arms)
    if k == 0:
        raise ValueError("need at least one arm")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if not floor >= 0.0 or floor * k > 1.0:
        raise ValueError(f"floor must be in [0, 1/{k}] for {k} arms, got {floor}")
    if k == 1:
        return (1.0,)
    beta = rng.betavariate
    samples = [
        [beta(1.0 + arm.successes, 1.0 + arm.failures) for _ in range(draws)] for arm in arms
    ]
    wins = [0] * k
    for row in zip(*samples, strict=True):
        wins[row.index(max(row))] += 1
    spread = 1.0 - k * floor
    return tuple(floor + spread * w / draws for w in wins)


__all__ = ["thompson_weights"]
