"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

Only the leader runs the controller (kopf's handlers, timers and the status loop): two replicas
must never both write an Agent's ConfigMap or status. Every replica serves the registry API.

- **Acquire**: a candidate takes the Lease when it has no holder, or when its record has not
  changed for `lease_duration` seconds *as this candidate observed it* (client-go's rule: the
  holder's renewTime is never compared with our clock, so clock skew between nodes is harmless).
  It retries every `retry_period` (with jitter).
- **Renew**: the leader renews every `retry_period`. When no renewal succeeded for
  `renew_deadline` seconds, or the Lease names another holder, leadership is lost.
- **Lost**: `hold()` returns and the caller stops at once (`agentreg run` exits non-zero, as
  controller-runtime does, so Kubernetes restarts it as a follower). renew_deadline <
  lease_duration leaves the leader time to stop before another may take over.
- **Release**: on a graceful stop the leader empties holderIdentity, so a follower takes over
  at its next retry instead of waiting out the lease.

Writes are PUTs with the resourceVersion read (optimistic concurrency): of two candidates
racing for an expired Lease, the apiserver lets exactly one through (409 for the other).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from agent_registry.kubeclient import KubeClient, KubeError, KubeUnavailable

if TYPE_CHECKING:
    from agent_registry.controller.context import OperatorConfig

log = logging.getLogger(__name__)

LEASE_API: Final = "/apis/coordination.k8s.io/v1"
JITTER: Final = 1.2  # client-go's JitterFactor: retries spread over [period, 2.2 * period)


def default_identity() -> str:
    """client-go's convention: the host (the pod's name in a pod) and a unique suffix, so a
    restarted process never mistakes its predecessor's record for its own."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str = "agent-registry"
    identity: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > JITTER * self.retry_period > 0:
            raise ValueError(
                "leader election needs lease_duration > renew_deadline > "
                f"{JITTER} * retry_period > 0 (client-go's rule), not "
                f"{self.lease_duration}/{self.renew_deadline}/{self.retry_period}"
            )


def _micro_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        kube: KubeClient,
        settings: LeaseSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.identity = settings.identity or default_identity()
        self._clock = clock
        self._rng = rng or random.Random()
        # The Lease spec as last read, and when (our clock) it last changed.
        self._observed: dict[str, Any] | None = None
        self._observed_at = 0.0
        self.is_leader = False

    @property
    def _path(self) -> str:
        s = self.settings
        return f"{LEASE_API}/namespaces/{s.namespace}/leases/{s.name}"

    async def acquire(self) -> None:
        """Wait until this process holds the Lease."""
        s = self.settings
        log.info("waiting for the leader lease %s/%s as %s", s.namespace, s.name, self.identity)
        while not await self._try():
            delay = s.retry_period * (1 + self._rng.random() * JITTER)
            await asyncio.sleep(delay)
        log.info("became the leader (lease %s/%s, %s)", s.namespace, s.name, self.identity)

    async def hold(self) -> None:
        """Renew until leadership is lost; returns then (it never raises)."""
        s = self.settings
        last_renewal = self._clock()
        while True:
            await asyncio.sleep(s.retry_period)
            remaining = s.renew_deadline - (self._clock() - last_renewal)
            try:
                renewed = await asyncio.wait_for(self._try(), timeout=max(remaining, 0.001))
            except TimeoutError:
                renewed = False
            if renewed:
                last_renewal = self._clock()
                continue
            holder = (self._observed or {}).get("holderIdentity")
            if holder and holder != self.identity:
                log.error("lost the leader lease %s/%s to %s", s.namespace, s.name, holder)
                break
            if self._clock() - last_renewal >= s.renew_deadline:
                log.error(
                    "could not renew the leader lease %s/%s for %.1f s (renew deadline)",
                    s.namespace,
                    s.name,
                    s.renew_deadline,
                )
                break
        self.is_leader = False

    async def release(self) -> None:
        """Give the Lease up (graceful stop), so a follower need not wait for it to expire."""
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            lease = await self.kube.request("GET", self._path)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            now = _micro_time(datetime.now(UTC))
            lease["spec"] = {
                **lease["spec"],
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "renewTime": now,
                "acquireTime": now,
            }
            await self.kube.request("PUT", self._path, lease)
            log.info("released the leader lease %s/%s", self.settings.namespace, self.settings.name)
        except (KubeError, KubeUnavailable) as exc:
            log.warning("could not release the leader lease: %s (it expires by itself)", exc)

    async def _try(self) -> bool:
        """One acquire-or-renew attempt (client-go's tryAcquireOrRenew)."""
        try:
            return await self._attempt()
        except KubeUnavailable as exc:
            log.warning("leader election: the Kubernetes API is unavailable: %s", exc)
        except KubeError as exc:
            if exc.status != 409:  # 409: another candidate wrote first; just observe again
                log.error("leader election: the Kubernetes API refused: %s", exc)
        return False

    async def _attempt(self) -> bool:
        s = self.settings
        now = datetime.now(UTC)
        lease = await self.kube.request("GET", self._path)
        mine = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(s.lease_duration)),
            "acquireTime": _micro_time(now),
            "renewTime": _micro_time(now),
            "leaseTransitions": 0,
        }
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": s.name, "namespace": s.namespace},
                "spec": mine,
            }
            await self.kube.request("POST", f"{LEASE_API}/namespaces/{s.namespace}/leases", body)
            self._observe(mine)
            self.is_leader = True
            return True

        spec = dict(lease.get("spec") or {})
        if spec != self._observed:
            self._observe(spec)
        holder = spec.get("holderIdentity")
        if holder and holder != self.identity:
            # Someone else's record: ours only once it stopped changing for a lease duration.
            duration = float(spec.get("leaseDurationSeconds") or s.lease_duration)
            if self._clock() < self._observed_at + duration:
                self.is_leader = False
                return False
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            mine["acquireTime"] = spec.get("acquireTime") or mine["acquireTime"]
            mine["leaseTransitions"] = transitions
        else:
            mine["leaseTransitions"] = transitions + 1
        lease["spec"] = mine
        # The resourceVersion read travels in metadata: a concurrent write makes this a 409.
        await self.kube.request("PUT", self._path, lease)
        self._observe(mine)
        self.is_leader = True
        return True

    def _observe(self, spec: dict[str, Any]) -> None:
        self._observed = dict(spec)
        self._observed_at = self._clock()


