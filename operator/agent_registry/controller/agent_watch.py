"""Agents watched by the operator itself (a paged list, then a watch), not through kopf.

kopf handled every Agent event with its per-object machinery (a worker per object, a deep copy
and a diff-base of every body, a finalizer patch on first sight) for a handler that only queued
the agent: py-spy put it at 40 % of the operator's CPU in a cold start of 10,000 Agents and 21 %
in a fan-out (issue 14, docs/benchmarks.md). Here one list and one watch per served namespace
(or one cluster-wide) feed the AgentIndex and the fleet reconciler directly.

Deletion needs no finalizer. All the registry does for a deleted Agent is mark it `stopped` (its
history stays; its ConfigMap and Deployment go with their ownerReferences), so it is done
level-triggered:
- a DELETED event (or a deletionTimestamp, when other finalizers hold the object) queues the
  agent's unregistration, retried until the registry takes it;
- every list compares the Agents listed with what the index held (deletions missed while the
  watch was down) and with the live agents the operator registered (deletions missed while no
  operator ran), and queues the missing ones.
So deleting an Agent never waits for the database, and the registry learns of it once the
database is back, or at the next start. Agents carrying the finalizer of earlier versions
(`agents.singularity.dev/registry`) have it removed, one patch each, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agent_registry.controller.context import ASSIGNED_BY, FINALIZER, OperatorContext
from agent_registry.controller.indexes import Key
from agent_registry.controller.kubeapi import KubeError, KubeUnavailable
from agent_registry.registry import AgentNotFound, RegistryUnavailable
from agent_registry.resources.common import GROUP, VERSION

logger = logging.getLogger(__name__)

# The finalizer earlier versions put on every Agent.
LEGACY_FINALIZER = FINALIZER
AGENTS_PATH = f"/apis/{GROUP}/{VERSION}"


def agents_path(namespace: str | None) -> str:
    if namespace is None:
        return f"{AGENTS_PATH}/agents"
    return f"{AGENTS_PATH}/namespaces/{namespace}/agents"


def key_of_body(body: Mapping[str, Any]) -> Key:
    metadata = body.get("metadata") or {}
    return (str(metadata.get("namespace")), str(metadata.get("name")))


def finalizer_removal(body: Mapping[str, Any], finalizer: str) -> list[dict[str, Any]] | None:
    """The JSON patch removing `finalizer` from the object (None when it has none): a test
    of the entry first, so a concurrent change of the list fails the patch instead of
    removing someone else's finalizer (pure)."""
    finalizers = list((body.get("metadata") or {}).get("finalizers") or [])
    if finalizer not in finalizers:
        return None
    path = f"/metadata/finalizers/{finalizers.index(finalizer)}"
    return [{"op": "test", "path": path, "value": finalizer}, {"op": "remove", "path": path}]


def missing(known: Iterable[Key], present: Iterable[Key]) -> list[Key]:
    """The keys known (to the index, or live in the registry) but not present any more (pure)."""
    here = set(present)
    return sorted(key for key in known if key not in here)


def key_of_agent_id(agent_id: str) -> Key | None:
    namespace, slash, name = agent_id.partition("/")
    return (namespace, name) if slash and namespace and name else None


