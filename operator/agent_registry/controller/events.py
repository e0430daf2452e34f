"""Kubernetes Events the operator posts on purpose (assignments, reloads, invalid scripts).

Posted directly rather than with kopf.info/warn: kopf filters those by its posting level, which
we keep at WARNING so that kopf does not turn every INFO log line into an Event, and kopf's
poster is only reachable from inside handlers (the status loop posts too). Best effort: an Event
that cannot be posted is logged, never fails a reconcile.
"""

from __future__ import annotations

import logging

from agent_registry.controller.context import OperatorContext
from agent_registry.controller.indexes import ObjectState
from agent_registry.controller.kubeapi import KubeError, KubeUnavailable

logger = logging.getLogger(__name__)


async def post_event(
    ctx: OperatorContext, obj: ObjectState, *, reason: str, message: str, warning: bool = False
) -> None:
    """Post one Event, within the fleet-wide Event budget (`ctx.event_limiter`): beyond it
    the Event is dropped and counted (as client-go's event correlator drops a flood), so a
    reconcile of 10,000 Agents is not 10,000 more API writes competing with it."""
    limiter = ctx.event_limiter
    if limiter is not None and not limiter.try_acquire():
        if ctx.metrics is not None:
            ctx.metrics.events_dropped.labels(reason=reason).inc()
        logger.debug(f"event {reason} for {obj.kind} {obj.namespace}/{obj.name} dropped (budget)")
        return
    try:
        await ctx.kube.post_event(
            obj.event_body(),
            type_="Warning" if warning else "Normal",
            reason=reason,
            message=message,
        )
    except (KubeError, KubeUnavailable) as exc:
        logger.warning(f"event {reason} for {obj.kind} {obj.namespace}/{obj.name}: {exc}")
