"""The agent runtime: run a Lua behavior, hot-reload it, report how tasks went.

Library use (see docs/runtime.md):

    host = BehaviorHost()
    source = DirectorySource("/etc/agent-behavior")      # or ConfigMapWatchSource(ns, name)
    source.start(host.load)                              # loads now, then on every change
    run = host.run_task({"id": 1})                       # run.result, or run.error
    reporter = OutcomeReporter(AgentRef.parse("ns/name"), registry_url, status=host)
    reporter.record(run.ok, behavior_sha256=run.sha256)  # credited to the script that ran

Modules: bundle (what a behavior ConfigMap holds), kubelet_volume (the kubelet's atomic
writer), inotify + directory_source, configmap_source, host, outcome_buffer + backoff +
reporter (+ reporter_thread for synchronous agents), simulate, http_api + sidecar.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent_registry.runtime.backoff import Backoff
    from agent_registry.runtime.bundle import (
        BehaviorBundle,
        BundleError,
        BundleScript,
        parse_bundle,
    )
    from agent_registry.runtime.configmap_source import ConfigMapWatchSource
    from agent_registry.runtime.directory_source import DirectorySource
    from agent_registry.runtime.host import BehaviorHost, LoadEvent, NoBehaviorLoaded, TaskRun
    from agent_registry.runtime.kubelet_volume import write_configmap_volume
    from agent_registry.runtime.outcome_buffer import OutcomeBuffer
    from agent_registry.runtime.reporter import AgentRef, OutcomeReporter, ReporterStats
    from agent_registry.runtime.reporter_thread import ReporterThread
    from agent_registry.runtime.sidecar import Sidecar
    from agent_registry.runtime.source import BehaviorSource

# Imported on first use: a process that only reports outcomes need not load lupa, and one
# that reads a directory need not load the Kubernetes client.
_EXPORTS = {
    "AgentRef": "reporter",
    "Backoff": "backoff",
    "BehaviorBundle": "bundle",
    "BehaviorHost": "host",
    "BehaviorSource": "source",
    "BundleError": "bundle",
    "BundleScript": "bundle",
    "ConfigMapWatchSource": "configmap_source",
    "DirectorySource": "directory_source",
    "LoadEvent": "host",
    "NoBehaviorLoaded": "host",
    "OutcomeBuffer": "outcome_buffer",
    "OutcomeReporter": "reporter",
    "ReporterStats": "reporter",
    "ReporterThread": "reporter_thread",
    "Sidecar": "sidecar",
    "TaskRun": "host",
    "parse_bundle": "bundle",
    "write_configmap_volume": "kubelet_volume",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "AgentRef",
    "Backoff",
    "BehaviorBundle",
    "BehaviorHost",
    "BehaviorSource",
    "BundleError",
    "BundleScript",
    "ConfigMapWatchSource",
    "DirectorySource",
    "LoadEvent",
    "NoBehaviorLoaded",
    "OutcomeBuffer",
    "OutcomeReporter",
    "ReporterStats",
    "ReporterThread",
    "Sidecar",
    "TaskRun",
    "parse_bundle",
    "write_configmap_volume",
]
