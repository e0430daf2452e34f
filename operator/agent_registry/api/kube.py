"""A minimal async Kubernetes client for the API's three calls: TokenReview,
SubjectAccessReview and reading an Agent.

Why not the `kubernetes` package's client: it is synchronous, and a thread per request is a
poor fit for a hot endpoint. We still use that package to *load* the configuration
(kubeconfig with exec plugins, or the in-cluster ServiceAccount), which is the seam tests use:
they pass the local control plane's kubeconfig, not a fake client.
"""

from __future__ import annotations

import os
import ssl
from typing import Any, Final

import aiohttp
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

AGENT_GROUP: Final = "agents.singularity.dev"
AGENT_VERSION: Final = "v1alpha1"


class KubeError(Exception):
    """The Kubernetes API answered with an unexpected status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API error {status}: {message}")
        self.status = status


class KubeUnavailable(Exception):
    """The Kubernetes API could not be reached (or answered 5xx/429): worth a retry."""


def load_configuration(
    kubeconfig: str | None = None, *, context: str | None = None
) -> k8s_client.Configuration:
    """The client configuration from a kubeconfig file, $KUBECONFIG, or the in-cluster SA."""
    configuration = k8s_client.Configuration()
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    if kubeconfig is None and not os.environ.get("KUBECONFIG") and in_cluster:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    return configuration


def _ssl_context(configuration: k8s_client.Configuration) -> ssl.SSLContext | bool:
    if not configuration.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return context


class KubeClient:
    """Async JSON calls to the Kubernetes API with the credentials of a client Configuration.

    The aiohttp session is created lazily in the running event loop (a session belongs to
    one loop) and closed by `close()`.
    """

    def __init__(
        self, configuration: k8s_client.Configuration, *, timeout_seconds: float = 10.0
    ) -> None:
        self._configuration = configuration
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None
        self._ssl = _ssl_context(configuration)

    @classmethod
    def from_kubeconfig(
        cls, kubeconfig: str | None = None, *, context: str | None = None
    ) -> KubeClient:
        return cls(load_configuration(kubeconfig, context=context))

    @property
    def server(self) -> str:
        return str(self._configuration.host).rstrip("/")

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        # auth_settings() runs the refresh hook: rotating in-cluster tokens and exec plugins.
        bearer = self._configuration.auth_settings().get("BearerToken")
        if bearer and bearer.get("value"):
            headers["Authorization"] = str(bearer["value"])
        return headers

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl)
            )
        return self._session

    async def request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The decoded JSON answer; None for 404; KubeUnavailable when worth a retry."""
        session = self._get_session()
        try:
            async with session.request(
                method, self.server + path, json=body, headers=self._headers()
            ) as response:
                if response.status == 404:
                    return None
                if response.status == 429 or response.status >= 500:
                    raise KubeUnavailable(f"{method} {path}: HTTP {response.status}")
                if response.status >= 400:
                    raise KubeError(response.status, (await response.text())[:500])
                payload = await response.json()
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise KubeUnavailable(f"{method} {path}: {exc!r}") from exc
        if not isinstance(payload, dict):
            raise KubeError(response.status, "answer is not a JSON object")
        return payload

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

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


__all__ = [
    "AGENT_GROUP",
    "AGENT_VERSION",
    "KubeClient",
    "KubeError",
    "KubeUnavailable",
    "load_configuration",
]
