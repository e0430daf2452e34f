"""`agentreg dev demo`: the whole system on one machine, with nothing to install by hand.

The local control plane (or $KUBECONFIG), the operator on embedded SQLite, the CRDs and the
example Agents/AgentBehaviors, one local `agentreg runtime` per Agent (no kubelet here, so the
"pods" are local processes with TokenRequest tokens), a hot reload of one behavior, and the
resulting `kubectl get agents`. Everything it starts is recorded in demo.json so that
`agentreg dev demo --down` stops exactly that.

It drives the other commands as subprocesses (`python -m agent_registry run|runtime|migrate`):
the demo exercises the same entry points a user or a Deployment does.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from agent_registry.devcluster import cluster as lifecycle
from agent_registry.devcluster import processes
from agent_registry.devcluster.build import Say
from agent_registry.devcluster.errors import DevClusterError
from agent_registry.devcluster.layout import REPO_ROOT, cache_root
from agent_registry.devcluster.session import KubeCluster, from_kubeconfig
from agent_registry.devcluster.state import ProcessRecord

DEFAULT_NAMESPACE = "agent-demo"
GROUP = "agents.singularity.dev"
VIEWER = "demo-viewer"
SIMULATE_RATE = "20"  # tasks per second per agent
RELOADED_BEHAVIOR = "balanced"
POLICY_DIR = REPO_ROOT / "manifests" / "examples" / "policies"
EXPERIMENT_DIR = REPO_ROOT / "manifests" / "examples" / "experiments"
EXPERIMENT = "careful-vs-quick"
# The hot reload: `balanced` puts in a larger effort margin (more successes, slower tasks).
RELOADED_SCRIPT = """\
function on_task(task, ctx)
  local difficulty = tonumber(task.difficulty) or 0.5
  ctx.state.seen = (ctx.state.seen or 0) + 1
  return {accept = true, effort = math.min(1.0, difficulty + 0.25)}
end

function on_reload(previous_state)
  return previous_state
end
"""

# The canary rollback: `careful` gets spec.rollout Canary and, in the same edit (as one Git
# commit would), a bad script: a typo in its threshold declines every task harder than 0.3.
# Half of its agents' tasks go to the canary, the analysis finds it credibly worse than stable
# and rolls it back; the agents confirm the stable script again.
CANARY_BEHAVIOR = "careful"
CANARY_MIN_TASKS = 50
CANARY_ROLLOUT: dict[str, Any] = {
    "strategy": "Canary",
    "steps": [{"setWeight": 50}, {"pause": {"duration": "30s"}}],
    "analysis": {"minTasks": CANARY_MIN_TASKS, "maxRegression": 0.05},
}
BAD_EDIT_SCRIPT = """\
function on_task(task, ctx)
  ctx.state.seen = (ctx.state.seen or 0) + 1
  -- meant: decline only the hardest tasks (difficulty > 0.9)
  if (tonumber(task.difficulty) or 0.5) > 0.3 then
    return {accept = false, effort = 0}
  end
  return {accept = true, effort = 0.95}