async def _follower_health(listen: str) -> Any:
    """/healthz while following: kopf's liveness endpoint exists only in the leader, and a
    follower that answers nothing would be restarted by its liveness probe for ever."""
    from aiohttp import web

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "leader": False})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
    return runner


async def run_replica(
    config: OperatorConfig,
    run_controller: Callable[[Any], Coroutine[Any, Any, None]],
    *,
    lease: LeaseSettings | None,
    health_listen: str,
) -> None:
    """One operator replica: the registry API at once, the controller (`run_controller(memo)`,
    kopf) only while this replica leads (always, with `lease` None).

    Leadership lost: the process exits with status 1 at once, without cleanup, so that no
    handler, timer or status write of this replica can race the new leader's.
    """
    from agent_registry.controller.operator import SharedServices, memo_for, serve_api
    from agent_registry.metrics import Metrics
    from agent_registry.registry import RegistryService

    shared = SharedServices(RegistryService.from_url(config.database_url), Metrics())
    memo = memo_for(config)
    memo.shared = shared
    api = None
    try:
        if config.api_listen:
            api = await serve_api(config, shared.registry, shared.metrics, config.api_listen)
        if lease is None:
            await run_controller(memo)
            return
        kube = KubeClient.from_kubeconfig(config.kubeconfig)
        elector = LeaderElector(kube, lease)
        health = await _follower_health(health_listen)
        try:
            await elector.acquire()
        finally:
            await health.cleanup()
        controller = asyncio.create_task(run_controller(memo), name="controller")
        watchdog = asyncio.create_task(elector.hold(), name="leader-lease")
        await asyncio.wait({controller, watchdog}, return_when=asyncio.FIRST_COMPLETED)
        if watchdog.done():
            log.critical("leadership lost: exiting (status 1) to stop every controller duty now")
            logging.shutdown()
            os._exit(1)
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
        await elector.release()
        await kube.close()
        controller.result()
    finally:
        if api is not None:
            await api.cleanup()
        await shared.registry.close()


__all__ = ["LeaderElector", "LeaseSettings", "default_identity", "run_replica"]
