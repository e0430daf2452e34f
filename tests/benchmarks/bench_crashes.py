"""The operator SIGKILLed mid-reconcile and mid-fan-out, --kills times (standalone script).

Real: the local control plane, a throwaway PostgreSQL, the operator as `agentreg run` (a
subprocess, killed with SIGKILL of its process group and started again on the same database).
Objects: manifests/examples (3 AgentBehaviors, 3 Agents, one with a Deployment) plus --agents
generated Agents. Each round (tests/e2e/crash_loop.py) edits one behavior's script (a new
revision, fanned out to every agent that references it), switches the behaviorRef of 3
agents, creates 2 Agents and deletes 2; a random 0..--max-delay s after the first of those
requests (the rest may still be on their way) it kills the operator,
restarts it and waits until everything is converged: every Agent's status and ConfigMap show
its behavior's current revision and sha256, every behavior's status its revision, each agent's
assignment history has exactly the rows its changes made (none lost, none twice, one open row;
deleted agents keep theirs and are `stopped`), deleted Agents are gone (they carry no
finalizer), and every bundle ConfigMap is owned by its Agent (none orphaned). After the last
kill it waits --settle s and checks everything again.

Usage: python tests/benchmarks/bench_crashes.py [--kills 20] [--agents 50] [--max-delay 1.5]
       [--seed 1] [--write-docs]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.machine import write_section  # noqa: E402
from benchmarks.operator_env import OperatorEnv, machine_line, say  # noqa: E402
from e2e.conftest import EXAMPLES_DIR  # noqa: E402
from e2e.crash_loop import KillRecord, converge, crash_round, problems, setup  # noqa: E402
from e2e.report_load import (  # noqa: E402
    LoadTotals,
    ReportLoad,
    deploy_agents,
    discrepancies,
    registry_counts,
)
from fixtures.pgserver import FAST_SETTINGS  # noqa: E402

SECTION = "## Operator crashes: SIGKILL mid-work (`tests/benchmarks/bench_crashes.py`)"
SECTION_LEADER = (
    "## Operator crashes with leader election (`tests/benchmarks/bench_crashes.py --leader-elect`)"
)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))]


def render(
    records: list[KillRecord],
    args: argparse.Namespace,
    initial: float,
    settled: list[str],
    load: LoadTotals | None,
    miscounts: list[str],
) -> str:
    converged = [r.converge_s for r in records if r.converge_s is not None]
    restarts = [r.restart_s for r in records]
    mid = [r for r in records if 0 < r.done_at_kill < r.changes]
    before = [r for r in records if r.done_at_kill == 0]
    stored_only = [r for r in before if r.stored_at_kill]
    after = [r for r in records if r.done_at_kill == r.changes]
    lines = [
        machine_line(),
        f"{args.agents} generated Agents + the examples (3 behaviors, 3 Agents); {len(records)}"
        f" kills; each lands uniformly 0-{args.max_delay:g} s after the first request of the"
        " round's work (odd kills) or after the edit's new revision is stored in the registry"
        f" (even kills: the fan-out is about to start or running) (seed {args.seed}); the"
        f" initial reconcile converged in {initial:.1f} s"
        + ("; with `--leader-elect`." if args.leader_elect else "; without leader election."),
        "",
        "| | p50 s | max s |",
        "|---|---:|---:|",
        f"| SIGKILL -> restarted operator answers /healthz | {statistics.median(restarts):.1f} "
        f"| {max(restarts):.1f} |",
    ]
    if converged:
        lines.append(
            f"| SIGKILL -> everything converged | {statistics.median(converged):.1f} "
            f"| {max(converged):.1f} |"
        )
    lines += [
        "",
        f"Where the kills landed (ConfigMaps of the round already right at the kill): "
        f"{len(mid)} mid-way through the fan-out, {len(before)} before the first"
        f" ({len(stored_only)} of them after the edit's new revision was stored, before any"
        f" ConfigMap), {len(after)} after the last (status writes and the other handlers"
        " may still have been in flight).",
        "",
        "| kill | work | kill at s after | new revision stored at the kill "
        "| ConfigMaps right at the kill | restart s | converged s |",
        "|---:|---|---:|---|---:|---:|---:|",
    ]
    for r in records:
        done = "never" if r.converge_s is None else f"{r.converge_s:.1f}"
        lines.append(
            f"| {r.number} | {r.work} "
            f"| {r.kill_after_s:.2f} {'request' if r.mode == 'request' else 'stored'} "
            f"| {'yes' if r.stored_at_kill else 'no'} | {r.done_at_kill}/{r.changes} "
            f"| {r.restart_s:.1f} | {done} |"
        )
    failed = [r for r in records if r.converge_s is None]
    lines.append("")
    if load is not None:
        lines += [
            f"Report load through the kills: {args.load_agents} more Agents' reporters (threads,"
            f" {args.load_rate:g} outcomes/s each, sending every 0.5 s) report to the operator's"
            f" API the whole time: {load.produced:,} outcomes produced, {load.acked:,}"
            f" acknowledged, {load.failed:,} POSTs without an answer (operator dead),"
            f" {load.unavailable} answered 503, {load.duplicates} batches acknowledged as"
            f" duplicates (counted before the kill, answer lost), largest buffer"
            f" {load.buffer_peak:,}; "
            + (
                "the registry counted every one exactly once."
                if not miscounts
                else "MISCOUNTED: " + "; ".join(miscounts)
            ),
            "",
        ]
    if not failed and not settled:
        lines.append(
            "Every kill converged: no duplicate or missing history row, one open row per"
            " agent, no orphan ConfigMap; still so after the settle time."
        )
    for r in failed:
        lines.append(f"ANOMALY at kill {r.number}: " + "; ".join(r.left[:10]))
    if settled:
        lines.append("ANOMALY after settling: " + "; ".join(settled[:10]))
    return "\n".join(lines)


DOC_INTRO = """
Run: `python tests/benchmarks/bench_crashes.py --write-docs`. Real control plane and
PostgreSQL, the operator as a subprocess killed with SIGKILL and started again on the same
database; the rounds and the convergence check are `tests/e2e/crash_loop.py` (a 3-kill
version runs in CI: `test_operator_sigkilled_three_times_mid_work_converges_with_exact_history`
in `tests/e2e/test_operator_resilience.py`). Convergence is polled about every 0.5 s
(three `kubectl get` and one registry read per poll, on a loaded machine), so times are
upper bounds to about a second.
"""

DOC_NOTES = """
Why it holds: each handler step is idempotent and re-done from the start after a crash
(kopf records a handler as done only after it returned, and a restart resumes every object):
registering an agent is register-or-reactivate, an assignment is opened only when the decided
script or source differs from the open one (read from the registry, in the transaction that
closes the previous row; a partial unique index allows one open row per agent), ConfigMaps
are server-side applied on every pass. A behavior edit whose fan-out was cut off is handled
again as an update (its new revision is already stored: `create_behavior` of the same script
is a no-op), and every Agent's resume handler re-decides it anyway.
"""


DOC_LEADER = """
The same rounds with the operator started as in a pod (`--leader-elect`, Lease in the test
namespace, client-go's timings: leaseDuration 15 s, retry 2 s). A restarted process has a new
identity (host name + a fresh UUID, as client-go), so it must see its killed predecessor's
Lease unchanged for a whole lease duration before it takes it: that wait is the price of
never letting two controllers act at once, and it dominates the time to converge.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--max-delay", type=float, default=1.2)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--load-agents", type=int, default=3, help="agents reporting (0: none)")
    parser.add_argument("--load-rate", type=float, default=50.0, help="outcomes/s per agent")
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        help="run the operator with --leader-elect (as in a pod): a restarted process waits"
        " for its killed predecessor's Lease to expire",
    )
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    records: list[KillRecord] = []
    with OperatorEnv(FAST_SETTINGS) as env:
        kubectl = env.namespace("bench-crashes")
        database_url = env.database("crashes")
        extra = (
            ("--leader-elect", "--leader-election-namespace", kubectl.namespace)
            if args.leader_elect
            else ()
        )
        operator = env.operator(kubectl.namespace, database_url, extra=extra)
        operator.start()
        started = time.monotonic()
        model = setup(kubectl, str(EXAMPLES_DIR), args.agents)
        initial, left = converge(kubectl, database_url, model, timeout=args.timeout, since=started)
        if initial is None:
            raise SystemExit(f"the initial reconcile never converged: {left[:10]}")
        say(f"initial reconcile of {len(model.live)} agents converged in {initial:.1f} s")
        load = None
        if args.load_agents:
            names = [f"load-{i}" for i in range(args.load_agents)]
            behaviors = sorted(model.behaviors)
            agents = deploy_agents(kubectl, names, behaviors, env.workdir / "tokens")
            for agent in agents:
                model.assign(agent.name, behaviors[names.index(agent.name) % len(behaviors)])
                model.protected.add(agent.name)
            load = ReportLoad(
                kubectl.namespace, agents, operator.api_url, rate=args.load_rate, interval=0.5
            )
            load.start()
        for number in range(1, args.kills + 1):
            record = crash_round(
                kubectl,
                database_url,
                operator,
                model,
                number,
                rng,
                max_delay=args.max_delay,
                timeout=args.timeout,
                mode="request" if number % 2 else "fanout",
                say=say,
            )
            records.append(record)
            if record.converge_s is None:
                say(operator.log_tail(60))
                break
        miscounts: list[str] = []
        totals = None
        if load is not None:
            load.stop()
            totals = load.totals()
            counted = registry_counts(database_url, kubectl.namespace, names)
            miscounts = discrepancies(load.agents, counted, lifetime_only=True)
            if totals.dropped or totals.rejected_batches or totals.acked != totals.produced:
                miscounts.append(f"reporters: {totals}")
            say(f"report load: {totals}; miscounts: {miscounts}")
        time.sleep(args.settle)
        settled = problems(kubectl, database_url, model)
        alive = operator.proc is not None and operator.proc.poll() is None
        if not alive:
            settled.append("the operator exited on its own")
    report = render(records, args, initial, settled, totals, miscounts)
    print(report)
    if args.write_docs:
        if args.leader_elect:
            write_section(SECTION_LEADER, DOC_LEADER + "\n" + report)
        else:
            write_section(SECTION, DOC_INTRO + "\n" + report + "\n" + DOC_NOTES)
    if (
        settled
        or miscounts
        or any(r.converge_s is None for r in records)
        or len(records) < args.kills
    ):
        sys.exit(1)


if __name__ == "__main__":
    main()
