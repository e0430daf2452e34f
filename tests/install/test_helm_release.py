"""A real Helm release on the local control plane: install, upgrade, uninstall, as docs/install.md
describes them. No pods run here (no kubelet), so nothing waits for readiness; what is checked is
what Helm and the apiserver do with the chart: the webhook certificate generated at install is kept
on upgrade (lookup), and the registry's PVC survives an uninstall."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from install.chart import CHART, helm

pytestmark = [pytest.mark.kube, pytest.mark.timeout(1800)]  # may build helm first


def release_helm(cluster: Any, *args: str) -> str:
    done = helm(*args, "--kubeconfig", cluster.kubeconfig, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def get_json(cluster: Any, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(cluster.kubectl(*args, "-o", "json").stdout)
    return result


def test_install_upgrade_uninstall(kube_cluster: Any, namespace: str) -> None:
    release = namespace[:30]
    fullname = f"{release}-agent-registry"
    install = [
        "--namespace", namespace,
        # The CRDs are cluster-wide and shared by the whole test session: not this release's.
        "--skip-crds",
        "--set", "webhook.enabled=true",
        # Nothing serves the webhook here: never let it refuse anything.
        "--set", "webhook.failurePolicy=Ignore",
    ]  # fmt: skip
    notes = release_helm(kube_cluster, "install", release, str(CHART), *install)
    assert f"kubectl -n {namespace} rollout status deployment/{fullname}" in notes
    try:
        secret = get_json(kube_cluster, "-n", namespace, "get", "secret", f"{fullname}-webhook-tls")
        webhook = get_json(kube_cluster, "get", "validatingwebhookconfiguration", fullname)
        ca = secret["data"]["ca.crt"]
        assert webhook["webhooks"][0]["clientConfig"]["caBundle"] == ca
        assert b"BEGIN CERTIFICATE" in base64.b64decode(ca)

        # An upgrade (new values) keeps the generated CA and certificate: lookup finds them.
        release_helm(
            kube_cluster, "upgrade", release, str(CHART), "--namespace", namespace,
            "--reuse-values", "--set", "operator.statusInterval=10",
        )  # fmt: skip
        after = get_json(kube_cluster, "-n", namespace, "get", "secret", f"{fullname}-webhook-tls")
        assert after["data"] == secret["data"]
        webhook = get_json(kube_cluster, "get", "validatingwebhookconfiguration", fullname)
        assert webhook["webhooks"][0]["clientConfig"]["caBundle"] == ca
        deployment = get_json(kube_cluster, "-n", namespace, "get", "deployment", fullname)
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--status-interval=10" in args
        assert deployment["metadata"]["generation"] == 2
    finally:
        release_helm(kube_cluster, "uninstall", release, "--namespace", namespace)

    # Gone with the release: the operator and its cluster-wide objects...
    assert (
        kube_cluster.kubectl("-n", namespace, "get", "deployment", fullname, check=False).returncode
        != 0
    )
    for kind, name in (
        ("validatingwebhookconfiguration", fullname),
        ("clusterrole", f"{fullname}-cluster"),
        ("clusterrolebinding", f"{fullname}-cluster"),
    ):
        assert kube_cluster.kubectl("get", kind, name, check=False).returncode != 0
    # ...but not the registry's data (helm.sh/resource-policy: keep).
    pvc = get_json(kube_cluster, "-n", namespace, "get", "pvc", f"{fullname}-data")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    kube_cluster.kubectl("-n", namespace, "delete", "pvc", f"{fullname}-data", "--wait=false")
