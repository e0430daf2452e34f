"""BehaviorPolicy's decision rule (pure: no servers)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

import pytest

from agent_registry.decisions.evidence import Counts
from agent_registry.decisions.policy import (
    AgentEvidence,
    CandidateEvidence,
    PolicySettings,
    Recommendation,
    candidate_interval,
    recommend,
    switch_budget,
)
from agent_registry.decisions.policy_beta import beta_cdf
from agent_registry.decisions.policy_fit import RecordFit
from agent_registry.decisions.policy_fleet import Fleet, before_change, judged_cell, own_cells
from agent_registry.decisions.policy_model import (
    Components,
    Normal,
    agent_posterior,
    log_odds,
)

SETTINGS = PolicySettings()
NOW = 1_000_000.0


def _agent(
    name: str,
    current: str,
    tasks: int,
    successes: int,
    *,
    history: Mapping[str, Counts] | None = None,
    last_switch_at: float | None = None,
    recent: Counts | None = None,
) -> AgentEvidence:
    return AgentEvidence(
        agent=f"ns/{name}",
        current=current,
        current_counts=Counts(tasks, successes),
        history=dict(history or {}),
        last_switch_at=last_switch_at,
        recent_counts=recent,
    )


def _fleet(
    behavior: str, agents: int, tasks: int, successes: int, prefix: str = ""
) -> list[AgentEvidence]:
    return [_agent(f"{prefix or behavior}-{i}", behavior, tasks, successes) for i in range(agents)]


def _candidate(name: str, members: Sequence[AgentEvidence]) -> CandidateEvidence:
    counts = Counts.total(a.current_counts for a in members if a.current == name)
    return CandidateEvidence(name=name, revision=1, counts=counts)


def _recommend(
    agents: Sequence[AgentEvidence],
    candidates: Sequence[CandidateEvidence],
    *,
    settings: PolicySettings = SETTINGS,
    switches_in_window: int = 0,
    role_agents: int | None = None,
) -> tuple[Recommendation, ...]:
    return recommend(
        agents,
        candidates,
        settings=settings,
        now=NOW,
        switches_in_window=switches_in_window,
        role_agents=len(agents) if role_agents is None else role_agents,
    )


# The issue's case: coder-3 on quick at 0.43 over 104 tasks, balanced at 0.99 on its agents.
BALANCED = _fleet("balanced", 6, 200, 198)
CODER_3 = _agent("coder-3", "quick", 104, 45)
CANDIDATES = [
    _candidate("balanced", BALANCED),
    CandidateEvidence("careful", 1, Counts()),
]


def test_the_issues_case_is_switched_with_its_evidence_in_the_reason() -> None:
    (rec,) = _recommend([CODER_3, *BALANCED], CANDIDATES)
    assert (rec.agent, rec.from_behavior, rec.to_behavior) == ("ns/coder-3", "quick", "balanced")
    assert rec.probability >= 0.999
    assert rec.reason.startswith("quick 0.43 (n=104, upper 0.5")
    assert " < balanced 0.9" in rec.reason
    assert "balanced fleet 0.99 (n=1200)" in rec.reason


def test_too_few_tasks_on_the_current_script_is_not_judged() -> None:
    short = _agent("coder-3", "quick", SETTINGS.min_tasks - 1, 5)
    assert _recommend([short, *BALANCED], CANDIDATES) == ()
    enough = _agent("coder-3", "quick", SETTINGS.min_tasks, 5)
    assert [r.agent for r in _recommend([enough, *BALANCED], CANDIDATES)] == ["ns/coder-3"]


def test_a_candidate_without_enough_evidence_is_no_target() -> None:
    thin = [_agent(f"careful-{i}", "careful", 9, 9) for i in range(5)]
    candidates = [_candidate("careful", thin)]
    assert _recommend([CODER_3, *thin], candidates) == ()


def test_cooldown_since_the_agents_last_policy_switch() -> None:
    cooldown = SETTINGS.cooldown_seconds
    cooling = _agent("coder-3", "quick", 104, 45, last_switch_at=NOW - cooldown + 1)
    assert _recommend([cooling, *BALANCED], CANDIDATES) == ()
    cooled = _agent("coder-3", "quick", 104, 45, last_switch_at=NOW - cooldown)
    assert len(_recommend([cooled, *BALANCED], CANDIDATES)) == 1
    # A switch stamped in the future (clock skew) still holds the agent.
    skewed = _agent("coder-3", "quick", 104, 45, last_switch_at=NOW + 5)
    assert _recommend([skewed, *BALANCED], CANDIDATES) == ()


QUICK = [_agent(f"quick-{i}", "quick", 100, 30 + 2 * i) for i in range(8)]


def test_budget_is_the_fraction_of_the_role_per_window_strongest_evidence_first() -> None:
    agents = [*QUICK, *BALANCED]  # 14 agents: floor(0.25 * 14) = 3 switches per window
    recs = _recommend(agents, CANDIDATES, switches_in_window=1)
    # The worst quick agents are the clearest cases.
    assert [r.agent for r in recs] == ["ns/quick-0", "ns/quick-1"]
    assert [r.probability for r in recs] == sorted((r.probability for r in recs), reverse=True)
    assert _recommend(agents, CANDIDATES, switches_in_window=3) == ()
    assert len(_recommend(agents, CANDIDATES)) == 3


def test_switch_budget_rounding_and_small_roles() -> None:
    assert switch_budget(SETTINGS, 100) == 25
    assert switch_budget(PolicySettings(max_switch_fraction=0.29), 100) == 29
    # A role smaller than 1 / fraction may still switch one agent per window.
    assert switch_budget(SETTINGS, 3) == 1
    assert switch_budget(SETTINGS, 0) == 0
    assert switch_budget(PolicySettings(max_switch_fraction=0.0), 100) == 0


def test_role_agents_beyond_the_judged_ones_count_for_the_budget() -> None:
    # Pinned agents are not judged but are part of the role: 40 agents -> 10 per window.
    recs = _recommend([*QUICK, *BALANCED], CANDIDATES, role_agents=40)
    assert len(recs) == len(QUICK)


def test_ordering_is_deterministic_whatever_the_input_order() -> None:
    agents = [*QUICK, *BALANCED, CODER_3]
    expected = _recommend(agents, CANDIDATES, role_agents=100)
    rng = random.Random(7)
    for _ in range(5):
        shuffled = agents[:]
        rng.shuffle(shuffled)
        assert _recommend(shuffled, list(reversed(CANDIDATES)), role_agents=100) == expected
    # Equal evidence: the agent name decides.
    twins = [_agent(n, "quick", 100, 40) for n in ("b", "a", "c")]
    recs = _recommend([*twins, *BALANCED], CANDIDATES, role_agents=100)
    assert [r.agent for r in recs] == ["ns/a", "ns/b", "ns/c"]


def test_no_switch_when_no_candidate_is_better() -> None:
    on_balanced = _agent("coder-1", "balanced", 300, 296)
    quick = _fleet("quick", 6, 200, 90)
    agents = [on_balanced, *quick, *BALANCED]
    candidates = [_candidate("balanced", agents), _candidate("quick", agents)]
    # The quick agents move; the one on balanced does not.
    assert {r.from_behavior for r in _recommend(agents, candidates)} == {"quick"}
    # Equal behaviors: nobody moves either.
    same = [*_fleet("a", 6, 300, 240), *_fleet("b", 6, 300, 240)]
    assert _recommend(same, [_candidate("a", same), _candidate("b", same)]) == ()


def test_a_weak_agent_is_not_sent_chasing_a_fleet_average_below_its_own_behavior() -> None:
    # It does badly on balanced, but balanced is the better behavior for the typical agent:
    # quick's fleet rate (0.75) is above the agent's 0.60, yet quick would likely be worse.
    weak = _agent("weak", "balanced", 300, 180)
    agents = [weak, *_fleet("balanced", 8, 300, 255), *_fleet("quick", 8, 300, 225)]
    candidates = [_candidate("balanced", agents), _candidate("quick", agents)]
    assert _recommend(agents, candidates) == ()


def test_an_agents_own_history_vetoes_a_behavior_that_failed_it() -> None:
    fleet = [*_fleet("quick", 6, 300, 150), *_fleet("balanced", 6, 300, 255)]
    candidates = [_candidate("quick", fleet), _candidate("balanced", fleet)]
    fresh = _agent("coder-9", "quick", 300, 150)
    moves = _recommend([fresh, *fleet], candidates, role_agents=100)
    assert ("ns/coder-9", "balanced") in {(r.agent, r.to_behavior) for r in moves}
    burnt = _agent("coder-9", "quick", 300, 150, history={"balanced": Counts(400, 180)})
    moves = _recommend([burnt, *fleet], candidates, role_agents=100)
    assert "ns/coder-9" not in {r.agent for r in moves}
    assert len(moves) == 6  # the other quick agents still move


def test_a_degraded_script_is_seen_in_the_recent_window() -> None:
    # 900 tasks at 0.90, then the last 200 at 0.50; careful runs at 0.80.
    careful = _fleet("careful", 6, 600, 480)
    lifetime = Counts(1100, 810 + 100)
    runners = [_agent(f"quick-{i}", "quick", lifetime.tasks, lifetime.successes) for i in range(6)]
    agents = [*runners, *careful]
    candidates = [_candidate("careful", agents), _candidate("quick", agents)]
    # Judged on the whole assignment (0.83), quick still looks better than careful.
    assert _recommend(agents, candidates) == ()
    windowed = [
        AgentEvidence(a.agent, a.current, a.current_counts, {}, None, Counts(200, 100))
        for a in runners
    ]
    recent_quick = CandidateEvidence(
        "quick", 1, Counts.total(a.current_counts for a in windowed), Counts(1200, 600), 6
    )
    recs = _recommend([*windowed, *careful], [candidates[0], recent_quick])
    assert {r.to_behavior for r in recs} == {"careful"}
    assert len(recs) == switch_budget(SETTINGS, 12)


def test_a_behavior_that_degraded_when_last_run_is_no_target() -> None:
    # Nobody runs careful now; its all-time rate is 0.90, its last window of use 0.50.
    quick = _fleet("quick", 6, 300, 150)
    stale = CandidateEvidence("careful", 1, Counts(5000, 4500))
    degraded = CandidateEvidence("careful", 1, Counts(5000, 4300), Counts(400, 200), 4)
    quick_candidate = _candidate("quick", quick)
    assert len(_recommend(quick, [quick_candidate, stale])) == switch_budget(SETTINGS, 6)
    assert _recommend(quick, [quick_candidate, degraded]) == ()


def _simulate_tie(seed: int, evaluations: int) -> list[list[str]]:
    """Two behaviors exactly as good for every agent; the rule applied every 50 tasks per
    agent (cooldown 2 evaluations), as the controller would in Auto mode."""
    rng = random.Random(seed)
    names = ("a", "b")
    skills = [rng.uniform(0.6, 0.95) for _ in range(20)]
    current = [names[i % 2] for i in range(20)]
    assignment = [Counts() for _ in range(20)]
    history: list[dict[str, Counts]] = [{} for _ in range(20)]
    fleet = {n: Counts() for n in names}
    last: list[float | None] = [None] * 20
    path = [[c] for c in current]
    for step in range(evaluations):
        now = step * 300.0
        for i, p in enumerate(skills):
            got = Counts(50, sum(rng.random() < p for _ in range(50)))
            assignment[i] += got
            history[i][current[i]] = history[i].get(current[i], Counts()) + got
            fleet[current[i]] += got
        evidence = [
            AgentEvidence(f"ns/agent-{i:02d}", current[i], assignment[i], history[i], last[i])
            for i in range(20)
        ]
        in_window = sum(1 for t in last if t is not None and now - t < 600.0)
        for rec in recommend(
            evidence,
            [CandidateEvidence(n, 1, fleet[n]) for n in names],
            settings=SETTINGS,
            now=now,
            switches_in_window=in_window,
            role_agents=20,
        ):
            i = int(rec.agent.rsplit("-", 1)[1])
            current[i], assignment[i], last[i] = rec.to_behavior, Counts(), now
            path[i].append(rec.to_behavior)
    return path


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_flapping_in_a_two_behavior_tie(seed: int) -> None:
    paths = _simulate_tie(seed, evaluations=40)
    assert all(len(p) <= 2 for p in paths), [p for p in paths if len(p) > 2]
    assert sum(len(p) - 1 for p in paths) <= 2


def test_recommend_validates_its_inputs() -> None:
    agents = [CODER_3, *BALANCED]
    with pytest.raises(ValueError, match="twice"):
        _recommend([CODER_3, CODER_3], CANDIDATES)
    with pytest.raises(ValueError, match="twice"):
        _recommend(agents, [CANDIDATES[0], CANDIDATES[0]])
    with pytest.raises(ValueError, match="switches_in_window"):
        _recommend(agents, CANDIDATES, switches_in_window=-1)
    with pytest.raises(ValueError, match="role_agents"):
        _recommend(agents, CANDIDATES, role_agents=len(agents) - 1)
    with pytest.raises(ValueError, match="now"):
        recommend(
            agents,
            CANDIDATES,
            settings=SETTINGS,
            now=math.nan,
            switches_in_window=0,
            role_agents=7,
        )
    with pytest.raises(ValueError, match="last_switch_at"):
        _recommend([_agent("x", "quick", 100, 50, last_switch_at=math.inf)], CANDIDATES)
    with pytest.raises(ValueError, match="agents must be"):
        _recommend(agents, [CandidateEvidence("balanced", 1, Counts(10, 5), agents=-1)])


@pytest.mark.parametrize(
    "bad",
    [
        {"min_tasks": 0},
        {"min_tasks": 2.5},
        {"min_tasks": True},
        {"confidence": 0.4},
        {"confidence": 1.0},
        {"cooldown_seconds": -1.0},
        {"cooldown_seconds": math.inf},
        {"max_switch_fraction": 1.5},
        {"max_switch_fraction": -0.1},
        {"window_seconds": 0.0},
    ],
)
def test_settings_are_validated(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        PolicySettings(**bad)  # type: ignore[arg-type]


def test_no_candidates_or_no_budget_means_no_recommendation() -> None:
    agents = [CODER_3, *BALANCED]
    assert _recommend(agents, []) == ()
    assert _recommend(agents, CANDIDATES, settings=PolicySettings(max_switch_fraction=0.0)) == ()


def _jeffreys_cdf_by_quadrature(x: float, a: float, b: float, steps: int = 20_000) -> float:
    # Substituting t = u^2 removes the t^(a - 1) singularity at 0 when a < 1.
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    h = math.sqrt(x) / steps
    total = 0.0
    for i in range(steps):
        u = (i + 0.5) * h
        t = u * u
        total += math.exp(log_norm + (a - 1) * math.log(t) + (b - 1) * math.log1p(-t)) * 2 * u
    return total * h


@pytest.mark.parametrize(("tasks", "successes"), [(104, 45), (2000, 1980), (12, 1)])
def test_candidate_interval_is_the_equal_tailed_jeffreys_interval(
    tasks: int, successes: int
) -> None:
    lower, upper = candidate_interval(Counts(tasks, successes), 0.95)
    a, b = successes + 0.5, tasks - successes + 0.5
    assert _jeffreys_cdf_by_quadrature(lower, a, b) == pytest.approx(0.025, abs=2e-4)
    assert _jeffreys_cdf_by_quadrature(upper, a, b) == pytest.approx(0.975, abs=2e-4)
    assert beta_cdf(upper, a, b) - beta_cdf(lower, a, b) == pytest.approx(0.95, abs=1e-9)


def test_candidate_interval_edges() -> None:
    assert candidate_interval(Counts(), 0.95) == (0.0, 1.0)
    none_won = candidate_interval(Counts(20, 0), 0.95)
    all_won = candidate_interval(Counts(20, 20), 0.95)
    assert none_won[0] == 0.0
    assert 0.0 < none_won[1] < 0.2
    assert all_won[1] == 1.0
    assert 0.8 < all_won[0] < 1.0
    wide, narrow = (
        candidate_interval(Counts(100, 80), 0.95),
        candidate_interval(Counts(100, 80), 0.5),
    )
    assert wide[0] < narrow[0] < narrow[1] < wide[1]


def _condition(
    mean: list[float],
    cov: list[list[float]],
    observed: list[int],
    y: list[float],
    noise: list[float],
) -> tuple[list[float], list[list[float]]]:
    """Textbook Gaussian conditioning with explicit matrices (the closed form's oracle)."""
    k = len(observed)
    s = [
        [cov[i][j] + (noise[a] if a == b else 0.0) for b, j in enumerate(observed)]
        for a, i in enumerate(observed)
    ]
    inv = _inverse(s)
    n = len(mean)
    gain = [
        [sum(cov[r][observed[m]] * inv[m][c] for m in range(k)) for c in range(k)] for r in range(n)
    ]
    post_mean = [
        mean[r] + sum(gain[r][c] * (y[c] - mean[observed[c]]) for c in range(k)) for r in range(n)
    ]
    post_cov = [
        [cov[r][q] - sum(gain[r][c] * cov[observed[c]][q] for c in range(k)) for q in range(n)]
        for r in range(n)
    ]
    return post_mean, post_cov


def _inverse(m: list[list[float]]) -> list[list[float]]:
    n = len(m)
    a = [[*row, *(1.0 if i == j else 0.0 for j in range(n))] for i, row in enumerate(m)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(a[r][c]))
        a[c], a[p] = a[p], a[c]
        a[c] = [v / a[c][c] for v in a[c]]
        for r in range(n):
            if r != c:
                f = a[r][c]
                a[r] = [v - f * w for v, w in zip(a[r], a[c], strict=True)]
    return [row[n:] for row in a]


def test_the_closed_form_posterior_matches_explicit_gaussian_conditioning() -> None:
    components = Components(between=0.3, interaction=0.08)
    effects = {"a": Normal(1.2, 0.02), "b": Normal(0.4, 0.05), "c": Normal(2.0, 0.01)}
    observed = {"a": Normal(0.7, 0.03), "b": Normal(0.9, 0.2)}
    post = agent_posterior(effects, observed, components)
    names = ["a", "b", "c"]
    skill = components.skill
    cov = [
        [skill + ((effects[i].variance + components.interaction) if i == j else 0.0) for j in names]
        for i in names
    ]
    mean, full = _condition(
        [effects[n].mean for n in names],
        cov,
        [0, 1],
        [observed["a"].mean, observed["b"].mean],
        [observed["a"].variance, observed["b"].variance],
    )
    for i, n in enumerate(names):
        assert post.means[n] == pytest.approx(mean[i], rel=1e-12)
        assert post.variances[n] == pytest.approx(full[i][i], rel=1e-12)
    d = post.difference("c", "a")
    assert d.mean == pytest.approx(mean[2] - mean[0], rel=1e-12)
    assert d.variance == pytest.approx(full[2][2] + full[0][0] - 2 * full[2][0], rel=1e-12)


def test_the_record_fit_compares_behaviors_on_the_same_agents() -> None:
    # Stronger agents ran only "a", weaker ones only "b": pooled, "a" looks better. Six
    # agents ran both and did better on "b" every time.
    components = Components(between=0.3, interaction=0.05)
    single = [{"a": log_odds(Counts(400, 340))} for _ in range(10)]
    single += [{"b": log_odds(Counts(400, 300))} for _ in range(10)]
    both = [
        {"a": log_odds(Counts(400, a)), "b": log_odds(Counts(400, b))}
        for a, b in ((300, 330), (320, 345), (340, 360), (280, 315), (260, 300), (350, 370))
    ]
    pooled = RecordFit.build(single, components).effects()
    assert pooled["a"].mean > pooled["b"].mean  # what fleet rates alone conclude
    fitted = RecordFit.build(single + both, components).effects()
    assert fitted["b"].mean > fitted["a"].mean


def test_the_record_fit_leaves_an_agent_out_of_its_own_evidence() -> None:
    components = Components(between=0.3, interaction=0.05)
    records = [{"a": log_odds(Counts(200, 100))}, {"a": log_odds(Counts(200, 180))}]
    fit = RecordFit.build(records, components)
    assert fit.effects(without=0)["a"].mean == pytest.approx(log_odds(Counts(200, 180)).mean)
    lone = RecordFit.build([{"a": log_odds(Counts(200, 100))}], components)
    assert lone.effects(without=0)["a"].variance > 1e3  # nothing else: flat
    # Only agent 0 ran "b": without it "b" is flat, without agent 1 it is fitted.
    mixed = RecordFit.build(
        [{"a": log_odds(Counts(200, 150)), "b": log_odds(Counts(200, 170))}, records[1]],
        components,
    )
    assert mixed.effects(without=0)["b"].variance > 1e3
    assert mixed.effects(without=1)["b"].variance < 1.0
    assert mixed.effects()["b"].variance < 1.0


def _rate_counts(tasks: int, log_odds_value: float) -> Counts:
    return Counts(tasks, round(tasks / (1.0 + math.exp(-log_odds_value))))


def _dropped_fleet() -> tuple[list[AgentEvidence], list[CandidateEvidence]]:
    """Behavior a dropped: its ten runners' last 200 tasks are far worse than their first
    1,000; twenty agents left it for b, each with a skill that shows on both."""
    stayers = [
        _agent(
            f"stay-{i}",
            "a",
            1200,
            _rate_counts(1000, 1.5).successes + _rate_counts(200, 0.0).successes,
            recent=_rate_counts(200, 0.0),
        )
        for i in range(10)
    ]
    skills = [0.8 * (i - 9.5) / 9.5 for i in range(20)]
    leavers = [
        _agent(
            f"left-{i}",
            "b",
            400,
            _rate_counts(400, 1.2 + skill).successes,
            history={"a": _rate_counts(1000, 1.5 + skill), "b": _rate_counts(400, 1.2 + skill)},
        )
        for i, skill in enumerate(skills)
    ]
    agents = stayers + leavers
    a_all = Counts.total([a.current_counts for a in stayers] + [a.history["a"] for a in leavers])
    candidates = [
        CandidateEvidence(
            "a", 1, a_all, Counts.total(a.recent_counts or Counts() for a in stayers), 10
        ),
        _candidate("b", agents),
    ]
    return agents, candidates


def test_a_changed_behaviors_older_records_still_place_the_agents_skill() -> None:
    agents, candidates = _dropped_fleet()
    fleet = Fleet.build(agents, candidates, SETTINGS.min_tasks)
    assert fleet.changed == frozenset({"a"})
    stayer, leaver = agents[0], agents[10]
    cell = judged_cell(stayer, SETTINGS.min_tasks)
    assert cell == stayer.recent_counts
    # The stayer's tasks before its window, and the leaver's history on a, count as a
    # behavior of their own: "a" before its change.
    assert set(own_cells(stayer, cell, fleet.changed)) == {before_change("a")}
    assert set(own_cells(leaver, leaver.current_counts, fleet.changed)) == {before_change("a")}
    # The leavers are pairs: their skill shows on a-before and on b, so the interaction
    # share falls well below the prior's one half.
    assert fleet.components.interaction < 0.25 * fleet.components.between


def test_a_changed_behaviors_effect_is_not_its_survivors_window() -> None:
    """The agents a behavior suits best stay on it longest: after a drop its window holds
    them alone. Its effect now is its earlier one (every agent that ran it) plus the change
    its runners show against their own earlier tasks."""
    strong = 0.8
    stayers = [
        _agent(
            f"stay-{i}",
            "a",
            1200,
            _rate_counts(1000, 1.5 + strong).successes + _rate_counts(200, strong).successes,
            recent=_rate_counts(200, strong),
        )
        for i in range(10)
    ]
    agents, candidates = _dropped_fleet()
    agents = stayers + agents[10:]
    window = Counts.total(a.recent_counts or Counts() for a in stayers)
    a_all = Counts.total(
        [a.current_counts for a in stayers] + [a.history["a"] for a in agents[10:]]
    )
    candidates = [CandidateEvidence("a", 1, a_all, window, 10), candidates[1]]
    fleet = Fleet.build(agents, candidates, SETTINGS.min_tasks)
    assert set(fleet.shifts) == {"a"}
    assert fleet.effects["a"].mean < log_odds(window).mean - 0.4
