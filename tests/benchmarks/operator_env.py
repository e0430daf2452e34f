"""What the fault benchmarks share: the local control plane with the CRDs, a throwaway
PostgreSQL, namespaces, migrated databases and `agentreg run` processes (the e2e tests' own
helpers, so a benchmark runs the operator exactly as the tests do)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GROUP = "agents.singularity.dev"

from benchmarks.machine import cpu_model  # noqa: E402
from e2e.conftest import CRDS_DIR, Kubectl, OperatorProcess, operator_process  # noqa: E402
from fixtures.pgserver import PostgresServer, find_bin_dir  # noqa: E402


def machine_line() -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()
    return (
        f"Machine: `nproc` = {os.cpu_count()}, {cpu_model()}, {platform.system()}"
        f" {platform.release()}; PostgreSQL {find_bin_dir().parent.name}, Python"
        f" {platform.python_version()}; run {now}, load average {load[0]:.1f} / {load[1]:.1f}"
        f" / {load[2]:.1f} (1/5/15 min) at the end, on a machine shared with other work."
    )


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class OperatorEnv:
    """Control plane (+ CRDs) and one PostgreSQL server; closed on exit."""

    def __init__(self, pg_settings: Mapping[str, str]) -> None:
        from agent_registry.devcluster import open_cluster

        self.workdir = Path(tempfile.mkdtemp(prefix="agentreg-bench-"))
        self.cluster: Any = open_cluster(say=lambda m: say(f"[kube] {m}"))
        self.server = PostgresServer(settings=dict(pg_settings))
        try:
            self.cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS_DIR))
            for plural in ("agents", "agentbehaviors", "behaviorpolicies", "behaviorexperiments"):
                self.cluster.kubectl(
                    "wait", "--for=condition=Established", "--timeout=60s", f"crd/{plural}.{GROUP}"
                )
            self.server.start()
        except BaseException:
            self.close()
            raise
        self._operators: list[OperatorProcess] = []

    def namespace(self, prefix: str) -> Kubectl:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.cluster.kubectl("create", "namespace", name)
        return Kubectl(self.cluster, name)

    def database(self, name: str) -> str:
        from agent_registry.registry import migrate

        url = self.server.create_database(name)
        migrate(url)
        return url

    def operator(
        self, namespace: str, database_url: str, *, extra: tuple[str, ...] = ()
    ) -> OperatorProcess:
        operator = operator_process(
            self.cluster.kubeconfig,
            namespace,
            database_url,
            self.workdir / f"operator-{namespace}.log",
            extra=extra,
        )
        self._operators.append(operator)
        return operator

    def close(self, *, keep_logs: bool = False) -> None:
        for operator in getattr(self, "_operators", []):
            operator.stop()
        self.server.destroy()
        self.cluster.stop()
        if keep_logs:
            say(f"operator logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> OperatorEnv:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(keep_logs=exc is not None)