class AgentWatch:
    """The Agents of the served namespaces (None: all), kept in `ctx.agent_index`, each
    offered to the fleet reconciler; deletions unregistered (see the module)."""

    def __init__(
        self,
        ctx: OperatorContext,
        namespaces: Sequence[str] | None,
        *,
        page_size: int = 500,
        watch_timeout: int = 300,
        retry_delay: float = 5.0,
    ) -> None:
        self.ctx = ctx
        self.scopes: list[str | None] = list(namespaces) if namespaces else [None]
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.retry_delay = retry_delay
        self.unregister: dict[Key, None] = {}  # ordered set: the deletions still to record
        self._wake = asyncio.Event()
        self._stripping: set[Key] = set()
        self._strip_limit = asyncio.Semaphore(8)
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        await asyncio.gather(self._unregister_worker(), *(self._follow(s) for s in self.scopes))

    # -- list and watch -------------------------------------------------------------------

    async def _follow(self, namespace: str | None) -> None:
        """List, then watch from the list's resourceVersion; list again when the watch's
        version is too old (410 Gone) or after an error."""
        delay = 1.0
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._list(namespace)
                version = await self._watch(namespace, version)
                delay = 1.0
            except (KubeUnavailable, KubeError) as exc:
                logger.warning(f"watching Agents ({namespace or 'all namespaces'}): {exc}")
            except Exception:  # anything else (an undecodable event): never stop watching
                logger.exception(f"watching Agents ({namespace or 'all namespaces'})")
            else:
                continue
            await asyncio.sleep(delay)
            delay = min(30.0, delay * 2)
            version = None  # list again: events may have been lost

    async def _list(self, namespace: str | None) -> str:
        params = {"limit": str(self.page_size)}
        seen: list[Key] = []
        version = ""
        while True:
            page = await self.ctx.kube.request("GET", agents_path(namespace), params=params)
            if page is None:  # the CRD is gone: nothing to serve, look again later
                raise KubeUnavailable(f"GET {agents_path(namespace)}: 404")
            for item in page.get("items") or []:
                seen.append(key_of_body(item))
                self.observe("ADDED", item)
            metadata = page.get("metadata") or {}
            version = str(metadata.get("resourceVersion") or "")
            token = metadata.get("continue")
            if not token:
                break
            params = {**params, "continue": str(token)}
        for key in missing(self._indexed(namespace), seen):
            self._deleted(key)  # deleted while the watch was down
        self._spawn(self._sweep(namespace))
        logger.info(f"listed {len(seen)} Agents ({namespace or 'all namespaces'})")
        return version

    async def _watch(self, namespace: str | None, version: str) -> str | None:
        """Events from `version` on until the server ends the watch: the newest version
        seen, or None when it is too old to watch from (list again)."""
        params = {"resourceVersion": version, "allowWatchBookmarks": "true"}
        async for event in self.ctx.kube.watch(
            agents_path(namespace), params, timeout_seconds=self.watch_timeout
        ):
            kind = str(event.get("type"))
            obj = event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return None
                raise KubeError(int(obj.get("code") or 500), str(obj.get("message")))
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind != "BOOKMARK":
                self.observe(kind, obj)
        return version

    def _indexed(self, namespace: str | None) -> list[Key]:
        return [k for k in self.ctx.agent_index.states if namespace is None or k[0] == namespace]

    # -- events ---------------------------------------------------------------------------

    def observe(self, kind: str, body: Mapping[str, Any]) -> None:
        """One Agent as a list or an event shows it."""
        key = key_of_body(body)
        metadata = body.get("metadata") or {}
        if kind != "DELETED" and LEGACY_FINALIZER in (metadata.get("finalizers") or []):
            self._spawn_strip(key, body)
        if kind == "DELETED" or metadata.get("deletionTimestamp"):
            self._deleted(key)
            return
        self.unregister.pop(key, None)  # created again before its deletion was recorded
        state = self.ctx.agent_index.put(body)
        if self.ctx.fleet is not None:
            self.ctx.fleet.offer(state)

    def _deleted(self, key: Key) -> None:
        self.ctx.agent_index.remove(key)
        if self.ctx.fleet is not None:
            self.ctx.fleet.forget(key)
        self.unregister[key] = None
        self._wake.set()

    # -- recording deletions ----------------------------------------------------------------

    async def _sweep(self, namespace: str | None) -> None:
        """Queue the live agents this operator registered that no Agent backs any more;
        retried while the registry is down."""
        while True:
            try:
                ids = await self.ctx.registry.live_agent_ids(
                    created_by=ASSIGNED_BY, namespace=namespace
                )
                break
            except RegistryUnavailable as exc:
                logger.warning(f"sweep of deleted Agents: {exc}; retrying")
                await asyncio.sleep(self.retry_delay)
        keys = [k for k in map(key_of_agent_id, ids) if k is not None]
        if namespace is None and self.scopes != [None]:
            keys = [k for k in keys if k[0] in self.scopes]
        gone = missing(keys, self.ctx.agent_index.states)
        if gone:
            logger.info(f"{len(gone)} Agents deleted while no operator watched: unregistering")
        for key in gone:
            self.unregister[key] = None
        self._wake.set()

    async def _unregister_worker(self) -> None:
        while True:
            if not self.unregister:
                self._wake.clear()
                await self._wake.wait()
                continue
            key = next(iter(self.unregister))
            try:
                await self._record_deletion(key)
            except RegistryUnavailable as exc:
                logger.warning(f"Agent {key[0]}/{key[1]} deleted; registry unavailable: {exc}")
                await asyncio.sleep(self.retry_delay)
                continue
            except Exception:
                # Not the database being away: retried after the others, not ahead of them.
                logger.exception(f"recording the deletion of Agent {key[0]}/{key[1]}")
                if key in self.unregister:
                    del self.unregister[key]
                    self.unregister[key] = None  # to the end of the queue
                await asyncio.sleep(self.retry_delay)
                continue
            self.unregister.pop(key, None)

    async def _record_deletion(self, key: Key) -> None:
        agent_id = f"{key[0]}/{key[1]}"
        # Under the agent's lock, as its reconciles: one that registers it again (the name
        # was reused) runs before or after, never in between.
        async with self.ctx.agent_lock(agent_id):
            if key in self.ctx.agent_index.states:
                return  # created again meanwhile: its reconcile keeps it active
            try:
                await self.ctx.registry.unregister_agent(agent_id)
            except AgentNotFound:
                return
        if self.ctx.metrics is not None:
            self.ctx.metrics.reconciles.labels(kind="Agent", result="deleted").inc()

    # -- the legacy finalizer ---------------------------------------------------------------

    def _spawn_strip(self, key: Key, body: Mapping[str, Any]) -> None:
        if key not in self._stripping:
            self._stripping.add(key)
            self._spawn(self._strip(key, body))

    async def _strip(self, key: Key, body: Mapping[str, Any]) -> None:
        patch = finalizer_removal(body, LEGACY_FINALIZER)
        try:
            if patch is None:
                return
            async with self._strip_limit:
                await self.ctx.kube.request(
                    "PATCH",
                    f"{agents_path(key[0])}/{key[1]}",
                    patch,
                    content_type="application/json-patch+json",
                )
        except (KubeError, KubeUnavailable) as exc:
            # A failed test (the list changed) or an outage: the next event of the Agent
            # still shows the finalizer and tries again.
            logger.info(f"removing the old finalizer of Agent {key[0]}/{key[1]}: {exc}")
        finally:
            self._stripping.discard(key)

    def _spawn(self, coroutine: Any) -> None:
        # The event loop holds tasks weakly: keep a reference until each is done.
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


__all__ = [
    "LEGACY_FINALIZER",
    "AgentWatch",
    "agents_path",
    "finalizer_removal",
    "key_of_agent_id",
    "missing",
]
