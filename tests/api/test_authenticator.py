"""The Authenticator against the real kube-apiserver: TokenReview answers are cached."""

from __future__ import annotations

import asyncio

import pytest

from agent_registry.api import Authenticator, KubeClient
from api.harness import Kube


async def test_token_review_answers_are_cached_until_forgotten(kube: Kube, namespace: str) -> None:
    # A long TTL so the cached answer surely outlives the wait below.
    cached = Authenticator(
        KubeClient.from_kubeconfig(kube.cluster.kubeconfig), token_ttl_seconds=600
    )
    fresh = Authenticator.from_kubeconfig(kube.cluster.kubeconfig)
    try:
        token = kube.token(namespace, "runner")
        identity = await cached.authenticate(token)
        assert identity is not None
        assert identity.service_account == (namespace, "runner")
        assert f"system:serviceaccounts:{namespace}" in identity.groups

        # Deleting the ServiceAccount invalidates its tokens (once the apiserver's own
        # short cache lets go): a fresh TokenReview refuses it ...
        kube.kubectl("delete", "serviceaccount", "runner", "-n", namespace)

        async def refused() -> bool:
            fresh.forget()
            return await fresh.authenticate(token) is None

        for _ in range(120):
            if await refused():
                break
            await asyncio.sleep(0.5)
        else:
            pytest.fail("the apiserver kept accepting the token of a deleted ServiceAccount")

        # ... but the cached answer stands until it expires or is dropped.
        assert await cached.authenticate(token) == identity
        cached.forget()
        assert await cached.authenticate(token) is None
        assert await cached.authenticate("") is None
    finally:
        await cached.close()
        await fresh.close()


async def test_agent_lookup_reads_the_service_account_name(kube: Kube, namespace: str) -> None:
    authenticator = Authenticator.from_kubeconfig(kube.cluster.kubeconfig)
    try:
        kube.agent(namespace, "a1", service_account="runner")
        agent = await authenticator.agent(namespace, "a1")
        assert agent is not None
        assert (agent.namespace, agent.name, agent.service_account_name) == (
            namespace,
            "a1",
            "runner",
        )
        assert await authenticator.agent(namespace, "ghost") is None
    finally:
        await authenticator.close()
