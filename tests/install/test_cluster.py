"""The chart and the kustomize base against the local control plane (a real kube-apiserver with
RBAC): server-side dry runs, a real apply of CRDs, RBAC and the examples, and the RBAC matrix
checked with the chart ServiceAccount's own token (TokenRequest), both ways."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from install.chart import (
    BASE_NAMESPACE,
    CHART,
    CRDS,
    HELM_ONLY_LABELS,
    MANIFESTS,
    Manifest,
    find,
    key,
    load_all,
    render,
    without_helm_labels,
)
from install.cluster import (
    CLUSTER_SCOPED,
    RBAC_KINDS,
    can_i_list,
    can_i_many,
    expected_list,
    manifests_yaml,
    token_kubeconfig,
)
from install.rbac_expectations import (
    ALL_VERBS,
    CLUSTER,
    FORBIDDEN_CLUSTER,
    FORBIDDEN_NAMESPACED,
    LEADER_ELECTION,
    NAMESPACED,
)
from install.test_chart import VALUE_SETS

# timeout: the first test may build helm (see test_chart.py); every kubectl/helm call has its own.
pytestmark = [pytest.mark.kube, pytest.mark.timeout(1800)]

# Kinds whose CRDs (Prometheus Operator, cert-manager) this control plane does not have; the
# offline chart tests check them instead.
THIRD_PARTY_KINDS = {"ServiceMonitor", "Certificate", "Issuer"}


def apply(cluster: Any, manifests: list[Manifest], *flags: str) -> str:
    done = cluster.kubectl("apply", *flags, "-f", "-", input=manifests_yaml(manifests), check=False)
    assert done.returncode == 0, done.stderr
    return str(done.stdout)


@pytest.fixture
def other_namespace(kube_cluster: Any) -> Iterator[str]:
    name = f"t-other-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.parametrize("values_name", list(VALUE_SETS))
def test_chart_server_side_dry_run(
    kube_cluster: Any, namespace: str, other_namespace: str, values_name: str
) -> None:
    values = VALUE_SETS[values_name]
    if "watch" in values and "namespaces" in values["watch"]:
        values = {**values, "watch": {"namespaces": [namespace, other_namespace]}}
    manifests = [
        m
        for m in render(values, release=namespace[:30], namespace=namespace, include_crds=True)
        if m["kind"] not in THIRD_PARTY_KINDS
    ]
    assert find(manifests, "Deployment")
    assert find(manifests, "CustomResourceDefinition")
    out = apply(kube_cluster, manifests, "--dry-run=server")
    assert out.count("(server dry run)") == len(manifests), out


def test_kustomize_base_is_the_chart_defaults(kube_cluster: Any) -> None:
    built = load_all(kube_cluster.kubectl("kustomize", str(MANIFESTS)).stdout)
    by_kind: dict[str, list[Manifest]] = {}
    for m in built:
        by_kind.setdefault(m["kind"], []).append(m)
    assert [ns["metadata"]["name"] for ns in by_kind.pop("Namespace")] == [BASE_NAMESPACE]
    crds = {
        m["metadata"]["name"]: without_helm_labels(m)
        for m in by_kind.pop("CustomResourceDefinition")
    }
    expected_crds = {
        d["metadata"]["name"]: d
        for p in sorted(CRDS.glob("*.yaml"))
        for d in load_all(p.read_text())
    }
    assert crds == expected_crds
    rest = {key(m): without_helm_labels(m) for ms in by_kind.values() for m in ms}
    chart = {key(m): without_helm_labels(m) for m in render()}
    assert rest == chart, "manifests/ drifted from the chart: run hack/helm/render-manifests.py"
    # Every object says how it was installed.
    assert all(
        m["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kustomize" for m in built
    )
    assert HELM_ONLY_LABELS[0] not in str(built)
    # The examples are a separate step, never part of the operator install.
    assert not [m for m in built if m["kind"] in ("Agent", "AgentBehavior")]


def test_kustomize_base_server_side_dry_run(
    kube_cluster: Any, namespace: str, tmp_path: Path
) -> None:
    # The way a platform team consumes a base: an overlay (here: only the namespace changes).
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": namespace,
                "resources": [os.path.relpath(MANIFESTS, overlay)],
            }
        )
    )
    manifests = load_all(kube_cluster.kubectl("kustomize", str(overlay)).stdout)
    assert {m["metadata"].get("namespace", namespace) for m in manifests} == {namespace}
    out = apply(kube_cluster, manifests, "--dry-run=server")
    assert out.count("(server dry run)") == len(manifests), out


@pytest.fixture(params=["namespaced", "all-namespaces"])
def chart_rbac(
    request: pytest.FixtureRequest, kube_cluster: Any, namespace: str
) -> Iterator[tuple[str, str]]:
    """The chart's ServiceAccount and RBAC, really applied; (service account, mode)."""
    mode: str = request.param
    values = {"watch": {"allNamespaces": True}} if mode == "all-namespaces" else {}
    manifests = [
        m
        for m in render(values, release=namespace[:30], namespace=namespace)
        if m["kind"] in RBAC_KINDS
    ]
    apply(kube_cluster, manifests)
    (sa,) = find(manifests, "ServiceAccount")
    yield sa["metadata"]["name"], mode
    for m in manifests:
        if m["kind"] in CLUSTER_SCOPED:
            kube_cluster.kubectl("delete", m["kind"], m["metadata"]["name"], check=False)


