"""A watch opened with the Kubernetes client sees an update made by someone else (kubectl)."""

from __future__ import annotations

import pytest
from kubernetes import client, config, watch

from agent_registry.devcluster import KubeCluster

pytestmark = pytest.mark.kube


def test_a_watch_sees_an_update(kube_cluster: KubeCluster, namespace: str) -> None:
    kube_cluster.kubectl(
        "create", "configmap", "watched", "-n", namespace, "--from-literal=color=red"
    )
    api = client.CoreV1Api(config.new_client_from_config(config_file=kube_cluster.kubeconfig))
    start = api.read_namespaced_config_map("watched", namespace).metadata.resource_version

    kube_cluster.kubectl(
        "patch",
        "configmap",
        "watched",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"data": {"color": "blue"}}',
    )

    seen = []
    stream = watch.Watch()
    for event in stream.stream(
        api.list_namespaced_config_map,
        namespace,
        resource_version=start,
        field_selector="metadata.name=watched",
        timeout_seconds=30,
    ):
        seen.append((event["type"], event["object"].data))
        if event["type"] == "MODIFIED":
            stream.stop()
    assert seen == [("MODIFIED", {"color": "blue"})]
