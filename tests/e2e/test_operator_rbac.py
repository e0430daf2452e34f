"""The operator works with exactly the RBAC documented in agent_registry.controller (namespaced
mode): a ServiceAccount token with those rules only runs the examples, a hot reload and a
deletion without a single 403."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.conftest import Kubectl, OperatorFactory, diagnose, wait_for
from e2e.test_operator_examples import apply_examples_converged

pytestmark = [pytest.mark.e2e, pytest.mark.kube, pytest.mark.postgres]

GROUP = "agents.singularity.dev"

# The table in operator/agent_registry/controller/__init__.py, namespaced part.
NAMESPACED_RULES = [
    {"apiGroups": [GROUP], "resources": ["agents"], "verbs": ["get", "list", "watch", "patch"]},
    {
        "apiGroups": [GROUP],
        "resources": ["agentbehaviors", "behaviorpolicies", "behaviorexperiments"],
        "verbs": ["list", "watch", "patch"],
    },
    {
        "apiGroups": [GROUP],
        "resources": [
            "agents/status",
            "agentbehaviors/status",
            "behaviorpolicies/status",
            "behaviorexperiments/status",
        ],
        "verbs": ["patch"],
    },
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "patch"]},
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "create", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
# With --leader-elect, in the Lease's namespace (here the served one, as in the chart's defaults).
LEADER_ELECTION_RULES = [
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "update"],
    },
]
CLUSTER_RULES = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {
        "apiGroups": ["authorization.k8s.io"],
        "resources": ["subjectaccessreviews"],
        "verbs": ["create"],
    },
]


def rbac_objects(namespace: str, name: str) -> list[dict[str, Any]]:
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": namespace},
            "rules": NAMESPACED_RULES + LEADER_ELECTION_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": subject,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": CLUSTER_RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": subject,
        },
    ]


def token_kubeconfig(kube_cluster: Any, token: str, path: Path) -> str:
    admin = json.loads(
        kube_cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout
    )
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster["cluster"]}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "operator"}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_operator_runs_with_exactly_the_documented_rbac(
    kubectl: Kubectl,
    kube_cluster: Any,
    operator_factory: OperatorFactory,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    name = f"op-{kubectl.namespace}"[:63]
    objects = rbac_objects(kubectl.namespace, name)
    kube_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    try:
        token = kubectl("create", "token", name, "--duration=1h").strip()
        kubeconfig = token_kubeconfig(kube_cluster, token, tmp_path / "operator.kubeconfig")
        operator = operator_factory(
            postgres_url,
            start=False,
            extra=("--leader-elect", "--leader-election-namespace", kubectl.namespace),
        )
        operator.args[operator.args.index("--kubeconfig") + 1] = kubeconfig
        operator.env["KUBECONFIG"] = kubeconfig
        operator.start()

        apply_examples_converged(kubectl, operator)
        # The Lease was taken with these rules alone (the controller runs only in the leader).
        assert "became the leader" in operator.log_path.read_text()
        body = kubectl.get("agentbehavior", "quick")
        assert body is not None
        script = body["spec"]["lua"]["script"].replace("effort = 0.4", "effort = 0.5")
        kubectl(
            "patch",
            "agentbehavior",
            "quick",
            "--type=merge",
            "-p",
            json.dumps({"spec": {"lua": {"script": script}}}),
        )
        wait_for(
            lambda: (
                (a := kubectl.get("agent", "coder-3")) and a["status"]["behavior"]["revision"] == 2
            ),
            timeout=30,
            what="hot reload under least privilege",
            diagnose=diagnose(kubectl, operator),
        )
        kubectl(
            "patch",
            "agent",
            "coder-3",
            "--type=json",
            "-p",
            '[{"op": "remove", "path": "/spec/template"}]',
        )
        wait_for(
            lambda: kubectl.get("deployment", "coder-3") is None,
            timeout=30,
            what="Deployment removed with the template",
            diagnose=diagnose(kubectl, operator),
        )
        kubectl("delete", "agent", "coder-1", "--timeout=30s")
        events = kubectl("get", "events")
        assert "BehaviorReloaded" in events

        log = operator.log_path.read_text()
        assert "HTTP 403" not in log, operator.log_tail()
        assert "Forbidden" not in log, operator.log_tail()
    finally:
        kube_cluster.kubectl(
            "delete", "clusterrolebinding,clusterrole", name, "--ignore-not-found", check=False
        )
