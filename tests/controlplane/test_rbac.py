"""RBAC is enforced: a Role/RoleBinding grants one verb and nothing else."""

from __future__ import annotations

import pytest

from agent_registry.devcluster import KubeCluster

pytestmark = pytest.mark.kube


def can_i(kube: KubeCluster, *args: str) -> str:
    # Exit code 1 means "no": that is an answer, not a failure.
    result = kube.kubectl("auth", "can-i", *args, check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.stdout.strip()


def test_can_i_answers_per_role_binding(kube_cluster: KubeCluster, namespace: str) -> None:
    user = f"system:serviceaccount:{namespace}:reader"
    kube_cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    assert can_i(kube_cluster, "get", "configmaps", "-n", namespace, f"--as={user}") == "no"

    kube_cluster.kubectl(
        "create", "role", "cm-reader", "-n", namespace, "--verb=get", "--resource=configmaps"
    )
    kube_cluster.kubectl(
        "create",
        "rolebinding",
        "cm-reader",
        "-n",
        namespace,
        "--role=cm-reader",
        f"--serviceaccount={namespace}:reader",
    )

    assert can_i(kube_cluster, "get", "configmaps", "-n", namespace, f"--as={user}") == "yes"
    assert can_i(kube_cluster, "delete", "configmaps", "-n", namespace, f"--as={user}") == "no"
    assert can_i(kube_cluster, "get", "secrets", "-n", namespace, f"--as={user}") == "no"
    assert can_i(kube_cluster, "get", "configmaps", "-n", "default", f"--as={user}") == "no"


def test_a_forbidden_request_is_refused_by_the_server(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    user = f"system:serviceaccount:{namespace}:nobody"

    result = kube_cluster.kubectl("get", "configmaps", "-n", namespace, f"--as={user}", check=False)

    assert result.returncode != 0
    assert "Forbidden" in result.stderr
    assert f'User "{user}" cannot list resource "configmaps"' in result.stderr
