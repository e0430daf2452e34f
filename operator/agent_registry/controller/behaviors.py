"""AgentBehavior handlers: validate the Lua, store the revision, hot-reload its agents (or,
with spec.rollout Canary, start the new revision's rollout)."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Mapping
from typing import Any

import kopf

from agent_registry.controller.agents import redecide_agents
from agent_registry.controller.conditions import Cond, find
from agent_registry.controller.context import context_of
from agent_registry.controller.events import post_event
from agent_registry.controller.indexes import Key, ObjectState, one, state_of
from agent_registry.controller.retrying import retry_on_outage
from agent_registry.controller.rollouts import RevisionRef, on_new_revision, replacement_patch
from agent_registry.controller.status import (
    KEEP,
    VALID,
    desired_behavior_status,
    status_patch,
    validity_condition,
)
from agent_registry.lua import Limits, ValidationResult, validate_script
from agent_registry.registry import BehaviorNotFound, RegistryUnavailable

# How long a behavior waits for its parentRef to be registered before it is stored without
# lineage (the parent may be invalid or missing for good).
PARENT_RETRIES = 10

_LIMIT_FIELDS = {
    "maxInstructions": "max_instructions",
    "maxMemoryBytes": "max_memory_bytes",
    "timeoutMs": "timeout_ms",
}


def sandbox_limits(limits: Mapping[str, Any] | None) -> Any:
    """agent_registry.lua.Limits from spec.limits (omitted keys keep the sandbox defaults)."""
    given = {_LIMIT_FIELDS[k]: int(v) for k, v in (limits or {}).items() if k in _LIMIT_FIELDS}
    return Limits(**given)


# Said with every warning of a dry call on the invented task, in the condition and at admission.
SAMPLE_TASK_HINT = "set spec.lua.sampleTask to one of the agents' tasks to check on_task on it"


def validate_spec(spec: Mapping[str, Any]) -> ValidationResult:
    """validate_script on a behavior's spec: its script, limits and sample task."""
    lua = spec.get("lua") or {}
    sample = lua.get("sampleTask")
    return validate_script(
        str(lua.get("script") or ""),
        sandbox_limits(spec.get("limits")),
        sample_task=sample if isinstance(sample, Mapping) else None,
    )


async def validate(spec: Mapping[str, Any]) -> ValidationResult:
    """validate_spec in a thread: a dry run is CPU work that must not stall the event loop (the
    sandbox bounds it)."""
    return await asyncio.to_thread(validate_spec, spec)


def validity_of(result: ValidationResult) -> Cond:
    """The Valid condition. A script whose dry call failed only on the invented task stays
    Valid=True (it may well be right for its real tasks), with a reason that says so."""
    if result.ok and result.warnings:
        message = f"{'; '.join(result.warnings)} ({SAMPLE_TASK_HINT})"
        return Cond(VALID, "True", "ValidWithWarnings", message)
    return validity_condition(result.ok, result.error, result.line)


def _changed(status: Mapping[str, Any], valid: Cond) -> bool:
    known = find(status.get("conditions"), VALID) or {}
    return (known.get("reason"), known.get("message")) != (valid.reason, valid.message)


def agents_of(
    namespace: str,
    name: str,
    agents_by_behavior: Mapping[Key, Any],
    agent_states: Mapping[Key, Any],
) -> list[ObjectState]:
    names = sorted(set(agents_by_behavior.get((namespace, name), [])))
    states = [one(agent_states, (namespace, agent)) for agent in names]
    return [s for s in states if isinstance(s, ObjectState)]


