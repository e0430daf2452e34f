"""The async Kubernetes client shared by the operator's controller and its registry API.

Why not the `kubernetes` package's client: it is synchronous, and a thread per call is a poor
fit for the API's hot endpoints and the status loop. We still use that package to *load* the
configuration (kubeconfig with exec plugins, or the in-cluster ServiceAccount), which is the
seam tests use: they pass the local control plane's kubeconfig, not a fake client.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import AsyncIterator
from typing import Any, Self
from urllib.parse import quote

import aiohttp
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

Manifest = dict[str, Any]


class KubeError(Exception):
    """The Kubernetes API answered with a status no retry will change (4xx but 404 and 429)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Kubernetes API answered HTTP {status}: {message}")
        self.status = status


class KubeUnavailable(Exception):
    """The Kubernetes API could not be reached, or answered 429/5xx: worth a retry."""


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


def object_path(api_version: str, plural: str, namespace: str, name: str | None = None) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{quote(namespace)}/{plural}"
    return f"{path}/{quote(name)}" if name is not None else path


def _ssl_context(configuration: k8s_client.Configuration) -> ssl.SSLContext | bool:
    if not configuration.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return context


class KubeClient:
    """Async JSON calls with the credentials of a client Configuration.

    The aiohttp session is created lazily in the running event loop (a session belongs to one
    loop) and closed by `close()`.
    """

    def __init__(
        self, configuration: k8s_client.Configuration, *, timeout_seconds: float = 15.0
    ) -> None:
        self._configuration = configuration
        self._ssl = _ssl_context(configuration)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None, *, context: str | None = None) -> Self:
        return cls(load_configuration(kubeconfig, context=context))

    @property
    def server(self) -> str:
        return str(self._configuration.host).rstrip("/")

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        # auth_settings() runs the refresh hook: rotating in-cluster tokens and exec plugins.
        bearer = self._configuration.auth_settings().get("BearerToken")
        if bearer and bearer.get("value"):
            headers["Authorization"] = str(bearer["value"])
        return headers

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                # At most 100 requests at once (aiohttp's default, stated): what bounds a
                # reconcile batch's API calls (controller/fleet.py).
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=100),
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        body: Manifest | list[Any] | None = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> Manifest | None:
        """The decoded JSON object answered; None for 404; KubeUnavailable when worth a retry."""
        session = self._session_now()
        try:
            async with session.request(
                method,
                self.server + path,
                json=body,
                params=params,
                headers=self._headers(content_type),
            ) as response:
                if response.status == 404:
                    return None
                if response.status == 429 or response.status >= 500:
                    raise KubeUnavailable(f"{method} {path}: HTTP {response.status}")
                if response.status >= 400:
                    raise KubeError(response.status, (await response.text())[:1000])
                payload = await response.json()
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise KubeUnavailable(f"{method} {path}: {exc!r}") from exc
        if not isinstance(payload, dict):
            raise KubeError(response.status, "answer is not a JSON object")
        return payload

    async def watch(
        self, path: str, params: dict[str, str], *, timeout_seconds: int = 300
    ) -> AsyncIterator[Manifest]:
        """The events of one watch request (`?watch=1`), decoded, until the server ends it
        (after `timeout_seconds`, which the server applies; a silent connection is dropped
        a minute later). An ERROR event is yielded like the others: the caller decides (410
        Gone means: list again)."""
        query = {**params, "watch": "1", "timeoutSeconds": str(timeout_seconds)}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=timeout_seconds + 60)
        try:
            async with self._session_now().get(
                self.server + path,
                params=query,
                headers=self._headers("application/json"),
                timeout=timeout,
            ) as response:
                if response.status == 429 or response.status >= 500:
                    raise KubeUnavailable(f"watch {path}: HTTP {response.status}")
                if response.status >= 400:
                    raise KubeError(response.status, (await response.text())[:1000])
                # One JSON object per line; lines can be longer than aiohttp's line limit.
                buffer = b""
                async for chunk in response.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield json.loads(line)
        except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise KubeUnavailable(f"watch {path}: {exc!r}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


__all__ = [
    "KubeClient",
    "KubeError",
    "KubeUnavailable",
    "Manifest",
    "load_configuration",
    "object_path",
]
