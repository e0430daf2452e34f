"""Hot reload latency: from a behavior change to the new sha256 active in the BehaviorHost.

1. Kubelet volume (on tmpfs, like a real ConfigMap volume): t0 just before the rename of
   `..data_tmp` over `..data` in write_configmap_volume (the AtomicWriter's steps; writing the
   new files before it is the kubelet's work, not the runtime's) -> t1 when the host's load
   listener fires with the new sha256 (the new sandbox is in and serving). Measured with
   inotify (the default) and, as the same-run baseline, with inotify off (the readlink poll
   alone, 250 ms interval); inotify also with a worker thread calling on_task continuously
   (the swap has to get the call lock).
2. API watch (when a control plane is reachable: $KUBECONFIG, the running dev cluster, or
   --start-cluster): t0 just before the PATCH of the ConfigMap -> t1 the same listener. Same-run
   baseline: the round trip of that PATCH itself.
The floor of any reload: building a Sandbox for the script (also measured).

Run: .venv/bin/python tests/benchmarks/bench_reload.py [--samples 200] [--start-cluster]
Prints a Markdown section for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lupa

from agent_registry.lua import Sandbox
from agent_registry.runtime.bundle import script_sha256
from agent_registry.runtime.directory_source import DirectorySource
from agent_registry.runtime.host import BehaviorHost, LoadEvent
from agent_registry.runtime.kubelet_volume import write_configmap_volume


def script(n: int) -> str:
    # ~40 lines, a realistic small decision function; n makes each version distinct.
    body = "\n".join(f"local w{i} = {i} * 0.01" for i in range(30))
    return f"""-- version {n}
{body}
function on_task(task, ctx)
  ctx.state.n = (ctx.state.n or 0) + 1
  local effort = (task.difficulty or 0.5) + w1
  return {{accept = true, effort = math.min(1, effort), version = {n}}}
