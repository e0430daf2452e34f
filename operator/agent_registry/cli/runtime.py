"""`agentreg runtime`: run one agent's Lua behavior as a sidecar (see docs/runtime.md).

Every flag also reads AGENTREG_<FLAG> from the environment (the Deployment the operator
renders sets AGENTREG_AGENT, AGENTREG_BEHAVIOR_DIR, AGENTREG_CONFIGMAP, AGENTREG_REGISTRY_URL).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from agent_registry.runtime.reporter import DEFAULT_TOKEN_FILE


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, not {value!r}", param_hint="--listen")
    return host.strip("[]") or "127.0.0.1", int(port)


@click.command(name="runtime", context_settings={"show_default": True})
@click.option(
    "--agent",
    show_envvar=True,
    envvar="AGENTREG_AGENT",
    required=True,
    help="The Agent, NAMESPACE/NAME.",
)
@click.option(
    "--behavior-dir",
    show_envvar=True,
    envvar="AGENTREG_BEHAVIOR_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="The mounted behavior ConfigMap (kubelet volume layout).",
)
@click.option(
    "--watch-configmap",
    show_envvar=True,
    envvar="AGENTREG_WATCH_CONFIGMAP",
    help="Watch this ConfigMap (in the agent's namespace) through the API instead.",
)
@click.option(
    "--registry-url",
    show_envvar=True,
    envvar="AGENTREG_REGISTRY_URL",
    required=True,
    help="Base URL of the registry API (reports go to /v1/agents/NS/NAME/reports).",
)
@click.option(
    "--listen",
    show_envvar=True,
    envvar="AGENTREG_LISTEN",
    default="127.0.0.1:8090",
    show_default=True,
    help="HOST:PORT of the local HTTP API (port 0: any free port).",
)
@click.option(
    "--token-file",
    show_envvar=True,
    envvar="AGENTREG_TOKEN_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_TOKEN_FILE,
    show_default=True,
    help="Bearer token for the registry, re-read on every report.",
)
@click.option(
    "--kubeconfig",
    show_envvar=True,
    envvar="AGENTREG_KUBECONFIG",
    help="For --watch-configmap outside a pod.",
)
@click.option(
    "--simulate",
    "simulate_rate",
    show_envvar=True,
    envvar="AGENTREG_SIMULATE",
    type=click.FloatRange(min=0.0),
    help="Run the synthetic workload at this many tasks per second.",
)
@click.option(
    "--report-interval",
    show_envvar=True,
    envvar="AGENTREG_REPORT_INTERVAL",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    help="Seconds between reports.",
)
@click.option(
    "--log-level",
    show_envvar=True,
    envvar="AGENTREG_LOG_LEVEL",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def command(
    agent: str,
    behavior_dir: Path | None,
    watch_configmap: str | None,
    registry_url: str,
    listen: str,
    token_file: Path,
    kubeconfig: str | None,
    simulate_rate: float | None,
    report_interval: float,
    log_level: str,
) -> None:
    """Run a Lua behavior as an agent sidecar: hot reload, local HTTP API, outcome reports."""
    # Imported here: `agentreg --help` must not pay for lupa and aiohttp.
    from agent_registry.runtime.host import BehaviorHost
    from agent_registry.runtime.reporter import AgentRef, OutcomeReporter
    from agent_registry.runtime.sidecar import Sidecar
    from agent_registry.runtime.source import BehaviorSource

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        ref = AgentRef.parse(agent)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--agent") from exc
    if behavior_dir is None and watch_configmap is None:
        raise click.UsageError("give --behavior-dir or --watch-configmap")
    if behavior_dir is not None and watch_configmap is not None:
        # The rendered Deployment always sets AGENTREG_BEHAVIOR_DIR; asking for the API watch
        # on top must just work. Never both: a lagging kubelet volume could bring back an
        # older script after the watch delivered the newer one.
        logging.getLogger(__name__).info(
            "--watch-configmap given: ignoring --behavior-dir %s", behavior_dir
        )
        behavior_dir = None
    host_name, port = _parse_listen(listen)

    source: BehaviorSource
    if behavior_dir is not None:
        from agent_registry.runtime.directory_source import DirectorySource

        source = DirectorySource(behavior_dir)
    else:
        from agent_registry.runtime.configmap_source import ConfigMapWatchSource

        assert watch_configmap is not None
        source = ConfigMapWatchSource(ref.namespace, watch_configmap, kubeconfig=kubeconfig)

    host = BehaviorHost()
    reporter = OutcomeReporter(
        ref, registry_url, token_file=token_file, status=host, interval=report_interval
    )
    sidecar = Sidecar(
        host,
        source,
        reporter,
        listen_host=host_name,
        listen_port=port,
        simulate_rate=simulate_rate or None,
    )
    asyncio.run(sidecar.run_until_signalled())
