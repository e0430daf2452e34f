"""ConfigMapWatchSource against the real local kube-apiserver (fixtures from
tests/fixtures/kube.py): initial list, updates, delete/recreate, server-side watch timeouts,
and a 410 Gone (a resourceVersion older than the apiserver keeps) answered by a relist."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent_registry.runtime.backoff import Backoff
from agent_registry.runtime.configmap_source import ConfigMapWatchSource, make_api_client
from runtime.waiting import Collector, wait_until_sync

pytestmark = pytest.mark.kube

NAME = "scout-behavior"


def data(version: int) -> dict[str, str]:
    return {
        "behavior.lua": f"-- v{version}\nfunction on_task() return {version} end\n",
        "behavior.json": json.dumps({"name": "b", "namespace": "x", "revision": version}),
    }


@pytest.fixture
def core(kubeconfig: str) -> Iterator[Any]:
    from kubernetes import client

    api_client = make_api_client(kubeconfig)
    yield client.CoreV1Api(api_client)
    api_client.close()


def create(core: Any, namespace: str, version: int) -> None:
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": NAME}, "data": data(version)}
    )


def update(core: Any, namespace: str, version: int) -> None:
    core.patch_namespaced_config_map(NAME, namespace, {"data": data(version)})


def test_initial_content_then_updates(core: Any, namespace: str, kubeconfig: str) -> None:
    create(core, namespace, 1)
    source = ConfigMapWatchSource(namespace, NAME, kubeconfig=kubeconfig)
    seen = Collector()
    source.start(seen)
    try:
        assert seen.revisions == [1]  # delivered before start() returned
        for version in (2, 3):
            update(core, namespace, version)
            wait_until_sync(lambda v=version: seen.revisions[-1] == v)  # type: ignore[misc]
        # A change that does not touch the data is delivered too (the host ignores it).
        core.patch_namespaced_config_map(NAME, namespace, {"metadata": {"labels": {"x": "y"}}})
        wait_until_sync(lambda: len(seen.revisions) == 4)
    finally:
        source.stop()
    assert seen.revisions == [1, 2, 3, 3]
    assert seen.bundles[1].script == data(2)["behavior.lua"]


def test_missing_at_start_deleted_and_recreated(core: Any, namespace: str, kubeconfig: str) -> None:
    source = ConfigMapWatchSource(namespace, NAME, kubeconfig=kubeconfig)
    seen = Collector()
    source.start(seen)
    try:
        assert seen.revisions == []
        create(core, namespace, 1)
        wait_until_sync(lambda: seen.revisions == [1])
        core.delete_namespaced_config_map(NAME, namespace)
        create(core, namespace, 2)
        wait_until_sync(lambda: seen.revisions == [1, 2])
    finally:
        source.stop()


def test_watch_resumes_after_the_server_ends_it(core: Any, namespace: str, kubeconfig: str) -> None:
    create(core, namespace, 1)
    source = ConfigMapWatchSource(namespace, NAME, kubeconfig=kubeconfig, watch_timeout=1)
    seen = Collector()
    source.start(seen)
    try:
        threading.Event().wait(2.5)  # at least two server-side watch timeouts
        update(core, namespace, 2)
        wait_until_sync(lambda: seen.revisions == [1, 2])
    finally:
        source.stop()
    assert source.relists == 1, "a timed-out watch resumes from its version, no relist"
    assert source.errors == 0


def test_a_failing_watch_backs_off_relists_and_resumes(
    core: Any, namespace: str, kubeconfig: str
) -> None:
    """The first watch starts from a resourceVersion the apiserver refuses (a real error
    answer: the list is wrapped to spoil its version once); the source backs off, relists and
    watches on."""
    create(core, namespace, 1)
    source = ConfigMapWatchSource(
        namespace, NAME, kubeconfig=kubeconfig, backoff=Backoff(base=0.05, cap=0.1)
    )
    real_list = source._list
    lists = {"n": 0}

    def list_then_spoil() -> None:
        real_list()
        lists["n"] += 1
        if lists["n"] == 1:
            source.resource_version = "not-a-version"  # what the first watch starts from

    source._list = list_then_spoil  # type: ignore[method-assign]
    seen = Collector()
    source.start(seen)
    try:
        wait_until_sync(lambda: source.errors >= 1)
        update(core, namespace, 2)
        wait_until_sync(lambda: seen.revisions[-1] == 2)
    finally:
        source.stop()
    assert source.relists >= 2


def test_gone_relists_at_once(core: Any, namespace: str, kubeconfig: str) -> None:
    """A real 410 Gone needs the apiserver's watch cache to have evicted the version, which a
    fresh control plane does not do in test time (it serves every event since it started). So
    the 410 alone is injected, by the one stubbed call below; list and watch are real."""
    from kubernetes.client.exceptions import ApiException

    create(core, namespace, 1)
    source = ConfigMapWatchSource(
        namespace, NAME, kubeconfig=kubeconfig, backoff=Backoff(base=30.0, cap=30.0)
    )
    real_watch_once = source._watch_once
    gone = {"raised": 0}

    def watch_once() -> None:
        if not gone["raised"]:
            gone["raised"] = 1
            raise ApiException(status=410, reason="Expired: too old resource version")
        real_watch_once()

    source._watch_once = watch_once  # type: ignore[method-assign]
    seen = Collector()
    source.start(seen)
    try:
        wait_until_sync(lambda: source.relists == 2)  # at once: a 30 s backoff would time out
        update(core, namespace, 2)
        wait_until_sync(lambda: seen.revisions[-1] == 2)
    finally:
        source.stop()
    assert source.errors == 0  # a 410 is routine, not an error


def restricted_kubeconfig(kube_cluster: Any, namespace: str, tmp_path: Path) -> str:
    """A kubeconfig for a ServiceAccount allowed get/list/watch on NAME only (docs/runtime.md)."""
    kubectl = kube_cluster.kubectl
    kubectl("create", "serviceaccount", "agent", "-n", namespace)
    kubectl(
        "create",
        "role",
        "behavior-reader",
        "-n",
        namespace,
        "--verb=get,list,watch",
        "--resource=configmaps",
        f"--resource-name={NAME}",
    )
    kubectl(
        "create",
        "rolebinding",
        "behavior-reader",
        "-n",
        namespace,
        "--role=behavior-reader",
        f"--serviceaccount={namespace}:agent",
    )
    token = kubectl("create", "token", "agent", "-n", namespace).stdout.strip()
    raw = kubectl("config", "view", "--raw", "--minify", "--flatten").stdout
    config = yaml.safe_load(raw)
    config["users"][0]["user"] = {"token": token}
    path = tmp_path / "agent.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_works_with_only_the_documented_rbac(
    core: Any, namespace: str, kube_cluster: Any, tmp_path: Path
) -> None:
    create(core, namespace, 1)
    kubeconfig = restricted_kubeconfig(kube_cluster, namespace, tmp_path)
    source = ConfigMapWatchSource(namespace, NAME, kubeconfig=kubeconfig)
    seen = Collector()
    source.start(seen)
    try:
        assert seen.revisions == [1]
        update(core, namespace, 2)
        wait_until_sync(lambda: seen.revisions == [1, 2])
    finally:
        source.stop()
    assert source.errors == 0

    # The same credentials cannot read another ConfigMap: the rule really is per name.
    other = ConfigMapWatchSource(namespace, "other-behavior", kubeconfig=kubeconfig)
    other_seen = Collector()
    other.start(other_seen)
    try:
        wait_until_sync(lambda: other.errors >= 1)
    finally:
        other.stop()
    assert other_seen.revisions == []