end
"""


class DemoState(BaseModel):
    model_config = ConfigDict(frozen=True)

    kubeconfig: str
    namespace: str
    external_cluster: bool
    api_url: str
    processes: tuple[ProcessRecord, ...]


def demo_dir() -> Path:
    """AGENTREG_DEMO_DIR, else <cache>/demo: the database, tokens, logs and demo.json."""
    explicit = os.environ.get("AGENTREG_DEMO_DIR")
    return Path(explicit) if explicit else cache_root() / "demo"


def _state_path() -> Path:
    return demo_dir() / "demo.json"


def _load_state() -> DemoState | None:
    try:
        return DemoState.model_validate_json(_state_path().read_text())
    except (OSError, ValueError):
        return None


def _save_state(state: DemoState) -> None:
    _state_path().write_text(state.model_dump_json(indent=2))


def _wait(what: str, probe: Callable[[], Any], timeout: float, diagnose: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise DevClusterError(f"timed out after {timeout:.0f}s waiting for {what}. {diagnose}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _run(argv: list[str], env: dict[str, str]) -> str:
    """Runs argv to completion; returns its output on failure, "" on success."""
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    return "" if result.returncode == 0 else result.stdout + result.stderr


def _agentreg(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent_registry", *args]


def _spawn(name: str, argv: list[str], logs: Path, env: dict[str, str]) -> ProcessRecord:
    log = logs / f"{name}.log"
    # No parent-death guard: the demo keeps running after this command returns.
    proc = processes.spawn(argv, log_path=log, die_with_parent=False, env=env)
    return ProcessRecord(name=name, pid=proc.pid, binary=argv[0], log=str(log))


def _connect(say: Say) -> tuple[KubeCluster, bool]:
    """(cluster, external): $KUBECONFIG when set, else the shared dev cluster (started here)."""
    explicit = os.environ.get("KUBECONFIG")
    if explicit:
        say(f"using the cluster of KUBECONFIG={explicit}")
        return from_kubeconfig(explicit, say), True
    result = lifecycle.up(say=say)
    how = "started" if result.started else "reused"
    say(f"control plane {how}: {result.state.server}")
    cluster = KubeCluster(
        kubeconfig=result.state.kubeconfig,
        server=result.state.server,
        kubectl_path=str(result.binaries.kubectl),
        origin="shared",
    )
    return cluster, False


def _agents(kube: KubeCluster, namespace: str) -> list[dict[str, Any]]:
    out = kube.kubectl("get", f"agents.{GROUP}", "-n", namespace, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def _exists(kube: KubeCluster, namespace: str, kind: str, name: str) -> bool:
    return kube.kubectl("get", kind, name, "-n", namespace, check=False).returncode == 0


def _agent_token(kube: KubeCluster, base: Path, namespace: str, agent: str) -> Path:
    """A TokenRequest token of the Agent's own ServiceAccount (named like the Agent), as a
    projected token would be in its pod: the registry API takes reports from no other."""
    kube.kubectl("create", "serviceaccount", agent, "-n", namespace, check=False)
    token = kube.kubectl("create", "token", agent, "-n", namespace, "--duration=24h").stdout
    path = base / f"token-{agent}"
    path.write_text(token.strip())
    path.chmod(0o600)
    return path


def _viewer_token(kube: KubeCluster, base: Path, namespace: str) -> Path:
    """A token that may read the registry API: its reads are authorized by RBAC (get/list agents
    and agentbehaviors), like `kubectl get agents`. The agents' own token may only report."""
    for args in (
        ("create", "serviceaccount", VIEWER),
        (
            "create",
            "role",
            VIEWER,
            "--verb=get,list",
            f"--resource=agents.{GROUP}",
            f"--resource=agentbehaviors.{GROUP}",
        ),
        (
            "create",
            "rolebinding",
            VIEWER,
            f"--role={VIEWER}",
            f"--serviceaccount={namespace}:{VIEWER}",
        ),
    ):
        kube.kubectl(*args, "-n", namespace, check=False)  # "already exists" on a rerun
    token = kube.kubectl("create", "token", VIEWER, "-n", namespace, "--duration=24h").stdout
    path = base / "viewer-token"
    path.write_text(token.strip())
    path.chmod(0o600)
    return path


def _policy_switch(kube: KubeCluster, namespace: str, name: str) -> str | None:
    """The Agent's behavior and reason once a policy decided it, else None."""
    for agent in _agents(kube, namespace):
        if agent["metadata"]["name"] != name:
            continue
        behavior = (agent.get("status") or {}).get("behavior") or {}
        if behavior.get("source") == "Policy":
            return f"{behavior.get('name')} ({behavior.get('reason')})"
    return None


def _rollout(kube: KubeCluster, namespace: str, name: str) -> dict[str, Any]:
    out = kube.kubectl("get", f"agentbehaviors.{GROUP}", name, "-n", namespace, "-o", "json")
    rollout: dict[str, Any] = (json.loads(out.stdout).get("status") or {}).get("rollout") or {}
    return rollout