def test_real_apply_of_crds_rbac_and_examples(
    kube_cluster: Any, namespace: str, chart_rbac: tuple[str, str]
) -> None:
    kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    for crd in ("agents", "agentbehaviors", "behaviorpolicies", "behaviorexperiments"):
        kube_cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            f"crd/{crd}.agents.singularity.dev",
        )
    examples = MANIFESTS / "examples"
    out = kube_cluster.kubectl("-n", namespace, "apply", "-f", str(examples)).stdout
    objects = [m for p in sorted(examples.glob("*.yaml")) for m in load_all(p.read_text())]
    assert out.count("created") + out.count("configured") + out.count("unchanged") == len(objects)
    listed = kube_cluster.kubectl(
        "-n", namespace, "get", "agents,agentbehaviors", "-o", "name"
    ).stdout.split()
    assert len(listed) == len(objects)
    sa, _ = chart_rbac
    assert kube_cluster.kubectl("-n", namespace, "get", "serviceaccount", sa).returncode == 0


def test_rbac_matrix_with_the_service_account_token(
    kube_cluster: Any,
    namespace: str,
    other_namespace: str,
    chart_rbac: tuple[str, str],
    tmp_path: Path,
) -> None:
    sa, mode = chart_rbac
    kubeconfig = token_kubeconfig(kube_cluster, namespace, sa, tmp_path / "sa.kubeconfig")
    kubectl_path = kube_cluster.kubectl_path
    # In a namespace it does not serve, the namespaced grants apply only cluster-wide.
    other_granted = mode == "all-namespaces"

    questions: list[tuple[str, str, str, str | None]] = []
    expected: dict[tuple[str, str, str, str | None], bool] = {}

    def ask(verb: str, group: str, resource: str, ns: str | None, allowed: bool) -> None:
        question = (verb, group, resource, ns)
        questions.append(question)
        expected[question] = allowed

    for (group, resource), verbs in NAMESPACED.items():
        for verb in ALL_VERBS:
            ask(verb, group, resource, namespace, verb in verbs)
            ask(verb, group, resource, other_namespace, other_granted and verb in verbs)
    for (group, resource), verbs in CLUSTER.items():
        for verb in ALL_VERBS:
            ask(verb, group, resource, None, verb in verbs)
    # The Lease: in the release namespace (here the served one) only, whatever the watch mode.
    for (group, resource), verbs in LEADER_ELECTION.items():
        for verb in ALL_VERBS:
            ask(verb, group, resource, namespace, verb in verbs)
            ask(verb, group, resource, other_namespace, False)
    for group, resource in FORBIDDEN_NAMESPACED:
        for verb in ("get", "list", "create", "patch", "delete"):
            ask(verb, group, resource, namespace, False)
    for group, resource in FORBIDDEN_CLUSTER:
        for verb in ("get", "list", "create", "patch", "delete"):
            ask(verb, group, resource, None, False)

    answers = can_i_many(kubectl_path, kubeconfig, questions)
    wrong = {q: a for q, a in answers.items() if a != expected[q]}
    assert not wrong, f"`kubectl auth can-i` disagrees (question -> answer): {wrong}"

    # Nothing more: the complete list of what the token may do is exactly ours plus what a bare
    # ServiceAccount of the same namespace may do (the defaults of every authenticated user).
    kube_cluster.kubectl("-n", namespace, "create", "serviceaccount", "bare")
    bare = token_kubeconfig(kube_cluster, namespace, "bare", tmp_path / "bare.kubeconfig")
    baseline = can_i_list(kubectl_path, bare, namespace)
    assert not {
        r for r in baseline if "singularity" in r or r in ("configmaps", "deployments.apps")
    }
    assert can_i_list(kubectl_path, kubeconfig, namespace) == expected_list(
        baseline, NAMESPACED, CLUSTER, LEADER_ELECTION
    )
    assert can_i_list(kubectl_path, kubeconfig, other_namespace) == (
        expected_list(baseline, NAMESPACED, CLUSTER)
        if other_granted
        else expected_list(baseline, CLUSTER)
    )