@retry_on_outage
async def reconcile_behavior(
    body: kopf.Body,
    memo: kopf.Memo,
    patch: kopf.Patch,
    retry: int,
    reason: str,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """create / update / resume of an AgentBehavior."""
    ctx = context_of(memo)
    agents_by_behavior, agent_states = ctx.agent_index.by_behavior, ctx.agent_index.states
    behavior = state_of("AgentBehavior", body)
    now = datetime.datetime.now(datetime.UTC)
    result = await validate(behavior.spec)
    valid = validity_of(result)
    if result.warnings and _changed(behavior.status, valid):
        # Once per new warning, not on every resume of an unchanged behavior.
        await post_event(ctx, behavior, reason="DryCallFailed", message=valid.message, warning=True)
    if not result.ok:
        desired = desired_behavior_status(
            behavior.status,
            observed_generation=behavior.generation,
            valid=valid,
            now=now,
            generation=behavior.generation,
        )
        patch.status.update(status_patch(behavior.status, desired) or {})
        await post_event(ctx, behavior, reason="InvalidScript", message=valid.message, warning=True)
        if ctx.metrics is not None:
            ctx.metrics.reconciles.labels(kind="AgentBehavior", result="invalid").inc()
        return

    parent_id = None
    parent = (behavior.spec.get("parentRef") or {}).get("name")
    if parent:
        try:
            parent_id = (await ctx.registry.get_behavior_by_name(behavior.namespace, parent)).id
        except BehaviorNotFound as exc:
            if retry < PARENT_RETRIES:
                raise kopf.TemporaryError(f"parent {parent} not registered yet", delay=3) from exc
            logger.warning(f"parent {parent} never became valid; stored without lineage")

    record = await ctx.registry.create_behavior(
        behavior.name,
        behavior.spec["roleType"],
        behavior.spec["lua"]["script"],
        namespace=behavior.namespace,
        parent_behavior_id=parent_id,
        description=behavior.spec.get("description"),
    )
    if record.revision != behavior.status.get("revision"):
        await post_event(
            ctx,
            behavior,
            reason="Revision",
            message=f"revision {record.revision} ({record.script_sha256[:12]})",
        )
    # Canary (spec.rollout): the new revision starts a rollout instead of reaching every
    # agent; the agents follow when this status arrives (controller.rollout_handlers).
    rollout = on_new_revision(
        behavior.name,
        behavior.spec,
        behavior.status,
        RevisionRef(record.revision, record.script_sha256),
        now,
    )
    agents = agents_of(behavior.namespace, behavior.name, agents_by_behavior, agent_states)
    if reason == "resume" and record.revision == behavior.status.get("revision"):
        # Operator restart, nothing new: every Agent's own resume handler syncs it anyway.
        agents = []
    reload_started = time.monotonic()
    await redecide_agents(ctx, agents)
    if agents:
        logger.info(
            f"revision {record.revision}: {len(agents)} agents synced in "
            f"{time.monotonic() - reload_started:.3f}s"
        )
    summary = await ctx.registry.behavior_summary(record.id)
    desired = desired_behavior_status(
        behavior.status,
        observed_generation=behavior.generation,
        valid=valid,
        revision=record.revision,
        sha256=record.script_sha256,
        agent_count=summary.agent_count,
        tasks=summary.tasks_completed,
        successes=summary.successes,
        now=now,
        generation=behavior.generation,
        rollout=rollout.rollout if rollout is not None else KEEP,
    )
    changes = status_patch(behavior.status, desired) or {}
    if "rollout" in changes:
        changes["rollout"] = replacement_patch(behavior.status.get("rollout"), changes["rollout"])
    patch.status.update(changes)
    for event in rollout.events if rollout is not None else ():
        await post_event(
            ctx, behavior, reason=event.reason, message=event.message, warning=event.warning
        )
    if ctx.metrics is not None:
        ctx.metrics.reconciles.labels(kind="AgentBehavior", result="ok").inc()
        if rollout is not None and rollout.outcome is not None:
            ctx.metrics.count_rollout(behavior.namespace, behavior.name, rollout.outcome)


async def delete_behavior(
    body: kopf.Body,
    memo: kopf.Memo,
    runtime: datetime.timedelta,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Keep the behavior's history in the registry, mark it deleted; its agents lose it."""
    ctx = context_of(memo)
    agents_by_behavior, agent_states = ctx.agent_index.by_behavior, ctx.agent_index.states
    behavior = state_of("AgentBehavior", body)
    try:
        await ctx.registry.mark_behavior_deleted(behavior.namespace, behavior.name)
    except BehaviorNotFound:
        return  # never valid, never stored
    except RegistryUnavailable as exc:
        if runtime.total_seconds() < ctx.config.delete_timeout:
            raise kopf.TemporaryError(f"registry unavailable, retrying: {exc}", delay=5) from exc
        message = f"registry unavailable; gave up marking {behavior.name} deleted"
        logger.error(message)
        await post_event(ctx, behavior, reason="RegistryUnavailable", message=message, warning=True)
        return
    for agent in agents_of(behavior.namespace, behavior.name, agents_by_behavior, agent_states):
        await post_event(
            ctx,
            agent,
            reason="BehaviorDeleted",
            message=f"AgentBehavior {behavior.name} was deleted; the agent keeps its last script",
            warning=True,
        )
