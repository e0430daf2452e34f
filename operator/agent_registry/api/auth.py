"""Authentication and authorization of API callers against the Kubernetes API.

Bearer tokens are checked with TokenReview; the answer is cached by the token's sha256 (the
token itself is never kept), ~30 s when valid, a few seconds when not. Agents and access
reviews are cached briefly too. Errors reaching the apiserver are never cached: they surface
as KubeUnavailable, which the API turns into 503 so the runtime retries.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from agent_registry.api.access import (
    AgentRef,
    Decision,
    Identity,
    ReportAuth,
    namespace_decision,
    report_decision,
)
from agent_registry.api.cache import TTLCache
from agent_registry.api.kube import AGENT_GROUP, KubeClient


class Authenticator:
    """Turns a bearer token into an Identity and answers the API's access questions.

    The seam for tests is the KubeClient (built from a kubeconfig): tests run it against a
    real kube-apiserver rather than replacing this logic.
    """

    def __init__(
        self,
        kube: KubeClient,
        *,
        audiences: list[str] | None = None,
        report_auth: ReportAuth = ReportAuth.SERVICE_ACCOUNT,
        token_ttl_seconds: float = 30.0,
        negative_ttl_seconds: float = 5.0,
        agent_ttl_seconds: float = 5.0,
        access_ttl_seconds: float = 30.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        owns_client: bool = True,
    ) -> None:
        self.kube = kube
        self._audiences = audiences
        self.report_auth = report_auth
        self._token_ttl = token_ttl_seconds
        self._negative_ttl = negative_ttl_seconds
        self._agent_ttl = agent_ttl_seconds
        self._access_ttl = access_ttl_seconds
        self._owns_client = owns_client
        self._tokens: TTLCache[str, Identity | None] = TTLCache(max_entries, clock=clock)
        self._agents: TTLCache[tuple[str, str], AgentRef | None] = TTLCache(
            max_entries, clock=clock
        )
        self._access: TTLCache[tuple[Identity, str, str, str], bool] = TTLCache(
            max_entries, clock=clock
        )

    @classmethod
    def from_kubeconfig(
        cls,
        kubeconfig: str | None = None,
        *,
        context: str | None = None,
        audiences: list[str] | None = None,
        report_auth: ReportAuth = ReportAuth.SERVICE_ACCOUNT,
    ) -> Authenticator:
        """An Authenticator using a kubeconfig file, $KUBECONFIG or the in-cluster config."""
        return cls(
            KubeClient.from_kubeconfig(kubeconfig, context=context),
            audiences=audiences,
            report_auth=report_auth,
        )

    async def authenticate(self, token: str) -> Identity | None:
        """The caller behind `token`, or None when the apiserver does not accept it."""
        if not token:
            return None
        key = hashlib.sha256(token.encode()).hexdigest()
        hit, cached = self._tokens.get(key)
        if hit:
            return cached
        status = await self.kube.token_review(token, self._audiences)
        identity = Identity.from_token_review(status)
        ttl = self._token_ttl if identity is not None else self._negative_ttl
        self._tokens.put(key, identity, ttl)
        return identity

    async def agent(self, namespace: str, name: str) -> AgentRef | None:
        """The Agent's authorization-relevant fields, or None when it does not exist."""
        key = (namespace, name)
        hit, cached = self._agents.get(key)
        if hit:
            return cached
        obj = await self.kube.get_agent(namespace, name)
        ref = AgentRef.from_object(obj) if obj is not None else None
        # A missing Agent is cached for a shorter time: it may be created any moment.
        self._agents.put(key, ref, self._agent_ttl if ref is not None else 1.0)
        return ref

    async def authorize_report(self, identity: Identity, namespace: str, name: str) -> Decision:
        """May `identity` report outcomes for Agent namespace/name? (see access.py)"""
        first = namespace_decision(identity, namespace)
        if not first.allowed:
            return first
        agent = await self.agent(namespace, name)
        return report_decision(identity, namespace, agent, self.report_auth)

    async def can(
        self, identity: Identity, verb: str, resource: str, namespace: str | None = None
    ) -> bool:
        """RBAC: may `identity` `verb` `resource` (of agents.singularity.dev) in `namespace`
        (None: in every namespace)? Asked with a SubjectAccessReview, cached briefly."""
        key = (identity, verb, resource, namespace or "")
        hit, cached = self._access.get(key)
        if hit:
            return bool(cached)
        attributes = {"group": AGENT_GROUP, "resource": resource, "verb": verb}
        if namespace:
            attributes["namespace"] = namespace
        allowed = await self.kube.subject_access_review(identity.access_review_spec(attributes))
        self._access.put(key, allowed, self._access_ttl if allowed else self._negative_ttl)
        return allowed

    def forget(self) -> None:
        """Drop every cached answer (e.g. after RBAC changes in a test)."""
        self._tokens.clear()
        self._agents.clear()
        self._access.clear()

    async def close(self) -> None:
        if self._owns_client:
            await self.kube.close()


__all__ = ["Authenticator"]
