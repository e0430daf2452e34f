"""The operator runs with nothing but the chart's RBAC: `agentreg run` logged in with a token of the
chart's ServiceAccount (TokenRequest), against the local control plane. It reconciles the examples,
authenticates an agent's report (TokenReview), writes status, and the Argo CD health checks read
the live objects as Healthy. No pods run here (no kubelet): the operator is a local process, as in
the controller's e2e tests, whose fixtures this reuses."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lupa.lua54
import pytest

from e2e.conftest import OperatorFactory, condition_is, wait_for
from install.chart import MANIFESTS, find, render
from install.cluster import RBAC_KINDS, manifests_yaml, token_kubeconfig

pytestmark = [pytest.mark.kube, pytest.mark.e2e, pytest.mark.timeout(1800)]  # may build helm

ARGOCD = MANIFESTS / "argocd"


def argo_health(script: str, obj: dict[str, Any]) -> tuple[str, str]:
    runtime = lupa.lua54.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    hs = runtime.execute((ARGOCD / script).read_text())
    return str(hs["status"]), str(hs["message"])


def get(cluster: Any, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    done = cluster.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def get_when(
    cluster: Any,
    namespace: str,
    kind: str,
    name: str,
    ready: Callable[[dict[str, Any]], object],
) -> Callable[[], dict[str, Any] | None]:
    """A wait_for probe: the object once it exists and `ready(object)` is truthy, else None."""

    def probe() -> dict[str, Any] | None:
        obj = get(cluster, namespace, kind, name)
        return obj if obj and ready(obj) else None

    return probe


def test_operator_works_with_the_chart_service_account_token(
    kube_cluster: Any,
    namespace: str,
    operator_factory: OperatorFactory,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    # The chart's ServiceAccount and RBAC for this namespace, applied for real.
    rbac = [
        m for m in render(release=namespace[:30], namespace=namespace) if m["kind"] in RBAC_KINDS
    ]
    kube_cluster.kubectl("apply", "-f", "-", input=manifests_yaml(rbac))
    try:
        (sa,) = find(rbac, "ServiceAccount")
        sa_kubeconfig = token_kubeconfig(
            kube_cluster, namespace, sa["metadata"]["name"], tmp_path / "operator.kubeconfig"
        )
        # The last --kubeconfig wins: the operator and its API use only the ServiceAccount token.
        operator = operator_factory(sqlite_url, extra=("--kubeconfig", str(sa_kubeconfig)))

        kube_cluster.kubectl("-n", namespace, "apply", "-f", str(MANIFESTS / "examples"))
        diagnose = operator.log_tail

        behavior = wait_for(
            get_when(
                kube_cluster,
                namespace,
                "agentbehavior",
                "careful",
                lambda b: condition_is(b, "Valid", "True"),
            ),
            timeout=90,
            what="AgentBehavior careful Valid=True",
            diagnose=diagnose,
        )
        assert argo_health("health-agentbehavior.lua", behavior)[0] == "Healthy"

        agent = wait_for(
            get_when(
                kube_cluster,
                namespace,
                "agent",
                "coder-1",
                lambda a: ((a.get("status") or {}).get("behavior") or {}).get("sha256"),
            ),
            timeout=90,
            what="Agent coder-1 assigned a behavior",
            diagnose=diagnose,
        )
        sha = agent["status"]["behavior"]["sha256"]
        # Assigned, not yet confirmed by a runtime: a hot reload in flight.
        assert argo_health("health-agent.lua", agent)[0] == "Progressing"
        # The ConfigMap the operator rendered (server-side apply with create+patch only).
        configmap = get(kube_cluster, namespace, "configmap", "coder-1-behavior")
        assert configmap is not None
        assert json.loads(configmap["data"]["behavior.json"])["sha256"] == sha

        # An agent reports with its own ServiceAccount token: the operator authenticates it
        # with a TokenReview, which its chart RBAC allows. By default only the ServiceAccount
        # named like the Agent may report for it.
        kube_cluster.kubectl("-n", namespace, "create", "serviceaccount", "coder-1")
        agent_token = kube_cluster.kubectl(
            "-n", namespace, "create", "token", "coder-1", "--duration=1h"
        ).stdout.strip()
        report = {
            "batch_id": str(uuid.uuid4()),
            "outcomes": [{"success": True, "duration_ms": 12.5}],
            "cycles": 1,
            "loaded": {"sha256": sha, "loaded_at": datetime.now(UTC).isoformat()},
        }
        request = urllib.request.Request(
            f"{operator.api_url}/v1/agents/{namespace}/coder-1/reports",
            data=json.dumps(report).encode(),
            headers={"Authorization": f"Bearer {agent_token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 202, diagnose()

        # The confirmation reaches status (patch on agents/status): GitOps health turns Healthy.
        agent = wait_for(
            get_when(
                kube_cluster,
                namespace,
                "agent",
                "coder-1",
                lambda a: argo_health("health-agent.lua", a)[0] == "Healthy",
            ),
            timeout=90,
            what="Agent coder-1 Healthy for Argo CD",
            diagnose=diagnose,
        )
        assert agent["status"]["loadedBehavior"]["sha256"] == sha
        assert condition_is(agent, "Ready", "True")
        log = operator.log_path.read_text(errors="replace")
        assert "403" not in log, operator.log_tail()
        assert "Forbidden" not in log, operator.log_tail()
    finally:
        for m in rbac:
            if m["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                kube_cluster.kubectl("delete", m["kind"], m["metadata"]["name"], check=False)