end
"""


def files(n: int) -> dict[str, str]:
    text = script(n)
    meta = {"name": "bench", "namespace": "bench", "revision": n + 1, "sha256": script_sha256(text)}
    return {"behavior.lua": text, "behavior.json": json.dumps(meta)}


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


class LoadClock:
    """Records when each sha256 became active (the host's listener runs right after the swap)."""

    def __init__(self, host: BehaviorHost) -> None:
        self.at: dict[str, float] = {}
        self.event = threading.Condition()
        host.subscribe(self._on_load)

    def _on_load(self, event: LoadEvent) -> None:
        now = time.perf_counter()
        with self.event:
            self.at.setdefault(event.sha256, now)
            self.event.notify_all()

    def wait_for(self, sha: str, timeout: float = 30.0) -> float:
        with self.event:
            if not self.event.wait_for(lambda: sha in self.at, timeout=timeout):
                raise TimeoutError(f"{sha[:12]} never loaded")
            return self.at[sha]


def bench_directory(samples: int, *, use_inotify: bool, under_load: bool) -> list[float]:
    rng = random.Random(1)
    # ConfigMap volumes are tmpfs: so is this directory when /dev/shm exists.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="bench-reload-", dir=shm) as tmp:
        volume = Path(tmp)
        write_configmap_volume(volume, files(0))
        host = BehaviorHost()
        clock = LoadClock(host)
        source = DirectorySource(volume, use_inotify=use_inotify)
        source.start(host.load)
        stop = threading.Event()
        worker = threading.Thread(target=_work, args=(host, stop), daemon=True)
        if under_load:
            worker.start()
        latencies = []
        try:
            for n in range(1, samples + 1):
                payload = files(n)
                sha = script_sha256(payload["behavior.lua"])
                # A random phase against the poll: right after a detection the next check is
                # a whole interval away, so swapping at once would measure the worst case.
                time.sleep(rng.uniform(0.0, source.poll_interval))
                swapped: list[float] = []
                write_configmap_volume(
                    volume,
                    payload,
                    before_swap=functools.partial(_stamp, swapped),
                )
                latencies.append(clock.wait_for(sha) - swapped[0])
        finally:
            stop.set()
            source.stop()
            if under_load:
                worker.join()
        return latencies


def _stamp(into: list[float]) -> None:
    into.append(time.perf_counter())


def _work(host: BehaviorHost, stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        host.on_task({"id": i, "difficulty": 0.3})
        i += 1


def bench_sandbox_build(samples: int) -> list[float]:
    text = script(1)
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        Sandbox(text, previous_state={"n": 1}).close()
        out.append(time.perf_counter() - t0)
    return out


def find_kubeconfig(start: bool) -> tuple[str | None, Callable[[], None]]:
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"], lambda: None
    from agent_registry.devcluster.cluster import find_ready_shared

    shared = find_ready_shared()
    if shared is not None:
        return shared.kubeconfig, lambda: None
    if not start:
        return None, lambda: None
    from agent_registry.devcluster import open_cluster

    cluster = open_cluster(say=lambda m: print(f"[kube] {m}", file=sys.stderr))
    return cluster.kubeconfig, cluster.stop


def bench_api_watch(kubeconfig: str, samples: int) -> tuple[list[float], list[float]]:
    from kubernetes import client

    from agent_registry.runtime.configmap_source import ConfigMapWatchSource, make_api_client

    api_client = make_api_client(kubeconfig)
    core: Any = client.CoreV1Api(api_client)  # plain dicts as bodies
    namespace = f"bench-reload-{os.getpid()}"
    core.create_namespace({"metadata": {"name": namespace}})
    name = "bench-behavior"
    core.create_namespaced_config_map(namespace, {"metadata": {"name": name}, "data": files(0)})
    host = BehaviorHost()
    clock = LoadClock(host)
    source = ConfigMapWatchSource(namespace, name, kubeconfig=kubeconfig)
    source.start(host.load)
    latencies, round_trips = [], []
    try:
        for n in range(1, samples + 1):
            payload = files(n)
            sha = script_sha256(payload["behavior.lua"])
            t0 = time.perf_counter()
            core.patch_namespaced_config_map(name, namespace, {"data": payload})
            round_trips.append(time.perf_counter() - t0)
            latencies.append(clock.wait_for(sha) - t0)
    finally:
        source.stop()
        core.delete_namespace(namespace)
        api_client.close()
    return latencies, round_trips


def bench_api_watch_fleet(
    kubeconfig: str, agents: int, rounds: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """`agents` runtimes in this process (a thread and a watch connection each), one ConfigMap
    each; every round PATCHes all ConfigMaps one after the other, as the operator does when a
    shared behavior changes. Returns per-agent latencies (its PATCH -> its new sha256 active),
    per-round completion (first PATCH sent -> last agent active), the tail after the writer
    is done (last PATCH answered -> last agent active), and the PATCH round trips."""
    from kubernetes import client

    from agent_registry.runtime.configmap_source import ConfigMapWatchSource, make_api_client

    api_client = make_api_client(kubeconfig)
    core: Any = client.CoreV1Api(api_client)
    namespace = f"bench-fleet-{os.getpid()}"
    core.create_namespace({"metadata": {"name": namespace}})
    names = [f"agent-{i}-behavior" for i in range(agents)]
    for name in names:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name}, "data": files(0)})
    hosts: list[BehaviorHost] = []
    clocks: list[LoadClock] = []
    sources: list[ConfigMapWatchSource] = []
    for name in names:
        host = BehaviorHost()
        clocks.append(LoadClock(host))
        source = ConfigMapWatchSource(namespace, name, kubeconfig=kubeconfig)
        source.start(host.load)
        hosts.append(host)
        sources.append(source)
    per_agent: list[float] = []
    per_round: list[float] = []
    round_trips: list[float] = []
    tails: list[float] = []
    try:
        for n in range(1, rounds + 1):
            payload = files(n)
            sha = script_sha256(payload["behavior.lua"])
            sent = []
            for name in names:
                t0 = time.perf_counter()
                core.patch_namespaced_config_map(name, namespace, {"data": payload})
                round_trips.append(time.perf_counter() - t0)
                sent.append(t0)
            written = time.perf_counter()
            active = [clock.wait_for(sha) for clock in clocks]
            per_agent.extend(a - s for a, s in zip(active, sent, strict=True))
            per_round.append(max(active) - sent[0])
            tails.append(max(0.0, max(active) - written))
    finally:
        for source in sources:
            source.stop()
        core.delete_namespace(namespace)
        api_client.close()
    return per_agent, per_round, tails, round_trips


