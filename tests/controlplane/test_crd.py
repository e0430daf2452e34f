"""CRDs are served for real: schema validation, the status subresource and printer columns."""

from __future__ import annotations

from typing import Any

import pytest

from agent_registry.devcluster import KubeCluster, KubectlError
from controlplane.helpers import apply, get_json

pytestmark = pytest.mark.kube

GROUP = "controlplane.test.agentreg.dev"
CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def widget(name: str, size: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size},
    }


@pytest.fixture(scope="module")
def widgets_crd(kube_cluster: KubeCluster) -> str:
    apply(kube_cluster, CRD)
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", f"crd/widgets.{GROUP}", "--timeout=60s"
    )
    return f"widgets.{GROUP}"


def test_kubectl_get_prints_the_printer_columns_and_status(
    kube_cluster: KubeCluster, widgets_crd: str, namespace: str
) -> None:
    apply(kube_cluster, widget("gear", 3), namespace=namespace)
    kube_cluster.kubectl(
        "patch",
        widgets_crd,
        "gear",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Spinning"}}',
    )

    table = kube_cluster.kubectl("get", widgets_crd, "-n", namespace).stdout.splitlines()

    assert table[0].split() == ["NAME", "SIZE", "PHASE"]
    assert table[1].split() == ["gear", "3", "Spinning"]


def test_status_is_a_subresource_so_the_main_resource_ignores_it(
    kube_cluster: KubeCluster, widgets_crd: str, namespace: str
) -> None:
    apply(kube_cluster, widget("cog", 2), namespace=namespace)
    kube_cluster.kubectl(
        "patch",
        widgets_crd,
        "cog",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"size": 4}, "status": {"phase": "Forged"}}',
    )

    obj = get_json(kube_cluster, widgets_crd, "cog", "-n", namespace)

    assert obj["spec"]["size"] == 4
    assert "status" not in obj or obj["status"].get("phase") is None


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (11, "spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10"),
        ("big", 'spec.size: Invalid value: "string": spec.size in body must be of type integer'),
    ],
)
def test_an_object_violating_the_schema_is_rejected_with_the_servers_message(
    kube_cluster: KubeCluster, widgets_crd: str, namespace: str, size: Any, message: str
) -> None:
    with pytest.raises(KubectlError) as rejected:
        apply(kube_cluster, widget("broken", size), namespace=namespace)

    assert message in str(rejected.value)
    assert (
        kube_cluster.kubectl("get", widgets_crd, "broken", "-n", namespace, check=False).returncode
        != 0
    )
