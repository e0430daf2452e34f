"""The few Kubernetes writes the operator makes itself (kopf does the watching): server-side
apply of owned objects, delete, merge patches of `/status` and of metadata (consumed
annotations), and Events."""

from __future__ import annotations

import datetime

from agent_registry.kubeclient import (
    KubeClient,
    KubeError,
    KubeUnavailable,
    Manifest,
    load_configuration,
    object_path,
)

FIELD_MANAGER = "agent-registry"

_PLURALS = {("v1", "ConfigMap"): "configmaps", ("apps/v1", "Deployment"): "deployments"}


class Kube(KubeClient):
    """The shared async client (agent_registry.kubeclient) with the controller's writes."""

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

    async def list(
        self, api_version: str, plural: str, namespace: str, *, label_selector: str | None = None
    ) -> list[Manifest]:
        """Every object of a namespace matching the selector (paged, 500 per request)."""
        items: list[Manifest] = []
        params = {"limit": "500"}
        if label_selector:
            params["labelSelector"] = label_selector
        while True:
            page = await self.request(
                "GET", object_path(api_version, plural, namespace), params=params
            )
            if page is None:
                return items
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params = {**params, "continue": str(token)}

    async def patch_status(
        self,
        api_version: str,
        plural: str,
        namespace: str,
        name: str,
        status: Manifest,
        *,
        resource_version: str | None = None,
    ) -> Manifest | None:
        """Merge-patch the status subresource; None when the object is gone.

        With `resource_version` the patch applies only to that version of the object (the
        apiserver answers 409 Conflict otherwise, raised as KubeError).
        """
        path = object_path(api_version, plural, namespace, name) + "/status"
        body: Manifest = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self.request("PATCH", path, body, content_type="application/merge-patch+json")

    async def patch_metadata(
        self,
        api_version: str,
        plural: str,
        namespace: str,
        name: str,
        metadata: Manifest,
        *,
        resource_version: str | None = None,
    ) -> Manifest | None:
        """Merge-patch metadata (e.g. `{"annotations": {key: None}}` removes one); None when
        the object is gone. With `resource_version`, only onto that version (409 otherwise)."""
        body: Manifest = {"metadata": dict(metadata)}
        if resource_version is not None:
            body["metadata"]["resourceVersion"] = resource_version
        path = object_path(api_version, plural, namespace, name)
        return await self.request("PATCH", path, body, content_type="application/merge-patch+json")

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


__all__ = [
    "FIELD_MANAGER",
    "Kube",
    "KubeError",
    "KubeUnavailable",
    "Manifest",
    "load_configuration",
    "object_path",
]
