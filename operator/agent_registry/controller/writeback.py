"""The status write-back loop: registry stats and runtime confirmations -> status.

One loop for all objects, over kopf's in-memory indexes (a timer per Agent costs a core at a few
thousand agents, see ARCHITECTURE.md). Each tick reads the registry in bulk, computes every
object's desired status, and patches only those that changed, so each object is written at
most once per interval and not at all while nothing changes.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any

from agent_registry.controller.agents import agent_id_of
from agent_registry.controller.context import OperatorContext
from agent_registry.controller.events import post_event
from agent_registry.controller.indexes import Key, ObjectState, one
from agent_registry.controller.kubeapi import KubeError, KubeUnavailable
from agent_registry.controller.status import (
    BEHAVIOR_LOADED,
    desired_agent_status,
    desired_behavior_status,
    status_patch,
    underperforming_policy,
)
from agent_registry.controller.views import ViewReader
from agent_registry.resources.common import API_VERSION

logger = logging.getLogger(__name__)

Patch = tuple[ObjectState, dict[str, Any]]


def _states(index: Mapping[Key, Any]) -> list[ObjectState]:
    states: list[ObjectState] = []
    for store in list(index.values()):
        states.extend(v for v in store if isinstance(v, ObjectState))
    return states


def _loaded_now(state: ObjectState, changes: dict[str, Any]) -> bool:
    """True when this patch flips BehaviorLoaded to True (worth an Event)."""
    for condition in changes.get("conditions") or []:
        if condition.get("type") == BEHAVIOR_LOADED and condition.get("status") == "True":
            for old in state.status.get("conditions") or []:
                if old.get("type") == BEHAVIOR_LOADED:
                    return bool(old.get("status") != "True")
            return True
    return False


# Rows written up to this long before a tick's read are read again by the next one: a
# transaction stamped before the read may commit after it (and replicas' clocks differ a little).
CHANGE_OVERLAP = datetime.timedelta(seconds=10)


class StatusWriter:
    """Computes and writes the status of what changed.

    A tick reads only the agents whose registry row was written since the previous tick
    (`agent_ids_changed_since`, every agent write stamps `updated_at`), plus the ones whose patch
    met a newer version (409) last time: its cost grows with what changed, not with the fleet.
    Every `status_resync` seconds, and when an AgentBehavior changed (its revision or deletion
    shows in every agent's status), it recomputes everything, as a safety net."""

    def __init__(self, ctx: OperatorContext, *, concurrency: int = 8) -> None:
        self.ctx = ctx
        self.reader = ViewReader(ctx.registry)
        self.concurrency = concurrency
        self.policy = underperforming_policy(ctx.config)
        self.since: datetime.datetime | None = None
        self.last_full = 0.0
        self.retry: set[Key] = set()
        self.behavior_versions: dict[Key, tuple[Any, ...]] = {}

    async def agent_patches(self, agents: list[ObjectState]) -> list[Patch]:
        wanted = [agent_id_of(a.namespace, a.name) for a in agents]
        records = await self.ctx.registry.get_agents(wanted)
        views = await self.reader.views([records[i] for i in wanted if i in records])
        now = datetime.datetime.now(datetime.UTC)
        patches: list[Patch] = []
        for agent, agent_id in zip(agents, wanted, strict=True):
            view = views.get(agent_id)
            if view is None:
                continue  # not registered yet: the fleet reconciler is on it
            desired = desired_agent_status(
                agent.status,
                behavior_ref=agent.behavior_ref,
                view=view,
                now=now,
                generation=agent.generation,
                policy=self.policy,
            )
            changes = status_patch(agent.status, desired)
            if changes:
                patches.append((agent, changes))
        return patches

    async def behavior_patches(self, behaviors: list[ObjectState]) -> list[Patch]:
        from agent_registry.registry import BehaviorNotFound

        now = datetime.datetime.now(datetime.UTC)
        patches: list[Patch] = []
        for behavior in behaviors:
            try:
                record = await self.ctx.registry.get_behavior_by_name(
                    behavior.namespace, behavior.name
                )
            except BehaviorNotFound:
                continue  # never valid: nothing to count
            summary = await self.ctx.registry.behavior_summary(record.id)
            desired = desired_behavior_status(
                behavior.status,
                observed_generation=None,
                agent_count=summary.agent_count,
                tasks=summary.tasks_completed,
                successes=summary.successes,
                now=now,
                generation=behavior.generation,
            )
            changes = status_patch(behavior.status, desired)
            if changes:
                patches.append((behavior, changes))
        return patches

    async def write(self, patches: list[Patch]) -> int:
        semaphore = asyncio.Semaphore(self.concurrency)
        limiter = self.ctx.status_limiter
        written = 0

        async def send(state: ObjectState, changes: dict[str, Any]) -> None:
            nonlocal written
            plural = "agents" if state.kind == "Agent" else "agentbehaviors"
            async with semaphore:
                if limiter is not None:
                    await limiter.acquire()  # fleet-wide, shared with the fleet reconciler
                try:
                    # Only onto the version the status was computed from: a handler may have
                    # written a newer verdict (e.g. Valid after a fixed script) meanwhile, which
                    # this loop cannot recompute and must not overwrite. The next tick reads
                    # the new version from the index.
                    await self.ctx.kube.patch_status(
                        API_VERSION,
                        plural,
                        state.namespace,
                        state.name,
                        changes,
                        resource_version=state.resource_version,
                    )
                except KubeError as exc:
                    if exc.status == 409:
                        logger.debug(
                            f"{state.kind} {state.namespace}/{state.name} changed; next tick"
                        )
                        if state.kind == "Agent":
                            self.retry.add((state.namespace, state.name))
                    else:
                        logger.warning(
                            f"status of {state.kind} {state.namespace}/{state.name}: {exc}"
                        )
                    return
            written += 1
            if state.kind == "Agent" and _loaded_now(state, changes):
                loaded = changes.get("loadedBehavior") or state.status.get("loadedBehavior") or {}
                await post_event(
                    self.ctx,
                    state,
                    reason="BehaviorLoaded",
                    message=f"runtime confirmed {str(loaded.get('sha256', ''))[:12]}",
                )

        await asyncio.gather(*(send(state, changes) for state, changes in patches))
        return written

    async def tick(
        self,
        agent_states: Mapping[Key, Any],
        behavior_states: Mapping[Key, Any],
    ) -> int:
        self.reader.forget_behaviors()
        started = datetime.datetime.now(datetime.UTC)
        behaviors = _states(behavior_states)
        # What of a behavior shows in its agents' status (not its own status, which this loop
        # writes): its identity, spec and revision; a deleted one leaves the index.
        versions = {
            (b.namespace, b.name): (b.uid, b.generation, b.status.get("revision"))
            for b in behaviors
        }
        resync = self.ctx.config.status_resync
        fleet = self.ctx.fleet
        full = (
            self.since is None
            or versions != self.behavior_versions
            or time.monotonic() - self.last_full >= resync
        )
        if full and self.since is not None and fleet is not None and not fleet.idle():
            # A behavior's new revision: the reconciler is re-deciding its agents and writes
            # their status itself. Recomputing the fleet meanwhile would only race it (py-spy:
            # 9 % of the operator in a fan-out of 10,000); the full pass waits until it is idle.
            full = False
            versions = self.behavior_versions
        if full:
            agents = _states(agent_states)
            self.last_full = time.monotonic()
        else:
            assert self.since is not None
            changed = await self.ctx.registry.agent_ids_changed_since(self.since - CHANGE_OVERLAP)
            keys = {tuple(agent_id.split("/", 1)) for agent_id in changed} | self.retry
            agents = [
                s
                for s in (one(agent_states, key) for key in sorted(keys))  # type: ignore[arg-type]
                if isinstance(s, ObjectState)
            ]
        self.retry = set()
        if fleet is not None:
            # Before reading their records: in a fan-out that is most of the fleet.
            agents = [a for a in agents if not fleet.busy_with((a.namespace, a.name))]
        patches = await self.agent_patches(agents) if agents else []
        if full or agents:
            patches += await self.behavior_patches(behaviors)
        self.behavior_versions = versions
        self.since = started
        return await self.write(patches)


async def run_status_loop(
    ctx: OperatorContext,
    agent_states: Mapping[Key, Any],
    behavior_states: Mapping[Key, Any],
) -> None:
    """Forever: one tick per `status_interval`; outages are logged and the next tick retries."""
    from agent_registry.registry import RegistryError

    writer = StatusWriter(ctx)
    interval = ctx.config.status_interval
    while True:
        started = time.monotonic()
        try:
            written = await writer.tick(agent_states, behavior_states)
            if written:
                logger.debug(f"status write-back: {written} objects patched")
        except (RegistryError, KubeUnavailable) as exc:
            logger.warning(f"status write-back skipped a tick: {exc}")
            if ctx.metrics is not None:
                ctx.metrics.registry_errors.labels(operation="status_loop").inc()
        except Exception:
            logger.exception("status write-back tick failed")
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
