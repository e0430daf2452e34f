"""Lifecycle of a local control plane: start etcd + kube-apiserver, wait until ready, stop.

`start()` / `stop()` work on any ClusterLayout (a test session uses a private temp dir);
`up()` / `down()` / `status()` manage the shared dev cluster at a known path, reused across runs.
"""

from __future__ import annotations

import fcntl
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agent_registry.devcluster import flags, kubeconfig, leftovers, pki, processes
from agent_registry.devcluster import state as state_store
from agent_registry.devcluster.build import Binaries, Say, ensure_binaries
from agent_registry.devcluster.errors import DevClusterError
from agent_registry.devcluster.layout import (
    ClusterLayout,
    etcd_data_dir,
    load_versions,
    shared_cluster_layout,
)
from agent_registry.devcluster.state import ClusterState, ProcessRecord

READY_TIMEOUT = 120.0  # seconds; a warm start takes ~5-10 s, a loaded 2-core machine needs slack


def _log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return "(no log)"


def _ssl_context(files: pki.PkiFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(files.ca_cert))
    context.load_cert_chain(str(files.admin_cert), str(files.admin_key))
    return context


def _get(url: str, context: ssl.SSLContext | None = None, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):
        return 0


def _wait_until(
    probe_url: str,
    context: ssl.SSLContext | None,
    process: ProcessRecord,
    deadline: float,
) -> None:
    while time.monotonic() < deadline:
        if _get(probe_url, context) == 200:
            return
        if not processes.alive(process.pid):
            raise DevClusterError(
                f"{process.name} exited while starting; log {process.log}:\n"
                f"{_log_tail(Path(process.log))}"
            )
        time.sleep(0.2)
    raise DevClusterError(
        f"{process.name} was not ready after {READY_TIMEOUT:.0f}s; log {process.log}:\n"
        f"{_log_tail(Path(process.log))}"
    )


def ready(state: ClusterState, layout: ClusterLayout) -> bool:
    files = pki.PkiFiles(layout.pki)
    if not state.all_running() or not files.complete():
        return False
    return _get(f"{state.server}/readyz", _ssl_context(files)) == 200


def start(
    layout: ClusterLayout,
    binaries: Binaries,
    *,
    kubernetes_version: str,
    die_with_parent: bool,
    say: Say = print,
) -> ClusterState:
    """Starts a fresh control plane (empty etcd) whose files live in layout.root."""
    began = time.monotonic()
    layout.root.mkdir(parents=True, exist_ok=True)
    files = pki.PkiFiles(layout.pki)
    if not files.complete():
        # Kept across restarts: a kubeconfig copied elsewhere keeps its credentials.
        files = pki.generate(layout.pki)
    data_dir = etcd_data_dir(layout)
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)

    etcd_port, peer_port, api_port = (processes.free_port() for _ in range(3))
    records: list[ProcessRecord] = []
    try:
        etcd_log = layout.logs / "etcd.log"
        etcd_proc = processes.spawn(
            flags.etcd_args(
                binaries.etcd, data_dir=data_dir, client_port=etcd_port, peer_port=peer_port
            ),
            log_path=etcd_log,
            die_with_parent=die_with_parent,
        )
        records.append(
            ProcessRecord(
                name="etcd", pid=etcd_proc.pid, binary=str(binaries.etcd), log=str(etcd_log)
            )
        )
        deadline = time.monotonic() + READY_TIMEOUT
        _wait_until(f"http://127.0.0.1:{etcd_port}/health", None, records[-1], deadline)

        api_log = layout.logs / "kube-apiserver.log"
        api_proc = processes.spawn(
            flags.apiserver_args(
                binaries.kube_apiserver,
                pki=files,
                secure_port=api_port,
                etcd_port=etcd_port,
                cert_dir=layout.root / "apiserver-certs",
            ),
            log_path=api_log,
            die_with_parent=die_with_parent,
        )
        records.append(
            ProcessRecord(
                name="kube-apiserver",
                pid=api_proc.pid,
                binary=str(binaries.kube_apiserver),
                log=str(api_log),
            )
        )
        server = f"https://127.0.0.1:{api_port}"
        say(f"waiting for kube-apiserver {kubernetes_version} on {server} ...")
        _wait_until(f"{server}/readyz", _ssl_context(files), records[-1], deadline)
    except BaseException:
        # Also on KeyboardInterrupt: never leave half a cluster behind.
        for record in reversed(records):
            processes.stop_group(record.pid)
        shutil.rmtree(data_dir, ignore_errors=True)
        raise

    kubeconfig.write(layout.kubeconfig, server, files)
    cluster = ClusterState(
        kubernetes_version=kubernetes_version,
        server=server,
        kubeconfig=str(layout.kubeconfig),
        etcd_data_dir=str(data_dir),
        started_at=time.time(),
        start_seconds=round(time.monotonic() - began, 2),
        processes=tuple(records),
    )
    state_store.save(layout.state, cluster)
    say(f"control plane ready in {cluster.start_seconds:.1f}s: {server}")
    say(f"kubeconfig: {layout.kubeconfig}")
    return cluster


def stop(layout: ClusterLayout, cluster: ClusterState | None = None) -> bool:
    """Stops the processes (apiserver first, then etcd) and drops etcd's data. Idempotent."""
    cluster = cluster or state_store.load(layout.state)
    if cluster is None:
        return False
    for record in reversed(cluster.processes):
        if record.running():
            processes.stop_group(record.pid)
    shutil.rmtree(cluster.etcd_data_dir, ignore_errors=True)
    layout.state.unlink(missing_ok=True)
    return True


@contextmanager
def _locked(layout: ClusterLayout) -> Iterator[None]:
    layout.root.mkdir(parents=True, exist_ok=True)
    with layout.lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class UpResult:
    state: ClusterState
    started: bool  # False when an already running cluster was reused
    binaries: Binaries


def up(say: Say = print, layout: ClusterLayout | None = None) -> UpResult:
    """Idempotent: reuses the running shared cluster, else (builds and) starts it."""
    layout = layout or shared_cluster_layout()
    versions = load_versions()
    with _locked(layout):
        current = state_store.load(layout.state)
        binaries = ensure_binaries(versions, say)
        if (
            current is not None
            and current.kubernetes_version == versions.kubernetes
            and ready(current, layout)
        ):
            return UpResult(current, started=False, binaries=binaries)
        if current is not None:
            stop(layout, current)  # half-dead or another version: start over
        leftovers.sweep()
        cluster = start(
            layout,
            binaries,
            kubernetes_version=versions.kubernetes,
            die_with_parent=False,  # it outlives `agentreg dev cluster up` by design
            say=say,
        )
        return UpResult(cluster, started=True, binaries=binaries)


def down(layout: ClusterLayout | None = None) -> bool:
    layout = layout or shared_cluster_layout()
    with _locked(layout):
        return stop(layout)


def status(layout: ClusterLayout | None = None) -> tuple[ClusterState | None, bool]:
    """(state or None, ready)."""
    layout = layout or shared_cluster_layout()
    current = state_store.load(layout.state)
    return current, current is not None and ready(current, layout)


def find_ready_shared() -> ClusterState | None:
    """The shared dev cluster when it is up and ready (test sessions reuse it), else None."""
    current, is_ready = status()
    return current if is_ready else None


__all__ = [
    "UpResult",
    "down",
    "find_ready_shared",
    "ready",
    "start",
    "status",
    "stop",
    "up",
]
