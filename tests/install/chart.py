"""Rendering the Helm chart and the kustomize base for the install tests (no cluster needed).

helm is built from the Go module proxy by hack/helm/build.sh and cached by version outside the repo;
AGENTREG_HELM points at an existing helm binary instead.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "agent-registry"
MANIFESTS = REPO / "manifests"
CRDS = REPO / "crds"
HELM_BUILD = REPO / "hack" / "helm" / "build.sh"

# The release the kustomize base is rendered from (hack/helm/render-manifests.py uses the same).
BASE_RELEASE = "agent-registry"
BASE_NAMESPACE = "agent-registry"

# Labels only a Helm release carries; the kustomize base drops them, nothing else differs.
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")

Manifest = dict[str, Any]


@cache
def helm_binary() -> str:
    override = os.environ.get("AGENTREG_HELM")
    if override:
        return override
    # The first call builds helm (minutes); later calls print the cached path at once.
    done = subprocess.run(
        [str(HELM_BUILD)], check=True, capture_output=True, text=True, timeout=1800
    )
    return done.stdout.strip().splitlines()[-1]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm_binary(), *args], check=check, capture_output=True, text=True, timeout=300
    )


def load_all(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def template_text(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = BASE_RELEASE,
    namespace: str = BASE_NAMESPACE,
    extra: Sequence[str] = (),
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`helm template` with `values` written to a file (exactly what `-f values.yaml` does)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(dict(values or {}), f)
        f.flush()
        return helm(
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "-f",
            f.name,
            *extra,
            check=check,
        )


def render(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = BASE_RELEASE,
    namespace: str = BASE_NAMESPACE,
    include_crds: bool = False,
) -> list[Manifest]:
    extra = ["--include-crds"] if include_crds else []
    return load_all(template_text(values, release=release, namespace=namespace, extra=extra).stdout)


def find(manifests: Iterable[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]


def one(manifests: Iterable[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = find(manifests, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def without_helm_labels(manifest: Manifest) -> Manifest:
    """The manifest as the kustomize base carries it: without Helm's release labels."""

    def strip(obj: Any) -> Any:
        if isinstance(obj, dict):
            out = {}
            for key, value in obj.items():
                if key == "labels" and isinstance(value, dict):
                    value = {k: v for k, v in value.items() if k not in HELM_ONLY_LABELS}
                out[key] = strip(value)
            return out
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    result: Manifest = strip(manifest)
    return result


def key(manifest: Manifest) -> tuple[str, str, str]:
    meta = manifest["metadata"]
    return (manifest["kind"], meta.get("namespace", ""), meta["name"])


def crd_files(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(directory.glob("*.yaml"))}
