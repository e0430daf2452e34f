"""The API's three Kubernetes calls: TokenReview, SubjectAccessReview and reading an Agent."""

from __future__ import annotations

from typing import Any, Final

from agent_registry.kubeclient import KubeClient as _BaseClient
from agent_registry.kubeclient import KubeError, KubeUnavailable, load_configuration

AGENT_GROUP: Final = "agents.singularity.dev"
AGENT_VERSION: Final = "v1alpha1"


class KubeClient(_BaseClient):
    """The shared async client (agent_registry.kubeclient) with the API's calls."""

    async def token_review(self, token: str, audiences: list[str] | None = None) -> dict[str, Any]:
        """POST a TokenReview; returns its status (authenticated, user, audiences, error)."""
        spec: dict[str, Any] = {"token": token}
        if audiences:
            spec["audiences"] = audiences
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        answer = await self.request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body)
        if answer is None:
            raise KubeError(404, "the TokenReview API is not served")
        status = answer.get("status") or {}
        return dict(status)

    async def subject_access_review(self, spec: dict[str, Any]) -> bool:
        """POST a SubjectAccessReview; True when the subject is allowed."""
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": spec,
        }
        answer = await self.request(
            "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body
        )
        if answer is None:
            raise KubeError(404, "the SubjectAccessReview API is not served")
        return bool((answer.get("status") or {}).get("allowed", False))

    async def get_agent(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Agent object, or None when it does not exist."""
        path = f"/apis/{AGENT_GROUP}/{AGENT_VERSION}/namespaces/{namespace}/agents/{name}"
        return await self.request("GET", path)


__all__ = [
    "AGENT_GROUP",
    "AGENT_VERSION",
    "KubeClient",
    "KubeError",
    "KubeUnavailable",
    "load_configuration",
]
