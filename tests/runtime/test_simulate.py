"""The simulated workload's contract (pure judge, and the loop with a stub decide)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from agent_registry.runtime.simulate import FAILED_DURATION_MS, judge, make_task, simulate


def test_task_shape() -> None:
    task = make_task(7, random.Random(0))
    assert task["id"] == "sim-7"
    assert task["kind"] == "simulated"
    assert 0.0 <= task["difficulty"] <= 1.0


@pytest.mark.parametrize(
    ("result", "difficulty", "noise", "expected"),
    [
        ({"accept": True, "effort": 0.8}, 0.5, 0.0, (True, 45.0)),
        ({"accept": True, "effort": 0.4}, 0.5, 0.0, (False, 25.0)),
        ({"accept": True, "effort": 0.48}, 0.5, 0.05, (True, 29.0)),  # noise helps a little
        ({"accept": False, "effort": 1.0}, 0.0, 0.0, (False, 55.0)),
        ({"accept": True, "effort": 7}, 0.9, 0.0, (True, 55.0)),  # clamped to 1
        ({"accept": True, "effort": -3}, 0.0, 0.0, (True, 5.0)),  # clamped to 0
        ({"accept": "yes", "effort": 1}, 0.0, 0.0, (False, FAILED_DURATION_MS)),
        ({"accept": True, "effort": "max"}, 0.0, 0.0, (False, FAILED_DURATION_MS)),
        ({"accept": True, "effort": float("nan")}, 0.0, 0.0, (False, FAILED_DURATION_MS)),
        ([True, 1.0], 0.0, 0.0, (False, FAILED_DURATION_MS)),
        (None, 0.0, 0.0, (False, FAILED_DURATION_MS)),
    ],
)
def test_judge(
    result: object, difficulty: float, noise: float, expected: tuple[bool, float]
) -> None:
    success, duration = judge(result, difficulty, noise)
    assert success is expected[0]
    assert duration == pytest.approx(expected[1])


def test_more_effort_succeeds_more_and_takes_longer() -> None:
    rng = random.Random(42)
    stats = {}
    for effort in (0.2, 0.9):
        outcomes = [
            judge({"accept": True, "effort": effort}, rng.random(), rng.uniform(-0.05, 0.05))
            for _ in range(2000)
        ]
        stats[effort] = (
            sum(s for s, _ in outcomes) / len(outcomes),
            sum(d for _, d in outcomes) / len(outcomes),
        )
    assert stats[0.9][0] > stats[0.2][0] + 0.5
    assert stats[0.9][1] > stats[0.2][1]


@dataclass(frozen=True)
class Decided:
    sha256: str
    result: object = None
    error: BaseException | None = None


async def test_loop_records_every_task_with_the_deciding_script() -> None:
    recorded: list[tuple[bool, float, str | None]] = []
    calls = 0

    async def decide(task: dict[str, object]) -> Decided:
        nonlocal calls
        calls += 1
        if calls % 5 == 0:
            raise RuntimeError("no script loaded")
        if calls % 5 == 1:
            return Decided("b" * 64, error=ValueError("script error"))
        return Decided("a" * 64, result={"accept": True, "effort": 1.0})

    count = await simulate(decide, lambda s, d, sha: recorded.append((s, d, sha)), 1000.0, limit=30)
    assert count == 30
    assert len(recorded) == 30
    # A script's error is a failed task credited to that script; no decision, to none.
    assert recorded.count((False, FAILED_DURATION_MS, "b" * 64)) == 6
    assert recorded.count((False, FAILED_DURATION_MS, None)) == 6
    judged = [r for r in recorded if r[1] != FAILED_DURATION_MS]
    assert len(judged) == 18
    assert {(d, sha) for _, d, sha in judged} == {(55.0, "a" * 64)}  # effort 1.0 judged


async def test_rate_must_be_positive() -> None:
    async def decide(task: dict[str, object]) -> Decided:
        return Decided("a" * 64)

    with pytest.raises(ValueError, match="rate"):
        await simulate(decide, lambda s, d, sha: None, 0.0, limit=1)
