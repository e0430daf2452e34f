"""Canary rollouts, the I/O around `controller.rollouts`: a kopf timer analyses each rollout
in progress, and a watch handler re-decides the behavior's agents when its status changes
what they run.

Why a timer per AgentBehavior rather than the status loop: behaviors are few (a timer each is
cheap, unlike one per Agent), the timer runs only while a rollout is in progress or an action
annotation waits (kopf's `when` filter), and a slow registry read for one rollout never holds
back every Agent's status. One tick:

1. which agents take part: the arbiter's decision for every agent that may run the behavior
   (pinned agents and agents in an experiment keep what those give them and are not counted);
2. ONE registry read of the counts: `revision_stats` over those agents, filtered to this
   behavior; the stable and canary rows are picked by sha256 (outcomes are credited to the
   script that produced them). They are lifetime counts, and the registry has no `since`
   filter, so the step's window is the difference to the baseline recorded in status when the
   step began, over the same agent set (another set opens a new window: `rollouts.window`);
   plus the agents' records for the canary's load failures (`load_failed_sha256`);
3. `analyze_canary` on the window, `next_rollout_state`, and the new status, patched onto
   the version it was computed from (a 409 re-reads the object and decides again);
4. Events, metrics, and the consumed annotations removed (only if still the value acted on).

The status is the source of truth: re-deciding the agents happens when the new status arrives
through the watch (`follow_rollout`), exactly as after an operator restart, where the agents'
resume handlers read the same status.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from agent_registry.controller.agents import redecide_agents
from agent_registry.controller.arbitration import BehaviorCatalog, decide_agent, facts_for
from agent_registry.controller.behaviors import agents_of
from agent_registry.controller.context import OperatorContext, context_of
from agent_registry.controller.events import post_event
from agent_registry.controller.indexes import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    Key,
    ObjectState,
    state_of,
)
from agent_registry.controller.kubeapi import KubeError
from agent_registry.controller.retrying import retry_on_outage
from agent_registry.controller.rollouts import (
    IN_PROGRESS,
    Observation,
    RolloutEvent,
    Transition,
    analysis_of,
    fingerprint,
    next_rollout_state,
    replacement_patch,
    serving,
    spec_of,
    status_of,
    window,
)
from agent_registry.controller.status import desired_behavior_status, status_patch
from agent_registry.decisions.canary_analysis import CanaryVerdict, analyze_canary
from agent_registry.decisions.evidence import Counts
from agent_registry.registry import BehaviorNotFound
from agent_registry.resources.behavior import PLURAL, RolloutStatus
from agent_registry.resources.common import API_VERSION

logger = logging.getLogger(__name__)

ACTION_ANNOTATIONS = (PROMOTE_ANNOTATION, ABORT_ANNOTATION)
# A status patch refused because the object moved on is decided again on the fresh object
# this many times before the next tick takes over.
CONFLICT_RETRIES = 3


def needs_timer(
    status: Mapping[str, Any] | None, annotations: Mapping[str, Any] | None, **_: Any
) -> bool:
    """kopf's `when` filter of the timer: a rollout in progress, or an action to consume (a
    promote left on a finished rollout must not promote the next one)."""
    phase = ((status or {}).get("rollout") or {}).get("phase")
    return phase in IN_PROGRESS or any(k in (annotations or {}) for k in ACTION_ANNOTATIONS)


def agents_running(
    namespace: str,
    name: str,
    agents_by_behavior: Mapping[Key, Any],
    agent_states: Mapping[Key, Any],
) -> list[ObjectState]:
    """The agents the behavior's rollout may concern: by spec.behaviorRef or pin (the
    index), and those that run it now for another reason (a policy's grant)."""
    found = {a.name: a for a in agents_of(namespace, name, agents_by_behavior, agent_states)}
    for (ns, _), store in list(agent_states.items()):
        if ns != namespace:
            continue
        for agent in store:
            if not isinstance(agent, ObjectState) or agent.name in found:
                continue
            if (agent.status.get("behavior") or {}).get("name") == name:
                found[agent.name] = agent
    return [found[n] for n in sorted(found)]


async def observe(
    ctx: OperatorContext, behavior: ObjectState, rollout: RolloutStatus, agents: list[ObjectState]
) -> Observation:
    """The registry's lifetime counts of stable and canary over the agents in the rollout."""
    namespace, name = behavior.namespace, behavior.name
    try:
        record = await ctx.registry.get_behavior_by_name(namespace, name)
    except BehaviorNotFound:
        return Observation(agents=fingerprint([], []))
    catalog = BehaviorCatalog(ctx, namespace)
    members: list[str] = []
    canaries: list[str] = []
    for agent in agents:
        decision, _ = await decide_agent(catalog, facts_for(ctx, agent))
        if decision.source != "Rollout" or decision.behavior != name:
            continue  # pinned, in an experiment, or not on this behavior: not compared
        agent_id = f"{namespace}/{agent.name}"
        members.append(agent_id)
        if any(s.revision.revision == rollout.canary_revision for s in decision.scripts):
            canaries.append(agent_id)
    key = fingerprint(members, canaries)
    if not members:
        return Observation(agents=key)
    rows = await ctx.registry.revision_stats(
        namespace=namespace, behavior_id=record.id, agent_ids=members
    )
    stable = Counts.total(
        Counts(r.tasks, r.successes) for r in rows if r.script_sha256 == rollout.stable_sha256
    )
    canary = Counts.total(
        Counts(r.tasks, r.successes) for r in rows if r.script_sha256 == rollout.canary_sha256
    )
    failures = 0
    if canaries:
        wanted = set(canaries)
        failures = sum(
            1
            for r in await ctx.registry.list_agents(namespace=namespace)
            if r.agent_id in wanted and r.load_failed_sha256 == rollout.canary_sha256
        )
    return Observation(stable, canary, key, len(canaries), failures)


def verdict_of(
    spec: Mapping[str, Any], rollout: RolloutStatus, observation: Observation
) -> CanaryVerdict | None:
    """The analysis of the step's window; None while the canary runs nowhere (weight 0)."""
    if not rollout.weight:
        return None
    stable, canary, _ = window(rollout, observation)
    analysis = analysis_of(spec_of(spec))
    return analyze_canary(
        stable,
        canary,
        min_tasks=analysis.min_tasks,
        max_regression=analysis.max_regression,
        alpha=analysis.alpha,
        canary_load_failures=observation.canary_load_failures if observation.canary_agents else 0,
        canary_agents=observation.canary_agents,
    )


async def _decide(
    ctx: OperatorContext,
    behavior: ObjectState,
    now: datetime.datetime,
    agents: list[ObjectState],
) -> Transition | None:
    rollout = status_of(behavior.status)
    observation: Observation | None = None
    verdict: CanaryVerdict | None = None
    if rollout is not None and rollout.phase in IN_PROGRESS:
        observation = await observe(ctx, behavior, rollout, agents)
        verdict = verdict_of(behavior.spec, rollout, observation)
    return next_rollout_state(
        behavior.name,
        behavior.spec,
        behavior.status,
        verdict,
        now,
        behavior.annotations,
        observation,
    )


async def write_rollout(
    ctx: OperatorContext,
    behavior: ObjectState,
    rollout: dict[str, Any] | None,
    now: datetime.datetime,
) -> str | None:
    """Patch the status onto the version it was computed from; the new resourceVersion (the
    old one when nothing changed). KubeError 409 when the object moved on."""
    desired = desired_behavior_status(
        behavior.status,
        observed_generation=None,
        rollout=rollout,
        now=now,
        generation=behavior.generation,
    )
    changes = status_patch(behavior.status, desired)
    if not changes:
        return behavior.resource_version
    if "rollout" in changes:
        changes["rollout"] = replacement_patch(behavior.status.get("rollout"), changes["rollout"])
    answer = await ctx.kube.patch_status(
        API_VERSION,
        PLURAL,
        behavior.namespace,
        behavior.name,
        changes,
        resource_version=behavior.resource_version,
    )
    return str(((answer or {}).get("metadata") or {}).get("resourceVersion") or "") or None


async def consume_annotations(
    ctx: OperatorContext, behavior: ObjectState, acted: Mapping[str, str], version: str | None
) -> None:
    """Remove the annotations acted on, unless a user changed them meanwhile (then the new
    value is the next tick's to act on)."""
    for _ in range(CONFLICT_RETRIES):
        try:
            await ctx.kube.patch_metadata(
                API_VERSION,
                PLURAL,
                behavior.namespace,
                behavior.name,
                {"annotations": dict.fromkeys(acted)},
                resource_version=version,
            )
            return
        except KubeError as exc:
            if exc.status != 409:
                raise
        fresh = await ctx.kube.get(API_VERSION, PLURAL, behavior.namespace, behavior.name)
        if fresh is None:
            return
        annotations = (fresh.get("metadata") or {}).get("annotations") or {}
        if any(annotations.get(k) != v for k, v in acted.items()):
            return
        version = (fresh.get("metadata") or {}).get("resourceVersion")
    logger.warning(f"could not remove {sorted(acted)} from {behavior.namespace}/{behavior.name}")


async def announce(ctx: OperatorContext, behavior: ObjectState, transition: Transition) -> None:
    for event in transition.events:
        await post_event(
            ctx, behavior, reason=event.reason, message=event.message, warning=event.warning
        )
    if transition.outcome is not None and ctx.metrics is not None:
        ctx.metrics.count_rollout(behavior.namespace, behavior.name, transition.outcome)


@retry_on_outage
async def evaluate_rollout(
    body: kopf.Body,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """The timer: one look at the rollout, and whatever it decides."""
    ctx = context_of(memo)
    agents_by_behavior, agent_states = ctx.agent_index.by_behavior, ctx.agent_index.states
    behavior = state_of("AgentBehavior", body)
    agents = agents_running(behavior.namespace, behavior.name, agents_by_behavior, agent_states)
    for _attempt in range(CONFLICT_RETRIES):
        now = datetime.datetime.now(datetime.UTC)
        transition = await _decide(ctx, behavior, now, agents)
        if transition is None:
            return
        try:
            version = await write_rollout(ctx, behavior, transition.rollout, now)
        except KubeError as exc:
            if exc.status != 409:
                raise
            # Someone else wrote meanwhile (the status loop, reconcile of a newer revision):
            # decide again from what is there now.
            fresh = await ctx.kube.get(API_VERSION, PLURAL, behavior.namespace, behavior.name)
            if fresh is None:
                return
            behavior = state_of("AgentBehavior", fresh)
            continue
        await announce(ctx, behavior, transition)
        if transition.consumed:
            await consume_annotations(ctx, behavior, transition.consumed, version)
        return


async def follow_rollout(
    body: kopf.Body,
    memo: kopf.Memo,
    type: str | None,
    **_: Any,
) -> None:
    """Every watch event of an AgentBehavior: when its rollout status changes what the
    agents run (a step's weight, a promotion, an abort), decide them again; the metric of
    aborted rollouts follows the status."""
    ctx = context_of(memo)
    agents_by_behavior, agent_states = ctx.agent_index.by_behavior, ctx.agent_index.states
    behavior = state_of("AgentBehavior", body)
    key = (behavior.namespace, behavior.name)
    rollout = status_of(behavior.status)
    if ctx.metrics is not None:
        aborted = type != "DELETED" and rollout is not None and rollout.phase == "Aborted"
        ctx.metrics.show_aborted(behavior.namespace, behavior.name, aborted)
    if type == "DELETED":
        ctx.rollout_serving.pop(key, None)
        return
    plan = serving(behavior.name, behavior.spec, behavior.status).key
    before = ctx.rollout_serving.get(key)
    ctx.rollout_serving[key] = plan
    # First sight (startup): the agents' own resume handlers decide from this same status.
    if before is None or before == plan or ctx.indexes is None:
        return
    agents = agents_running(behavior.namespace, behavior.name, agents_by_behavior, agent_states)
    await redecide_agents(ctx, agents)


__all__ = [
    "RolloutEvent",
    "agents_running",
    "announce",
    "consume_annotations",
    "evaluate_rollout",
    "follow_rollout",
    "needs_timer",
    "observe",
    "verdict_of",
    "write_rollout",
]
