"""What the handlers share within one operator process: settings and per-loop clients.

kopf hands `memo` to every handler; `OperatorContext` lives in `memo.context`. The registry
service and the Kubernetes session are created in the startup handler, on kopf's own event loop
(an SQLAlchemy engine and an aiohttp session each belong to one loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from agent_registry.controller.fleet import FleetReconciler
    from agent_registry.controller.indexes import AgentIndex
    from agent_registry.controller.kubeapi import Kube
    from agent_registry.controller.throttle import RateLimiter
    from agent_registry.metrics import Metrics
    from agent_registry.registry import RegistryService

# Who the registry records as having made an assignment.
ASSIGNED_BY = "agent-registry-operator"
# kopf's finalizer on AgentBehaviors; earlier versions put it on every Agent too.
FINALIZER = "agents.singularity.dev/registry"


@dataclass
class OperatorConfig:
    """Settings from `agentreg run` flags (see docs/ and the README's Configuration)."""

    database_url: str
    registry_url: str
    # The namespaces served (exact names); empty: all of them.
    namespaces: tuple[str, ...] = ()
    kubeconfig: str | None = None
    api_listen: str | None = "0.0.0.0:8080"
    status_interval: float = 5.0
    delete_timeout: float = 60.0
    migrate: bool = False
    webhook: bool = False
    webhook_managed: bool = True
    # Underperforming condition: current assignment's success rate < threshold over >= min_tasks.
    underperforming_threshold: float = 0.7
    underperforming_min_tasks: int = 10
    # Who may report for an Agent: "serviceaccount" (its own) or "namespace" (any of its
    # namespace, the opt-out); see api/access.py.
    report_auth: str = "serviceaccount"
    # How often each BehaviorPolicy evaluates its agents (seconds).
    policy_interval: float = 15.0
    # How often a canary rollout in progress is analysed (seconds).
    rollout_interval: float = 10.0
    # How often each BehaviorExperiment counts its arms and judges them (seconds).
    experiment_interval: float = 10.0
    # Fleet-wide limits (issue 14): status patches per second (all objects together; waits),
    # Events per second (dropped beyond, counted), agents per reconcile batch.
    status_qps: float = 200.0
    event_qps: float = 20.0
    event_burst: float = 200.0
    batch_size: int = 500
    # Seconds between two full status recomputations (between them the loop reads only the
    # agents whose registry rows changed).
    status_resync: float = 300.0
    # Seconds between two checks of the applied ConfigMaps against the live ones (drift.py).
    configmap_resync: float = 300.0
    # Seconds a report batch id is remembered (a retry within counts once; 0: forever).
    report_batch_retention: float = 7 * 86400.0


# (namespace, name) -> the index's store of values (kopf.Index is such a mapping).
IndexMap = Mapping[tuple[str, str], Any]


@dataclass(frozen=True)
class Indexes:
    """kopf's live in-memory indexes, handed to the startup handler once: decisions read the
    declared objects from them instead of listing the API."""

    agent_states: IndexMap
    behavior_states: IndexMap
    policy_states: IndexMap
    experiment_states: IndexMap = field(default_factory=dict)


class AppliedConfigMap(NamedTuple):
    """Digests of a ConfigMap as this process applied it."""

    # The whole rendered manifest: the same one again is not applied (arbitration.py).
    manifest: bytes
    # Its data, compared with the live one by controller/drift.py (a ConfigMap deleted or
    # edited by hand is applied again).
    data: bytes


@dataclass
class OperatorContext:
    config: OperatorConfig
    registry: RegistryService
    kube: Kube
    metrics: Metrics | None = None
    indexes: Indexes | None = None
    # The Agents as last seen (kept by controller/agent_watch.py's list and watch).
    agent_index: AgentIndex = field(default_factory=lambda: _agent_index())
    # The batch reconciler of Agents and the fleet-wide limits (set up at startup).
    fleet: FleetReconciler | None = None
    status_limiter: RateLimiter | None = None
    event_limiter: RateLimiter | None = None
    # (namespace, agent) -> the ConfigMap this process last applied for it.
    applied_configmaps: dict[tuple[str, str], AppliedConfigMap] = field(default_factory=dict)
    # Background tasks started at startup (the status loop, the API server), stopped at cleanup.
    tasks: list[Any] = field(default_factory=list)
    # One lock per agent: its own handler and its behavior's handler may both sync it at once
    # (on a restart both resume); serialized, the last writer renders the newest revision.
    agent_locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    # Per BehaviorPolicy, the agents its status granted a switch when last seen: on the next
    # watch event, the ones that left its list are re-decided too.
    policy_grants: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    # Per AgentBehavior, what its rollout status made its agents run when last seen (only to
    # skip re-deciding on status events that change nothing for them; the status is the truth).
    rollout_serving: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)
    # Per BehaviorExperiment, what its status granted each agent when last applied: a watch
    # event re-decides only the agents whose grant changed.
    experiment_grants: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # Per BehaviorPolicy, (its role and window, its ring of count snapshots for the recent
    # windows: decisions.policy_windows.PolicyWindows); in memory, empty after a restart.
    policy_windows: dict[tuple[str, str], Any] = field(default_factory=dict)

    def agent_lock(self, agent_id: str) -> asyncio.Lock:
        return self.agent_locks.setdefault(agent_id, asyncio.Lock())


def _agent_index() -> AgentIndex:
    from agent_registry.controller.indexes import AgentIndex

    return AgentIndex()


def context_of(memo: Any) -> OperatorContext:
    context = getattr(memo, "context", None)
    if not isinstance(context, OperatorContext):
        raise RuntimeError("the operator context is not set up (startup handler did not run)")
    return context
