"""Report load for the fault tests and benchmarks: agent runtimes' reporters, as threads.

Real: each agent's `OutcomeReporter` in a `ReporterThread` (what `agentreg runtime` runs: the
bounded buffer, batch ids, retries with backoff, Retry-After), its HTTP client, the registry
API, its TokenReview authentication (real ServiceAccount tokens) and PostgreSQL.
Simulated: the agents' work. One producer thread records outcomes for every agent at a steady
rate (success drawn from a seeded RNG, a duration per task), stamped with the script the agent
was delivered, and remembers exactly what it recorded, so the registry's counts can be compared
with what was produced, outcome for outcome.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from agent_registry.reports import LoadedBehavior, LoadFailure
from agent_registry.runtime.backoff import Backoff
from agent_registry.runtime.reporter import AgentRef, OutcomeReporter
from agent_registry.runtime.reporter_thread import ReporterThread
from e2e.conftest import Kubectl, wait_for

AGENT_API = "agents.singularity.dev/v1alpha1"


@dataclass
class LoadAgent:
    """One agent of the load and what was produced for it."""

    name: str
    sha256: str
    revision: int
    token_file: Path
    produced: int = 0
    successes: int = 0
    backlog_peak: int = 0  # buffered + in flight, sampled by the producer


class _Loaded:
    """The LoadStatus of a runtime that loaded its bundle once and runs it."""

    def __init__(self, agent: LoadAgent) -> None:
        self.loaded: LoadedBehavior | None = LoadedBehavior(
            sha256=agent.sha256, loaded_at=datetime.now(UTC), revision=agent.revision
        )
        self.load_failure: LoadFailure | None = None


@dataclass
class LoadTotals:
    produced: int
    successes: int
    acked: int  # outcomes in batches the registry acknowledged
    dropped: int  # buffer overflow
    rejected_batches: int  # permanent 4xx
    attempts: int
    retries: int
    unavailable: int  # 503 answers
    failed: int  # no answer (connection refused, lost, timeout)
    duplicates: int  # acked batches the registry had already counted
    buffer_peak: int  # the fullest one agent's buffer got
    backlog_peak: int  # the most one agent had unacknowledged (buffer + batch in flight)
    capacity: int


@dataclass
class ReportLoad:
    """`rate` outcomes per second for each agent, reported to `registry_url`."""

    namespace: str
    agents: list[LoadAgent]
    registry_url: str
    rate: float
    interval: float = 1.0
    capacity: int = 10_000
    backoff: Backoff | None = None
    seed: int = 1
    tick: float = 0.02
    reporters: dict[str, OutcomeReporter] = field(default_factory=dict)
    _threads: list[ReporterThread] = field(default_factory=list)
    _producing: threading.Event = field(default_factory=threading.Event)
    _producer: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for i, agent in enumerate(self.agents):
            reporter = OutcomeReporter(
                AgentRef(self.namespace, agent.name),
                self.registry_url,
                token_file=agent.token_file,
                status=_Loaded(agent),
                capacity=self.capacity,
                interval=self.interval,
                backoff=self.backoff,
                rng=random.Random(self.seed * 1000 + i),
            )
            self.reporters[agent.name] = reporter
            # The flush at stop() must not give up while the registry drains a backlog.
            self._threads.append(ReporterThread(reporter, flush_timeout=120.0).start())
        self._producing.set()
        self._producer = threading.Thread(target=self._produce, name="load-producer", daemon=True)
        self._producer.start()

    def _produce(self) -> None:
        rng = random.Random(self.seed)
        started = time.monotonic()
        while self._producing.is_set():
            due = int(self.rate * (time.monotonic() - started))
            with self._lock:
                for agent in self.agents:
                    reporter = self.reporters[agent.name]
                    for _ in range(due - agent.produced):
                        success = rng.random() < 0.8
                        reporter.record(
                            success, rng.uniform(1.0, 50.0), behavior_sha256=agent.sha256
                        )
                        agent.produced += 1
                        agent.successes += success
                    agent.backlog_peak = max(agent.backlog_peak, self._backlog(reporter))
            time.sleep(self.tick)

    @staticmethod
    def _backlog(reporter: OutcomeReporter) -> int:
        inflight = reporter._inflight  # read-only peek, for the measurement
        return len(reporter.buffer) + (len(inflight.outcomes) if inflight is not None else 0)

    def marks(self) -> dict[str, int]:
        """How many outcomes each agent has produced so far."""
        with self._lock:
            return {a.name: a.produced for a in self.agents}

    def delivered(self, marks: dict[str, int]) -> bool:
        """Has every agent's registry acknowledged at least its first `marks[name]` outcomes?
        (The buffer is FIFO and drops nothing unless full, so acked >= mark means all.)"""
        return all(self.reporters[n].stats.outcomes_sent >= m for n, m in marks.items())

    def stop_producing(self) -> None:
        self._producing.clear()
        if self._producer is not None:
            self._producer.join(timeout=10)

    def stop(self) -> None:
        """Stop producing, then flush every reporter (within its flush deadline) and join."""
        self.stop_producing()
        for thread in self._threads:
            thread.stop()

    def totals(self) -> LoadTotals:
        stats = [r.stats for r in self.reporters.values()]
        return LoadTotals(
            produced=sum(a.produced for a in self.agents),
            successes=sum(a.successes for a in self.agents),
            acked=sum(s.outcomes_sent for s in stats),
            dropped=sum(r.buffer.dropped for r in self.reporters.values()),
            rejected_batches=sum(s.rejected for s in stats),
            attempts=sum(s.attempts for s in stats),
            retries=sum(s.retries for s in stats),
            unavailable=sum(s.unavailable for s in stats),
            failed=sum(s.failed for s in stats),
            duplicates=sum(s.duplicates for s in stats),
            buffer_peak=max(r.buffer.peak for r in self.reporters.values()),
            backlog_peak=max(a.backlog_peak for a in self.agents),
            capacity=self.capacity,
        )


def deploy_agents(
    kubectl: Kubectl,
    names: list[str],
    behaviors: list[str],
    token_dir: Path,
    *,
    role: str = "code_developer",
    timeout: float = 120.0,
) -> list[LoadAgent]:
    """Agents (behaviorRef cycling over `behaviors`), each with the ServiceAccount named like
    it (the identity its runtime reports as); waits for their ConfigMaps and writes a real
    TokenRequest token per agent into `token_dir`."""
    docs = []
    for i, name in enumerate(names):
        docs.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})
        docs.append(
            {
                "apiVersion": AGENT_API,
                "kind": "Agent",
                "metadata": {"name": name},
                "spec": {"role": role, "behaviorRef": {"name": behaviors[i % len(behaviors)]}},
            }
        )
    kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    )

    def bundles() -> dict[str, dict[str, object]] | None:
        found = {}
        for cm in kubectl.items("configmaps"):
            agent = cm["metadata"]["name"].removesuffix("-behavior")
            if agent in names and "behavior.json" in (cm.get("data") or {}):
                found[agent] = json.loads(cm["data"]["behavior.json"])
        return found if len(found) == len(names) else None

    metas = wait_for(bundles, timeout=timeout, interval=0.5, what="every load agent's ConfigMap")
    token_dir.mkdir(parents=True, exist_ok=True)
    agents = []
    for name in names:
        token = kubectl("create", "token", name, "--duration", "2h").strip()
        token_file = token_dir / f"{name}.token"
        token_file.write_text(token)
        meta = metas[name]
        agents.append(LoadAgent(name, str(meta["sha256"]), int(str(meta["revision"])), token_file))
    return agents


@dataclass(frozen=True)
class Counted:
    """What the registry counted for one agent."""

    tasks: int
    successes: int
    current_tasks: int
    by_script: dict[str, int]  # agent_revision_stats: tasks per script sha256


def registry_counts(database_url: str, namespace: str, names: list[str]) -> dict[str, Counted]:
    from agent_registry.registry import RegistryService

    async def read() -> dict[str, Counted]:
        registry = RegistryService.from_url(database_url)
        try:
            rows = await registry.agent_revision_stats(namespace=namespace)
            counted = {}
            for name in names:
                agent_id = f"{namespace}/{name}"
                record = await registry.get_by_agent_id(agent_id)
                counted[name] = Counted(
                    tasks=record.tasks_completed,
                    successes=record.successes,
                    current_tasks=record.current_tasks_completed,
                    by_script={r.script_sha256: r.tasks for r in rows if r.agent_id == agent_id},
                )
            return counted
        finally:
            await registry.close()

    return asyncio.run(read())


def discrepancies(
    agents: list[LoadAgent], counted: dict[str, Counted], *, lifetime_only: bool = False
) -> list[str]:
    """Every way the registry's counts differ from what was produced (empty: exact).
    `lifetime_only`: the agents' assignments changed meanwhile, so only the lifetime counts
    and the sum of the script rows are compared."""
    problems = []
    for agent in agents:
        got = counted[agent.name]
        expected_scripts = {agent.sha256: agent.produced}
        if got.tasks != agent.produced or got.successes != agent.successes:
            problems.append(
                f"{agent.name}: produced {agent.produced} ({agent.successes} ok), registry "
                f"counted {got.tasks} ({got.successes} ok)"
            )
        if lifetime_only:
            if sum(got.by_script.values()) != agent.produced:
                problems.append(f"{agent.name}: script rows {got.by_script} != {agent.produced}")
            continue
        if got.by_script != expected_scripts:
            problems.append(f"{agent.name}: script rows {got.by_script} != {expected_scripts}")
        if got.current_tasks != agent.produced:
            problems.append(
                f"{agent.name}: open assignment counted {got.current_tasks} of {agent.produced}"
            )
    return problems


__all__ = [
    "Counted",
    "LoadAgent",
    "LoadTotals",
    "ReportLoad",
    "deploy_agents",
    "discrepancies",
    "registry_counts",
]
