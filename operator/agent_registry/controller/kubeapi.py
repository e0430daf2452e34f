"""The few Kubernetes writes the operator makes itself (kopf does the watching).

Async on aiohttp with the credentials of a kubernetes-client Configuration, so no thread pool
is needed: server-side apply of owned objects, delete, and merge patches of `/status`.
"""

from __future__ import annotations

import datetime
import os
import ssl
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

FIELD_MANAGER = "agent-registry"

Manifest = dict[str, Any]


class KubeUnavailable(Exception):
    """The apiserver did not answer, or answered 429/5xx: worth a retry."""


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def load_configuration(kubeconfig: str | None = None) -> k8s_client.Configuration:
    """From a kubeconfig file, $KUBECONFIG, or the in-cluster ServiceAccount."""
    configuration = k8s_client.Configuration()
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
    if kubeconfig is None and not os.environ.get("KUBECONFIG") and in_cluster:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    return configuration


def _ssl_context(configuration: k8s_client.Configuration) -> ssl.SSLContext | bool:
    if not configuration.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return context


def object_path(api_version: str, plural: str, namespace: str, name: str | None = None) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{quote(namespace)}/{plural}"
    return f"{path}/{quote(name)}" if name is not None else path


_PLURALS = {("v1", "ConfigMap"): "configmaps", ("apps/v1", "Deployment"): "deployments"}


class Kube:
    """A session per event loop; `close()` it on shutdown."""

    def __init__(self, configuration: k8s_client.Configuration, *, timeout: float = 15.0) -> None:
        self._configuration = configuration
        self._ssl = _ssl_context(configuration)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None) -> Kube:
        return cls(load_configuration(kubeconfig))

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        bearer = self._configuration.auth_settings().get("BearerToken")
        if bearer and bearer.get("value"):
            headers["Authorization"] = str(bearer["value"])
        return headers

    async def request(
        self,
        method: str,
        path: str,
        body: Manifest | None = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> Manifest | None:
        """Decoded JSON answer; None for 404."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl)
            )
        url = str(self._configuration.host).rstrip("/") + path
        try:
            async with self._session.request(
                method, url, json=body, params=params, headers=self._headers(content_type)
            ) as response:
                if response.status == 404:
                    return None
                if response.status == 429 or response.status >= 500:
                    raise KubeUnavailable(f"{method} {path}: HTTP {response.status}")
                if response.status >= 400:
                    raise KubeError(response.status, (await response.text())[:1000])
                answer: Manifest = await response.json()
                return answer
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise KubeUnavailable(f"{method} {path}: {exc!r}") from exc

    async def apply(self, manifest: Manifest) -> Manifest | None:
        """Server-side apply: create or update, owning exactly the fields rendered."""
        metadata = manifest["metadata"]
        plural = _PLURALS[(manifest["apiVersion"], manifest["kind"])]
        path = object_path(manifest["apiVersion"], plural, metadata["namespace"], metadata["name"])
        return await self.request(
            "PATCH",
            path,
            manifest,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
        )

    async def delete(self, api_version: str, plural: str, namespace: str, name: str) -> bool:
        """True when something was deleted, False when it was already gone."""
        answer = await self.request("DELETE", object_path(api_version, plural, namespace, name))
        return answer is not None

    async def get(
        self, api_version: str, plural: str, namespace: str, name: str
    ) -> Manifest | None:
        return await self.request("GET", object_path(api_version, plural, namespace, name))

    async def patch_status(
        self, api_version: str, plural: str, namespace: str, name: str, status: Manifest
    ) -> Manifest | None:
        """Merge-patch the status subresource; None when the object is gone."""
        path = object_path(api_version, plural, namespace, name) + "/status"
        return await self.request(
            "PATCH", path, {"status": status}, content_type="application/merge-patch+json"
        )

    async def post_event(
        self, involved: Manifest, *, type_: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event about `involved` (kopf's own poster only works inside handlers)."""
        metadata = involved["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{metadata['name']}.",
                "namespace": metadata["namespace"],
            },
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata["uid"],
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": FIELD_MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.request("POST", object_path("v1", "events", metadata["namespace"]), event)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
