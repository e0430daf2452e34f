"""Decision quality of BehaviorPolicy on a simulated fleet (seeded), beside the seed's rule
and never switching.

The fleet: 100 agents of one role, 5 behaviors. Hidden true success of agent i on behavior b,
on the log-odds scale: 1.2 + a_i + e_b + x_ib, with agent skill a_i ~ N(0, 0.5), behavior
effect e_b ~ N(0, 0.7) (drawn per run: the role's behaviors differ) and an agent x behavior
interaction x_ib ~ N(0, 0.25) (a behavior can suit one agent less than the average says).
Agents start on behaviors drawn uniformly (as people would assign them), run 2,000 tasks each,
one task per 6 s of simulated time. Every 50 tasks per agent (5 min, the status loop's
evaluation) each rule sees the evidence the controller would give it and its switches take
effect at once. Cooldown 10 min = 100 tasks, window 20 min = 200 tasks, budget 25 % of the
role per cooldown window, minTasks 50, confidence 0.95.

The three rules see the same outcome streams: the t-th task of an agent succeeds when the
agent's t-th uniform draw is below the success rate of the behavior it runs then (common
random numbers), so differences between rules are not sampling luck.

- policy: `agent_registry.decisions.policy.recommend`, Auto mode (every recommendation
  applied), given the evidence the controller gives it: each agent's current assignment and
  its history per behavior, each behavior's all-time counts; the recent windows (an agent's
  last 20 min on its assignment, a behavior's last 20 min of use and the agents behind them)
  come, as in the controller, from `decisions.policy_windows.PolicyWindows` fed the
  cumulative counts at each evaluation: none at the first evaluation, a shorter one at the
  next three, a behavior's last window of use frozen at the evaluation it was last run.
- seed: the seed's rule, applied at every evaluation: lifetime rate < 0.7 after more than 10
  tasks -> the behavior with the best fleet-wide average of the role; no cooldown, no budget.
- never: no switch.

Scenarios: stationary; drop (the behavior that is best for the most agents loses 0.3 of
success rate for every agent at task 1,000); confounded (the 20 most skilled agents start on
the behavior with the lowest effect, the others uniformly on the other four: that behavior's
fleet rate flatters it).

Figures: fleet success as a fraction of the oracle (every agent on its own best behavior at
every task), counted as expected successes (the sum of the true rate of the script each task
ran: outcome noise is left out of the figure, not out of the decisions); harmful switches
(the new behavior's true rate for that agent below the old one's at the switch); switches per
agent per cooldown window (the most in any 10 min of one agent, and the mean); returns (A -> B
-> A, and how many of those came within 4 cooldowns: flapping); in the drop scenario, for
the agents running the dropped behavior when it dropped and now better off elsewhere, tasks
until they leave it. Goals (exit status): stationary fleet success >= 95 % of the oracle;
harmful <= 2 % of switches (stationary, drop); at most 1 switch per agent per cooldown and
no flapping (all scenarios); p90 of tasks to leave the dropped behavior <= 500.

Run: .venv/bin/python tests/benchmarks/bench_policy.py [--quick] [--jobs 2]
(exit status 1 when a goal is missed).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "operator"))

from agent_registry.decisions.evidence import Counts
from agent_registry.decisions.policy import (
    AgentEvidence,
    CandidateEvidence,
    PolicySettings,
    recommend,
)
from agent_registry.decisions.policy_windows import PolicyWindows, ScriptKey

AGENTS = 100
BEHAVIORS = 5
TASKS = 2_000
TICK = 50  # tasks per agent between evaluations
TASK_SECONDS = 6.0
BASE, SKILL_SD, EFFECT_SD, INTERACTION_SD = 1.2, 0.5, 0.7, 0.25
DROP = 0.3
DROP_AT = 1_000
CONFOUNDED_TOP = 20
SEED_THRESHOLD, SEED_MIN_TASKS = 0.7, 10
SETTINGS = PolicySettings(
    min_tasks=50,
    confidence=0.95,
    cooldown_seconds=600.0,
    max_switch_fraction=0.25,
    window_seconds=1200.0,
)
RULES = ("policy", "seed", "never")
SCENARIOS = ("stationary", "drop", "confounded")
GOAL_FRACTION, GOAL_HARMFUL, GOAL_LEAVE = 0.95, 0.02, 500
# A return to the behavior an agent left counts as flapping this soon after the switch.
FLAP_COOLDOWNS = 4
# Leaving the dropped behavior must gain an agent at least this much to count as a move it
# should make quickly (below it, staying a while costs less than the goal is about).
MATERIAL_GAIN = 0.05


def names() -> list[str]:
    return [f"b{j}" for j in range(BEHAVIORS)]


@dataclass(frozen=True)
class World:
    rates: tuple[tuple[float, ...], ...]  # [agent][behavior], before any drop
    start: tuple[int, ...]
    dropped: int | None  # the behavior that drops at DROP_AT

    def rate(self, agent: int, behavior: int, task: int) -> float:
        p = self.rates[agent][behavior]
        if behavior == self.dropped and task >= DROP_AT:
            return max(0.01, p - DROP)
        return p

    def best(self, agent: int, task: int) -> int:
        row = [self.rate(agent, b, task) for b in range(BEHAVIORS)]
        return row.index(max(row))


def make_world(seed: int, scenario: str) -> World:
    rng = random.Random(seed)
    effects = [rng.gauss(0.0, EFFECT_SD) for _ in range(BEHAVIORS)]
    skills = [rng.gauss(0.0, SKILL_SD) for _ in range(AGENTS)]
    rates = tuple(
        tuple(
            1.0 / (1.0 + math.exp(-(BASE + skills[i] + effects[b] + rng.gauss(0, INTERACTION_SD))))
            for b in range(BEHAVIORS)
        )
        for i in range(AGENTS)
    )
    start = [rng.randrange(BEHAVIORS) for _ in range(AGENTS)]
    dropped = None
    if scenario == "confounded":
        worst = effects.index(min(effects))
        others = [b for b in range(BEHAVIORS) if b != worst]
        strongest = set(sorted(range(AGENTS), key=lambda i: -skills[i])[:CONFOUNDED_TOP])
        start = [worst if i in strongest else rng.choice(others) for i in range(AGENTS)]
    if scenario == "drop":
        favourites = [0] * BEHAVIORS
        for i in range(AGENTS):
            favourites[rates[i].index(max(rates[i]))] += 1
        dropped = favourites.index(max(favourites))
    return World(rates, tuple(start), dropped)


@dataclass
class AgentState:
    behavior: int
    since_tick: int = 0
    current: Counts = field(default_factory=Counts)
    lifetime: Counts = field(default_factory=Counts)
    history: dict[int, Counts] = field(default_factory=dict)
    last_switch: float | None = None
    switches: list[tuple[float, int, int]] = field(default_factory=list)  # (time, from, to)


@dataclass(frozen=True)
class RunResult:
    expected: float
    oracle: float
    switches: int
    harmful: int
    returns: int  # back to the behavior of the agent's previous switch, at any time
    flaps: int  # the same within FLAP_COOLDOWNS cooldowns of that switch
    max_per_cooldown: int
    # Drop scenario, per agent on the dropped behavior at the drop that is better off
    # elsewhere after it: (tasks until it left, None: never; what leaving gains it).
    leave: tuple[tuple[int | None, float], ...]
    wrongly_left: int  # agents it stayed best for that left it anyway
    seconds: float


def _policy_step(
    states: list[AgentState], windows: PolicyWindows, now: float
) -> list[tuple[int, int]]:
    behaviors = names()
    fleet_all = [Counts() for _ in range(BEHAVIORS)]
    # What the controller reads at each evaluation (cumulative counts per agent and script,
    # and each agent's open assignment) goes through the controller's own ring of snapshots.
    scripts: dict[ScriptKey, Counts] = {}
    assignments = {}
    for i, s in enumerate(states):
        agent = f"sim/agent-{i:03d}"
        for b, c in s.history.items():
            fleet_all[b] += c
            scripts[(agent, behaviors[b], 1, behaviors[b])] = c
        assignments[agent] = ((s.behavior, s.since_tick), s.current)
    recent = windows.observe(now, scripts=scripts, assignments=assignments, role=assignments)
    evidence = [
        AgentEvidence(
            agent=f"sim/agent-{i:03d}",
            current=behaviors[s.behavior],
            current_counts=s.current,
            history={behaviors[b]: c for b, c in s.history.items()},
            last_switch_at=s.last_switch,
            recent_counts=None if recent is None else recent.agent(f"sim/agent-{i:03d}"),
        )
        for i, s in enumerate(states)
    ]
    candidates = []
    for b in range(BEHAVIORS):
        window = None if recent is None else recent.candidate(behaviors[b], 1)
        if window is None:
            # As the controller: the agents with a row for it (revision_stats).
            agents = sum(1 for s in states if b in s.history) or None
            candidates.append(CandidateEvidence(behaviors[b], 1, fleet_all[b], None, agents))
        else:
            candidates.append(CandidateEvidence(behaviors[b], 1, fleet_all[b], *window))
    in_window = sum(
        1 for s in states for at, _, _ in s.switches if now - at < SETTINGS.cooldown_seconds
    )
    recs = recommend(
        evidence,
        candidates,
        settings=SETTINGS,
        now=now,
        switches_in_window=in_window,
        role_agents=AGENTS,
    )
    return [(int(r.agent.rsplit("-", 1)[1]), behaviors.index(r.to_behavior)) for r in recs]


def _seed_step(states: list[AgentState]) -> list[tuple[int, int]]:
    fleet = [Counts() for _ in range(BEHAVIORS)]
    for s in states:
        for b, c in s.history.items():
            fleet[b] += c
    ran = [b for b in range(BEHAVIORS) if fleet[b].tasks]
    best = max(ran, key=lambda b: (fleet[b].rate, -b))
    return [
        (i, best)
        for i, s in enumerate(states)
        if s.lifetime.tasks > SEED_MIN_TASKS
        and s.lifetime.rate < SEED_THRESHOLD
        and s.behavior != best
    ]


def simulate(seed: int, scenario: str, rule: str) -> RunResult:
    began = time.process_time()
    world = make_world(seed, scenario)
    draws = random.Random(seed * 7919 + 1)
    uniforms = [[draws.random() for _ in range(TASKS)] for _ in range(AGENTS)]
    states = [AgentState(world.start[i]) for i in range(AGENTS)]
    windows = PolicyWindows(SETTINGS.window_seconds)
    expected = oracle = 0.0
    harmful = returns = flaps = 0
    on_dropped = {i for i in range(AGENTS) if world.start[i] == world.dropped}
    for tick in range(TASKS // TICK):
        first = tick * TICK
        for i, s in enumerate(states):
            # Rates only change at the drop, which falls on a tick boundary.
            p = world.rate(i, s.behavior, first)
            expected += TICK * p
            oracle += TICK * world.rate(i, world.best(i, first), first)
            wins = sum(1 for u in uniforms[i][first : first + TICK] if u < p)
            got = Counts(TICK, wins)
            s.current += got
            s.lifetime += got
            s.history[s.behavior] = s.history.get(s.behavior, Counts()) + got
        if (tick + 1) * TICK == DROP_AT:
            on_dropped = {i for i, s in enumerate(states) if s.behavior == world.dropped}
        if tick == TASKS // TICK - 1:
            break
        now = (tick + 1) * TICK * TASK_SECONDS
        if rule == "policy":
            moves = _policy_step(states, windows, now)
        elif rule == "seed":
            moves = _seed_step(states)
        else:
            moves = []
        task = (tick + 1) * TICK
        for i, to in moves:
            s = states[i]
            if world.rate(i, to, task) < world.rate(i, s.behavior, task):
                harmful += 1
            if s.switches and s.switches[-1][1] == to:
                returns += 1
                flaps += now - s.switches[-1][0] <= FLAP_COOLDOWNS * SETTINGS.cooldown_seconds
            s.switches.append((now, s.behavior, to))
            s.behavior, s.since_tick, s.current, s.last_switch = to, tick + 1, Counts(), now
    return _result(world, states, on_dropped, (expected, oracle), (harmful, returns, flaps), began)


def _result(
    world: World,
    states: list[AgentState],
    on_dropped: set[int],
    success: tuple[float, float],
    counts: tuple[int, int, int],
    began: float,
) -> RunResult:
    most = 0
    for s in states:
        times = [at for at, _, _ in s.switches]
        for j, at in enumerate(times):
            most = max(most, sum(1 for u in times[j:] if u - at < SETTINGS.cooldown_seconds))
    leave: list[tuple[int | None, float]] = []
    wrongly_left = 0
    drop_time = DROP_AT * TASK_SECONDS
    for i in sorted(on_dropped):
        later = [at for at, b, _ in states[i].switches if at > drop_time and b == world.dropped]
        left = round((later[0] - drop_time) / TASK_SECONDS) if later else None
        best = world.best(i, DROP_AT)
        if best == world.dropped:
            wrongly_left += left is not None
        else:
            gain = world.rate(i, best, DROP_AT) - world.rate(i, world.dropped or 0, DROP_AT)
            leave.append((left, gain))
    harmful, returns, flaps = counts
    return RunResult(
        expected=success[0],
        oracle=success[1],
        switches=sum(len(s.switches) for s in states),
        harmful=harmful,
        returns=returns,
        flaps=flaps,
        max_per_cooldown=most,
        leave=tuple(leave),
        wrongly_left=wrongly_left,
        seconds=time.process_time() - began,
    )


def _call(job: tuple[Callable[..., RunResult], tuple[object, ...]]) -> RunResult:
    fn, args = job
    return fn(*args)


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class Summary:
    fraction: float
    fraction_min: float
    switches: int
    harmful: int
    returns: int
    flaps: int
    max_per_cooldown: int
    mean_per_cooldown: float
    leave: tuple[tuple[int | None, float], ...]
    wrongly_left: int
    seconds: float


def summarize(results: Sequence[RunResult]) -> Summary:
    windows = TASKS * TASK_SECONDS / SETTINGS.cooldown_seconds
    return Summary(
        fraction=sum(r.expected for r in results) / sum(r.oracle for r in results),
        fraction_min=min(r.expected / r.oracle for r in results),
        switches=sum(r.switches for r in results),
        harmful=sum(r.harmful for r in results),
        returns=sum(r.returns for r in results),
        flaps=sum(r.flaps for r in results),
        max_per_cooldown=max(r.max_per_cooldown for r in results),
        mean_per_cooldown=sum(r.switches for r in results) / (len(results) * AGENTS * windows),
        leave=tuple(x for r in results for x in r.leave),
        wrongly_left=sum(r.wrongly_left for r in results),
        seconds=sum(r.seconds for r in results),
    )


@dataclass(frozen=True)
class Leaving:
    agents: int
    p50: float
    p90: float
    most: float
    within: float  # share that left within GOAL_LEAVE tasks


def leaving(leave: Sequence[tuple[int | None, float]], min_gain: float) -> Leaving | None:
    times = [math.inf if t is None else float(t) for t, gain in leave if gain >= min_gain]
    if not times:
        return None
    return Leaving(
        agents=len(times),
        p50=quantile(times, 0.5),
        p90=quantile(times, 0.9),
        most=max(times),
        within=sum(1 for t in times if t <= GOAL_LEAVE) / len(times),
    )


def tasks_text(v: float) -> str:
    return "never" if math.isinf(v) else f"{v:,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="3 runs instead of 20")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--seed", type=int, default=20261213)
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python"
        f" {platform.python_version()}, {args.jobs} worker process(es), seed {args.seed},"
        f" {runs} runs"
    )
    began = time.monotonic()
    jobs = [
        (simulate, (args.seed + run, scenario, rule))
        for scenario in SCENARIOS
        for rule in RULES
        for run in range(runs)
    ]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(_call, jobs))
    by: dict[tuple[str, str], Summary] = {}
    for n, (scenario, rule) in enumerate((s, r) for s in SCENARIOS for r in RULES):
        by[(scenario, rule)] = summarize(results[n * runs : (n + 1) * runs])
    print()
    print(
        "| scenario | rule | fleet success / oracle (worst run) | switches | harmful |"
        f" returns A->B->A (within {FLAP_COOLDOWNS} cooldowns) |"
        " switches per agent per cooldown: max, mean |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for (scenario, rule), s in by.items():
        harm = f"{s.harmful} ({pct(s.harmful / s.switches)})" if s.switches else "0"
        print(
            f"| {scenario} | {rule} | {pct(s.fraction)} ({pct(s.fraction_min)}) |"
            f" {s.switches:,} | {harm} | {s.returns} ({s.flaps}) |"
            f" {s.max_per_cooldown}, {s.mean_per_cooldown:.3f} |"
        )
    print()
    print(
        "| drop: agents on it at the drop, better off elsewhere by | rule | agents |"
        f" tasks to leave p50 | p90 | max | left within {GOAL_LEAVE} tasks |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for min_gain, label in ((1e-9, "any"), (MATERIAL_GAIN, f">= {MATERIAL_GAIN:.2f}")):
        for rule in RULES:
            got = leaving(by[("drop", rule)].leave, min_gain)
            if got is None:
                continue
            print(
                f"| {label} | {rule} | {got.agents} | {tasks_text(got.p50)} |"
                f" {tasks_text(got.p90)} | {tasks_text(got.most)} | {pct(got.within)} |"
            )
    print(
        "\nagents on it for whom it stayed best, that left it anyway: "
        + ", ".join(f"{rule} {by[('drop', rule)].wrongly_left}" for rule in RULES)
    )
    policy_cpu = sum(by[(sc, "policy")].seconds for sc in SCENARIOS)
    print(
        f"wall {time.monotonic() - began:.0f} s; CPU in policy runs {policy_cpu:.0f} s"
        f" ({1000 * policy_cpu / (len(SCENARIOS) * runs * (TASKS // TICK - 1)):.0f} ms per"
        " evaluation of 100 agents, simulation included)"
    )
    missed = []
    main_case = by[("stationary", "policy")]
    if main_case.fraction < GOAL_FRACTION:
        missed.append(f"stationary: fleet success {pct(main_case.fraction)} < 95 %")
    for scenario in ("stationary", "drop"):
        s = by[(scenario, "policy")]
        if s.switches and s.harmful / s.switches > GOAL_HARMFUL:
            missed.append(f"{scenario}: harmful {pct(s.harmful / s.switches)} > 2 %")
    for scenario in SCENARIOS:
        s = by[(scenario, "policy")]
        if s.max_per_cooldown > 1:
            missed.append(f"{scenario}: {s.max_per_cooldown} switches of one agent per cooldown")
        if s.flaps:
            missed.append(f"{scenario}: {s.flaps} returns within {FLAP_COOLDOWNS} cooldowns")
    material = leaving(by[("drop", "policy")].leave, MATERIAL_GAIN)
    if material is not None and material.p90 > GOAL_LEAVE:
        missed.append(f"drop: p90 of tasks to leave {tasks_text(material.p90)} > {GOAL_LEAVE}")
    for line in missed:
        print(f"MISSED {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
