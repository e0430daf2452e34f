"""Helpers shared by the control plane tests."""

from __future__ import annotations

import json
from typing import Any

import yaml

from agent_registry.devcluster import KubeCluster


def apply(kube: KubeCluster, *objects: dict[str, Any], namespace: str | None = None) -> None:
    args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
    kube.kubectl(*args, input=yaml.safe_dump_all(objects))


def get_json(kube: KubeCluster, *args: str) -> Any:
    return json.loads(kube.kubectl("get", *args, "-o", "json").stdout)
