#!/usr/bin/env python3
"""Regenerate the kustomize base in manifests/ from the Helm chart's defaults, and copy crds/ into the
chart and the base. tests/install/ fails when the committed files drift from what this writes.

    hack/helm/render-manifests.py      (after changing the chart or `make crds`)

The base is `helm template` of the chart with its default values (release and namespace
`agent-registry`), one file per chart template, minus the two labels only a Helm release carries.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "agent-registry"
MANIFESTS = REPO / "manifests"
RELEASE = NAMESPACE = "agent-registry"
HEADER = "# Generated from helm/agent-registry by hack/helm/render-manifests.py: do not edit.\n"
HELM_ONLY_LABEL = re.compile(r"^\s*(helm\.sh/chart|app\.kubernetes\.io/managed-by):.*\n", re.M)
SOURCE = re.compile(r"^# Source: [^/]+/templates/(?P<file>\S+)\n", re.M)


def helm_binary() -> str:
    done = subprocess.run(
        [str(REPO / "hack" / "helm" / "build.sh")], check=True, capture_output=True, text=True
    )
    return done.stdout.strip().splitlines()[-1]


def copy_crds() -> list[str]:
    names = []
    for target in (CHART / "crds", MANIFESTS / "crds"):
        target.mkdir(parents=True, exist_ok=True)
        for stale in target.glob("*.yaml"):
            stale.unlink()
        for crd in sorted((REPO / "crds").glob("*.yaml")):
            shutil.copyfile(crd, target / crd.name)
            names.append(crd.name)
    return sorted(set(names))


def render() -> dict[str, str]:
    out = subprocess.run(
        [helm_binary(), "template", RELEASE, str(CHART), "--namespace", NAMESPACE],
        check=True, capture_output=True, text=True,
    ).stdout
    files: dict[str, str] = {}
    # helm prints "---\n# Source: chart/templates/x.yaml\n<doc>" per document.
    for chunk in out.split("---\n"):
        match = SOURCE.search(chunk)
        if match is None:
            continue
        body = HELM_ONLY_LABEL.sub("", SOURCE.sub("", chunk)).strip("\n")
        if not body:
            continue
        name = match["file"]
        files[name] = files.get(name, "") + "---\n" + body + "\n"
    return files


def main() -> int:
    crds = copy_crds()
    files = render()
    for old in MANIFESTS.glob("*.yaml"):
        if old.name not in ("kustomization.yaml", "namespace.yaml"):
            old.unlink()
    for name, text in sorted(files.items()):
        (MANIFESTS / name).write_text(HEADER + text)
    (MANIFESTS / "namespace.yaml").write_text(
        HEADER + f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n"
    )
    resources = ["namespace.yaml", *(f"crds/{c}" for c in crds), *sorted(files)]
    kustomization = (
        HEADER
        + "# The operator with the chart's defaults: `kubectl apply -k manifests/`.\n"
        + "# Examples are not part of it: `kubectl apply -k manifests/examples/` (or -f).\n"
        + "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        + f"namespace: {NAMESPACE}\n"
        + "labels:\n  - pairs:\n      app.kubernetes.io/managed-by: kustomize\n"
        + "resources:\n"
        + "".join(f"  - {r}\n" for r in resources)
    )
    (MANIFESTS / "kustomization.yaml").write_text(kustomization)
    print(f"wrote {len(files)} templates and {len(crds)} CRDs into {MANIFESTS.relative_to(REPO)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
