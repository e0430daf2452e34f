"""Assemble the operator: kopf settings, handler registration, startup and cleanup.

Handlers are registered on an explicit `kopf.OperatorRegistry` (not on import), so the webhook
exists only when asked for and tests can build an operator of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import kopf

from agent_registry.controller import (
    behaviors,
    experiments,
    indexes,
    policies,
    rollout_handlers,
    webhook,
)
from agent_registry.controller.agent_watch import AgentWatch
from agent_registry.controller.batch_retention import run_batch_retention
from agent_registry.controller.context import (
    FINALIZER,
    Indexes,
    OperatorConfig,
    OperatorContext,
    context_of,
)
from agent_registry.controller.drift import run_configmap_resync
from agent_registry.controller.fleet import FleetReconciler, StatusSink, run_fleet
from agent_registry.controller.indexes import AgentIndex, Key, ObjectState
from agent_registry.controller.throttle import RateLimiter
from agent_registry.controller.writeback import run_status_loop
from agent_registry.resources.common import GROUP, VERSION

if TYPE_CHECKING:
    from agent_registry.metrics import Metrics
    from agent_registry.registry import RegistryService

logger = logging.getLogger(__name__)

# kopf's own annotations under a subdomain of our group, not the group itself: kopf leaves
# every annotation under its storage prefix out of the diff it reacts to, so with the bare
# group the users' `agents.singularity.dev/pin` annotation would never trigger a handler.
PREFIX = f"kopf.{GROUP}"


# The handlers kopf runs on every watch event (status writes included): kopf logs each run at
# INFO, a line per Agent and per status write; their own logs say what they did.
WATCH_HANDLERS = ("rollout", "grants")


class WatchHandlerSuccesses(logging.Filter):
    """Drops kopf's "Handler 'x' succeeded." of the watch handlers (failures still log)."""

    _quiet = frozenset(f"Handler '{name}' succeeded." for name in WATCH_HANDLERS)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self._quiet


def configure(settings: kopf.OperatorSettings, config: OperatorConfig, **webhook_args: Any) -> None:
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, WatchHandlerSuccesses) for f in objects.filters):
        objects.addFilter(WatchHandlerSuccesses())
    # Progress and the last-handled spec in annotations: status stays ours (schema-valid).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    # The finalizer (AgentBehaviors only) keeps the bare group; Agents have none
    # (agent_watch.py removes the one earlier versions put there).
    settings.persistence.finalizer = FINALIZER
    # Only the Events we post on purpose, not one per log line.
    settings.posting.level = logging.WARNING
    # Resources are known at startup (CRDs installed first): no CRD/namespace watch, less RBAC.
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    # No kopf worker_limit: a limit below the object count stalled the start here (300 Agents,
    # limit 64), probably because kopf's workers wait until every object is indexed.
    if config.webhook:
        settings.admission.server = webhook.webhook_server(**webhook_args)
        if config.webhook_managed:
            settings.admission.managed = webhook.WEBHOOK_CONFIGURATION


async def startup(
    memo: kopf.Memo,
    behavior_states: kopf.Index[Key, ObjectState],
    policy_states: kopf.Index[Key, ObjectState],
    experiment_states: kopf.Index[Key, ObjectState],
    **_: Any,
) -> None:
    """Clients on kopf's event loop, the registry API server, the status loop."""
    from agent_registry.controller.kubeapi import Kube
    from agent_registry.metrics import Metrics
    from agent_registry.registry import RegistryService

    config: OperatorConfig = memo.config
    # A replica that serves the API itself (leadership.run_replica) shares its registry and
    # metrics: the API keeps serving, in followers too, whatever the controller does.
    shared: SharedServices | None = memo.get("shared")
    registry = shared.registry if shared else RegistryService.from_url(config.database_url)
    agent_index = AgentIndex()
    agent_states = agent_index.states
    ctx = OperatorContext(
        config=config,
        registry=registry,
        kube=Kube.from_kubeconfig(config.kubeconfig),
        metrics=shared.metrics if shared else Metrics(),
        indexes=Indexes(
            agent_states=agent_states,
            behavior_states=behavior_states,
            policy_states=policy_states,
            experiment_states=experiment_states,
        ),
        agent_index=agent_index,
    )
    ctx.status_limiter = RateLimiter(config.status_qps, max(config.status_qps, 1.0))
    ctx.event_limiter = RateLimiter(config.event_qps, config.event_burst)
    sink = StatusSink(ctx, ctx.status_limiter)
    ctx.fleet = FleetReconciler(ctx, sink, batch_size=config.batch_size)
    memo.context = ctx
    if config.api_listen and shared is None:
        ctx.tasks.append(await start_api(ctx, config.api_listen))
    ctx.tasks.append(asyncio.create_task(run_fleet(ctx, ctx.fleet, sink), name="fleet"))
    agent_watch = AgentWatch(ctx, config.namespaces or None)
    ctx.tasks.append(asyncio.create_task(agent_watch.run(), name="agents"))
    ctx.tasks.append(
        asyncio.create_task(
            run_configmap_resync(ctx, config.configmap_resync), name="configmap-resync"
        )
    )
    ctx.tasks.append(
        asyncio.create_task(run_status_loop(ctx, agent_states, behavior_states), name="status")
    )
    ctx.tasks.append(
        asyncio.create_task(
            run_batch_retention(registry, config.report_batch_retention), name="batch-retention"
        )
    )


