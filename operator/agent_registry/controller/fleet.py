"""The fleet reconciler: Agents reconciled in batches (two at a time), not one kopf handler each.

kopf's change-detection handlers cost per object: a handler task, a progress and a
last-handled-configuration patch on the object (each patch another watch event to process),
and registry reads one agent at a time. At 10,000 Agents that was a start that never finished
(issue 14). Here the operator's own watch (controller/agent_watch.py) offers every Agent it sees;
this work queue keeps the newest state of each agent that needs a reconcile, and its worker
takes up to `batch_size` of them at a time, two batches at once:

- one bulk read of their registry records and one of their open assignments (instead of two or
  three queries per agent), the behaviors once per namespace per batch, and one list of the
  namespace's Deployments of ours instead of a GET per agent without a template;
- the per-agent writes (registration, assignment, ConfigMap apply, Deployment), all agents of
  the batch at once by default: their assignments then join one or two group commits (with 64
  at a time a batch of 500 made about 30 transactions, most of a fan-out's time on SQLite), and
  the Kubernetes client's connection pool (100 connections) bounds the API calls;
- the resulting status handed to the StatusSink, which writes every object's status at most
  `status_qps` per second fleet-wide (latest status per object wins while it waits), and
  yields to the ConfigMaps while the reconciler is busy (see StatusSink).

What needs a reconcile: an agent not reconciled yet by this process (so every agent once at
startup, as kopf's resume did), one whose generation or user annotations changed since its last
successful reconcile, and any agent a caller asks for (`sync`: a behavior's new revision, a
policy's, an experiment's or a rollout's grants). A failed agent is retried with backoff
(taking the newest state from the index).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from agent_registry.controller import rendering
from agent_registry.controller.arbitration import BehaviorCatalog, GroupAssigner
from agent_registry.controller.context import ASSIGNED_BY, OperatorContext
from agent_registry.controller.indexes import Key, ObjectState, one
from agent_registry.controller.kubeapi import KubeError, KubeUnavailable
from agent_registry.controller.status import status_patch
from agent_registry.controller.throttle import RateLimiter
from agent_registry.resources.common import API_VERSION

logger = logging.getLogger(__name__)

Fingerprint = tuple[Any, ...]


def key_of(state: ObjectState) -> Key:
    return (state.namespace, state.name)


def fingerprint(state: ObjectState) -> Fingerprint:
    """What a reconcile depends on in the Agent object: its identity, its spec (generation)
    and the annotations users act with (pins). Status and other metadata are not: our own
    status writes must not make another reconcile."""
    return (state.uid, state.generation, tuple(sorted(state.annotations.items())))


class Deferred(Exception):
    """The agent's behavior is declared but not stored yet (its own handler has not run, as
    at startup): deciding now would only be redone once it is; retried shortly."""


def _waits_for_behavior(agent: ObjectState, behavior_states: Any) -> bool:
    """The agent's behaviorRef names an AgentBehavior that exists and is not known invalid."""
    name = agent.behavior_ref
    state = one(behavior_states, (agent.namespace, name)) if name else None
    if not isinstance(state, ObjectState):
        return False
    for condition in state.status.get("conditions") or []:
        if condition.get("type") == "Valid" and condition.get("status") == "False":
            return False
    return True


