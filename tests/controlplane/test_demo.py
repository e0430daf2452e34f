"""`agentreg dev demo` end to end, against the session's control plane (through KUBECONFIG, which
the demo must honor): operator, examples, local runtimes, a confirmed hot reload, a policy switch,
an A/B experiment to its verdict, a canary rollout of a bad edit rolled back, and --down stopping
every process it started while leaving a KUBECONFIG cluster alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent_registry.devcluster import KubeCluster, processes

pytestmark = [pytest.mark.kube, pytest.mark.e2e]

AGENTREG = Path(sys.executable).with_name("agentreg")


def run_demo(kube: KubeCluster, state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTREG_")}
    env.update(KUBECONFIG=kube.kubeconfig, AGENTREG_DEMO_DIR=str(state_dir))
    return subprocess.run(
        [str(AGENTREG), "dev", "demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_the_demo_runs_agents_hot_reloads_and_stops(
    kube_cluster: KubeCluster, namespace: str, tmp_path: Path
) -> None:
    pids: list[int] = []
    try:
        started = run_demo(kube_cluster, tmp_path, "--namespace", namespace)
        state = json.loads((tmp_path / "demo.json").read_text())
        pids = [p["pid"] for p in state["processes"]]
        assert started.returncode == 0, started.stderr[-3000:]
        assert "hot reload confirmed by the runtimes" in started.stderr
        table = started.stdout.split("$ kubectl get agentbehaviors")[0].splitlines()
        rows = {line.split()[0]: line.split() for line in table if line.startswith("coder-")}
        assert sorted(rows) == ["coder-1", "coder-2", "coder-3"]
        for row in rows.values():
            assert row[4] == "Active"  # NAME ROLE BEHAVIOR SOURCE PHASE TASKS ...
            assert int(row[5]) > 0  # TASKS: reported by the runtimes, written back by the operator
        # The policy moved coder-3 off `quick`; the others stay on their spec.
        assert rows["coder-3"][3] == "Policy"
        assert rows["coder-3"][2] != "quick"
        assert [rows[n][3] for n in ("coder-1", "coder-2")] == ["Spec", "Spec"]
        policies = started.stdout.split("$ kubectl get behaviorpolicies")[1].splitlines()
        assert any(line.startswith("coders ") for line in policies)
        # The A/B experiment reached its verdict (careful beats quick by far); with Report its
        # participants went back to what they had, which the SOURCE column above shows.
        experiments = started.stdout.split("$ kubectl get bx")[1].splitlines()
        assert experiments[1].split()[:5] == ["NAME", "ROLE", "ARMS", "PHASE", "WINNER"]
        (verdict,) = [line.split() for line in experiments if line.startswith("careful-vs-quick ")]
        assert verdict[1:5] == ["code_developer", "careful,quick", "Concluded", "careful"]
        # The canary rollout of a bad edit of `careful` was aborted and rolled back.
        assert "rolled back after" in started.stderr
        section = started.stdout.split("$ kubectl get agb careful -o wide")[1]
        rollout = section.split("$ kubectl")[0].splitlines()
        (careful,) = [line.split() for line in rollout if line.startswith("careful ")]
        assert "Aborted" in careful
        behaviors = started.stdout.split("$ kubectl get agentbehaviors")[1].splitlines()
        assert any(line.startswith("careful ") and "Aborted" in line for line in behaviors)
        assert len(pids) == 4  # the operator and one runtime per Agent
    finally:
        stopped = run_demo(kube_cluster, tmp_path, "--down")

    assert stopped.returncode == 0, stopped.stderr
    assert not any(processes.alive(pid) for pid in pids)
    assert "left the KUBECONFIG cluster running" in stopped.stderr
    assert kube_cluster.kubectl("get", "--raw=/readyz").stdout == "ok"