@dataclass(frozen=True)
class SharedServices:
    """What a replica's API and its controller share when the API runs outside kopf."""

    registry: RegistryService
    metrics: Metrics


async def start_api(ctx: OperatorContext, listen: str) -> Any:
    assert ctx.metrics is not None
    return await serve_api(ctx.config, ctx.registry, ctx.metrics, listen)


async def serve_api(
    config: OperatorConfig, registry: RegistryService, metrics: Metrics, listen: str
) -> Any:
    """The registry API on `listen`; returns its aiohttp runner (cleanup() stops it)."""
    from aiohttp import web

    from agent_registry.api import Authenticator, ReportAuth, create_app

    authenticator = Authenticator.from_kubeconfig(
        config.kubeconfig, report_auth=ReportAuth(config.report_auth)
    )
    app = create_app(registry, authenticator, metrics=metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
    logger.info(f"registry API listening on {listen}")
    return runner


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    ctx = context_of(memo)
    for task in reversed(ctx.tasks):
        if isinstance(task, asyncio.Task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        else:
            await task.cleanup()
    await ctx.kube.close()
    if memo.get("shared") is None:  # a shared registry belongs to the replica, still serving
        await ctx.registry.close()


def _fn(handler: Any) -> Any:
    """kopf's handler protocols list every keyword; ours take the few they use and `**_`."""
    return handler


def build_registry(config: OperatorConfig) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    behavior = (GROUP, VERSION, "agentbehaviors")
    policy = (GROUP, VERSION, "behaviorpolicies")
    experiment = (GROUP, VERSION, "behaviorexperiments")

    # A registry of our own has none of kopf's default login handlers: use the kubernetes
    # client's (KUBECONFIG, then the in-cluster ServiceAccount).
    kopf.on.login(registry=registry)(_fn(kopf.login_via_client))
    kopf.on.startup(registry=registry)(_fn(startup))
    kopf.on.cleanup(registry=registry)(_fn(cleanup))

    # Agents are not kopf's: agent_watch.py lists and watches them itself (issue 14).
    kopf.index(*behavior, registry=registry)(_fn(indexes.behavior_states))
    kopf.index(*policy, registry=registry)(_fn(policies.policy_states))
    kopf.index(*experiment, registry=registry)(_fn(experiments.experiment_states))

    for on in (kopf.on.create, kopf.on.update, kopf.on.resume):
        on(*behavior, registry=registry, id="reconcile")(_fn(behaviors.reconcile_behavior))
    kopf.on.delete(*behavior, registry=registry, id="mark-deleted")(_fn(behaviors.delete_behavior))
    # A policy needs no finalizer: deleting it only drops its grants, which the event applies.
    kopf.timer(
        *policy,
        registry=registry,
        id="evaluate",
        interval=config.policy_interval,
        initial_delay=min(5.0, config.policy_interval),
    )(_fn(policies.evaluate_policy))
    kopf.on.event(*policy, registry=registry, id="grants")(_fn(policies.apply_policy_grants))
    # Canary rollouts: analysed on a timer while one is in progress (or an action annotation
    # waits); the agents follow the status through the watch.
    kopf.timer(
        *behavior,
        registry=registry,
        id="rollout",
        interval=config.rollout_interval,
        initial_delay=min(1.0, config.rollout_interval),
        when=rollout_handlers.needs_timer,
    )(_fn(rollout_handlers.evaluate_rollout))
    kopf.on.event(*behavior, registry=registry, id="rollout")(_fn(rollout_handlers.follow_rollout))
    kopf.timer(
        *experiment,
        registry=registry,
        id="evaluate",
        interval=config.experiment_interval,
        initial_delay=min(2.0, config.experiment_interval),
    )(_fn(experiments.evaluate_experiment))
    kopf.on.event(*experiment, registry=registry, id="grants")(
        _fn(experiments.apply_experiment_grants)
    )

    if config.webhook:
        kopf.on.validate(*behavior, registry=registry, id="lua", operations=["CREATE", "UPDATE"])(
            _fn(webhook.validate_behavior)
        )
        kopf.on.validate(
            *experiment, registry=registry, id="experiment", operations=["CREATE", "UPDATE"]
        )(_fn(webhook.validate_experiment))
    return registry


def memo_for(config: OperatorConfig) -> kopf.Memo:
    return kopf.Memo(config=config)


__all__ = ["build_registry", "cleanup", "configure", "context_of", "memo_for", "startup"]
