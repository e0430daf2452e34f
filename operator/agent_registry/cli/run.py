"""`agentreg run`: the operator (kopf), the registry API and, optionally, the webhook."""

from __future__ import annotations

import asyncio
import logging
import os

import click

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./agent-registry.db"


@click.command(name="run", context_settings={"auto_envvar_prefix": "AGENTREG"})
@click.option(
    "--database-url",
    envvar=["AGENTREG_DATABASE_URL"],
    default=DEFAULT_DATABASE_URL,
    show_default=True,
    help="Registry database (SQLAlchemy async URL): postgresql+psycopg://... or sqlite+aiosqlite.",
)
@click.option("--migrate/--no-migrate", default=False, help="Upgrade the schema before starting.")
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Namespace to serve (repeatable; exact names). Default: all namespaces.",
)
@click.option(
    "--all-namespaces", is_flag=True, default=False, help="Serve every namespace (cluster-wide)."
)
@click.option("--api-listen", default="0.0.0.0:8080", show_default=True, help="Registry API.")
@click.option("--no-api", is_flag=True, default=False, help="Do not serve the registry API.")
@click.option(
    "--health-listen",
    default="0.0.0.0:8081",
    show_default=True,
    help="kopf liveness endpoint (GET /healthz).",
)
@click.option("--webhook/--no-webhook", default=False, help="Serve the validating webhook.")
@click.option(
    "--webhook-listen", default="127.0.0.1:9443", show_default=True, help="Webhook HTTPS address."
)
@click.option(
    "--webhook-host",
    default=None,
    help="Host the apiserver uses to reach the webhook (default: the listen address).",
)
@click.option(
    "--webhook-cert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Serving certificate (PEM); a self-signed one when omitted.",
)
@click.option(
    "--webhook-key",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Private key of --webhook-cert (PEM).",
)
@click.option(
    "--webhook-managed/--webhook-unmanaged",
    default=None,
    help="Let the operator create and update the ValidatingWebhookConfiguration (URL + caBundle). "
    "Default: managed with a self-signed certificate, unmanaged with --webhook-cert (then the "
    "installer, e.g. the Helm chart, owns the configuration and points it at a Service).",
)
@click.option(
    "--status-interval",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between status write-backs (each object at most once per interval).",
)
@click.option(
    "--underperforming-threshold",
    type=click.FloatRange(min=0.0, max=1.0),
    default=0.7,
    show_default=True,
    help="An Agent is Underperforming when its current assignment's success rate is below this "
    "(over at least --underperforming-min-tasks tasks).",
)
@click.option(
    "--underperforming-min-tasks",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Tasks the current assignment needs before an Agent can be flagged Underperforming.",
)
@click.option(
    "--policy-interval",
    type=click.FloatRange(min=0.5),
    default=15.0,
    show_default=True,
    help="Seconds between two evaluations of a BehaviorPolicy.",
)
@click.option(
    "--experiment-interval",
    type=click.FloatRange(min=0.5),
    default=10.0,
    show_default=True,
    help="Seconds between two evaluations of a BehaviorExperiment.",
)
@click.option(
    "--rollout-interval",
    type=click.FloatRange(min=0.5),
    default=10.0,
    show_default=True,
    help="Seconds between two analyses of a canary rollout in progress.",
)
@click.option(
    "--delete-timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="How long a deletion waits for an unavailable registry before letting go.",
)
@click.option(
    "--registry-url",
    default=None,
    help="Registry API URL agents report to (rendered into Deployments). "
    "Default: http://agent-registry.<operator namespace>.svc:8080.",
)
@click.option(
    "--report-auth",
    type=click.Choice(["serviceaccount", "namespace"]),
    default="serviceaccount",
    show_default=True,
    help="Who may report for an Agent: its own ServiceAccount (spec.serviceAccountName, else "
    "the pod template's, else the one named like the Agent), or, as an opt-out, any "
    "ServiceAccount of its namespace unless spec.serviceAccountName is set.",
)
@click.option("--peering", default=None, help="kopf peering name for HA (default: standalone).")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="KUBECONFIG",
    help="Kubernetes credentials; default $KUBECONFIG, then the in-cluster ServiceAccount.",
)
@click.option("--verbose", "-v", is_flag=True, default=False, help="Debug logging.")
def command(
    database_url: str,
    migrate: bool,
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    api_listen: str,
    no_api: bool,
    health_listen: str,
    webhook: bool,
    webhook_listen: str,
    webhook_host: str | None,
    webhook_cert: str | None,
    webhook_key: str | None,
    webhook_managed: bool | None,
    status_interval: float,
    underperforming_threshold: float,
    underperforming_min_tasks: int,
    policy_interval: float,
    experiment_interval: float,
    rollout_interval: float,
    delete_timeout: float,
    registry_url: str | None,
    report_auth: str,
    peering: str | None,
    kubeconfig: str | None,
    verbose: bool,
) -> None:
    """Run the operator: reconcile Agents and AgentBehaviors, serve the registry API."""
    import kopf

    from agent_registry.controller.context import OperatorConfig
    from agent_registry.controller.operator import build_registry, configure, memo_for

    if namespaces and all_namespaces:
        raise click.UsageError("--namespace and --all-namespaces are exclusive")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's own login reads it from there
    if registry_url is None:
        own_namespace = os.environ.get("POD_NAMESPACE", "agent-registry")
        registry_url = f"http://agent-registry.{own_namespace}.svc:8080"
    if migrate:
        from agent_registry.registry import migrate as run_migrations

        run_migrations(database_url)

    config = OperatorConfig(
        database_url=database_url,
        registry_url=registry_url,
        kubeconfig=kubeconfig,
        api_listen=None if no_api else api_listen,
        status_interval=status_interval,
        underperforming_threshold=underperforming_threshold,
        underperforming_min_tasks=underperforming_min_tasks,
        policy_interval=policy_interval,
        experiment_interval=experiment_interval,
        rollout_interval=rollout_interval,
        delete_timeout=delete_timeout,
        report_auth=report_auth,
        migrate=migrate,
        webhook=webhook,
        webhook_managed=webhook_cert is None if webhook_managed is None else webhook_managed,
    )
    settings = kopf.OperatorSettings()
    configure(
        settings,
        config,
        listen=webhook_listen,
        host=webhook_host,
        certfile=webhook_cert,
        keyfile=webhook_key,
    )
    host, _, port = health_listen.rpartition(":")
    asyncio.run(
        kopf.operator(
            registry=build_registry(config),
            settings=settings,
            memo=memo_for(config),
            standalone=peering is None,
            peering_name=peering,
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            liveness_endpoint=f"http://{host or '0.0.0.0'}:{port}/healthz",
        )
    )
