"""Reports end to end: an `agentreg runtime` process, authenticated with a real TokenRequest
token, confirms the script it loaded and reports outcomes to the operator's registry API;
the stats reach the Agent's status and the registry. Reports without a token, with another
namespace's token, or as another ServiceAccount than the Agent's are refused.

Real kube-apiserver, real PostgreSQL, the operator as `agentreg run`, the runtime as a local
process (no kubelet here, so no pod; the token file stands in for the projected volume).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import (
    AGENTREG,
    Kubectl,
    OperatorProcess,
    diagnose,
    free_port,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.kube, pytest.mark.postgres]

SCRIPT = """function on_task(task, ctx)
  return {accept = true, effort = 0.8}
end
"""


def manifests(namespace: str, service_account: str | None) -> str:
    agent_spec: dict[str, Any] = {"role": "tester", "behaviorRef": {"name": "steady"}}
    if service_account:
        agent_spec["serviceAccountName"] = service_account
    objects = [
        {
            "apiVersion": "agents.singularity.dev/v1alpha1",
            "kind": "AgentBehavior",
            "metadata": {"name": "steady", "namespace": namespace},
            "spec": {"roleType": "tester", "lua": {"script": SCRIPT}},
        },
        {
            "apiVersion": "agents.singularity.dev/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": "worker", "namespace": namespace},
            "spec": agent_spec,
        },
    ]
    return "\n---\n".join(json.dumps(obj) for obj in objects)


def token(kubectl: Kubectl, service_account: str, namespace: str | None = None) -> str:
    """A real TokenRequest token (`kubectl create token`), creating the ServiceAccount."""
    ns = ["-n", namespace] if namespace else []
    kubectl.run(*ns, "create", "serviceaccount", service_account)
    return kubectl(*ns, "create", "token", service_account, "--duration", "1h").strip()


def post_report(operator: OperatorProcess, path: str, bearer: str | None) -> int:
    body = {"batch_id": str(uuid.uuid4()), "outcomes": [{"success": True}], "cycles": 1}
    request = urllib.request.Request(
        operator.api_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    if bearer is not None:
        request.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def registry_agent(database_url: str, agent_id: str) -> Any:
    from agent_registry.registry import RegistryService

    async def read() -> Any:
        registry = RegistryService.from_url(database_url)
        try:
            return await registry.get_by_agent_id(agent_id)
        finally:
            await registry.close()

    return asyncio.run(read())


def metric(operator: OperatorProcess, line_prefix: str) -> float:
    with urllib.request.urlopen(operator.api_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class Runtime:
    """`agentreg runtime --watch-configmap` as a child process."""

    def __init__(self, tmp_path: Path, kubeconfig: str) -> None:
        self.tmp_path = tmp_path
        self.kubeconfig = kubeconfig
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, agent: str, registry_url: str, bearer: str) -> None:
        token_file = self.tmp_path / f"token-{len(self.procs)}"
        token_file.write_text(bearer)
        log = self.tmp_path / f"runtime-{len(self.procs)}.log"
        name = agent.split("/")[1]
        args = [
            str(AGENTREG),
            "runtime",
            "--agent",
            agent,
            "--watch-configmap",
            f"{name}-behavior",
            "--registry-url",
            registry_url,
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--token-file",
            str(token_file),
            "--kubeconfig",
            self.kubeconfig,
            "--simulate",
            "40",
            "--report-interval",
            "0.5",
        ]
        with log.open("wb") as out:
            self.procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT))
        self.logs.append(log)

    def log_tail(self) -> str:
        parts = []
        for log in self.logs:
            lines = log.read_text(errors="replace").splitlines()[-40:]
            parts.append(f"{log.name} (tail):\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


@pytest.fixture
def runtime(tmp_path: Path, kube_cluster: Any) -> Iterator[Runtime]:
    started = Runtime(tmp_path, kube_cluster.kubeconfig)
    yield started
    started.stop()


def test_runtime_with_a_token_request_token_confirms_and_reports(
    kubectl: Kubectl, operator: OperatorProcess, runtime: Runtime, postgres_url: str
) -> None:
    namespace = kubectl.namespace
    kubectl("apply", "-f", "-", input=manifests(namespace, service_account="runner"))
    explain = diagnose(kubectl, operator)

    def assigned_sha() -> str | None:
        behavior = ((kubectl.get("agent", "worker") or {}).get("status") or {}).get("behavior")
        return (behavior or {}).get("sha256")

    sha = wait_for(assigned_sha, timeout=60, what="behavior assigned", diagnose=explain)
    runtime.start(f"{namespace}/worker", operator.api_url, token(kubectl, "runner"))

    def explain_all() -> str:
        return explain() + "\n" + runtime.log_tail()

    def status_filled() -> dict[str, Any] | None:
        status = (kubectl.get("agent", "worker") or {}).get("status") or {}
        loaded = (status.get("loadedBehavior") or {}).get("sha256")
        tasks = (status.get("stats") or {}).get("tasksCompleted", 0)
        return status if loaded == sha and tasks > 0 else None

    status = wait_for(
        status_filled, timeout=90, what="loaded sha256 and stats in status", diagnose=explain_all
    )
    assert status["stats"]["tasksCompleted"] > 0

    record = registry_agent(postgres_url, f"{namespace}/worker")
    assert record.loaded_sha256 == sha
    assert record.tasks_completed >= status["stats"]["tasksCompleted"]
    assert record.cycles_completed > 0
    assert metric(operator, 'reports_ingested_total{result="accepted"}') > 0
    # The counter moves once the whole report is handled (after its load confirmation), so a
    # report in flight may be in the record and not yet in the counter.
    wait_for(
        lambda: metric(operator, "outcomes_ingested_total") >= record.tasks_completed,
        timeout=15,
        what="outcomes_ingested_total caught up with the registry",
        diagnose=explain_all,
    )
    assert metric(operator, "reload_latency_seconds_count") == 1


def test_reports_without_the_right_token_are_refused(
    kubectl: Kubectl, operator: OperatorProcess, runtime: Runtime, postgres_url: str
) -> None:
    namespace = kubectl.namespace
    other = f"{namespace[:50]}-other"
    kubectl.cluster.kubectl("create", "namespace", other)
    try:
        kubectl("apply", "-f", "-", input=manifests(namespace, service_account="runner"))
        explain = diagnose(kubectl, operator)
        wait_for(
            lambda: registry_agent(postgres_url, f"{namespace}/worker"),
            timeout=60,
            what="agent registered",
            diagnose=explain,
        )
        path = f"/v1/agents/{namespace}/worker/reports"
        other_namespace_token = token(kubectl, "runner", namespace=other)
        # Another Agent of the same namespace, running as its own ServiceAccount.
        kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "agents.singularity.dev/v1alpha1",
                    "kind": "Agent",
                    "metadata": {"name": "neighbour", "namespace": namespace},
                    "spec": {"role": "tester", "serviceAccountName": "neighbour-runner"},
                }
            ),
        )
        other_service_account = token(kubectl, "neighbour-runner")

        assert post_report(operator, path, None) == 401
        assert post_report(operator, path, "forged-token") == 401
        assert post_report(operator, path, other_namespace_token) == 403
        assert post_report(operator, path, other_service_account) == 403

        # A whole runtime with the neighbour's ServiceAccount: it loads the script, but every
        # report is refused (and dropped by the runtime), so nothing reaches the registry.
        runtime.start(f"{namespace}/worker", operator.api_url, other_service_account)
        wait_for(
            lambda: metric(operator, 'reports_ingested_total{result="forbidden"}') >= 4,
            timeout=30,
            what="the runtime's reports refused",
            diagnose=lambda: explain() + "\n" + runtime.log_tail(),
        )
        record = registry_agent(postgres_url, f"{namespace}/worker")
        assert record.tasks_completed == 0
        assert record.loaded_sha256 is None
        assert metric(operator, 'reports_ingested_total{result="accepted"}') == 0
        # The right token is accepted: the refusals were about the token, not the agent.
        assert post_report(operator, path, token(kubectl, "runner")) == 202
    finally:
        kubectl.cluster.kubectl("delete", "namespace", other, "--wait=false", check=False)
