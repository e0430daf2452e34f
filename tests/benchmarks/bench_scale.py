"""Operator at scale: N Agents created before the operator starts, on embedded SQLite.

On a PRIVATE local control plane (never the shared one: other test runs must not feel it):
applies crds/, creates the namespaces, a few AgentBehaviors per namespace and N Agents (spread
over the namespaces, all referencing the namespace's `fleet` behavior; created with concurrent
API calls), and only then starts `agentreg run` as a subprocess (all namespaces, a fresh SQLite
file, `--migrate`). Measured, from the operator's start:

1. cold reconcile: until every Agent has `status.behavior` (one watch on all Agents, no polling
   lists that would compete with the operator for the apiserver);
2. fan-out: the `fleet` behavior's script is edited in every namespace at once; until every
   Agent's ConfigMap carries the new sha256 in behavior.json (one watch on the ConfigMaps);
3. idle CPU: % of one core used by the operator process over `--idle-seconds` after a settle
   period (utime + stime from /proc/<pid>/stat);
4. RSS: peak (VmHWM) and settled (VmRSS at the end of the idle window), from /proc/<pid>/status.

Run: .venv/bin/python tests/benchmarks/bench_scale.py [--agents 1000,10000] [--write-docs]
Prints a Markdown section for docs/benchmarks.md (and replaces it there with --write-docs).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_registry.kubeclient import KubeClient, KubeError
from agent_registry.runtime.bundle import script_sha256

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.machine import DOC, cpu_model, write_section  # noqa: E402

CRDS = ROOT / "crds"
SECTION = "## Operator at scale (`tests/benchmarks/bench_scale.py`)"
AGENTREG = Path(sys.executable).with_name("agentreg")
GROUP_PATH = "/apis/agents.singularity.dev/v1alpha1"
TICKS = os.sysconf("SC_CLK_TCK")

TARGETS = {"cold_s": 120.0, "rss_mb": 500.0, "fanout_s": 30.0, "idle_pct": 5.0}


def script(version: int) -> str:
    return f"""-- fleet behavior, version {version}
function on_task(task, ctx)
  ctx.state.n = (ctx.state.n or 0) + 1
  local effort = math.min(1, (task.difficulty or 0.5) + 0.1)
  return {{accept = true, effort = effort, version = {version}}}
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def follow(
    client: KubeClient,
    path: str,
    resource_version: str,
    on_event: Callable[[str, dict[str, Any]], None],
) -> None:
    """Forever (until cancelled): the watch events of `path` from `resource_version` on."""
    version = resource_version
    while True:
        params = {"resourceVersion": version}
        async for event in client.watch(path, params, timeout_seconds=600):
            obj = event.get("object") or {}
            if event.get("type") == "ERROR":
                raise RuntimeError(f"watch {path}: {obj}")
            version = obj.get("metadata", {}).get("resourceVersion", version)
            on_event(str(event.get("type")), obj)


@dataclass
class Fleet:
    agents: int
    namespaces: list[str]
    # (namespace, agent name) -> whether it has status.behavior
    reconciled: set[tuple[str, str]] = field(default_factory=set)
    # (namespace, configmap name) -> the sha256 its behavior.json carries
    shas: dict[tuple[str, str], str] = field(default_factory=dict)
    # (namespace, agent name) -> the sha256 its status.behavior shows
    status_shas: dict[tuple[str, str], str] = field(default_factory=dict)

    def agent_names(self, namespace_index: int) -> list[str]:
        count = len(self.namespaces)
        return [f"agent-{i:05d}" for i in range(namespace_index, self.agents, count)]


