"""Hot reload end to end: an agent runtime (API-watch source, real TokenRequest token) runs the
behavior; editing the AgentBehavior's script reloads it within 2 s, without any restart, and the
Agent's status shows the confirmed revision.

The runtime is a local process (no kubelet here); the token file stands in for the projected
ServiceAccount token volume.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import (
    AGENTREG,
    EXAMPLES_DIR,
    Kubectl,
    OperatorProcess,
    condition_is,
    diagnose,
    free_port,
    wait_for,
)
from e2e.test_operator_examples import converged, history

pytestmark = [pytest.mark.e2e, pytest.mark.kube, pytest.mark.postgres]

RELOAD_DEADLINE_SECONDS = 2.0


class RuntimeProcess:
    def __init__(self, tmp_path: Path, kubeconfig: str) -> None:
        self.tmp_path = tmp_path
        self.kubeconfig = kubeconfig
        self.port = free_port()
        self.log_path = tmp_path / "runtime.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, agent: str, configmap: str, registry_url: str, token: str) -> None:
        token_file = self.tmp_path / "token"
        token_file.write_text(token)
        args = [
            str(AGENTREG),
            "runtime",
            "--agent",
            agent,
            "--watch-configmap",
            configmap,
            "--registry-url",
            registry_url,
            "--listen",
            f"127.0.0.1:{self.port}",
            "--token-file",
            str(token_file),
            "--kubeconfig",
            self.kubeconfig,
            "--simulate",
            "50",
            "--report-interval",
            "0.5",
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/healthz"
        with urllib.request.urlopen(url, timeout=1) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def log_tail(self) -> str:
        try:
            return "runtime log:\n" + "\n".join(self.log_path.read_text().splitlines()[-40:])
        except OSError:
            return "(no runtime log)"


@contextlib.contextmanager
def runtime_processes(
    tmp_path: Path, kubeconfig: str, names: Iterable[str]
) -> Iterator[list[RuntimeProcess]]:
    """A runtime (not started) per name, each in its own directory; stopped on exit."""
    processes = []
    for name in names:
        directory = tmp_path / name
        directory.mkdir()
        processes.append(RuntimeProcess(directory, kubeconfig))
    try:
        yield processes
    finally:
        for process in processes:
            process.stop()


@pytest.fixture
def runtime(tmp_path: Path, kube_cluster: Any) -> Iterator[RuntimeProcess]:
    process = RuntimeProcess(tmp_path, kube_cluster.kubeconfig)
    yield process
    process.stop()


def test_script_edit_reloads_a_running_agent_within_two_seconds(
    kubectl: Kubectl, operator: OperatorProcess, runtime: RuntimeProcess, postgres_url: str
) -> None:
    kubectl("apply", "-f", str(EXAMPLES_DIR))
    explain = diagnose(kubectl, operator)
    wait_for(lambda: converged(kubectl), timeout=90, what="examples converged", diagnose=explain)
    # The runtime reports as the Agent's own ServiceAccount, named like the Agent.
    kubectl("create", "serviceaccount", "coder-1")
    token = kubectl("create", "token", "coder-1").strip()
    runtime.start(f"{kubectl.namespace}/coder-1", "coder-1-behavior", operator.api_url, token)

    def explain_all() -> str:
        return explain() + "\n" + runtime.log_tail()

    first = wait_for(
        lambda: (h := runtime.health()).get("revision") == 1 and h,
        timeout=30,
        what="runtime loaded revision 1",
        diagnose=explain_all,
    )
    wait_for(
        lambda: condition_is(kubectl.get("agent", "coder-1"), "BehaviorLoaded", "True"),
        timeout=30,
        what="BehaviorLoaded=True",
        diagnose=explain_all,
    )

    body = kubectl.get("agentbehavior", "careful")
    assert body is not None
    script = body["spec"]["lua"]["script"].replace("effort = 0.95", "effort = 0.99")
    edited = time.monotonic()
    kubectl(
        "patch",
        "agentbehavior",
        "careful",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"lua": {"script": script}}}),
    )
    second = wait_for(
        lambda: (h := runtime.health()).get("revision") == 2 and h,
        timeout=10,
        interval=0.05,
        what="runtime loaded revision 2",
        diagnose=explain_all,
    )
    reload_seconds = time.monotonic() - edited
    print(f"script edit -> runtime reloaded: {reload_seconds:.3f}s")
    assert reload_seconds <= RELOAD_DEADLINE_SECONDS, f"reload took {reload_seconds:.2f}s"
    assert second["sha256"] != first["sha256"]
    assert runtime.proc is not None
    assert runtime.proc.poll() is None, "the runtime was never restarted"

    def confirmed() -> dict[str, Any] | None:
        agent = kubectl.get("agent", "coder-1")
        status = (agent or {}).get("status") or {}
        loaded = (status.get("loadedBehavior") or {}).get("sha256")
        ok = loaded == second["sha256"] and condition_is(agent, "BehaviorLoaded", "True")
        return status if ok else None

    status = wait_for(
        confirmed, timeout=15, what="status confirms revision 2", diagnose=explain_all
    )
    assert status["behavior"]["revision"] == 2
    assert status["behavior"]["sha256"] == second["sha256"]
    rows = history(postgres_url, f"{kubectl.namespace}/coder-1")
    assert [(r.behavior_revision, r.script_sha256) for r in rows] == [
        (2, second["sha256"]),
        (1, first["sha256"]),
    ]
