"""Where the local control plane lives: pinned versions, the cache dir and the files in it.

Binaries are cached by version outside the repository (never committed); a running cluster keeps
its certificates, kubeconfig, logs and state in a directory of its own, so the shared dev cluster
(`agentreg dev cluster up`) and a private one started by a test session never share files.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

# operator/agent_registry/devcluster/layout.py: the repository root is parents[3].
REPO_ROOT = Path(__file__).resolve().parents[3]
HACK_DIR = REPO_ROOT / "hack" / "controlplane"


# Private clusters (one per test session) live in temp dirs named with this prefix.
PRIVATE_PREFIX = "agentreg-kube-"


@dataclass(frozen=True)
class Versions:
    kubernetes: str
    etcd: str
    kubectl_wheel: str


def parse_versions_env(text: str) -> Versions:
    """Parses hack/controlplane/versions.env (KEY=VALUE lines, # comments)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    try:
        return Versions(
            kubernetes=values["KUBERNETES_VERSION"],
            etcd=values["ETCD_VERSION"],
            kubectl_wheel=values["KUBECTL_WHEEL"],
        )
    except KeyError as missing:
        raise ValueError(f"versions.env lacks {missing}") from None


def load_versions(hack_dir: Path = HACK_DIR) -> Versions:
    path = hack_dir / "versions.env"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the local control plane is built from a source checkout of "
            "agent-registry (hack/controlplane/); set KUBECONFIG to use an existing cluster instead"
        )
    return parse_versions_env(path.read_text())


def cache_root() -> Path:
    """AGENTREG_CACHE_DIR, else $XDG_CACHE_HOME/agent-registry, else ~/.cache/agent-registry."""
    explicit = os.environ.get("AGENTREG_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "agent-registry"


@dataclass(frozen=True)
class BinaryLayout:
    """The cached binaries of one Kubernetes version."""

    root: Path

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def kube_apiserver(self) -> Path:
        return self.bin_dir / "kube-apiserver"

    @property
    def etcd(self) -> Path:
        return self.bin_dir / "etcd"

    @property
    def kubectl_target(self) -> Path:
        return self.root / "kubectl"

    @property
    def kubectl(self) -> Path:
        return self.kubectl_target / "bin" / "kubectl"

    @property
    def build_log(self) -> Path:
        return self.root / "build.log"

    @property
    def lock(self) -> Path:
        return self.root / "build.lock"


def binary_layout(versions: Versions) -> BinaryLayout:
    return BinaryLayout(cache_root() / "controlplane" / versions.kubernetes)


@dataclass(frozen=True)
class ClusterLayout:
    """The files of one running control plane."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def lock(self) -> Path:
        return self.root / "cluster.lock"


def shared_cluster_layout() -> ClusterLayout:
    """The dev cluster of `agentreg dev cluster up`: one per user, at a known path."""
    return ClusterLayout(cache_root() / "cluster")


def etcd_data_dir(cluster: ClusterLayout) -> Path:
    """etcd's data on tmpfs when there is one: a test cluster needs no durability, only speed."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        # One dir per cluster dir, so two clusters of the same user never share a data dir.
        digest = hashlib.sha256(str(cluster.root.resolve()).encode()).hexdigest()[:12]
        tag = f"{os.getuid()}-{digest}"
        return shm / f"agent-registry-etcd-{tag}"
    return cluster.root / "etcd-data"