async def create_fleet(client: KubeClient, fleet: Fleet, concurrency: int) -> str:
    """Namespaces, behaviors and Agents; returns the resourceVersion to watch Agents from."""
    for namespace in fleet.namespaces:
        await client.request(
            "POST", "/api/v1/namespaces", {"metadata": {"name": namespace}, "apiVersion": "v1"}
        )
        for name, role in (("fleet", "worker"), ("spare-a", "worker"), ("spare-b", "reviewer")):
            body = {
                "apiVersion": "agents.singularity.dev/v1alpha1",
                "kind": "AgentBehavior",
                "metadata": {"name": name},
                "spec": {"roleType": role, "lua": {"script": script(0)}},
            }
            await client.request(
                "POST", f"{GROUP_PATH}/namespaces/{namespace}/agentbehaviors", body
            )
    semaphore = asyncio.Semaphore(concurrency)

    async def create(namespace: str, name: str) -> None:
        body = {
            "apiVersion": "agents.singularity.dev/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": name},
            "spec": {"role": "worker", "displayName": name, "behaviorRef": {"name": "fleet"}},
        }
        async with semaphore:
            for attempt in range(5):
                try:
                    await client.request(
                        "POST", f"{GROUP_PATH}/namespaces/{namespace}/agents", body
                    )
                    return
                except KubeError as exc:
                    if exc.status == 409:
                        return
                    raise
                except Exception:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(1)

    started = time.monotonic()
    await asyncio.gather(
        *(
            create(namespace, name)
            for index, namespace in enumerate(fleet.namespaces)
            for name in fleet.agent_names(index)
        )
    )
    say(f"created {fleet.agents} Agents in {time.monotonic() - started:.1f}s")
    listed = await client.request("GET", f"{GROUP_PATH}/agents", params={"limit": "1"})
    assert listed is not None
    return str(listed["metadata"]["resourceVersion"])


class Sampler:
    """CPU ticks and memory of the operator process from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime

    def memory_mb(self, key: str) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return 0.0


def control_plane_cpu(pids: dict[str, int]) -> float:
    """etcd's and kube-apiserver's CPU seconds so far (0 when not started here)."""
    return sum(Sampler(pid).cpu_seconds() for pid in pids.values())


def api_requests(kubectl: Callable[..., Any]) -> dict[str, int]:
    """The apiserver's request counters by verb and resource (watches left out), from its
    /metrics: what the operator asked of it, whoever's client made the call."""
    text = kubectl("get", "--raw", "/metrics").stdout
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, _, value = line.rpartition(" ")
        labels = dict(
            part.split("=", 1)
            for part in labels_text[len("apiserver_request_total{") : -1].split(",")
        )
        verb = labels.get("verb", "").strip('"')
        if verb == "WATCH":
            continue
        resource = labels.get("resource", "").strip('"')
        sub = labels.get("subresource", "").strip('"')
        key = f"{verb} {resource}{'/' + sub if sub else ''}"
        counts[key] = counts.get(key, 0) + int(float(value))
    return counts


def request_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {key: after[key] - before.get(key, 0) for key in after}
    return dict(sorted(((k, v) for k, v in delta.items() if v > 0), key=lambda kv: -kv[1]))


@dataclass
class Result:
    agents: int
    namespaces: int
    create_s: float = 0.0
    cold_s: float | None = None
    cold_reached: int = 0
    cold_cpu_s: float = 0.0
    fanout_s: float | None = None
    fanout_reached: int = 0
    fanout_cpu_s: float = 0.0
    fanout_control_plane_cpu_s: float = 0.0
    fanout_requests: dict[str, int] = field(default_factory=dict)
    status_s: float | None = None
    idle_pct: float | None = None
    peak_rss_mb: float = 0.0
    settled_rss_mb: float = 0.0
    load_before: float = 0.0
    load_after: float = 0.0
    timeout_s: float = 0.0
    notes: list[str] = field(default_factory=list)


async def wait_until(
    predicate: Callable[[], bool], limit: float, proc: subprocess.Popen[bytes]
) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            raise RuntimeError(f"operator exited with {proc.returncode}")
        await asyncio.sleep(0.1)
    return predicate()


def start_operator(argv: list[str], env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)