class StatusSink:
    """Status patches of the reconciler, written by a few writers at a fleet-wide rate.

    `put` never waits: the newest changes of an object replace (merge over) what still waits
    for it, so a burst of 10,000 reconciles is at most one patch per object.

    Status yields to ConfigMaps. While the reconciler has agents queued or in flight (`busy`),
    a patch of an agent whose status already names a behavior waits for `held`, a slower
    limiter (a tenth of the rate by default), so the ConfigMaps of a fan-out, which are what
    the pods run, get the apiserver first. Here a status patch of an Agent costs the apiserver
    about three times the CPU of a ConfigMap apply (5-8 ms against 2-3 ms, docs/benchmarks.md),
    and with both at full speed a script edit took 45-48 s to reach 10,000 ConfigMaps instead
    of the 30 s wanted. A first status (no `status.behavior` yet) is never held back: a new
    agent's status is as new as its ConfigMap. The slower rate, rather than none, keeps a
    reconciler that is never idle from starving the status."""

    def __init__(
        self,
        ctx: OperatorContext,
        limiter: RateLimiter,
        *,
        writers: int = 16,
        held: RateLimiter | None = None,
    ) -> None:
        self.ctx = ctx
        self.limiter = limiter
        self.held = held or RateLimiter(limiter.rate / 10, 1.0)
        self.writers = writers
        self.pending: dict[Key, tuple[ObjectState, dict[str, Any]]] = {}
        self.first: dict[Key, None] = {}  # the pending keys whose status is their first
        self.busy: Callable[[], bool] = lambda: False  # set by the FleetReconciler
        self._wake = asyncio.Event()
        self.written = 0
        self.held_back = 0

    def put(self, state: ObjectState, changes: dict[str, Any]) -> None:
        key = key_of(state)
        waiting = self.pending.get(key)
        merged = {**waiting[1], **changes} if waiting is not None else changes
        self.pending[key] = (state, merged)
        if state.status.get("behavior"):
            self.first.pop(key, None)
        else:
            self.first[key] = None
        self._wake.set()

    def idle(self) -> bool:
        return not self.pending

    async def run(self) -> None:
        await asyncio.gather(*(self._writer() for _ in range(self.writers)))

    def _next(self) -> Key | None:
        """The next object to write: first statuses before updates."""
        for waiting in (self.first, self.pending):
            for key in waiting:
                return key
        return None

    async def _writer(self) -> None:
        while True:
            key = self._next()
            if key is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            if key not in self.first and self.busy():
                self.held_back += 1
                await self.held.acquire()
                key = self._next()  # meanwhile a first status may have come, or nothing is left
                if key is None:
                    continue
            state, changes = self.pending.pop(key)
            self.first.pop(key, None)
            await self.limiter.acquire()
            try:
                await self.ctx.kube.patch_status(
                    API_VERSION, "agents", state.namespace, state.name, changes
                )
                self.written += 1
            except KubeUnavailable as exc:
                logger.warning(f"status of Agent {state.namespace}/{state.name}: {exc}; retrying")
                if key not in self.pending:
                    self.put(state, changes)
                await asyncio.sleep(1.0)
            except KubeError as exc:
                logger.warning(f"status of Agent {state.namespace}/{state.name}: {exc}")