def row(label: str, values: list[float], baseline: list[float] | None) -> str:
    p50, p99 = percentile(values, 50), percentile(values, 99)
    ratio = ""
    if baseline is not None:
        ratio = f"{p50 / percentile(baseline, 50):.3f} / {p99 / percentile(baseline, 99):.3f}"
    cells = [label, str(len(values)), f"{p50 * 1000:.2f}", f"{p99 * 1000:.2f}"]
    cells += [f"{max(values) * 1000:.2f}", ratio]
    return "| " + " | ".join(cells) + " |"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()
    return (
        f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python "
        f"{platform.python_version()}, lupa {lupa.__version__} (lua54); load average "
        f"{load[0]:.2f} at start"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--poll-samples", type=int, default=60)
    parser.add_argument("--api-samples", type=int, default=100)
    parser.add_argument("--fleet", type=int, default=100, help="agents in the fleet run (0: skip)")
    parser.add_argument("--fleet-rounds", type=int, default=5)
    parser.add_argument("--start-cluster", action="store_true")
    args = parser.parse_args()

    header = machine()
    build = bench_sandbox_build(args.samples)
    poll = bench_directory(args.poll_samples, use_inotify=False, under_load=False)
    inotify = bench_directory(args.samples, use_inotify=True, under_load=False)
    loaded = bench_directory(args.samples, use_inotify=True, under_load=True)
    lines = [
        f"Machine: {header}. Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| reload path | samples | p50 ms | p99 ms | max ms | p50 / p99 vs baseline |",
        "|---|---|---|---|---|---|",
        row("floor: build a Sandbox (fresh runtime + load + on_reload)", build, None),
        row("baseline: `..data` swap, readlink poll only (250 ms)", poll, None),
        row("`..data` swap, inotify + poll (default)", inotify, poll),
        row("`..data` swap, inotify, worker calling on_task nonstop", loaded, poll),
    ]
    kubeconfig, stop_cluster = find_kubeconfig(args.start_cluster)
    try:
        if kubeconfig is None:
            lines.append(
                "| ConfigMap API watch | - | not measured: no control plane running "
                "(`agentreg dev cluster up`, or --start-cluster) | | | |"
            )
        else:
            watch, round_trip = bench_api_watch(kubeconfig, args.api_samples)
            lines.append(row("baseline: PATCH ConfigMap round trip", round_trip, None))
            lines.append(row("ConfigMap API watch: PATCH -> new sha256 active", watch, round_trip))
            if args.fleet:
                agent, rounds, tails, fleet_rtt = bench_api_watch_fleet(
                    kubeconfig, args.fleet, args.fleet_rounds
                )
                lines.append(row(f"fleet of {args.fleet}: PATCH round trip", fleet_rtt, None))
                lines.append(
                    row(f"fleet of {args.fleet}: each agent, its PATCH -> active", agent, fleet_rtt)
                )
                lines.append(
                    row(
                        f"fleet of {args.fleet}: first PATCH -> all {args.fleet} active",
                        rounds,
                        None,
                    )
                )
                lines.append(
                    row(f"fleet of {args.fleet}: last PATCH answered -> all active", tails, None)
                )
    finally:
        stop_cluster()
    lines.append("")
    lines.append(
        "The kubelet's own ConfigMap volume refresh (sync period + cache TTL, 60-120 s by "
        "default) is not measurable here (no kubelet); both paths above start from the moment "
        "the change is visible to the runtime."
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
