"""BehaviorPolicy evaluation cost (standalone script, run by `make bench`; not collected).

Times the pure decision of one policy evaluation (`decisions.policy.recommend`) for N agents
of one role with 3 behaviors, each agent with history on all three: what the operator
computes every `--policy-interval` (15 s) for each policy, in a worker thread. Figures are
the best of --repeats calls, and per agent as a ratio to the smallest N's per-agent cost, in
the same process: a ratio near 1 is a cost linear in the fleet.

Usage: python tests/benchmarks/bench_policy_cost.py [--agents 100,1000,10000] [--repeats 3]
       [--write-docs]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from agent_registry.decisions.evidence import Counts  # noqa: E402
from agent_registry.decisions.policy import (  # noqa: E402
    AgentEvidence,
    CandidateEvidence,
    PolicySettings,
    recommend,
)
from benchmarks.machine import DOC, cpu_model, write_section  # noqa: E402

SECTION = "## BehaviorPolicy evaluation cost (`tests/benchmarks/bench_policy_cost.py`)"
BEHAVIORS = ("a", "b", "c")
RATES = (0.7, 0.8, 0.9)


def evidence(agents: int, seed: int = 1) -> tuple[list[AgentEvidence], list[CandidateEvidence]]:
    rng = random.Random(seed)
    judged = []
    for i in range(agents):
        history = {}
        for name in BEHAVIORS:
            tasks = rng.randint(20, 300)
            history[name] = Counts(tasks, int(tasks * rng.uniform(0.6, 0.95)))
        tasks = rng.randint(20, 300)
        judged.append(
            AgentEvidence(
                agent=f"ns/agent-{i}",
                current=BEHAVIORS[i % len(BEHAVIORS)],
                current_counts=Counts(tasks, int(tasks * rng.uniform(0.5, 0.95))),
                history=history,
            )
        )
    candidates = [
        CandidateEvidence(name=name, revision=1, counts=Counts(100 * agents, int(100 * agents * p)))
        for name, p in zip(BEHAVIORS, RATES, strict=True)
    ]
    return judged, candidates


def best_of(agents: int, repeats: int) -> tuple[float, int]:
    judged, candidates = evidence(agents)
    settings = PolicySettings(min_tasks=20, max_switch_fraction=0.1)
    best, switches = float("inf"), 0
    for _ in range(repeats):
        started = time.perf_counter()
        switches = len(
            recommend(
                judged,
                candidates,
                settings=settings,
                now=1e9,
                switches_in_window=0,
                role_agents=agents,
            )
        )
        best = min(best, time.perf_counter() - started)
    return best, switches


def render(rows: list[tuple[int, float, int]], repeats: int) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    base = rows[0][1] / rows[0][0]
    lines = [
        f"Machine: {cpu_model()}, `nproc` = {os.cpu_count()}, {platform.system()}"
        f" {platform.release()}, Python {platform.python_version()}; run {now}, load average"
        f" {os.getloadavg()[0]:.1f} at the end; best of {repeats}.",
        "",
        "| agents of the role | one evaluation (ms) | per agent (ms) "
        f"| per agent / at {rows[0][0]:,} | switches recommended |",
        "|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {agents:,} | {seconds * 1000:.1f} | {seconds * 1000 / agents:.3f} "
        f"| {seconds / agents / base:.2f} | {switches:,} |"
        for agents, seconds, switches in rows
    ]
    return "\n".join(lines)


DOC_INTRO = """
Run: `python tests/benchmarks/bench_policy_cost.py --write-docs`. The pure decision of one
BehaviorPolicy evaluation (`decisions.policy.recommend`) for N agents of one role, 3 behaviors,
every agent with history on all three; best of 3 calls. The registry read it needs is in
[Per-revision aggregates](#per-revision-aggregates-testsbenchmarksbench_revision_statspy)
(`agent_script_counts`).
"""

DOC_NOTES = """
Before this benchmark existed, each agent's leave-one-out refit of the record fit counted
every agent of the role again (which behaviors anyone else ran), so one evaluation was
quadratic in the role: 12 ms, 328 ms and 22.6 s for 100, 1,000 and 10,000 agents, measured
the same way on the same machine just before the change (2026-12-04), against 6 ms, 60 ms and
0.62 s after it, with the same recommendations (compared for 2,000 agents). The fit now keeps
per behavior how many agents ran it and an agent left out subtracts its own. The evaluation
runs in a worker thread, so the operator's event loop keeps its turns meanwhile.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="100,1000,10000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOC.name}")
    args = parser.parse_args()
    rows = []
    for agents in (int(n) for n in args.agents.split(",")):
        seconds, switches = best_of(agents, args.repeats)
        print(f"{agents} agents: {seconds * 1000:.1f} ms, {switches} switches", flush=True)
        rows.append((agents, seconds, switches))
    report = render(rows, args.repeats)
    print(report)
    if args.write_docs:
        write_section(SECTION, DOC_INTRO + "\n" + report + "\n" + DOC_NOTES)


if __name__ == "__main__":
    main()
