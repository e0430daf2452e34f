"""ServiceAccount tokens: TokenRequest issues one, TokenReview validates it, the server takes it."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent_registry.devcluster import KubeCluster

pytestmark = pytest.mark.kube


def token_review(kube: KubeCluster, token: str) -> dict[str, Any]:
    review = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    }
    out = kube.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review)).stdout
    status: dict[str, Any] = json.loads(out)["status"]
    return status


def test_token_request_then_token_review(kube_cluster: KubeCluster, namespace: str) -> None:
    kube_cluster.kubectl("create", "serviceaccount", "agent-7", "-n", namespace)

    # `kubectl create token` is the TokenRequest API (serviceaccounts/token subresource).
    token = kube_cluster.kubectl(
        "create", "token", "agent-7", "-n", namespace, "--duration=10m"
    ).stdout.strip()
    status = token_review(kube_cluster, token)

    assert status["authenticated"] is True
    assert status["user"]["username"] == f"system:serviceaccount:{namespace}:agent-7"
    assert f"system:serviceaccounts:{namespace}" in status["user"]["groups"]


def test_a_tampered_token_is_not_authenticated(kube_cluster: KubeCluster, namespace: str) -> None:
    kube_cluster.kubectl("create", "serviceaccount", "agent-8", "-n", namespace)
    token = kube_cluster.kubectl("create", "token", "agent-8", "-n", namespace).stdout.strip()
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = f"system:serviceaccount:{namespace}:someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()

    status = token_review(kube_cluster, f"{header}.{forged}.{signature}")

    assert status.get("authenticated") is not True


def test_the_server_accepts_the_token_as_the_serviceaccount(
    kube_cluster: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    kube_cluster.kubectl("create", "serviceaccount", "agent-9", "-n", namespace)
    token = kube_cluster.kubectl("create", "token", "agent-9", "-n", namespace).stdout.strip()
    admin = yaml.safe_load(Path(kube_cluster.kubeconfig).read_text())
    # A kubeconfig with the token only (no client certificate, which would win).
    token_config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "sa",
        "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
    }
    path = tmp_path / "sa.kubeconfig"
    path.write_text(yaml.safe_dump(token_config))

    whoami = subprocess.run(
        [kube_cluster.kubectl_path, f"--kubeconfig={path}", "auth", "whoami", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )

    info = json.loads(whoami.stdout)["status"]["userInfo"]
    assert info["username"] == f"system:serviceaccount:{namespace}:agent-9"
