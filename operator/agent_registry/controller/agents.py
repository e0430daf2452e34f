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
from agent_registry.controller.context import ASSIGNED_BY, OperatorContext, context_of
from agent_registry.controller.events import post_event
from agent_registry.controller.indexes import Key, ObjectState, one, state_of
from agent_registry.controller.retrying import retry_on_outage
from agent_registry.controller.status import (
    AgentView,
    desired_agent_status,
    status_patch,
    underperforming_policy,
)
from agent_registry.controller.views import (
    ViewReader,
    agent_view,
    assignment_view,
    open_assignment,
)
from agent_registry.registry import (
    AgentAlreadyRegistered,
    AgentNotFound,
    AgentRecord,
    AssignmentRecord,
    BehaviorNotFound,
    BehaviorRecord,
    RegistryUnavailable,
)

logger = logging.getLogger(__name__)

REASON_SPEC = "spec"
REASON_HOT_RELOAD = "hot_reload"


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


def behavior_limits(behavior_state: ObjectState | None) -> dict[str, int]:
    limits = (behavior_state.spec.get("limits") if behavior_state else None) or {}
    return {str(k): int(v) for k, v in limits.items() if v is not None}


async def assign_and_render(
    ctx: OperatorContext,
    agent: ObjectState,
    behavior: BehaviorRecord,
    *,
    limits: dict[str, int],
    trust_status: bool = False,
) -> tuple[str | None, AssignmentRecord | None]:
    """Assign `behavior` (its current revision) and apply the agent's ConfigMap.

    Returns the assignment reason when the assignment changed (for an Event), else None, and
    the open assignment when known without another query.
    With `trust_status` the agent's current assignment is taken from its status (written from
    the registry; revisions only go up) instead of a registry read: the hot-reload path saves
    a query per agent that way. A stale status costs at most a no-op assignment.
    """
    agent_id = agent_id_of(agent.namespace, agent.name)
    before = None
    if trust_status:
        shown = agent.status.get("behavior") or {}
        same_behavior = shown.get("name") == behavior.name
        changed = not (same_behavior and shown.get("revision") == behavior.revision)
    else:
        before = await open_assignment(ctx.registry, agent_id)
        same_behavior = before is not None and before.behavior_id == behavior.id
        changed = not (
            before is not None and same_behavior and before.behavior_revision == behavior.revision
        )
    reason = REASON_HOT_RELOAD if same_behavior else REASON_SPEC
    assignment = before
    if changed:
        assignment = await ctx.registry.assign_behavior(
            agent_id, behavior.id, assigned_by=ASSIGNED_BY, reason=reason
        )
    owner = rendering.Owner(name=agent.name, namespace=agent.namespace, uid=agent.uid)
    snapshot = rendering.BehaviorSnapshot(
        name=behavior.name,
        namespace=behavior.namespace,
        revision=behavior.revision,
        sha256=behavior.script_sha256,
        script=behavior.lua_script,
        limits=limits,
    )
    await ctx.kube.apply(rendering.render_configmap(owner, snapshot))
    return (reason if changed else None), assignment


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
    reason: str | None  # of a new assignment, None when it did not change
    view: AgentView | None  # when known without another registry read


async def sync_agent(
    ctx: OperatorContext,
    agent: ObjectState,
    behavior_state: ObjectState | None,
    *,
    workload: bool,
) -> SyncResult:
    """Registry + ConfigMap (+ Deployment when `workload`)."""
    async with ctx.agent_lock(agent_id_of(agent.namespace, agent.name)):
        record = await ensure_registered(ctx, agent)
        reason = None
        view = None
        if agent.behavior_ref is not None:
            try:
                behavior = await ctx.registry.get_behavior_by_name(
                    agent.namespace, agent.behavior_ref
                )
            except BehaviorNotFound:
                behavior = None  # not valid yet: the AgentBehavior handler assigns it when it is
            if behavior is not None and behavior.deleted_at is None:
                reason, assignment = await assign_and_render(
                    ctx, agent, behavior, limits=behavior_limits(behavior_state)
                )
                if assignment is not None:
                    view = agent_view(record, assignment_view(assignment, behavior))
        if workload:
            await apply_workload(ctx, agent)
    return SyncResult(record, reason, view)


async def post_assignment_event(
    ctx: OperatorContext, agent: ObjectState, reason: str | None, status: dict[str, Any]
) -> None:
    if reason is None:
        return
    behavior = status.get("behavior") or {}
    await post_event(
        ctx,
        agent,
        reason="BehaviorAssigned" if reason == REASON_SPEC else "BehaviorReloaded",
        message=(
            f"assigned {behavior.get('name')} revision {behavior.get('revision')} "
            f"({str(behavior.get('sha256', ''))[:12]}), reason {reason}"
        ),
    )


async def agent_status(
    ctx: OperatorContext,
    agent: ObjectState,
    *,
    observed_generation: int | None,
    view: AgentView | None = None,
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
    behavior_state = (
        one(behavior_states, (agent.namespace, agent.behavior_ref)) if agent.behavior_ref else None
    )
    synced = await sync_agent(ctx, agent, behavior_state, workload=True)
    desired = await agent_status(ctx, agent, observed_generation=agent.generation, view=synced.view)
    changes = status_patch(agent.status, desired)
    if changes:
        patch.status.update(changes)
    await post_assignment_event(ctx, agent, synced.reason, desired)
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


async def reload_agents(
    ctx: OperatorContext,
    agents: list[ObjectState],
    behavior_state: ObjectState | None,
    behavior: BehaviorRecord,
    *,
    concurrency: int = 16,
) -> None:
    """After a behavior's new revision: reassign and re-render each agent using it. Only the
    ConfigMaps change; Deployments are not touched (no pod restarts).

    This is the hot-reload latency path, so it does the least per agent: one assignment and one
    ConfigMap apply. Status follows from the write-back loop, Events after every ConfigMap.
    """
    semaphore = asyncio.Semaphore(concurrency)
    limits = behavior_limits(behavior_state)
    reasons: dict[str, str] = {}

    async def one_agent(agent: ObjectState) -> None:
        async with semaphore, ctx.agent_lock(agent_id_of(agent.namespace, agent.name)):
            try:
                reason, _ = await assign_and_render(
                    ctx, agent, behavior, limits=limits, trust_status=True
                )
            except AgentNotFound:
                return  # not registered yet: its own create handler assigns the newest revision
            if reason is not None:
                reasons[agent.name] = reason

    results = await asyncio.gather(*(one_agent(a) for a in agents), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
    status = {
        "behavior": {
            "name": behavior.name,
            "revision": behavior.revision,
            "sha256": behavior.script_sha256,
        }
    }
    await asyncio.gather(
        *(
            post_assignment_event(ctx, agent, reasons[agent.name], status)
            for agent in agents
            if agent.name in reasons
        )
    )