def _verdict(kube: KubeCluster, namespace: str) -> dict[str, Any] | None:
    """The experiment's status once Concluded or Inconclusive, else None."""
    out = kube.kubectl(
        "get", f"behaviorexperiments.{GROUP}", EXPERIMENT, "-n", namespace, "-o", "json"
    )
    status: dict[str, Any] = json.loads(out.stdout).get("status") or {}
    return status if status.get("phase") in ("Concluded", "Inconclusive") else None


def _experiment(kube: KubeCluster, namespace: str, logs: Path, say: Say) -> None:
    """One A/B experiment between careful and quick on every agent, to its verdict; with
    Report the agents return to what they had (the policy's switch included)."""
    say(f"A/B experiment: BehaviorExperiment {EXPERIMENT} (manifests/examples/experiments/)")
    began = time.monotonic()
    kube.kubectl("apply", "-n", namespace, "-f", str(EXPERIMENT_DIR))
    done = _wait(
        f"the experiment {EXPERIMENT} to reach a verdict",
        lambda: _verdict(kube, namespace),
        90,
        f"Logs in {logs}",
    )
    arms = ", ".join(
        f"{a['behavior']}@{a['revision']} {a['successes']}/{a['tasks']}" for a in done["arms"]
    )
    say(
        f"{EXPERIMENT} {done['phase']} after {time.monotonic() - began:.0f}s: winner "
        f"{done.get('winner')} (p={done.get('pValue')}, always-valid; {arms})"
    )
    _wait(
        "the participants to return to what they had",
        lambda: all(
            ((a.get("status") or {}).get("behavior") or {}).get("source") != "Experiment"
            for a in _agents(kube, namespace)
        ),
        30,
        f"Logs in {logs}",
    )
    print(f"$ kubectl get bx -n {namespace}")
    print(kube.kubectl("get", f"behaviorexperiments.{GROUP}", "-n", namespace).stdout)


def _canary_rollback(kube: KubeCluster, namespace: str, logs: Path, say: Say) -> None:
    """One canary rollout of a bad edit, aborted by the analysis and rolled back."""
    say(
        f"canary rollout: a bad edit of AgentBehavior {CANARY_BEHAVIOR} with spec.rollout "
        f"Canary (setWeight 50, analysis minTasks {CANARY_MIN_TASKS})"
    )
    began = time.monotonic()
    patch = {"spec": {"rollout": CANARY_ROLLOUT, "lua": {"script": BAD_EDIT_SCRIPT}}}
    kube.kubectl(
        "patch",
        f"agentbehaviors.{GROUP}",
        CANARY_BEHAVIOR,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps(patch),
    )
    aborted = _wait(
        f"the canary of {CANARY_BEHAVIOR} to be aborted",
        lambda: (r := _rollout(kube, namespace, CANARY_BEHAVIOR)).get("phase") == "Aborted" and r,
        60,
        f"Logs in {logs}",
    )
    stable = str(aborted.get("stableSha256"))
    _wait(
        f"the agents of {CANARY_BEHAVIOR} to confirm the stable script (sha256 {stable[:12]})",
        lambda: all(
            ((a.get("status") or {}).get("loadedBehavior") or {}).get("sha256") == stable
            for a in _agents(kube, namespace)
            if ((a.get("status") or {}).get("behavior") or {}).get("name") == CANARY_BEHAVIOR
        ),
        60,
        f"Logs in {logs}",
    )
    canary = aborted.get("canary") or {}
    say(
        f"rolled back after {time.monotonic() - began:.0f}s and {canary.get('tasks')} canary "
        f"tasks (canary success {canary.get('successRate')}, stable "
        f"{(aborted.get('stable') or {}).get('successRate')}); every agent of "
        f"{CANARY_BEHAVIOR} confirmed the stable script {stable[:12]} again"
    )
    print()
    print(f"$ kubectl get agb {CANARY_BEHAVIOR} -o wide -n {namespace}")
    print(
        kube.kubectl(
            "get", f"agentbehaviors.{GROUP}", CANARY_BEHAVIOR, "-o", "wide", "-n", namespace
        ).stdout
    )


