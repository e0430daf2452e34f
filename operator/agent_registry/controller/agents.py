"""Agent handlers: mirror the Agent into the registry and render what it runs.

Every step is idempotent (register-or-reactivate, assign-if-different, server-side apply), so a
handler retried after a crash or an outage converges without duplicate history rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from dataclasses import dataclass
from typing import Any

import kopf

from agent_registry.controller import rendering
from agent_registry.controller.arbitration import (
    BehaviorCatalog,
    BehaviorIndex,
    apply_decision,
    decide_agent,
    facts_for,
    pin_condition,
)
from agent_registry.controller.conditions import Cond, find
from agent_registry.controller.context import ASSIGNED_BY, OperatorContext, context_of
from agent_registry.controller.events import post_event
from agent_registry.controller.indexes import Key, ObjectState, state_of
from agent_registry.controller.retrying import retry_on_outage
from agent_registry.controller.status import (
    AgentView,
    desired_agent_status,
    status_patch,
    underperforming_policy,
)
from agent_registry.controller.views import ViewReader, agent_view, assignment_view
from agent_registry.decisions.arbiter import PIN_CONDITION, Decision
from agent_registry.registry import (
    AgentAlreadyRegistered,
    AgentNotFound,
    AgentRecord,
    RegistryUnavailable,
)

logger = logging.getLogger(__name__)


def agent_id_of(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


async def ensure_registered(ctx: OperatorContext, agent: ObjectState) -> AgentRecord:
    """The agent's registry record, registering it or reactivating a stopped one."""
    registry = ctx.registry
    agent_id = agent_id_of(agent.namespace, agent.name)
    try:
        record = await registry.get_by_agent_id(agent_id)
    except AgentNotFound:
        record = None
    if record is None or record.status == "stopped":
        # Registered concurrently (another handler run)? Then the record below is current.
        with contextlib.suppress(AgentAlreadyRegistered):
            await registry.register_agent(
                agent_id,
                agent.spec["role"],
                name=agent.spec.get("displayName") or agent.name,
                created_by=ASSIGNED_BY,
            )
        record = await registry.get_by_agent_id(agent_id)
    name = agent.spec.get("displayName") or agent.name
    notes = agent.spec.get("notes")
    if record.agent_name != name or (notes is not None and record.notes != notes):
        record = await registry.update_agent(agent_id, name=name, notes=notes)
    wanted = "paused" if agent.spec.get("paused") else "active"
    if record.status != wanted:
        record = await registry.set_status(agent_id, wanted)
    return record


async def apply_workload(ctx: OperatorContext, agent: ObjectState) -> None:
    """The Deployment when spec.template is set; removed when the template goes away."""
    name = rendering.deployment_name(agent.name)
    template = agent.spec.get("template")
    if not template:
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


async def sync_agent(
    ctx: OperatorContext,
    agent: ObjectState,
    behavior_states: BehaviorIndex,
    *,
    workload: bool,
) -> SyncResult:
    """Registry + the arbiter's decision + ConfigMap (+ Deployment when `workload`)."""
    async with ctx.agent_lock(agent_id_of(agent.namespace, agent.name)):
        record = await ensure_registered(ctx, agent)
        catalog = BehaviorCatalog(ctx, agent.namespace)
        facts = facts_for(ctx, agent)
        decision, _ = await decide_agent(catalog, facts)
        applied = await apply_decision(ctx, agent, decision, catalog, behavior_states)
        view = None
        if applied.assignment is not None and decision.primary is not None:
            behavior = await catalog.record(decision.primary.behavior)
            view = agent_view(record, assignment_view(applied.assignment, behavior))
        if workload:
            await apply_workload(ctx, agent)
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


@retry_on_outage
async def reconcile_agent(
    body: kopf.Body,
    memo: kopf.Memo,
    patch: kopf.Patch,
    behavior_states: kopf.Index[Key, ObjectState],
    **_: Any,
) -> None:
    """create / update / resume of an Agent."""
    ctx = context_of(memo)
    agent = state_of("Agent", body)
    synced = await sync_agent(ctx, agent, behavior_states, workload=True)
    desired = await agent_status(
        ctx,
        agent,
        observed_generation=agent.generation,
        view=synced.view,
        pinned=synced.pinned,
    )
    changes = status_patch(agent.status, desired)
    if changes:
        patch.status.update(changes)
    await post_decision_events(ctx, agent, synced, desired)
    if ctx.metrics is not None:
        ctx.metrics.reconciles.labels(kind="Agent", result="ok").inc()


async def delete_agent(
    body: kopf.Body,
    memo: kopf.Memo,
    runtime: datetime.timedelta,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Mark the agent stopped in the registry (history kept), within a bounded time.

    While the registry is down the finalizer retries; after `delete_timeout` it lets the
    Agent go and records that the registry still shows it active (an Event and a log line).
    """
    ctx = context_of(memo)
    agent = state_of("Agent", body)
    agent_id = agent_id_of(agent.namespace, agent.name)
    try:
        await ctx.registry.unregister_agent(agent_id)
    except AgentNotFound:
        return
    except RegistryUnavailable as exc:
        if runtime.total_seconds() < ctx.config.delete_timeout:
            raise kopf.TemporaryError(f"registry unavailable, retrying: {exc}", delay=5) from exc
        message = (
            f"registry unavailable for {int(runtime.total_seconds())}s; gave up marking "
            f"{agent_id} stopped (the next reconcile of the same name reactivates it)"
        )
        logger.error(message)
        await post_event(ctx, agent, reason="RegistryUnavailable", message=message, warning=True)
        return
    if ctx.metrics is not None:
        ctx.metrics.reconciles.labels(kind="Agent", result="deleted").inc()


async def redecide_agents(
    ctx: OperatorContext,
    agents: list[ObjectState],
    *,
    concurrency: int = 16,
) -> None:
    """Decide again for these agents and re-render their ConfigMaps: after a behavior's new
    revision (its agents by spec or by pin), or when a policy's grants changed. Deployments
    are not touched (no pod restarts).

    This is the hot-reload latency path, so it does the least per agent: one decision (the
    behaviors are read once for all agents of the namespace), at most one assignment and one
    ConfigMap apply. Status follows from the write-back loop, Events after every ConfigMap.
    """
    assert ctx.indexes is not None, "the startup handler sets the indexes"
    behavior_states = ctx.indexes.behavior_states
    semaphore = asyncio.Semaphore(concurrency)
    catalogs: dict[str, BehaviorCatalog] = {}
    changed: list[tuple[ObjectState, Decision]] = []

    async def one_agent(agent: ObjectState) -> None:
        catalog = catalogs.setdefault(agent.namespace, BehaviorCatalog(ctx, agent.namespace))
        async with semaphore, ctx.agent_lock(agent_id_of(agent.namespace, agent.name)):
            decision, _ = await decide_agent(catalog, facts_for(ctx, agent))
            try:
                applied = await apply_decision(ctx, agent, decision, catalog, behavior_states)
            except AgentNotFound:
                return  # not registered yet: its own create handler decides
            if applied.changed:
                changed.append((agent, decision))

    results = await asyncio.gather(*(one_agent(a) for a in agents), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    await asyncio.gather(
        *(
            post_event(
                ctx,
                agent,
                reason="BehaviorReloaded",
                message=(
                    f"{decision.source}: {decision.primary.label() if decision.primary else '-'}"
                    f": {decision.reason}"
                ),
            )
            for agent, decision in changed
        )
    )
