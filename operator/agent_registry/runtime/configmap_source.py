"""Behavior straight from the Kubernetes API: watch the agent's ConfigMap.

Why: the kubelet refreshes ConfigMap volumes on its sync period plus a cache TTL (60-120 s
in practice); a watch on one named ConfigMap delivers the change as soon as the apiserver
commits it (sub-second), at the cost of one long-lived request per agent.

How: the official client's Watch, in a daemon thread (the client is synchronous). List once
(field selector on the name) to get the current object and a resourceVersion, then watch from
that version with bookmarks, restarting the watch when the server ends it (timeout_seconds)
from the last version seen. A 410 Gone (version compacted away) means relist; any other
error backs off with jitter and relists. A deleted ConfigMap leaves the last script running.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import kubernetes

from agent_registry.runtime.backoff import Backoff
from agent_registry.runtime.bundle import BundleError, parse_bundle
from agent_registry.runtime.source import BundleCallback

log = logging.getLogger(__name__)

HTTP_GONE = 410

# The client is partly typed at best: treat it as Any once, here.
_k8s: Any = kubernetes
client: Any = _k8s.client
config: Any = _k8s.config
watch: Any = _k8s.watch
ApiException: type[Exception] = _k8s.client.exceptions.ApiException


def make_api_client(kubeconfig: str | None = None) -> Any:
    """An ApiClient from `kubeconfig`, else the pod's in-cluster config, else the default
    kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    try:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    except config.ConfigException:
        return config.new_client_from_config()


class ConfigMapWatchSource:
    def __init__(
        self,
        namespace: str,
        name: str,
        *,
        api_client: Any = None,
        kubeconfig: str | None = None,
        watch_timeout: int = 60,
        backoff: Backoff | None = None,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self._api_client = api_client
        self._kubeconfig = kubeconfig
        self.watch_timeout = watch_timeout
        self.backoff = backoff or Backoff(base=0.5, cap=15.0)
        self.resource_version: str | None = None
        self.relists = 0
        self.errors = 0
        self._on_bundle: BundleCallback | None = None
        self._api: Any = None
        self._watch: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, on_bundle: BundleCallback) -> None:
        if self._thread is not None:
            raise RuntimeError("ConfigMapWatchSource already started")
        self._on_bundle = on_bundle
        if self._api_client is None:
            self._api_client = make_api_client(self._kubeconfig)
        self._api = client.CoreV1Api(self._api_client)
        try:
            self._list()
        except Exception as exc:
            # The watch thread retries; the agent starts without a script meanwhile.
            log.warning("listing ConfigMap %s/%s failed: %s", self.namespace, self.name, exc)
        self._thread = threading.Thread(
            target=self._run, name=f"behavior-cm:{self.namespace}/{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        current = self._watch
        if current is not None:
            current.stop()
            # Watch.stop() only takes effect at the next event; shut the open response so
            # the blocked read returns now instead of at the server's timeout.
            response = getattr(current, "_resp", None)
            shutdown = getattr(response, "shutdown", None)
            if callable(shutdown):
                try:
                    shutdown()
                except Exception:
                    log.debug("closing the watch response failed", exc_info=True)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _list(self) -> None:
        result = self._api.list_namespaced_config_map(
            self.namespace, field_selector=f"metadata.name={self.name}"
        )
        self.resource_version = result.metadata.resource_version
        self.relists += 1
        if not result.items:
            log.warning("ConfigMap %s/%s not found yet", self.namespace, self.name)
        for item in result.items:
            self._deliver(item)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                self._watch_once()
                attempt = 0
            except ApiException as exc:
                if getattr(exc, "status", None) == HTTP_GONE:
                    log.info("watch of %s/%s expired (410); relisting", self.namespace, self.name)
                    self.resource_version = None
                    continue
                attempt = self._failed(exc, attempt)
            except Exception as exc:
                if self._stop.is_set():
                    break
                attempt = self._failed(exc, attempt)

    def _failed(self, exc: Exception, attempt: int) -> int:
        self.errors += 1
        delay = self.backoff.delay(attempt)
        log.warning(
            "watching ConfigMap %s/%s failed (%s); retrying in %.1fs",
            self.namespace,
            self.name,
            exc,
            delay,
        )
        self.resource_version = None  # relist: we may have missed events
        self._stop.wait(delay)
        return attempt + 1

    def _watch_once(self) -> None:
        self._watch = watch.Watch()
        try:
            stream = self._watch.stream(
                self._api.list_namespaced_config_map,
                self.namespace,
                field_selector=f"metadata.name={self.name}",
                resource_version=self.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout,
                _request_timeout=(10, self.watch_timeout + 15),
            )
            for event in stream:
                if self._stop.is_set():
                    break
                kind = event["type"]
                if kind == "BOOKMARK":
                    version = event["raw_object"].get("metadata", {}).get("resourceVersion")
                    if version:
                        self.resource_version = version
                    continue
                obj = event["object"]
                self.resource_version = obj.metadata.resource_version
                if kind in ("ADDED", "MODIFIED"):
                    self._deliver(obj)
                elif kind == "DELETED":
                    log.warning(
                        "ConfigMap %s/%s deleted; keeping the running behavior",
                        self.namespace,
                        self.name,
                    )
        finally:
            self._watch = None

    def _deliver(self, obj: Any) -> None:
        files: dict[str, str | bytes] = dict(obj.data or {})
        origin = f"configmap {self.namespace}/{self.name}@{obj.metadata.resource_version}"
        try:
            bundle = parse_bundle(files, origin=origin)
        except BundleError as exc:
            log.error("%s", exc)
            return
        if self._on_bundle is not None:
            self._on_bundle(bundle)