def _tasks(agent: dict[str, Any]) -> int:
    stats = (agent.get("status") or {}).get("stats") or {}
    return int(stats.get("tasksCompleted") or 0)


def _stop_processes(state: DemoState) -> None:
    for record in reversed(state.processes):
        if record.running():
            processes.stop_group(record.pid, timeout=15)


def down(say: Say = print) -> None:
    state = _load_state()
    if state is not None:
        _stop_processes(state)
        say(f"stopped the demo's operator and {len(state.processes) - 1} agent runtimes")
        _state_path().unlink(missing_ok=True)
    else:
        say("no demo processes were running")
    external = bool(os.environ.get("KUBECONFIG")) if state is None else state.external_cluster
    if external:
        where = f" (demo objects are in namespace {state.namespace})" if state else ""
        say(f"left the KUBECONFIG cluster running{where}")
    elif lifecycle.down():
        say("stopped the local control plane")


def up(say: Say = print, namespace: str = DEFAULT_NAMESPACE) -> None:
    began = time.monotonic()
    previous = _load_state()
    if previous is not None:
        say("a demo is already running: restarting it")
        _stop_processes(previous)
    base = demo_dir()
    logs = base / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)

    kube, external = _connect(say)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTREG_")}
    env.update(KUBECONFIG=kube.kubeconfig, PYTHONUNBUFFERED="1")

    database = base / "registry.db"
    database.unlink(missing_ok=True)
    database_url = f"sqlite+aiosqlite:///{database}"
    say(f"registry database: {database} (embedded SQLite), migrating")
    migrated = _run(_agentreg("migrate", "--database-url", database_url), env)
    if migrated:
        raise DevClusterError(f"agentreg migrate failed:\n{migrated}")

    say("applying the CRDs (crds/)")
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds"))
    for plural in ("agents", "agentbehaviors", "behaviorpolicies", "behaviorexperiments"):
        kube.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", f"crd/{plural}.{GROUP}"
        )
    kube.kubectl("create", "namespace", namespace, check=False)

    api_port, health_port = processes.free_port(), processes.free_port()
    api_url = f"http://127.0.0.1:{api_port}"
    records: list[ProcessRecord] = []
    records.append(
        _spawn(
            "operator",
            _agentreg(
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
                api_url,
                "--status-interval",
                "2",
                "--policy-interval",
                "2",
                "--rollout-interval",
                "1",
                "--experiment-interval",
                "1",
                "--kubeconfig",
                kube.kubeconfig,
            ),
            logs,
            env,
        )
    )
    _save_state(
        DemoState(
            kubeconfig=kube.kubeconfig,
            namespace=namespace,
            external_cluster=external,
            api_url=api_url,
            processes=tuple(records),
        )
    )
    say(f"operator started (agentreg run, registry API {api_url}), log {records[0].log}")
    _wait(
        "the operator's health endpoint",
        lambda: _http_ok(f"http://127.0.0.1:{health_port}/healthz"),
        90,
        f"See {records[0].log}",
    )

    say("applying the examples (manifests/examples/): 3 AgentBehaviors, 3 Agents")
    kube.kubectl("apply", "-n", namespace, "-f", str(REPO_ROOT / "manifests" / "examples"))

    viewer_token = _viewer_token(kube, base, namespace)

    names = [a["metadata"]["name"] for a in _agents(kube, namespace)]
    for name in names:
        _wait(
            f"ConfigMap {name}-behavior (rendered by the operator)",
            functools.partial(_exists, kube, namespace, "configmap", f"{name}-behavior"),
            60,
            f"See {records[0].log}",
        )
        records.append(
            _spawn(
                f"runtime-{name}",
                _agentreg(
                    "runtime",
                    "--agent",
                    f"{namespace}/{name}",
                    "--watch-configmap",
                    f"{name}-behavior",
                    "--registry-url",
                    api_url,
                    "--listen",
                    "127.0.0.1:0",
                    "--token-file",
                    str(_agent_token(kube, base, namespace, name)),
                    "--kubeconfig",
                    kube.kubeconfig,
                    "--simulate",
                    SIMULATE_RATE,
                    "--report-interval",
                    "1",
                ),
                logs,
                env,
            )
        )
        _save_state(
            DemoState(
                kubeconfig=kube.kubeconfig,
                namespace=namespace,
                external_cluster=external,
                api_url=api_url,
                processes=tuple(records),
            )
        )
    say(
        f"started {len(names)} local agent runtimes ({', '.join(names)}), "
        f"simulating {SIMULATE_RATE} tasks/s each"
    )

    _wait(
        "task stats on every Agent's status",
        lambda: all(_tasks(a) > 0 for a in _agents(kube, namespace)),
        120,
        f"Logs in {logs}",
    )

    say(f"hot reload: patching AgentBehavior {RELOADED_BEHAVIOR}'s script (kubectl patch)")
    patch = {"spec": {"lua": {"script": RELOADED_SCRIPT}}}
    kube.kubectl(
        "patch",
        f"agentbehaviors.{GROUP}",
        RELOADED_BEHAVIOR,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps(patch),
    )
    # Done when every agent of the behavior confirmed (through its runtime's report) that it
    # runs exactly the new script: the sha256 the runtime loaded, written back to status.
    new_sha = hashlib.sha256(RELOADED_SCRIPT.encode()).hexdigest()
    _wait(
        f"the agents of {RELOADED_BEHAVIOR} to confirm the new script (sha256 {new_sha[:12]})",
        lambda: all(
            ((a.get("status") or {}).get("loadedBehavior") or {}).get("sha256") == new_sha
            for a in _agents(kube, namespace)
            if a["spec"].get("behaviorRef", {}).get("name") == RELOADED_BEHAVIOR
        ),
        90,
        f"Logs in {logs}",
    )
    say(f"hot reload confirmed by the runtimes: sha256 {new_sha[:12]}..., no restart")

    say("automatic optimization: applying BehaviorPolicy coders (manifests/examples/policies/)")
    kube.kubectl("apply", "-n", namespace, "-f", str(POLICY_DIR))
    switched = _wait(
        "the policy to move coder-3 off quick",
        lambda: _policy_switch(kube, namespace, "coder-3"),
        120,
        f"Logs in {logs}",
    )
    say(f"coder-3 switched by the policy: {switched}")

    _experiment(kube, namespace, logs, say)

    _canary_rollback(kube, namespace, logs, say)
    time.sleep(3)  # one more status interval, so the stats columns show the new revision's work

    print()
    print(f"$ kubectl get agents -n {namespace}")
    print(kube.kubectl("get", f"agents.{GROUP}", "-n", namespace).stdout)
    print(f"$ kubectl get agentbehaviors -n {namespace}")
    print(kube.kubectl("get", f"agentbehaviors.{GROUP}", "-n", namespace).stdout)
    print(f"$ kubectl get behaviorpolicies -n {namespace}")
    print(kube.kubectl("get", f"behaviorpolicies.{GROUP}", "-n", namespace).stdout)
    print(f"demo ready in {time.monotonic() - began:.0f}s. Look further:")
    print(f"  export KUBECONFIG={kube.kubeconfig}")
    print(f"  .venv/bin/agentreg dev kubectl get agents -n {namespace} -o yaml")
    auth = f'-H "Authorization: Bearer $(cat {viewer_token})"'
    print("  # the registry API (reads are authorized by RBAC, as `kubectl get agents`):")
    print(f"  curl -s {auth} '{api_url}/v1/agents?namespace={namespace}'")
    print(f"  curl -s {auth} {api_url}/v1/agents/{namespace}/coder-2/assignments")
    print(f"  curl -s {auth} {api_url}/v1/behaviors/{namespace}/quick/lineage")
    print(f"  curl -s {api_url}/metrics | grep -E '^(reports_ingested|reload_latency|rollout)'")
    print(f"  logs: {logs}/ (operator.log, runtime-<agent>.log)")
    print("Stop everything: make demo-down   (or .venv/bin/agentreg dev demo --down)")


__all__ = ["down", "up"]