class FleetReconciler:
    """The work queue of Agents to reconcile, and its batch worker (see the module)."""

    def __init__(
        self,
        ctx: OperatorContext,
        sink: StatusSink,
        *,
        batch_size: int = 500,
        concurrency: int | None = None,
        parallel: int = 2,
        linger: float = 0.05,
    ) -> None:
        self.ctx = ctx
        self.sink = sink
        self.batch_size = batch_size
        self.concurrency = concurrency or batch_size
        self.parallel = parallel
        self.linger = linger
        self.pending: dict[Key, ObjectState] = {}
        self.in_flight: set[Key] = set()
        self.waiters: dict[Key, list[asyncio.Future[None]]] = {}
        self.reconciled: dict[Key, Fingerprint] = {}
        self.failures: dict[Key, int] = {}
        self._wake = asyncio.Event()
        self.batches = 0
        self.can_list_deployments = True
        sink.busy = self.reconciling

    # -- the queue ------------------------------------------------------------------------

    def offer(self, state: ObjectState) -> bool:
        """Queue the agent if it changed since its last reconcile; True when queued."""
        key = key_of(state)
        if key in self.pending:
            self.pending[key] = state  # the newest state wins
            return True
        if self.reconciled.get(key) == fingerprint(state):
            return False
        self.pending[key] = state
        self._wake.set()
        return True

    def redo(self, key: Key) -> None:
        """Reconcile this agent again, its ConfigMap applied even if unchanged here (it was
        deleted or edited outside the operator: controller/drift.py)."""
        self.ctx.applied_configmaps.pop(key, None)
        self.reconciled.pop(key, None)
        self._again(key)

    def forget(self, key: Key) -> None:
        """A deleted agent: nothing more to reconcile (the Agent watch records the deletion)."""
        self.ctx.applied_configmaps.pop(key, None)
        self.pending.pop(key, None)
        self.reconciled.pop(key, None)
        self.failures.pop(key, None)

    async def sync(self, states: Iterable[ObjectState]) -> None:
        """Reconcile these agents (whether they changed or not) and wait until they are done;
        raises the first failure."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for state in states:
            key = key_of(state)
            self.pending[key] = state
            future: asyncio.Future[None] = loop.create_future()
            self.waiters.setdefault(key, []).append(future)
            futures.append(future)
        self._wake.set()
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def reconciling(self) -> bool:
        """Agents are queued or in flight: their ConfigMaps are still to be applied."""
        return bool(self.pending or self.in_flight)

    def idle(self) -> bool:
        return not self.reconciling() and self.sink.idle()

    def busy_with(self, key: Key) -> bool:
        """The agent is queued, being reconciled, or its status patch waits: the status
        loop leaves it to the reconciler, which writes its status anyway."""
        return key in self.pending or key in self.in_flight or key in self.sink.pending

    # -- the worker -----------------------------------------------------------------------

    async def run(self) -> None:
        """Take batches off the queue, up to `parallel` at once: while one batch waits on
        its group commit, another's ConfigMap applies use the apiserver."""
        slots = asyncio.Semaphore(self.parallel)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                await slots.acquire()
                keys = self._take()
                while not keys:
                    self._wake.clear()
                    await self._wake.wait()
                    await asyncio.sleep(self.linger)  # let a burst of events gather
                    keys = self._take()
                # Taken off the queue now, before the next _take (the task starts later).
                batch = [self.pending.pop(key) for key in keys]
                waiters = {key: self.waiters.pop(key, []) for key in keys}
                self.in_flight.update(keys)
                task = asyncio.create_task(self._batch(batch, waiters, slots))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def _take(self) -> list[Key]:
        """Up to `batch_size` queued agents that no running batch holds (an agent queued
        again while its batch runs waits for the next one)."""
        keys: list[Key] = []
        for key in self.pending:
            if key not in self.in_flight:
                keys.append(key)
                if len(keys) == self.batch_size:
                    break
        return keys

    async def _batch(
        self,
        batch: list[ObjectState],
        waiters: dict[Key, list[asyncio.Future[None]]],
        slots: asyncio.Semaphore,
    ) -> None:
        """Reconcile a batch taken off the queue (its agents are in `in_flight`)."""
        keys = [key_of(state) for state in batch]
        try:
            started = time.monotonic()
            try:
                errors = await self.reconcile_batch(batch)
            except Exception as exc:  # the bulk reads failed: the whole batch retries
                logger.warning(f"fleet batch of {len(batch)} failed: {exc!r}")
                errors = {key_of(state): exc for state in batch}
            finally:
                self.in_flight.difference_update(keys)
            self.batches += 1
            logger.debug(
                f"fleet batch of {len(batch)}: {len(errors)} failed, "
                f"{time.monotonic() - started:.2f}s, {len(self.pending)} pending"
            )
            self._settle(batch, waiters, errors)
        finally:
            slots.release()
            self._wake.set()

    def _settle(
        self,
        batch: list[ObjectState],
        waiters: dict[Key, list[asyncio.Future[None]]],
        errors: dict[Key, BaseException],
    ) -> None:
        for state in batch:
            key = key_of(state)
            error = errors.get(key)
            if error is None:
                self.reconciled[key] = fingerprint(state)
                self.failures.pop(key, None)
            elif isinstance(error, Deferred):
                asyncio.get_running_loop().call_later(1.0, self._again, key)
                self.waiters.setdefault(key, []).extend(waiters.get(key, []))
                continue  # a caller waiting for it keeps waiting
            else:
                self._retry_later(key, error)
            for future in waiters.get(key, []):
                if future.done():
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

    def _retry_later(self, key: Key, error: BaseException) -> None:
        count = self.failures.get(key, 0) + 1
        self.failures[key] = count
        delay = min(60.0, 0.5 * 2**count)
        logger.warning(f"Agent {key[0]}/{key[1]}: {error!r}; retrying in {delay:.0f}s")
        asyncio.get_running_loop().call_later(delay, self._retry, key)

    def _again(self, key: Key) -> None:
        indexes = self.ctx.indexes
        state = one(indexes.agent_states, key) if indexes is not None else None
        if isinstance(state, ObjectState) and key not in self.reconciled:
            self.pending.setdefault(key, state)
            self._wake.set()

    def _retry(self, key: Key) -> None:
        indexes = self.ctx.indexes
        state = one(indexes.agent_states, key) if indexes is not None else None
        if isinstance(state, ObjectState) and key in self.failures:
            self.reconciled.pop(key, None)
            self.offer(state)

    async def _deployments(self, namespace: str) -> set[str] | None:
        """The agents of a namespace that have a Deployment of ours (one list), or None
        without permission to list Deployments (the documented RBAC grants get, not list):
        then each agent without a template GETs its own, as before."""
        if not self.can_list_deployments:
            return None
        try:
            listed = await self.ctx.kube.list(
                "apps/v1", "deployments", namespace, label_selector=rendering.AGENT_LABEL
            )
        except KubeError as exc:
            if exc.status != 403:
                raise
            logger.info("no permission to list Deployments: one GET per agent without a template")
            self.can_list_deployments = False
            return None
        found = set()
        for item in listed:
            metadata = item.get("metadata") or {}
            agent = (metadata.get("labels") or {}).get(rendering.AGENT_LABEL)
            if agent and metadata.get("name") == rendering.deployment_name(agent):
                found.add(str(agent))
        return found

    async def reconcile_batch(self, batch: list[ObjectState]) -> dict[Key, BaseException]:
        """Reconcile these agents; returns the failures by agent."""
        from agent_registry.controller.agents import (
            Prefetched,
            agent_id_of,
            agent_status,
            post_decision_events,
            sync_agent,
        )

        ctx = self.ctx
        assert ctx.indexes is not None, "the startup handler sets the indexes"
        behavior_states = ctx.indexes.behavior_states
        ids = [agent_id_of(state.namespace, state.name) for state in batch]
        t0 = time.monotonic()
        records = await ctx.registry.get_agents(ids)
        # Registration in bulk: new agents and stopped ones (a name reused after a delete).
        register = [
            (agent_id, str(state.spec.get("role", "")), state.spec.get("displayName") or state.name)
            for state, agent_id in zip(batch, ids, strict=True)
            if agent_id not in records or records[agent_id].status == "stopped"
        ]
        if register:
            records.update(await ctx.registry.register_agents(register, created_by=ASSIGNED_BY))
        assignments = await ctx.registry.current_assignments(list(records))
        untemplated = {s.namespace for s in batch if not s.spec.get("template")}
        deployments = {ns: await self._deployments(ns) for ns in sorted(untemplated)}
        logger.debug(f"fleet batch of {len(batch)}: bulk reads {time.monotonic() - t0:.2f}s")
        catalogs: dict[str, BehaviorCatalog] = {}
        assigner = GroupAssigner(ctx)
        semaphore = asyncio.Semaphore(self.concurrency)
        errors: dict[Key, BaseException] = {}

        async def one_agent(agent: ObjectState, agent_id: str) -> None:
            catalog = catalogs.setdefault(agent.namespace, BehaviorCatalog(ctx, agent.namespace))
            known = Prefetched(
                record=records.get(agent_id),
                assignment=assignments.get(agent_id),
                deployments=deployments.get(agent.namespace),
            )
            try:
                if (
                    agent.behavior_ref
                    and await catalog.record(agent.behavior_ref) is None
                    and _waits_for_behavior(agent, behavior_states)
                ):
                    raise Deferred(agent.behavior_ref)
                async with semaphore:
                    synced = await sync_agent(
                        ctx,
                        agent,
                        behavior_states,
                        workload=True,
                        catalog=catalog,
                        known=known,
                        assign=assigner,
                    )
                    desired = await agent_status(
                        ctx,
                        agent,
                        observed_generation=agent.generation,
                        view=synced.view,
                        pinned=synced.pinned,
                    )
                changes = status_patch(agent.status, desired)
                if changes:
                    self.sink.put(agent, changes)
                await post_decision_events(ctx, agent, synced, desired)
                if ctx.metrics is not None:
                    ctx.metrics.reconciles.labels(kind="Agent", result="ok").inc()
            except Exception as exc:
                errors[key_of(agent)] = exc

        await asyncio.gather(*(one_agent(s, i) for s, i in zip(batch, ids, strict=True)))
        logger.debug(
            f"fleet batch of {len(batch)}: {len(register)} registered, "
            f"{assigner.transactions} assignment transactions"
        )
        return errors


async def run_fleet(ctx: OperatorContext, fleet: FleetReconciler, sink: StatusSink) -> None:
    """The reconciler's worker and the status writers, until cancelled."""
    tasks = [
        asyncio.create_task(fleet.run(), name="fleet"),
        asyncio.create_task(sink.run(), name="fleet-status"),
    ]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["FleetReconciler", "StatusSink", "fingerprint", "key_of", "run_fleet"]
