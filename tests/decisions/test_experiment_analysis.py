"""A/B experiment verdicts (experiment_analysis.py): rules, reasons and error rates."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest

from agent_registry.decisions.evidence import Counts
from agent_registry.decisions.experiment_analysis import (
    ArmEvidence,
    ExperimentVerdict,
    analyze_experiment,
)
from agent_registry.decisions.sequential import mixture_p_value, smoothed_variance


def arm(tasks: int, successes: int, name: str = "", weight: float = 1.0) -> ArmEvidence:
    return ArmEvidence(Counts(tasks, successes), weight=weight, name=name)


def agent_arm(per_agent: Sequence[tuple[int, int]], weight: float = 1.0) -> ArmEvidence:
    agents = tuple(Counts(n, s) for n, s in per_agent)
    return ArmEvidence(Counts.total(agents), agents, weight)


def test_a_clear_winner_is_concluded_with_the_evidence_in_the_reason() -> None:
    verdict = analyze_experiment([arm(812, 739, "balanced"), arm(790, 561, "careful")])
    assert verdict.outcome == "Concluded"
    assert verdict.winner == 0
    assert verdict.p_value <= 0.05
    assert verdict.reason.startswith("balanced 0.910 [")
    assert "beats careful 0.710 [" in verdict.reason
    assert "always-valid, n=812/790)" in verdict.reason
    for (low, high), rate in zip(verdict.intervals, (739 / 812, 561 / 790), strict=True):
        assert low < rate < high
    assert not verdict.sample_ratio_mismatch
    assert verdict.srm_p_value is not None
    assert verdict.srm_p_value > 0.001
    assert verdict.arm_p_values == (verdict.p_value, 1.0)


def test_the_winner_is_an_index_into_arms() -> None:
    verdict = analyze_experiment([arm(800, 560), arm(800, 720)])
    assert (verdict.outcome, verdict.winner) == ("Concluded", 1)
    assert "arm 1 0.900" in verdict.reason
    assert "arm 0 0.700" in verdict.reason


def test_no_winner_before_min_tasks_per_arm_even_with_strong_evidence() -> None:
    verdict = analyze_experiment([arm(90, 88), arm(90, 45)])
    assert verdict.p_value <= 0.05  # the evidence is there...
    assert verdict.outcome == "Running"  # ...but the gate holds
    assert verdict.winner is None
    assert verdict.reason.startswith("waiting for minTasksPerArm=100")
    assert analyze_experiment([arm(90, 88), arm(90, 45)], min_tasks_per_arm=50).winner == 0


def test_equal_arms_run_then_end_inconclusive_at_the_horizon() -> None:
    running = analyze_experiment([arm(5000, 4000), arm(5000, 4010)])
    assert (running.outcome, running.winner) == ("Running", None)
    assert running.reason.startswith("no winner yet (needs p <= 0.05)")
    done = analyze_experiment([arm(10_000, 8000), arm(9_950, 7990)])
    assert (done.outcome, done.winner) == ("Inconclusive", None)
    assert done.reason.startswith("maxTasksPerArm=10000 reached without a winner")
    assert done.p_value > 0.05


def test_nothing_to_test_until_every_arm_has_tasks() -> None:
    verdict = analyze_experiment([arm(400, 390, "a"), arm(0, 0, "b")])
    assert verdict.outcome == "Running"
    assert verdict.p_value == 1.0
    assert verdict.intervals[1] == (0.0, 1.0)
    assert "b" in verdict.reason


def test_sample_ratio_mismatch_stops_promotion() -> None:
    skewed = [arm(6000, 5400, weight=0.5), arm(4000, 2800, weight=0.5)]
    verdict = analyze_experiment(skewed)
    assert verdict.sample_ratio_mismatch
    assert verdict.srm_p_value is not None
    assert verdict.srm_p_value < 0.001
    assert (verdict.outcome, verdict.winner) == ("Running", None)
    assert verdict.reason.startswith("sample ratio mismatch: tasks per arm 6000/4000 vs weights")
    sequential = analyze_experiment(skewed, srm_test="Sequential")
    assert sequential.sample_ratio_mismatch
    assert sequential.winner is None
    assert "always-valid p=" in sequential.reason
    # Declared 60/40, the same split is fine and the better arm wins.
    declared = analyze_experiment([arm(6000, 5400, weight=3), arm(4000, 2800, weight=2)])
    assert not declared.sample_ratio_mismatch
    assert declared.winner == 0
    # Thompson moves the split on purpose: no SRM check at all.
    thompson = analyze_experiment(skewed, allocation="Thompson")
    assert thompson.srm_p_value is None
    assert not thompson.sample_ratio_mismatch
    assert thompson.winner == 0


def test_multiple_arms_are_bonferroni_corrected_over_pairs() -> None:
    pair = [arm(2000, 1700), arm(2000, 1620)]
    two = analyze_experiment(pair)
    three = analyze_experiment([*pair, arm(2000, 1500)])
    single = mixture_p_value(
        0.85 - 0.81, smoothed_variance(Counts(2000, 1700)) + smoothed_variance(Counts(2000, 1620))
    )
    assert two.p_value == pytest.approx(single)
    # Three arms, three pairs: the same comparison now needs three times the evidence.
    assert three.p_value == pytest.approx(min(1.0, 3 * single))


def test_the_winner_must_beat_every_other_arm() -> None:
    # a beats c clearly, but not b: no winner, and the leader's p-value says so.
    verdict = analyze_experiment([arm(3000, 2550), arm(3000, 2535), arm(3000, 2100)])
    assert verdict.winner is None
    assert verdict.p_value > 0.05
    assert verdict.arm_p_values[2] == 1.0  # the worst arm is ahead of nobody
    five = analyze_experiment([arm(3000, 2700), *(arm(3000, 2400 - 30 * i) for i in range(4))])
    assert (five.outcome, five.winner) == ("Concluded", 0)
    assert five.reason.count(" and ") == 3


def test_p_value_falls_as_the_gap_widens() -> None:
    gaps = [analyze_experiment([arm(2000, 1600), arm(2000, s)]).p_value for s in (1620, 1650, 1680)]
    assert gaps[0] > gaps[1] > gaps[2]


def test_agent_unit_accounts_for_agents_differing_in_skill() -> None:
    # The same totals; in the agent version the agents of each arm differ a lot in skill.
    uneven_a = [(200, 196), (200, 120), (200, 190), (200, 130), (200, 180)]
    uneven_b = [(200, 150), (200, 190), (200, 110), (200, 176), (200, 130)]
    totals = [agent_arm(uneven_a), agent_arm(uneven_b)]
    by_task = analyze_experiment(totals, unit="Task")
    by_agent = analyze_experiment(totals, unit="Agent")
    assert by_task.winner == 0  # 816/1000 vs 756/1000 looks decisive when tasks are independent
    assert by_agent.winner is None  # but 5 agents per arm this spread cannot tell them apart
    assert by_agent.p_value > by_task.p_value
    task_width = by_task.intervals[0][1] - by_task.intervals[0][0]
    agent_width = by_agent.intervals[0][1] - by_agent.intervals[0][0]
    assert agent_width > task_width
    # Agents alike in skill: the agent-level test decides too (its variance floor is the
    # binomial one, and with 10 agents per arm the t correction is modest).
    even_a = [(300, 270)] * 10
    even_b = [(300, 225)] * 10
    alike = analyze_experiment([agent_arm(even_a), agent_arm(even_b)], unit="Agent")
    assert (alike.outcome, alike.winner) == ("Concluded", 0)


def test_agent_unit_needs_two_agents_per_arm_and_consistent_counts() -> None:
    lonely = analyze_experiment(
        [agent_arm([(500, 480)]), agent_arm([(250, 150), (250, 160)])], unit="Agent"
    )
    assert lonely.outcome == "Running"
    assert lonely.winner is None
    assert "needs >= 2 agents" in lonely.reason
    assert lonely.intervals[0] == (0.0, 1.0)
    with pytest.raises(ValueError, match="per_agent counts summing"):
        analyze_experiment(
            [ArmEvidence(Counts(10, 5), (Counts(4, 2),)), agent_arm([(3, 1), (3, 2)])],
            unit="Agent",
        )


def test_agent_unit_checks_the_split_of_agents() -> None:
    many = [(100, 80)] * 19
    few = [(1900, 1520)]
    verdict = analyze_experiment([agent_arm(many), agent_arm(few)], unit="Agent")
    assert verdict.sample_ratio_mismatch
    assert "agents per arm 19/1" in verdict.reason


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"min_tasks_per_arm": -1}, "min_tasks_per_arm"),
        ({"min_tasks_per_arm": 500, "max_tasks_per_arm": 400}, "max_tasks_per_arm"),
        ({"unit": "Team"}, "unit"),
        ({"allocation": "Greedy"}, "allocation"),
        ({"srm_test": "G"}, "srm_test"),
    ],
)
def test_input_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        analyze_experiment([arm(10, 5), arm(10, 6)], **kwargs)  # type: ignore[arg-type]


def test_arm_count_and_weights_are_validated() -> None:
    with pytest.raises(ValueError, match=r"2\.\.5 arms"):
        analyze_experiment([arm(10, 5)])
    with pytest.raises(ValueError, match=r"2\.\.5 arms"):
        analyze_experiment([arm(10, 5)] * 6)
    with pytest.raises(ValueError, match="weights must be positive"):
        analyze_experiment([arm(10, 5, weight=0.0), arm(10, 5)])


def _naive_z_rejects(a: Counts, b: Counts) -> bool:
    pooled = (a.successes + b.successes) / (a.tasks + b.tasks)
    variance = pooled * (1 - pooled) * (1 / a.tasks + 1 / b.tasks)
    return variance > 0 and abs(a.rate - b.rate) / math.sqrt(variance) > 1.96


def test_a_a_under_continuous_monitoring_task_unit() -> None:
    """200 A/A experiments (0.80 vs 0.80), looked at after every 20 tasks up to 2,000 per arm.
    Ours declares a winner in <= alpha of them (2 % with this seed; the bound 10 % is loose); a
    fixed-sample z-test looked at the same way declares one in 31 %."""
    rng = random.Random(2026)
    ours = naive = 0
    for _ in range(200):
        tasks, wins = [0, 0], [0, 0]
        ours_fp = naive_fp = False
        while max(tasks) < 2000 and not (ours_fp and naive_fp):
            for _ in range(20):
                a = rng.random() < 0.5
                tasks[a] += 1
                wins[a] += rng.random() < 0.8
            a_counts, b_counts = Counts(tasks[0], wins[0]), Counts(tasks[1], wins[1])
            verdict = analyze_experiment(
                [ArmEvidence(a_counts), ArmEvidence(b_counts)], max_tasks_per_arm=2000
            )
            ours_fp = ours_fp or verdict.winner is not None
            if min(tasks) >= 100:
                naive_fp = naive_fp or _naive_z_rejects(a_counts, b_counts)
        ours += ours_fp
        naive += naive_fp
    assert ours / 200 <= 0.10
    assert naive / 200 > 0.20


def _agent_a_a(rng: random.Random, unit: str) -> ExperimentVerdict:
    skills = [rng.betavariate(16, 4) for _ in range(20)]
    order = list(range(20))
    rng.shuffle(order)
    groups = [order[:10], order[10:]]
    tasks, wins = [0] * 20, [0] * 20
    while True:
        for _ in range(40):
            agent = int(rng.random() * 20)
            tasks[agent] += 1
            wins[agent] += rng.random() < skills[agent]
        arms = [
            ArmEvidence(
                Counts.total(Counts(tasks[g], wins[g]) for g in group),
                tuple(Counts(tasks[g], wins[g]) for g in group),
            )
            for group in groups
        ]
        verdict = analyze_experiment(
            arms, max_tasks_per_arm=2000, unit="Agent" if unit == "Agent" else "Task"
        )
        if verdict.outcome != "Running":
            return verdict


def test_a_a_with_agents_differing_in_skill_needs_the_agent_unit() -> None:
    """100 A/A experiments with 20 agents whose skills are drawn from Beta(16, 4), randomized
    10/10: the arms' true rates are equal, but each arm's agents differ. unit Agent keeps false
    winners <= alpha (none with this seed; bound 10 %); the unit-Task analysis of the same
    streams, treating the tasks as independent, declares a false winner in 35 %."""
    agent_fp = sum(_agent_a_a(random.Random(i), "Agent").winner is not None for i in range(100))
    task_fp = sum(_agent_a_a(random.Random(i), "Task").winner is not None for i in range(100))
    assert agent_fp / 100 <= 0.10
    assert task_fp / 100 > 0.25
