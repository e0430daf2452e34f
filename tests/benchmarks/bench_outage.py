"""PostgreSQL outage under report load (standalone script; not collected by pytest).

Real: the local control plane, a throwaway PostgreSQL, the operator (`agentreg run`: its
registry API authenticates every report with TokenReview), and one `OutcomeReporter` per
agent (the runtime's reporter: bounded buffer, batch ids, retries) in its own thread with a
real ServiceAccount token. Simulated: the agents' work (a producer thread records outcomes at
a steady rate; tests/e2e/report_load.py). For each way of stopping the server:
- `fast`: `pg_ctl stop -m fast` (SIGINT: clients disconnected, shutdown checkpoint);
- `kill`: SIGKILL of the postmaster and every backend (a crash; crash recovery at start);
the load runs --before seconds, the server is down --outage seconds (the load goes on), then
starts again on the same data dir and port; the load goes on --after seconds, then stops and
the reporters flush. The registry's counts (tasks and successes per agent, its script's row in
agent_revision_stats, the open assignment's counter) must equal what was produced exactly:
0 lost, 0 counted twice. Reported: the largest buffer, the time from the server's return until
every outcome produced before it was acknowledged (drain), retries, 503s, refused connections.

PostgreSQL runs with fsync off (the OS does not crash here, only the server) but
synchronous_commit on: with it off, a SIGKILL may lose commits the server already
acknowledged, which would be the benchmark's setting, not a loss by the registry.

Usage: python tests/benchmarks/bench_outage.py [--agents 8] [--rate 100] [--outage 30]
       [--before 15] [--after 15] [--modes fast,kill] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.machine import write_section  # noqa: E402
from benchmarks.operator_env import OperatorEnv, machine_line, say  # noqa: E402
from e2e.conftest import EXAMPLES_DIR  # noqa: E402
from e2e.report_load import (  # noqa: E402
    ReportLoad,
    deploy_agents,
    discrepancies,
    registry_counts,
)

SECTION = "## PostgreSQL outage under report load (`tests/benchmarks/bench_outage.py`)"
BEHAVIORS = ["careful", "balanced", "quick"]
PG_SETTINGS = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "on"}


def server_metric(api_url: str, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"{api_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = rf"^(?:\w+_)?{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def run_once(env: OperatorEnv, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    kubectl = env.namespace(f"bench-outage-{mode}")
    database_url = env.database(f"outage_{mode}")
    operator = env.operator(kubectl.namespace, database_url)
    operator.start()
    kubectl("apply", "-f", str(EXAMPLES_DIR / "behaviors.yaml"))
    names = [f"load-{i}" for i in range(args.agents)]
    agents = deploy_agents(kubectl, names, BEHAVIORS, env.workdir / f"tokens-{mode}")
    load = ReportLoad(
        kubectl.namespace, agents, operator.api_url, rate=args.rate, interval=args.interval
    )
    say(f"[{mode}] {args.agents} agents x {args.rate:g} outcomes/s; load for {args.before:g} s")
    load.start()
    drain: float | None = None
    try:
        time.sleep(args.before)
        say(f"[{mode}] PostgreSQL down for {args.outage:g} s")
        down_at = time.monotonic()
        if mode == "kill":
            env.server.kill()
        else:
            env.server.stop()
        time.sleep(max(0.0, args.outage - (time.monotonic() - down_at)))
        env.server.start()
        up_at = time.monotonic()
        downtime = up_at - down_at
        marks = load.marks()
        deadline = up_at + args.drain_timeout
        while time.monotonic() < deadline:
            if load.delivered(marks):
                drain = time.monotonic() - up_at
                break
            time.sleep(0.05)
        say(f"[{mode}] back after {downtime:.1f} s; backlog drained in {drain} s")
        time.sleep(max(0.0, args.after - (time.monotonic() - up_at)))
    finally:
        load.stop()
    alive = operator.proc is not None and operator.proc.poll() is None
    totals = load.totals()
    counted = registry_counts(database_url, kubectl.namespace, names)
    problems = discrepancies(agents, counted)
    server_503 = server_metric(operator.api_url, "reports_ingested_total", 'result="unavailable"')
    operator.stop()
    row = {
        "mode": mode,
        "downtime_s": round(downtime, 2),
        "drain_s": None if drain is None else round(drain, 2),
        "counted": sum(c.tasks for c in counted.values()),
        "lost": sum(a.produced for a in agents) - sum(c.tasks for c in counted.values()),
        "problems": problems,
        "operator_survived": alive,
        "server_503": int(server_503),
        **asdict(totals),
    }
    say(json.dumps(row))
    return row


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        machine_line(),
        f"{args.agents} agents x {args.rate:g} outcomes/s each ({args.agents * args.rate:g}/s),"
        f" reporters sending every {args.interval:g} s (batches of up to 1,000, buffer"
        f" {rows[0]['capacity']:,} per agent); load {args.before:g} s, outage"
        f" {args.outage:g} s, load {args.after:g} s after the restart, then the flush.",
        "",
        "| stop | down s | produced | counted | lost | double-counted | dropped (buffer) "
        "| largest buffer | drain after restart s | POSTs | retries | 503 answers | no answer "
        "| duplicate acks | operator survived |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        double = max(0, r["counted"] - r["produced"])
        lost = max(0, r["produced"] - r["counted"])
        drain = "never" if r["drain_s"] is None else f"{r['drain_s']:.1f}"
        lines.append(
            f"| {r['mode']} | {r['downtime_s']:.1f} | {r['produced']:,} | {r['counted']:,} "
            f"| {lost} | {double} | {r['dropped']} | {r['buffer_peak']:,} | {drain} "
            f"| {r['attempts']:,} | {r['retries']:,} | {r['unavailable']:,} | {r['failed']:,} "
            f"| {r['duplicates']} | {'yes' if r['operator_survived'] else 'NO'} |"
        )
    exact = all(not r["problems"] for r in rows)
    lines += [
        "",
        (
            "Every agent's count, its script's row and its open assignment's counter equal"
            " what was produced, outcome for outcome (successes too)."
            if exact
            else "MISMATCHES: " + "; ".join(p for r in rows for p in r["problems"])
        ),
    ]
    return "\n".join(lines)


DOC_INTRO = """
Run: `python tests/benchmarks/bench_outage.py --write-docs`. Real control plane, PostgreSQL,
operator (`agentreg run`, reports authenticated by TokenReview) and one runtime reporter per
agent (`OutcomeReporter` in a `ReporterThread`, real ServiceAccount token); the agents' work is
simulated by a producer thread at a steady rate (`tests/e2e/report_load.py`). The server is
stopped mid-load two ways, `fast` (`pg_ctl stop -m fast`) and `kill` (SIGKILL of the postmaster
and every backend, then crash recovery), and started again on the same data dir and port.
PostgreSQL has fsync off but synchronous_commit on (with it off, a killed server may lose
commits it acknowledged: the benchmark's setting, not the registry's). The same check with a
5 s outage and 3 agents runs in CI (`tests/e2e/test_operator_resilience.py`,
`test_reports_through_a_database_outage_lose_nothing_and_count_nothing_twice`).
"""

DOC_NOTES = """
How: while the database is down the API answers 503 with `Retry-After: 5` (a refused
connection, a dropped one, a server shutting down all become `RegistryUnavailable`); the
reporter keeps the batch it was sending (same `batch_id`) and retries it after Retry-After, or
with exponential backoff when there is no answer at all, while new outcomes wait in its
buffer. A batch whose write committed but whose answer was lost is counted once: the batch id
is inserted by the same statement that counts it (`processed_report_batches`), so the retry is
acknowledged as a duplicate. A reporter holds at most its buffer's capacity (10,000 outcomes
by default) plus the batch in flight: at R outcomes/s an agent rides out an outage of
10,000 / R seconds (100 s at 100/s) without dropping any; beyond that it drops the oldest
and says so (`dropped` in each report, logged by the API). The duplicate acks are such
batches: their outcomes were committed, then the same request failed (the load confirmation
that follows the outcomes in one report, or the answer itself), and the retry was recognised.
The reporters here all started at one instant, so they retry in step (every 5 s, the
Retry-After); the drain time is mostly that wait. In a fleet their report phases differ.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--rate", type=float, default=100.0, help="outcomes/s per agent")
    parser.add_argument("--interval", type=float, default=1.0, help="report interval, s")
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--before", type=float, default=15.0)
    parser.add_argument("--after", type=float, default=15.0)
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--modes", default="fast,kill")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    rows = []
    with OperatorEnv(PG_SETTINGS) as env:
        for mode in args.modes.split(","):
            rows.append(run_once(env, mode, args))
    report = render(rows, args)
    print(report)
    if args.write_docs:
        write_section(SECTION, DOC_INTRO + "\n" + report + "\n" + DOC_NOTES)
    if any(r["problems"] or r["drain_s"] is None for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
