"""Agent handlers: mirror the Agent into the registry and render what it runs.

Every step is idempotent (register-or-reactivate, assign-if-different, server-side apply), so a
handler retried after a crash or an outage converges without duplicate history rows.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Any

from agent_registry.controller import rendering
from agent_registry.controller.arbitration import (
    UNREAD,
    Assigner,
    BehaviorCatalog,
    BehaviorIndex,
    Unread,
    apply_decision,
    decide_agent,
    facts_for,
    pin_condition,
)
from agent_registry.controller.conditions import Cond, find
from agent_registry.controller.context import ASSIGNED_BY, OperatorContext
from agent_registry.controller.events import post_event
from agent_registry.controller.indexes import ObjectState
from agent_registry.controller.status import (
    AgentView,
    desired_agent_status,
    underperforming_policy,
)
from agent_registry.controller.views import ViewReader, agent_view, assignment_view
from agent_registry.decisions.arbiter import PIN_CONDITION, Decision
from agent_registry.registry import (
    AgentAlreadyRegistered,
    AgentNotFound,
    AgentRecord,
    AssignmentRecord,
)

logger = logging.getLogger(__name__)


def agent_id_of(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


async def ensure_registered(
    ctx: OperatorContext, agent: ObjectState, known: AgentRecord | Unread | None = UNREAD
) -> AgentRecord:
    """The agent's registry record, registering it or reactivating a stopped one. `known`:
    the record as a bulk read found it (None: not registered), so no read of its own."""
    registry = ctx.registry
    agent_id = agent_id_of(agent.namespace, agent.name)
    record: AgentRecord | None
    if isinstance(known, Unread):
        try:
            record = await registry.get_by_agent_id(agent_id)
        except AgentNotFound:
            record = None
    else:
        record = known
    if record is None or record.status == "stopped":
        # Registered concurrently (another handler run)? Then the record below is current.
        try:
            record = await registry.register_agent(
                agent_id,
                agent.spec["role"],
                name=agent.spec.get("displayName") or agent.name,
                created_by=ASSIGNED_BY,
            )
        except AgentAlreadyRegistered:
            record = await registry.get_by_agent_id(agent_id)
    name = agent.spec.get("displayName") or agent.name
    notes = agent.spec.get("notes")
    if record.agent_name != name or (notes is not None and record.notes != notes):
        record = await registry.update_agent(agent_id, name=name, notes=notes)
    wanted = "paused" if agent.spec.get("paused") else "active"
    if record.status != wanted:
        record = await registry.set_status(agent_id, wanted)
    return record


async def apply_workload(
    ctx: OperatorContext, agent: ObjectState, deployments: set[str] | None = None
) -> None:
    """The Deployment when spec.template is set; removed when the template goes away.
    `deployments`: the agents of the namespace that have a Deployment of ours, as one list
    found them (a batch lists them once instead of a GET per agent without a template)."""
    name = rendering.deployment_name(agent.name)
    template = agent.spec.get("template")
    if not template:
        if deployments is not None:
            if agent.name in deployments:
                await ctx.kube.delete("apps/v1", "deployments", agent.namespace, name)
            return
        existing = await ctx.kube.get("apps/v1", "deployments", agent.namespace, name)
        labels = ((existing or {}).get("metadata") or {}).get("labels") or {}
        if labels.get(rendering.AGENT_LABEL) == agent.name:
            await ctx.kube.delete("apps/v1", "deployments", agent.namespace, name)
        return
    owner = rendering.Owner(name=agent.name, namespace=agent.namespace, uid=agent.uid)
    await ctx.kube.apply(
        rendering.render_deployment(
            owner,
            template,
            registry_url=ctx.config.registry_url,
            paused=bool(agent.spec.get("paused")),
            service_account_name=agent.spec.get("serviceAccountName"),
        )
    )


@dataclass(frozen=True)
class SyncResult:
    record: AgentRecord
    decision: Decision
    changed: bool  # a new assignment was opened: an Event is due
    view: AgentView | None  # when known without another registry read
    pinned: Cond | None  # the Pinned condition (None: no pin annotation)


@dataclass(frozen=True)
class Prefetched:
    """What a batch read in bulk for one agent: its record (None: not registered), its open
    assignment (None: none), and the agents of its namespace with a Deployment of ours."""

    record: AgentRecord | None
    assignment: AssignmentRecord | None
    deployments: set[str] | None = None


async def sync_agent(
    ctx: OperatorContext,
    agent: ObjectState,
    behavior_states: BehaviorIndex,
    *,
    workload: bool,
    catalog: BehaviorCatalog | None = None,
    known: Prefetched | None = None,
    assign: Assigner | None = None,
) -> SyncResult:
    """Registry + the arbiter's decision + ConfigMap (+ Deployment when `workload`).
    A batch passes its namespace's `catalog` (behaviors read once for the batch) and what it
    read in bulk (`known`)."""
    async with ctx.agent_lock(agent_id_of(agent.namespace, agent.name)):
        record = await ensure_registered(ctx, agent, known.record if known else UNREAD)
        if catalog is None:
            catalog = BehaviorCatalog(ctx, agent.namespace)
        facts = facts_for(ctx, agent)
        decision, _ = await decide_agent(catalog, facts)
        applied = await apply_decision(
            ctx,
            agent,
            decision,
            catalog,
            behavior_states,
            # Not registered when read in bulk: no assignment either (this reconcile, under
            # the agent's lock, is the only one that registers it).
            before=known.assignment if known is not None else UNREAD,
            assign=assign,
        )
        view = None
        if applied.assignment is not None and decision.primary is not None:
            behavior = await catalog.record(decision.primary.behavior)
            view = agent_view(record, assignment_view(applied.assignment, behavior))
        if workload:
            await apply_workload(ctx, agent, known.deployments if known else None)
    return SyncResult(record, decision, applied.changed, view, pin_condition(facts, decision))


async def post_decision_events(
    ctx: OperatorContext,
    agent: ObjectState,
    result: SyncResult,
    status: dict[str, Any],
) -> None:
    """An Event when the decision changed, and one when a pin is refused (only on the
    transition, so a standing bad pin does not post on every resync)."""
    if result.changed:
        behavior = status.get("behavior") or {}
        decision = result.decision
        await post_event(
            ctx,
            agent,
            reason="BehaviorAssigned"
            if decision.source != "Spec" or not _same_behavior(agent, behavior)
            else "BehaviorReloaded",
            message=(
                f"{decision.source}: {behavior.get('name')} revision {behavior.get('revision')} "
                f"({str(behavior.get('sha256', ''))[:12]}): {decision.reason}"
            ),
        )
    pinned = result.pinned
    before = find(agent.status.get("conditions"), PIN_CONDITION)
    shown = None if before is None else (before.get("status"), before.get("reason"))
    if pinned is not None and not pinned.is_true and shown != (pinned.status, pinned.reason):
        await post_event(ctx, agent, reason="PinRefused", message=pinned.message, warning=True)


def _same_behavior(agent: ObjectState, behavior: dict[str, Any]) -> bool:
    shown = agent.status.get("behavior") or {}
    return bool(shown) and shown.get("name") == behavior.get("name")


async def agent_status(
    ctx: OperatorContext,
    agent: ObjectState,
    *,
    observed_generation: int | None,
    view: AgentView | None = None,
    pinned: Cond | None = None,
) -> dict[str, Any]:
    if view is None:
        record = await ctx.registry.get_by_agent_id(agent_id_of(agent.namespace, agent.name))
        view = await ViewReader(ctx.registry).view(record)
    return desired_agent_status(
        agent.status,
        behavior_ref=agent.behavior_ref,
        view=view,
        now=datetime.datetime.now(datetime.UTC),
        observed_generation=observed_generation,
        generation=agent.generation,
        policy=underperforming_policy(ctx.config),
        extra=[pinned] if pinned is not None else [],
        remove_extra=[] if pinned is not None else [PIN_CONDITION],
    )


async def redecide_agents(
    ctx: OperatorContext,
    agents: list[ObjectState],
) -> None:
    """Decide again for these agents and re-render their ConfigMaps: after a behavior's new
    revision (its agents by spec or by pin), or when a policy's, an experiment's or a
    rollout's grants changed. Done by the fleet reconciler in its batches (bulk registry
    reads, bounded concurrent writes, status through the fleet-wide limited writer), merged
    with whatever else is pending for the same agents; returns once all are done and raises
    the first failure (the reconciler retries failed agents itself too)."""
    if not agents:
        return
    assert ctx.fleet is not None, "the startup handler sets up the fleet reconciler"
    await ctx.fleet.sync(agents)