def start_profiler(pid: int, output: str) -> subprocess.Popen[bytes]:
    """py-spy (pip install py-spy) samples the operator into a raw (collapsed) flame graph."""
    spy = Path(sys.executable).with_name("py-spy")
    argv = [str(spy), "record", "--pid", str(pid), "-o", output, "-r", "50", "-f", "raw"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(profiler: subprocess.Popen[bytes]) -> None:
    profiler.send_signal(signal.SIGINT)
    profiler.wait()


async def run_one(args: argparse.Namespace, agents: int) -> Result:
    from agent_registry.devcluster import open_cluster

    namespaces = [f"scale-{i}" for i in range(args.namespaces)]
    fleet = Fleet(agents, namespaces)
    result = Result(agents, len(namespaces), timeout_s=args.timeout, load_before=os.getloadavg()[0])
    cluster = open_cluster(say=lambda m: say(f"[kube] {m}"), reuse_shared=False)
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    proc: subprocess.Popen[bytes] | None = None
    client = KubeClient.from_kubeconfig(cluster.kubeconfig)
    watches: list[asyncio.Task[None]] = []
    try:
        cluster.kubectl("apply", "--server-side", "-f", str(CRDS))
        for crd in ("agents", "agentbehaviors", "behaviorpolicies", "behaviorexperiments"):
            cluster.kubectl(
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                f"crd/{crd}.agents.singularity.dev",
            )
        t0 = time.monotonic()
        agents_rv = await create_fleet(client, fleet, args.create_concurrency)
        result.create_s = time.monotonic() - t0
        cms = await client.request("GET", "/api/v1/configmaps", params={"limit": "1"})
        assert cms is not None
        cm_rv = str(cms["metadata"]["resourceVersion"])

        def on_agent(kind: str, obj: dict[str, Any]) -> None:
            meta = obj.get("metadata", {})
            key = (meta.get("namespace"), meta.get("name"))
            behavior = (obj.get("status") or {}).get("behavior")
            if kind != "DELETED" and behavior:
                fleet.reconciled.add(key)
                fleet.status_shas[key] = behavior.get("sha256")

        def on_configmap(kind: str, obj: dict[str, Any]) -> None:
            meta = obj.get("metadata", {})
            raw = (obj.get("data") or {}).get("behavior.json")
            if kind == "DELETED" or not raw:
                return
            fleet.shas[(meta.get("namespace"), meta.get("name"))] = json.loads(raw).get("sha256")

        watches.append(
            asyncio.create_task(follow(client, f"{GROUP_PATH}/agents", agents_rv, on_agent))
        )
        watches.append(
            asyncio.create_task(follow(client, "/api/v1/configmaps", cm_rv, on_configmap))
        )

        log = (workdir / "operator.log").open("wb")
        api_port, health_port = free_port(), free_port()
        argv = [
            str(AGENTREG),
            "run",
            "--database-url",
            f"sqlite+aiosqlite:///{workdir / 'registry.db'}",
            "--migrate",
            "--api-listen",
            f"127.0.0.1:{api_port}",
            "--health-listen",
            f"127.0.0.1:{health_port}",
            "--registry-url",
            f"http://127.0.0.1:{api_port}",
            "--kubeconfig",
            cluster.kubeconfig,
            *args.operator_arg,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTREG_")}
        env["KUBECONFIG"] = cluster.kubeconfig
        say(f"starting the operator (log: {workdir / 'operator.log'})")
        started = time.monotonic()
        proc = start_operator(argv, env, log)
        sampler = Sampler(proc.pid)
        if args.profile:
            profiler = start_profiler(proc.pid, args.profile)
        progress = asyncio.create_task(report_progress(fleet, started))
        try:
            done = await wait_until(lambda: len(fleet.reconciled) >= agents, args.timeout, proc)
        finally:
            progress.cancel()
        if args.profile:
            stop_profiler(profiler)
        result.cold_reached = len(fleet.reconciled)
        result.cold_cpu_s = sampler.cpu_seconds()
        if done:
            result.cold_s = time.monotonic() - started
            say(f"cold reconcile: {result.cold_s:.1f}s")
        else:
            say(f"cold reconcile: {result.cold_reached} of {agents} after {args.timeout:.0f}s")
            result.notes.append(
                f"cold reconcile unfinished: {result.cold_reached} of {agents} after "
                f"{args.timeout:.0f} s"
            )
        await asyncio.sleep(args.settle)

        new_script = script(1)
        new_sha = script_sha256(new_script)
        configmaps = {
            (ns, f"{name}-behavior")
            for i, ns in enumerate(namespaces)
            for name in fleet.agent_names(i)
        }
        if args.profile:
            profiler = start_profiler(proc.pid, f"{args.profile}.fanout")
        requests_before = await asyncio.to_thread(api_requests, cluster.kubectl)
        cpu_before = sampler.cpu_seconds()
        control_plane_before = control_plane_cpu(cluster.process_ids)
        t1 = time.monotonic()
        await asyncio.gather(
            *(
                client.request(
                    "PATCH",
                    f"{GROUP_PATH}/namespaces/{ns}/agentbehaviors/fleet",
                    {"spec": {"lua": {"script": new_script}}},
                    content_type="application/merge-patch+json",
                )
                for ns in namespaces
            )
        )

        def fanned_out() -> bool:
            return all(fleet.shas.get(key) == new_sha for key in configmaps)

        done = await wait_until(fanned_out, args.timeout, proc)
        fanned_at = time.monotonic()
        result.fanout_cpu_s = sampler.cpu_seconds() - cpu_before
        result.fanout_control_plane_cpu_s = (
            control_plane_cpu(cluster.process_ids) - control_plane_before
        )
        result.fanout_requests = request_delta(
            requests_before, await asyncio.to_thread(api_requests, cluster.kubectl)
        )
        say(
            f"during the fan-out: operator CPU {result.fanout_cpu_s:.1f}s, control plane CPU "
            f"{result.fanout_control_plane_cpu_s:.1f}s, API requests {result.fanout_requests}"
        )
        if args.profile:
            stop_profiler(profiler)
        agent_keys = [
            (ns, name) for i, ns in enumerate(namespaces) for name in fleet.agent_names(i)
        ]
        # Idle is measured once the status writes that trail the ConfigMaps are done too.
        if await wait_until(
            lambda: all(fleet.status_shas.get(key) == new_sha for key in agent_keys),
            args.timeout,
            proc,
        ):
            result.status_s = time.monotonic() - t1
            say(f"status shows the new script everywhere: {result.status_s:.1f}s")
        result.fanout_reached = sum(1 for key in configmaps if fleet.shas.get(key) == new_sha)
        if done:
            result.fanout_s = fanned_at - t1
            say(f"fan-out: {result.fanout_s:.1f}s")
        else:
            say(f"fan-out: {result.fanout_reached} of {agents} after {args.timeout:.0f}s")
            result.notes.append(
                f"fan-out unfinished: {result.fanout_reached} of {agents} ConfigMaps after "
                f"{args.timeout:.0f} s"
            )

        await asyncio.sleep(args.settle)
        cpu0, w0 = sampler.cpu_seconds(), time.monotonic()
        await asyncio.sleep(args.idle_seconds)
        result.idle_pct = 100 * (sampler.cpu_seconds() - cpu0) / (time.monotonic() - w0)
        result.peak_rss_mb = sampler.memory_mb("VmHWM")
        result.settled_rss_mb = sampler.memory_mb("VmRSS")
        result.load_after = os.getloadavg()[0]
        say(
            f"idle {result.idle_pct:.1f}% of a core; RSS peak {result.peak_rss_mb:.0f} MB, "
            f"settled {result.settled_rss_mb:.0f} MB"
        )
    finally:
        for task in watches:
            task.cancel()
        await asyncio.gather(*watches, return_exceptions=True)
        await client.close()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if args.keep_log and proc is not None:
            say(f"operator log kept: {workdir / 'operator.log'}")
        cluster.stop()
    return result


async def report_progress(fleet: Fleet, started: float) -> None:
    while True:
        await asyncio.sleep(15)
        say(f"  {time.monotonic() - started:.0f}s: {len(fleet.reconciled)} reconciled")


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "not reached"
    return "met" if value <= target else "missed"


def seconds(value: float | None, reached: int, total: int, timeout: float) -> str:
    if value is None:
        return f"**{reached:,} of {total:,} after {timeout:.0f} s**"
    return f"{value:.1f}"


def render(results: list[Result], args: argparse.Namespace) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Machine: {cpu_model()}, `nproc` = {os.cpu_count()}, Linux {platform.release()}, Python "
        f"{platform.python_version()}; run {now}; the control plane (etcd + kube-apiserver) "
        "shares the 2 cores with the operator and the benchmark. Operator on embedded SQLite, all "
        f"namespaces; Agents spread over {args.namespaces} namespaces, each with 3 AgentBehaviors, "
        "every Agent on its namespace's `fleet` behavior. Extra operator flags: "
        f"`{' '.join(args.operator_arg) or '(none)'}`.",
        "",
        "| Agents | create (s) | cold reconcile (s) | operator CPU during cold (s) "
        "| fan-out, 1 script edit per namespace -> every ConfigMap (s) "
        "| operator / control plane CPU during the fan-out (s) "
        "| -> every Agent's status (s) "
        f"| idle CPU, % of a core over {args.idle_seconds:.0f} s | peak RSS (MB) "
        "| settled RSS (MB) | load average before / after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.agents:,} | {r.create_s:.1f} | "
            f"{seconds(r.cold_s, r.cold_reached, r.agents, r.timeout_s)} | {r.cold_cpu_s:.0f} | "
            f"{seconds(r.fanout_s, r.fanout_reached, r.agents, r.timeout_s)} | "
            f"{r.fanout_cpu_s:.0f} / {r.fanout_control_plane_cpu_s:.0f} | "
            f"{'-' if r.status_s is None else f'{r.status_s:.1f}'} | "
            f"{r.idle_pct:.1f} | {r.peak_rss_mb:.0f} | {r.settled_rss_mb:.0f} | "
            f"{r.load_before:.2f} / {r.load_after:.2f} |"
        )
    lines += ["", "Targets (issue 14, for 10,000 Agents):", ""]
    big = [r for r in results if r.agents >= 10_000]
    for r in big or results[-1:]:
        lines += [
            f"- {r.agents:,} Agents: cold reconcile <= 120 s: {verdict(r.cold_s, 120)}; "
            f"peak RSS <= 500 MB: {verdict(r.peak_rss_mb, 500)}; fan-out <= 30 s: "
            f"{verdict(r.fanout_s, 30)}; idle <= 5 % of a core: {verdict(r.idle_pct, 5)}.",
        ]
    for r in results:
        lines += [f"- {r.agents:,} Agents: {note}." for note in r.notes]
        if r.fanout_requests:
            shown = ", ".join(f"{key} {count:,}" for key, count in r.fanout_requests.items())
            lines.append(f"- {r.agents:,} Agents: API requests during the fan-out: {shown}.")
    return "\n".join(lines)


DOC_INTRO = """
Run: `python tests/benchmarks/bench_scale.py --agents 1000,10000 --write-docs`. Each N gets its
own private control plane (never the shared one) and a fresh SQLite file; the Agents exist
before the operator starts, as after an upgrade or a restart. Cold reconcile ends when the watch
has seen `status.behavior` on every Agent; fan-out when every Agent's ConfigMap carries the new
script's sha256; idle CPU is the operator's utime + stime over a window after everything settled.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="1000,10000")
    parser.add_argument("--namespaces", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=900.0, help="per phase, seconds")
    parser.add_argument("--settle", type=float, default=15.0)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--create-concurrency", type=int, default=32)
    parser.add_argument(
        "--operator-arg", action="append", default=[], help="extra `agentreg run` argument"
    )
    parser.add_argument("--keep-log", action="store_true")
    parser.add_argument(
        "--profile", default="", help="py-spy flame graphs: PATH (cold reconcile), PATH.fanout"
    )
    parser.add_argument("--notes", default="", help="text after the table (with --write-docs)")
    parser.add_argument("--write-docs", action="store_true", help=f"update {DOC.name}")
    args = parser.parse_args()
    results = []
    for n in (int(x) for x in args.agents.split(",")):
        say(f"== {n} Agents")
        results.append(asyncio.run(run_one(args, n)))
        print(json.dumps(results[-1].__dict__), flush=True)
    report = render(results, args)
    print(report)
    if args.write_docs:
        notes = (
            Path(args.notes).read_text() if args.notes and Path(args.notes).exists() else args.notes
        )
        write_section(SECTION, DOC_INTRO + "\n" + report + "\n\n" + notes)


if __name__ == "__main__":
    main()
