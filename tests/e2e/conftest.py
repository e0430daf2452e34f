"""End-to-end fixtures: the operator as a subprocess (`agentreg run`) against the local control
plane and the throwaway PostgreSQL, plus helpers to wait for what it writes.

Each test gets its own namespace and its own database; the operator serves only that namespace,
so tests never see each other's objects. No pods run here (no kubelet): agent runtimes, where a
test needs one, are local processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = ROOT / "crds"
EXAMPLES_DIR = ROOT / "manifests" / "examples"
AGENTREG = Path(sys.executable).with_name("agentreg")
WEBHOOK_CONFIGURATION = "agent-registry.agents.singularity.dev"
GROUP = "agents.singularity.dev"

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float = 60.0,
    interval: float = 0.25,
    what: str = "condition",
    diagnose: Callable[[], str] | None = None,
) -> T:
    """Poll `probe` until it returns something truthy; fail with `diagnose()` after timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except Exception as error:  # probes read half-written state; retry until the deadline
            last_error = error
        time.sleep(interval)
    details = diagnose() if diagnose else ""
    pytest.fail(
        f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})\n{details}"
    )


@dataclass
class Kubectl:
    """kubectl bound to the test cluster and namespace."""

    cluster: Any
    namespace: str

    def __call__(self, *args: str, check: bool = True, input: str | None = None) -> str:
        result = self.cluster.kubectl("-n", self.namespace, *args, check=False, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return str(result.stdout) if result.returncode == 0 else str(result.stderr)

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = self.cluster.kubectl(
            "-n", self.namespace, *args, check=False, input=input
        )
        return result

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = self.run("get", kind, name, "-o", "json")
        if result.returncode != 0:
            return None
        obj: dict[str, Any] = json.loads(result.stdout)
        return obj

    def items(self, kind: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(self("get", kind, "-o", "json"))["items"]
        return items


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return None


def condition_is(obj: dict[str, Any] | None, type_: str, status: str) -> bool:
    found = condition(obj, type_)
    return found is not None and found.get("status") == status


@dataclass
class OperatorProcess:
    """`agentreg run` as a child process; its log is kept for failure messages."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    api_url: str
    health_url: str
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = field(default=0)

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = self.log_path.open("ab")
        log.write(f"\n===== start #{self.restarts} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.restarts += 1
        wait_for(self._healthy, timeout=60, what="operator liveness", diagnose=self.log_tail)

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"operator exited with {self.proc.returncode}\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(self.health_url, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self, timeout: float = 20.0) -> None:
        """Graceful stop (SIGTERM), as Kubernetes does."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash, mid-way through whatever it was doing."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no operator log)"
        return "operator log (tail):\n" + "\n".join(text[-lines:])


def operator_process(
    kubeconfig: str,
    namespace: str,
    database_url: str,
    log_path: Path,
    *,
    status_interval: float = 1.0,
    delete_timeout: float = 20.0,
    extra: tuple[str, ...] = (),
) -> OperatorProcess:
    """`agentreg run` for one namespace on free local ports (not started)."""
    api_port, health_port = free_port(), free_port()
    args = [
        str(AGENTREG),
        "run",
        "--database-url",
        database_url,
        "--namespace",
        namespace,
        "--api-listen",
        f"127.0.0.1:{api_port}",
        "--health-listen",
        f"127.0.0.1:{health_port}",
        "--registry-url",
        f"http://127.0.0.1:{api_port}",
        "--status-interval",
        str(status_interval),
        "--delete-timeout",
        str(delete_timeout),
        "--kubeconfig",
        kubeconfig,
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTREG_")}
    env["KUBECONFIG"] = kubeconfig
    env["PYTHONUNBUFFERED"] = "1"
    return OperatorProcess(
        args=args,
        env=env,
        log_path=log_path,
        api_url=f"http://127.0.0.1:{api_port}",
        health_url=f"http://127.0.0.1:{health_port}/healthz",
    )


@pytest.fixture(scope="session")
def crds(kube_cluster: Any) -> None:
    """The CRDs from crds/, established (cluster-scoped; applied once per session)."""
    kube_cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS_DIR))
    for plural in ("agents", "agentbehaviors", "behaviorpolicies", "behaviorexperiments"):
        kube_cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", f"crd/{plural}.{GROUP}"
        )


@pytest.fixture
def kubectl(kube_cluster: Any, namespace: str, crds: None) -> Kubectl:
    return Kubectl(kube_cluster, namespace)


OperatorFactory = Callable[..., OperatorProcess]


@pytest.fixture
def operator_factory(
    kube_cluster: Any, namespace: str, crds: None, tmp_path: Path
) -> Iterator[OperatorFactory]:
    """Make (and start) operators for this test's namespace; all are stopped at teardown."""
    started: list[OperatorProcess] = []
    webhooks: list[bool] = []

    def make(
        database_url: str,
        *,
        webhook: bool = False,
        status_interval: float = 1.0,
        delete_timeout: float = 20.0,
        start: bool = True,
        extra: tuple[str, ...] = (),
    ) -> OperatorProcess:
        operator = operator_process(
            kube_cluster.kubeconfig,
            namespace,
            database_url,
            tmp_path / f"operator-{len(started)}.log",
            status_interval=status_interval,
            delete_timeout=delete_timeout,
            extra=extra,
        )
        if webhook:
            operator.args += ["--webhook", "--webhook-listen", f"127.0.0.1:{free_port()}"]
            webhooks.append(True)
        started.append(operator)
        if start:
            operator.start()
        return operator

    yield make
    for operator in started:
        operator.stop()
    if webhooks:
        # A webhook left behind by a killed operator would refuse every AgentBehavior.
        kube_cluster.kubectl(
            "delete",
            "validatingwebhookconfiguration",
            WEBHOOK_CONFIGURATION,
            "--ignore-not-found",
            check=False,
        )


@pytest.fixture
def operator(operator_factory: OperatorFactory, postgres_url: str) -> OperatorProcess:
    """The operator on a fresh migrated PostgreSQL database, serving the test's namespace."""
    return operator_factory(postgres_url)


def diagnose(kubectl: Kubectl, operator: OperatorProcess | None = None) -> Callable[[], str]:
    def report() -> str:
        parts = [
            kubectl(
                "get", "agents,agentbehaviors,configmaps,deployments", "-o", "wide", check=False
            ),
            kubectl("get", "agents,agentbehaviors", "-o", "yaml", check=False)[-6000:],
        ]
        if operator is not None:
            parts.append(operator.log_tail())
        return "\n".join(parts)

    return report
