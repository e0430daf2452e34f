"""Helpers of the API tests: kubectl conveniences, the served app, report bodies."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agent_registry.api import Authenticator, ReportAuth, create_app
from agent_registry.metrics import Metrics
from agent_registry.registry import RegistryService

AGENT_API = "agents.singularity.dev/v1alpha1"


class Kube:
    """kubectl conveniences over the shared `kube_cluster` fixture."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return str(self.cluster.kubectl(*args, input=input).stdout)

    def apply(self, obj: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def service_account(self, namespace: str, name: str) -> None:
        self.kubectl("create", "serviceaccount", name, "-n", namespace)

    def token(self, namespace: str, name: str) -> str:
        """A real TokenRequest token of ServiceAccount namespace/name (created if missing)."""
        found = self.cluster.kubectl(
            "get", "serviceaccount", name, "-n", namespace, "--ignore-not-found", "-o", "name"
        ).stdout.strip()
        if not found:
            self.service_account(namespace, name)
        return self.kubectl("create", "token", name, "-n", namespace, "--duration", "1h").strip()

    def agent(
        self,
        namespace: str,
        name: str,
        *,
        service_account: str | None = None,
        template_service_account: str | None = None,
    ) -> None:
        spec: dict[str, Any] = {"role": "tester"}
        if service_account:
            spec["serviceAccountName"] = service_account
        if template_service_account:
            spec["template"] = {
                "spec": {
                    "serviceAccountName": template_service_account,
                    "containers": [{"name": "agent", "image": "agent:1"}],
                }
            }
        self.apply(
            {
                "apiVersion": AGENT_API,
                "kind": "Agent",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            }
        )

    def reader(self, namespace: str, name: str = "reader") -> str:
        """A token of a ServiceAccount allowed to get/list agents and agentbehaviors."""
        self.apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "agent-reader", "namespace": namespace},
                "rules": [
                    {
                        "apiGroups": ["agents.singularity.dev"],
                        "resources": ["agents", "agentbehaviors"],
                        "verbs": ["get", "list"],
                    }
                ],
            }
        )
        self.apply(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"agent-reader-{name}", "namespace": namespace},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "agent-reader",
                },
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            }
        )
        return self.token(namespace, name)


@dataclass
class Api:
    client: TestClient[web.Request, web.Application]
    registry: RegistryService
    metrics: Metrics
    authenticator: Authenticator

    async def report(
        self, namespace: str, name: str, body: Any, token: str | None
    ) -> tuple[int, Any, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        raw = body if isinstance(body, str | bytes) else json.dumps(body)
        response = await self.client.post(
            f"/v1/agents/{namespace}/{name}/reports",
            data=raw,
            headers={**headers, "Content-Type": "application/json"},
        )
        return response.status, await response.json(content_type=None), response.headers

    async def get(self, path: str, token: str | None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        response = await self.client.get(path, headers=headers)
        return response.status, await response.json(content_type=None)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(name, labels or {})
        return float(value or 0.0)


async def serve(
    registry: RegistryService,
    kubeconfig: str,
    *,
    report_auth: ReportAuth = ReportAuth.SERVICE_ACCOUNT,
) -> Api:
    metrics = Metrics()
    authenticator = Authenticator.from_kubeconfig(kubeconfig, report_auth=report_auth)
    app = create_app(registry, authenticator, metrics=metrics)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await client.start_server()
    return Api(client, registry, metrics, authenticator)


def report_body(
    successes: int = 2, failures: int = 1, *, cycles: int = 1, batch_id: uuid.UUID | None = None
) -> dict[str, Any]:
    outcomes = [{"success": True, "duration_ms": 10.0}] * successes
    outcomes += [{"success": False, "duration_ms": 30.0}] * failures
    return {"batch_id": str(batch_id or uuid.uuid4()), "outcomes": outcomes, "cycles": cycles}
