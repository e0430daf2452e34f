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
    "--status-qps",
    type=click.FloatRange(min=0),
    default=200.0,
    show_default=True,
    help="Status patches per second, all objects together (0: no limit); a tenth of it for "
    "status updates while Agents' ConfigMaps are still being applied.",
)
@click.option(
    "--configmap-resync",
    type=click.FloatRange(min=1),
    default=300.0,
    show_default=True,
    help="Seconds between two checks that each Agent's ConfigMap still holds what the operator "
    "applied (one list per namespace; deleted or edited ones are applied again).",
)
@click.option(
    "--report-batch-retention",
    type=click.FloatRange(min=0),
    default=7 * 86400.0,
    show_default=True,
    help="Seconds a report batch id is remembered, so that a retried batch counts once "
    "(7 days; must outlast any runtime's retries; 0: forever, the table then grows by one row "
    "per report).",
)
@click.option(
    "--event-qps",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Events per second, all objects together, after a burst of 200; Events beyond are "
    "dropped and counted in events_dropped_total (0: no limit).",
)
@click.option(
    "--reconcile-batch",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Agents reconciled together (bulk registry reads and writes).",
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
@click.option(
    "--leader-elect/--no-leader-elect",
    default=None,
    help="Run the controller only while holding a coordination.k8s.io Lease, so that replicas "
    "never both write; every replica serves the registry API. Default: on in a pod, off "
    "elsewhere.",
)
@click.option(
    "--leader-election-namespace",
    default=None,
    help="Namespace of the Lease. Default: $POD_NAMESPACE, else agent-registry.",
)
@click.option(
    "--leader-election-id", default="agent-registry", show_default=True, help="Name of the Lease."
)
@click.option(
    "--lease-duration",
    type=click.FloatRange(min=1),
    default=15.0,
    show_default=True,
    help="Seconds a follower waits, after the leader's last renewal it saw, before taking over.",
)
@click.option(
    "--renew-deadline",
    type=click.FloatRange(min=0.5),
    default=10.0,
    show_default=True,
    help="Seconds the leader keeps trying to renew before it gives up (and exits).",
)
@click.option(
    "--retry-period",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between two acquire or renew attempts.",
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
    status_qps: float,
    configmap_resync: float,
    report_batch_retention: float,
    event_qps: float,
    reconcile_batch: int,
    delete_timeout: float,
    registry_url: str | None,
    report_auth: str,
    leader_elect: bool | None,
    leader_election_namespace: str | None,
    leader_election_id: str,
    lease_duration: float,
    renew_deadline: float,
    retry_period: float,
    peering: str | None,
    kubeconfig: str | None,
    verbose: bool,
) -> None:
    """Run the operator: reconcile Agents and AgentBehaviors, serve the registry API."""
    import kopf

    from agent_registry.controller.context import OperatorConfig
    from agent_registry.controller.operator import build_registry, configure

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
        namespaces=tuple(namespaces),
        status_interval=status_interval,
        underperforming_threshold=underperforming_threshold,
        underperforming_min_tasks=underperforming_min_tasks,
        policy_interval=policy_interval,
        experiment_interval=experiment_interval,
        rollout_interval=rollout_interval,
        status_qps=status_qps,
        configmap_resync=configmap_resync,
        report_batch_retention=report_batch_retention,
        event_qps=event_qps,
        batch_size=reconcile_batch,
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
    lease = None
    if leader_elect if leader_elect is not None else "KUBERNETES_SERVICE_HOST" in os.environ:
        from agent_registry.controller.leadership import LeaseSettings

        try:
            lease = LeaseSettings(
                namespace=leader_election_namespace
                or os.environ.get("POD_NAMESPACE", "agent-registry"),
                name=leader_election_id,
                lease_duration=lease_duration,
                renew_deadline=renew_deadline,
                retry_period=retry_period,
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    host, _, port = health_listen.rpartition(":")

    async def controller(memo: kopf.Memo) -> None:
        await kopf.operator(
            registry=build_registry(config),
            settings=settings,
            memo=memo,
            standalone=peering is None,
            peering_name=peering,
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            liveness_endpoint=f"http://{host or '0.0.0.0'}:{port}/healthz",
        )

    from agent_registry.controller.leadership import run_replica

    asyncio.run(run_replica(config, controller, lease=lease, health_listen=health_listen))
