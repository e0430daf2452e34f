"""The admin kubeconfig of a local control plane (client certificate, inlined as data)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from agent_registry.devcluster.pki import PkiFiles

CONTEXT = "agent-registry-local"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def render(server: str, pki: PkiFiles) -> dict[str, Any]:
    """A kubeconfig with the data inlined, so it keeps working when copied elsewhere."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": _b64(pki.ca_cert),
                },
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": _b64(pki.admin_cert),
                    "client-key-data": _b64(pki.admin_key),
                },
            }
        ],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": "admin", "namespace": "default"},
            }
        ],
        "current-context": CONTEXT,
        "preferences": {},
    }


def write(path: Path, server: str, pki: PkiFiles) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(render(server, pki), sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def server_of(path: Path) -> str:
    """The server URL of the current context of any kubeconfig (used with $KUBECONFIG)."""
    config = yaml.safe_load(path.read_text()) or {}
    current = config.get("current-context")
    contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
    if current in contexts:
        cluster = clusters.get(contexts[current].get("cluster"), {})
    elif clusters:
        cluster = next(iter(clusters.values()))
    else:
        cluster = {}
    server = cluster.get("server")
    if not isinstance(server, str):
        raise ValueError(f"{path}: no server in the current context")
    return server
