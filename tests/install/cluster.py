"""Helpers for the install tests that talk to the control plane: installing the chart's RBAC,
a kubeconfig holding the chart ServiceAccount's token (TokenRequest), and `kubectl auth can-i`."""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from install.chart import Manifest

RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
CLUSTER_SCOPED = ("ClusterRole", "ClusterRoleBinding")


def manifests_yaml(manifests: list[Manifest]) -> str:
    return yaml.safe_dump_all(manifests, sort_keys=False)


def token_kubeconfig(cluster: Any, namespace: str, service_account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (a TokenRequest-issued token)."""
    token = cluster.kubectl(
        "-n", namespace, "create", "token", service_account, "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    context_name = admin.get("current-context") or admin["contexts"][0]["name"]
    context = next(c for c in admin["contexts"] if c["name"] == context_name)["context"]
    cluster_entry = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster_entry],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [
            {
                "name": "sa",
                "context": {
                    "cluster": cluster_entry["name"],
                    "user": service_account,
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def resource_arg(group: str, resource: str) -> tuple[str, list[str]]:
    """("agents/status", group) -> ("agents.agents.singularity.dev", ["--subresource=status"])."""
    base, _, sub = resource.partition("/")
    name = f"{base}.{group}" if group else base
    return name, ([f"--subresource={sub}"] if sub else [])


def can_i(
    kubectl_path: str, kubeconfig: Path, verb: str, group: str, resource: str, namespace: str | None
) -> bool:
    name, extra = resource_arg(group, resource)
    argv = [kubectl_path, f"--kubeconfig={kubeconfig}", "auth", "can-i", verb, name, *extra]
    argv += [f"--namespace={namespace}"] if namespace else []
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    answer = done.stdout.strip()
    # exit 0 "yes", exit 1 "no"; anything else (an error) must not pass as either.
    assert (done.returncode, answer) in {(0, "yes"), (1, "no")}, (argv, done.stdout, done.stderr)
    return answer == "yes"


def can_i_many(
    kubectl_path: str, kubeconfig: Path, questions: list[tuple[str, str, str, str | None]]
) -> dict[tuple[str, str, str, str | None], bool]:
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = pool.map(lambda q: can_i(kubectl_path, kubeconfig, *q), questions)
        return dict(zip(questions, answers, strict=True))


_ROW = re.compile(
    r"^(?P<resource>\S*)\s+\[(?P<urls>[^\]]*)\]\s+\[(?P<names>[^\]]*)\]\s+\[(?P<verbs>[^\]]*)\]\s*$"
)


def can_i_list(kubectl_path: str, kubeconfig: Path, namespace: str) -> dict[str, frozenset[str]]:
    """Everything the user may do on resources in `namespace` (cluster-wide grants included)."""
    done = subprocess.run(
        [
            kubectl_path,
            f"--kubeconfig={kubeconfig}",
            "auth",
            "can-i",
            "--list",
            f"--namespace={namespace}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    table: dict[str, set[str]] = {}
    for line in done.stdout.splitlines()[1:]:
        row = _ROW.match(line)
        assert row, f"unparsed can-i --list row: {line!r}"
        if not row["resource"]:
            continue  # non-resource URLs (discovery, /healthz...): granted to everyone
        assert not row["names"], f"unexpected resourceNames grant: {line!r}"
        table.setdefault(row["resource"], set()).update(row["verbs"].split())
    return {k: frozenset(v) for k, v in table.items()}


def expected_list(
    baseline: dict[str, frozenset[str]], *tables: dict[tuple[str, str], frozenset[str]]
) -> dict[str, frozenset[str]]:
    """`baseline` (what any ServiceAccount may do: the default ClusterRoles every authenticated
    user is bound to, which vary with the Kubernetes version) plus our (group, resource) tables,
    in `can-i --list`'s naming (resource.group[/sub])."""
    merged: dict[str, set[str]] = {k: set(v) for k, v in baseline.items()}
    for table in tables:
        for (group, resource), verbs in table.items():
            base, _, sub = resource.partition("/")
            name = (f"{base}.{group}" if group else base) + (f"/{sub}" if sub else "")
            merged.setdefault(name, set()).update(verbs)
    return {k: frozenset(v) for k, v in merged.items()}
