"""The Lease protocol of controller/leadership.py against the real kube-apiserver.

Expiry is judged on each candidate's own clock (client-go's rule); the tests hand the
candidates a clock they advance, so nothing here waits for a lease to run out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agent_registry.controller.leadership import LeaderElector, LeaseSettings
from agent_registry.kubeclient import KubeClient

pytestmark = [pytest.mark.kube]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def kube(kubeconfig: str) -> AsyncIterator[KubeClient]:
    client = KubeClient.from_kubeconfig(kubeconfig)
    try:
        yield client
    finally:
        await client.close()


def _settings(namespace: str, identity: str) -> LeaseSettings:
    return LeaseSettings(namespace=namespace, identity=identity, lease_duration=15.0)


async def _lease(kube: KubeClient, namespace: str) -> dict[str, Any]:
    lease = await kube.request(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/agent-registry"
    )
    assert lease is not None
    spec: dict[str, Any] = lease["spec"]
    return spec


def test_settings_follow_client_gos_ordering() -> None:
    LeaseSettings(namespace="n", lease_duration=15, renew_deadline=10, retry_period=2)
    for duration, deadline, retry in ((10, 10, 2), (15, 10, 9), (15, 10, 0)):
        with pytest.raises(ValueError, match="lease_duration > renew_deadline"):
            LeaseSettings(
                namespace="n", lease_duration=duration, renew_deadline=deadline, retry_period=retry
            )


async def test_a_held_lease_is_taken_only_once_it_stopped_changing_for_its_duration(
    kube: KubeClient, namespace: str
) -> None:
    clock = Clock()
    first = LeaderElector(kube, _settings(namespace, "first"), clock=clock)
    second = LeaderElector(kube, _settings(namespace, "second"), clock=clock)

    assert await first._try()
    assert await first._try()  # the leader renews its own lease
    assert not await second._try()  # held, and just observed
    clock.now += 14.0
    assert not await second._try()  # 14 s without a change it saw: not expired yet
    clock.now += 2.0
    assert await second._try()

    spec = await _lease(kube, namespace)
    assert spec["holderIdentity"] == "second"
    assert spec["leaseTransitions"] == 1
    assert spec["leaseDurationSeconds"] == 15
    # The old leader now observes another holder: it is no longer the leader.
    assert not await first._try()
    assert not first.is_leader


async def test_a_renewal_resets_the_followers_view(kube: KubeClient, namespace: str) -> None:
    clock = Clock()
    leader = LeaderElector(kube, _settings(namespace, "leader"), clock=clock)
    follower = LeaderElector(kube, _settings(namespace, "follower"), clock=clock)
    assert await leader._try()
    for _ in range(3):
        assert not await follower._try()
        clock.now += 10.0
        assert await leader._try()  # renewTime changes: the follower starts counting again
    assert not await follower._try()
    assert (await _lease(kube, namespace))["holderIdentity"] == "leader"


async def test_of_two_candidates_racing_for_an_expired_lease_one_wins(
    kube: KubeClient, namespace: str
) -> None:
    clock = Clock()
    gone = LeaderElector(kube, _settings(namespace, "gone"), clock=clock)
    assert await gone._try()
    candidates = [LeaderElector(kube, _settings(namespace, f"c{i}"), clock=clock) for i in range(4)]
    for candidate in candidates:
        assert not await candidate._try()
    clock.now += 16.0

    won = await asyncio.gather(*(candidate._try() for candidate in candidates))

    assert sum(won) == 1, won
    winner = candidates[won.index(True)].identity
    assert (await _lease(kube, namespace))["holderIdentity"] == winner


async def test_a_released_lease_is_taken_at_once(kube: KubeClient, namespace: str) -> None:
    clock = Clock()
    leader = LeaderElector(kube, _settings(namespace, "leader"), clock=clock)
    follower = LeaderElector(kube, _settings(namespace, "follower"), clock=clock)
    assert await leader._try()
    assert not await follower._try()

    await leader.release()

    assert not leader.is_leader
    assert (await _lease(kube, namespace)).get("holderIdentity") is None
    assert await follower._try()  # no holder: no need to wait out the duration


async def test_hold_returns_when_another_holder_is_seen(kube: KubeClient, namespace: str) -> None:
    settings = LeaseSettings(
        namespace=namespace, identity="leader", lease_duration=3, renew_deadline=2, retry_period=0.1
    )
    leader = LeaderElector(kube, settings)
    await leader.acquire()
    holding = asyncio.create_task(leader.hold())
    await asyncio.sleep(0.3)
    assert not holding.done()  # renewing
    spec = await _lease(kube, namespace)
    lease = await kube.request(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/agent-registry"
    )
    assert lease is not None
    lease["spec"] = {**spec, "holderIdentity": "intruder"}
    await kube.request(
        "PUT", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/agent-registry", lease
    )

    await asyncio.wait_for(holding, timeout=10)

    assert not leader.is_leader
