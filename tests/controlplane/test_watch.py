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
    # kubernetes ships py.typed, but its config and watch modules are unannotated.
    api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=kube_cluster.kubeconfig
    )
    api = client.CoreV1Api(api_client)
    metadata = api.read_namespaced_config_map("watched", namespace).metadata
    assert metadata is not None
    start = metadata.resource_version

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

    seen: list[tuple[str, dict[str, str] | None]] = []
    stream = watch.Watch()  # type: ignore[no-untyped-call]
    for event in stream.stream(  # type: ignore[no-untyped-call]
        api.list_namespaced_config_map,
        namespace,
        resource_version=start,
        field_selector="metadata.name=watched",
        timeout_seconds=30,
    ):
        seen.append((event["type"], event["object"].data))
        if event["type"] == "MODIFIED":
            stream.stop()  # type: ignore[no-untyped-call]
    assert seen == [("MODIFIED", {"color": "blue"})]
