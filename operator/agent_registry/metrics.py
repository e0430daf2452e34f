"""The operator's Prometheus metrics, in one small object shared by the controller and the API.

Each `Metrics` owns its own `CollectorRegistry` (not prometheus_client's global one) so two
operators in one test process, or two test apps, never collide on metric names.
"""

from __future__ import annotations

import contextlib
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

# Reload latency spans an API-watch reload (tens of milliseconds) up to a kubelet ConfigMap
# volume sync (60-120 s), so the buckets cover 0.05 s .. 120 s roughly logarithmically.
RELOAD_LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    90.0,
    120.0,
)

# Values of reports_ingested_total{result}: one per way a report can end.
REPORT_RESULTS: Final[tuple[str, ...]] = (
    "accepted",
    "duplicate",
    "unauthenticated",
    "forbidden",
    "not_found",
    "invalid",
    "unavailable",
    "error",
)

CONTENT_TYPE: Final[str] = CONTENT_TYPE_LATEST


class Metrics:
    """The operator's metrics. Create one per process (or per test) and pass it around."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.reconciles = Counter(
            "reconciles_total",
            "Reconciliations by the controller, by resource kind and result.",
            ("kind", "result"),
            registry=self.registry,
        )
        self.events_dropped = Counter(
            "events_dropped_total",
            "Events not posted because the fleet-wide Event budget was spent, by reason.",
            ("reason",),
            registry=self.registry,
        )
        self.reports_ingested = Counter(
            "reports_ingested_total",
            "Outcome reports received by the registry API, by result.",
            ("result",),
            registry=self.registry,
        )
        self.outcomes_ingested = Counter(
            "outcomes_ingested_total",
            "Task outcomes recorded in the registry (duplicates of a batch not counted).",
            registry=self.registry,
        )
        self.reload_latency = Histogram(
            "reload_latency_seconds",
            "Time from a behavior's assignment to the runtime's confirmation that it loaded it.",
            buckets=RELOAD_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry_errors = Counter(
            "registry_errors_total",
            "Registry (database) operations that failed, by operation.",
            ("operation",),
            registry=self.registry,
        )

        self.rollout_aborts = Counter(
            "rollout_aborts_total",
            "Canary rollouts aborted (agents rolled back to the stable revision).",
            ("namespace", "behavior"),
            registry=self.registry,
        )
        self.rollout_promotions = Counter(
            "rollout_promotions_total",
            "Canary rollouts promoted (the canary became the stable revision).",
            ("namespace", "behavior"),
            registry=self.registry,
        )
        # From status, so it is right after a restart: alert on it, since Git then declares a
        # script that no agent runs.
        self.rollouts_aborted = Gauge(
            "rollouts_aborted",
            "1 per AgentBehavior whose last rollout was aborted (Degraded=True).",
            ("namespace", "behavior"),
            registry=self.registry,
        )

    def count_reconcile(self, kind: str, result: str) -> None:
        self.reconciles.labels(kind=kind, result=result).inc()

    def count_report(self, result: str) -> None:
        self.reports_ingested.labels(result=result).inc()

    def count_outcomes(self, recorded: int) -> None:
        if recorded > 0:
            self.outcomes_ingested.inc(recorded)

    def observe_reload_latency(self, seconds: float) -> None:
        # Clocks of the pod and the operator can disagree a little: never record a negative time.
        self.reload_latency.observe(max(0.0, seconds))

    def count_registry_error(self, operation: str) -> None:
        self.registry_errors.labels(operation=operation).inc()

    def count_rollout(self, namespace: str, behavior: str, outcome: str) -> None:
        counter = self.rollout_aborts if outcome == "Aborted" else self.rollout_promotions
        counter.labels(namespace=namespace, behavior=behavior).inc()

    def show_aborted(self, namespace: str, behavior: str, aborted: bool) -> None:
        if aborted:
            self.rollouts_aborted.labels(namespace=namespace, behavior=behavior).set(1)
            return
        with contextlib.suppress(KeyError):  # never aborted: no series to drop
            self.rollouts_aborted.remove(namespace, behavior)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric, for GET /metrics."""
        return bytes(generate_latest(self.registry))


__all__ = ["CONTENT_TYPE", "RELOAD_LATENCY_BUCKETS", "REPORT_RESULTS", "Metrics"]
