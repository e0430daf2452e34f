"""A control plane to work against, whichever way it comes: $KUBECONFIG, the shared dev cluster,
or a private one started here (and stopped by whoever opened it).

Used by the pytest fixtures (tests/fixtures/kube.py) and by `agentreg dev demo`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent_registry.devcluster import cluster as lifecycle
from agent_registry.devcluster import kubeconfig as kubeconfig_file
from agent_registry.devcluster import leftovers
from agent_registry.devcluster.build import Say, ensure_binaries, ensure_kubectl
from agent_registry.devcluster.layout import (
    PRIVATE_PREFIX,
    ClusterLayout,
    load_versions,
    shared_cluster_layout,
)
from agent_registry.devcluster.state import ClusterState


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call; str() carries kubectl's own error message (the server's)."""

    def __str__(self) -> str:
        args = " ".join(str(a) for a in list(self.cmd)[2:])
        return f"kubectl {args} failed (exit {self.returncode}): {str(self.stderr).strip()}"


@dataclass
class KubeCluster:
    """Where the control plane is and how to talk to it."""

    kubeconfig: str
    server: str
    kubectl_path: str
    origin: str  # "KUBECONFIG", "shared" or "private"
    _layout: ClusterLayout | None = field(default=None, repr=False)
    _state: ClusterState | None = field(default=None, repr=False)

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Runs kubectl against this cluster; check=True raises KubectlError (stderr inside)."""
        argv: Sequence[str] = [self.kubectl_path, f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, argv, output=result.stdout, stderr=result.stderr)
        return result

    @property
    def started_here(self) -> bool:
        return self.origin == "private" and self._state is not None

    @property
    def process_ids(self) -> dict[str, int]:
        """etcd's and kube-apiserver's pids when this object started them (benchmarks read
        their CPU time); empty for a shared or an explicit cluster."""
        if not self.started_here or self._state is None:
            return {}
        return {record.name: record.pid for record in self._state.processes}

    def stop(self) -> None:
        """Stops the control plane if (and only if) this object started it. Idempotent."""
        if self._layout is None or self._state is None or self.origin != "private":
            return
        layout, state = self._layout, self._state
        self._state = None
        lifecycle.stop(layout, state)
        shutil.rmtree(layout.root, ignore_errors=True)


def from_kubeconfig(path: str, say: Say = print) -> KubeCluster:
    first = path.split(os.pathsep)[0]
    kubectl = shutil.which("kubectl") or str(ensure_kubectl(load_versions(), say))
    return KubeCluster(
        kubeconfig=path,
        server=kubeconfig_file.server_of(Path(first)),
        kubectl_path=kubectl,
        origin="KUBECONFIG",
    )


def open_cluster(*, say: Say = print, reuse_shared: bool | None = None) -> KubeCluster:
    """$KUBECONFIG if set; else the shared dev cluster if it is up; else a private one.

    reuse_shared defaults to True unless AGENTREG_KUBE_REUSE=0 (always start a private one).

    A private cluster dies with this process (parent-death signal) and is stopped by
    KubeCluster.stop(); the caller must call it (pytest does so in the fixture's teardown).
    """
    explicit = os.environ.get("KUBECONFIG")
    if explicit:
        return from_kubeconfig(explicit, say)
    versions = load_versions()
    if reuse_shared is None:
        reuse_shared = os.environ.get("AGENTREG_KUBE_REUSE", "1") != "0"
    if reuse_shared:
        shared = lifecycle.find_ready_shared()
        if shared is not None:
            kubectl = ensure_kubectl(versions, say)
            return KubeCluster(
                kubeconfig=shared.kubeconfig,
                server=shared.server,
                kubectl_path=str(kubectl),
                origin="shared",
                _layout=shared_cluster_layout(),
                _state=shared,
            )
    binaries = ensure_binaries(versions, say)
    for path in leftovers.sweep():
        say(f"removed {path} (left behind by a killed session)")
    layout = ClusterLayout(Path(tempfile.mkdtemp(prefix=PRIVATE_PREFIX)))
    try:
        state = lifecycle.start(
            layout,
            binaries,
            kubernetes_version=versions.kubernetes,
            die_with_parent=True,
            say=say,
        )
    except BaseException:
        # The error carries the log's tail; the temp dir would only be litter.
        shutil.rmtree(layout.root, ignore_errors=True)
        raise
    return KubeCluster(
        kubeconfig=state.kubeconfig,
        server=state.server,
        kubectl_path=str(binaries.kubectl),
        origin="private",
        _layout=layout,
        _state=state,
    )
