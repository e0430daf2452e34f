"""From declared objects and the registry to the arbiter's inputs, and from its Decision to
the registry, the ConfigMap and the Agent's conditions.

The decision itself is `agent_registry.decisions.arbiter.decide` (pure); this module is the
I/O around it: it reads only the behaviors a decision can need (the spec's, the pin's, the
grants'), and applies a decision idempotently (an unchanged decision is no registry write).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from agent_registry.controller import rendering
from agent_registry.controller.conditions import Cond
from agent_registry.controller.context import ASSIGNED_BY, AppliedConfigMap, OperatorContext
from agent_registry.controller.drift import data_digest
from agent_registry.controller.indexes import (
    PIN_ANNOTATION,
    PIN_REASON_ANNOTATION,
    Key,
    ObjectState,
    one,
)
from agent_registry.controller.rollouts import Serving, serving
from agent_registry.controller.views import open_assignment
from agent_registry.decisions.arbiter import (
    PIN_CONDITION,
    AgentFacts,
    BehaviorFacts,
    Decision,
    Grant,
    Revision,
    Rollout,
    decide,
    parse_pin,
)
from agent_registry.registry import (
    AssignmentRecord,
    AssignRequest,
    BehaviorNotFound,
    BehaviorRecord,
    ScriptRef,
)

BehaviorIndex = Mapping[Key, Any]


Assigner = Callable[[AssignRequest], Awaitable[AssignmentRecord]]


class GroupAssigner:
    """Assignments of concurrent reconciles written together (group commit): a caller's
    request joins the next `assign_behaviors` transaction and returns once that one is
    written. One request per agent at a time (the callers hold the agent's lock)."""

    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx
        self.queue: list[tuple[AssignRequest, asyncio.Future[AssignmentRecord]]] = []
        self.flushing = False
        self._flusher: asyncio.Task[None] | None = None
        self.transactions = 0

    async def __call__(self, request: AssignRequest) -> AssignmentRecord:
        future: asyncio.Future[AssignmentRecord] = asyncio.get_running_loop().create_future()
        self.queue.append((request, future))
        if not self.flushing:
            self.flushing = True
            # Held: the event loop keeps only a weak reference to a task.
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self.queue:
                await asyncio.sleep(0)  # the callers running now join this group
                group, self.queue = self.queue, []
                try:
                    written = await self.ctx.registry.assign_behaviors([r for r, _ in group])
                    self.transactions += 1
                except Exception:
                    # One bad request (a behavior deleted meanwhile) must not fail the
                    # others: each on its own, with its own error.
                    for request, future in group:
                        try:
                            (record,) = await self.ctx.registry.assign_behaviors([request])
                            future.set_result(record)
                        except Exception as exc:
                            future.set_exception(exc)
                    continue
                for (_, future), record in zip(group, written, strict=True):
                    future.set_result(record)
        finally:
            self.flushing = False


class Unread:
    """Not read yet (as opposed to None: read, and there is none)."""


UNREAD = Unread()


@dataclass
class BehaviorCatalog:
    """The registry's view of the behaviors one decision may name, read once per decision.

    Scripts of older revisions are read only when a decision picks one (a pin `name@3`, a
    rollout's stable revision), so the common case costs one behavior read."""

    ctx: OperatorContext
    namespace: str
    records: dict[str, BehaviorRecord | None] = field(default_factory=dict)
    scripts: dict[tuple[str, int], str] = field(default_factory=dict)
    # Behaviors whose rollout ended: why their agents run the served revision.
    notes: dict[str, Serving] = field(default_factory=dict)

    # The reads in flight: a batch decides hundreds of agents of a behavior at once, and
    # without these each would read it (py-spy: 6-8 % of the operator at 10,000 Agents).
    _reading: dict[Any, asyncio.Future[Any]] = field(default_factory=dict)

    async def _once(self, key: Any, read: Callable[[], Awaitable[Any]]) -> Any:
        """`read()` once for all concurrent callers of the same key; a failed read is not
        kept (the next caller reads again). Shielded: one caller's cancellation does not
        cancel the others' read."""
        future = self._reading.get(key)
        if future is None:
            future = asyncio.ensure_future(read())
            self._reading[key] = future
            future.add_done_callback(lambda _: self._reading.pop(key, None))
        return await asyncio.shield(future)

    async def record(self, name: str) -> BehaviorRecord | None:
        if name not in self.records:

            async def read() -> None:
                try:
                    self.records[name] = await self.ctx.registry.get_behavior_by_name(
                        self.namespace, name
                    )
                except BehaviorNotFound:
                    self.records[name] = None

            await self._once(("record", name), read)
        return self.records[name]

    async def facts(self, name: str, *, with_revisions: bool) -> BehaviorFacts | None:
        record = await self.record(name)
        if record is None:
            return None
        current = Revision(record.name, record.revision, record.script_sha256)
        self.scripts[(record.name, record.revision)] = record.lua_script
        revisions = {record.revision: current}
        if with_revisions:
            for stored in await self._once(
                ("revisions", record.id), lambda: self.ctx.registry.behavior_revisions(record.id)
            ):
                revisions[stored.revision] = Revision(
                    record.name, stored.revision, stored.script_sha256
                )
                self.scripts[(record.name, stored.revision)] = stored.lua_script
        current, rollout = self._rollout(name, current, revisions)
        return BehaviorFacts(
            name=record.name,
            role=record.role_type,
            current=None if record.deleted_at is not None else current,
            revisions=revisions,
            deleted=record.deleted_at is not None,
            rollout=None if record.deleted_at is not None else rollout,
        )

    def _rollout(
        self, name: str, newest: Revision, revisions: dict[int, Revision]
    ) -> tuple[Revision, Rollout | None]:
        """(current, rollout) from the AgentBehavior's status.rollout (controller.rollouts):
        the newest revision stays current while its canary runs; once a rollout ended (or
        before the newest revision's rollout is recorded) agents get the served revision."""
        indexes = self.ctx.indexes
        state = one(indexes.behavior_states, (self.namespace, name)) if indexes else None
        if not isinstance(state, ObjectState):
            return newest, None
        # Once per snapshot of the behavior, not per agent deciding (pydantic parses the spec
        # and status each time: about half of a 10,000-agent rollout tick).
        plan = state.derived("serving", lambda s: serving(name, s.spec, s.status))
        if plan.served is None:
            return newest, None
        served = Revision(name, plan.served.revision, plan.served.sha256)
        revisions.setdefault(served.revision, served)
        if plan.canary is None:
            if plan.note is not None:
                self.notes[name] = plan
            return served, None
        canary = Revision(name, plan.canary.revision, plan.canary.sha256)
        revisions.setdefault(canary.revision, canary)
        rollout = Rollout(served, canary, plan.weight, plan.unit, plan.step)
        return newest, rollout

    def explained(self, decision: Decision) -> Decision:
        """After a rollout ended, a decision for its served revision says so (reason and
        evidence go to the registry's history with the assignment)."""
        plan = self.notes.get(decision.behavior or "")
        if plan is None or plan.note is None or decision.source not in ("Spec", "Policy"):
            return decision
        if plan.served is None or decision.primary is None:
            return decision
        if decision.primary.revision != plan.served.revision:
            return decision
        return replace(
            decision,
            reason=f"{decision.reason}; {plan.note}",
            evidence={**decision.evidence, **plan.evidence},
        )

    async def script(self, revision: Revision) -> str:
        key = (revision.behavior, revision.revision)
        if key not in self.scripts:
            record = await self.record(revision.behavior)
            assert record is not None
            stored = await self._once(
                key, lambda: self.ctx.registry.get_behavior_revision(record.id, revision.revision)
            )
            self.scripts[key] = stored.lua_script
        return self.scripts[key]


def facts_for(ctx: OperatorContext, agent: ObjectState) -> AgentFacts:
    """The agent as declared, with the grants the experiments and policies made for it."""
    from agent_registry.controller.experiments import experiment_grant
    from agent_registry.controller.policies import policy_grant

    indexes = ctx.indexes
    policy = policy_grant(agent, indexes.policy_states) if indexes is not None else None
    experiment = experiment_grant(agent, indexes.experiment_states) if indexes is not None else None
    return agent_facts(agent, experiment=experiment, policy=policy)


def agent_facts(
    agent: ObjectState,
    *,
    experiment: Grant | None = None,
    policy: Grant | None = None,
) -> AgentFacts:
    pin, pin_error = parse_pin(agent.annotations.get(PIN_ANNOTATION))
    if pin is not None:
        reason = agent.annotations.get(PIN_REASON_ANNOTATION)
        pin = type(pin)(pin.behavior, pin.revision, reason.strip() if reason else None)
    return AgentFacts(
        namespace=agent.namespace,
        name=agent.name,
        role=str(agent.spec.get("role", "")),
        behavior_ref=agent.behavior_ref,
        pin=pin,
        pin_error=pin_error,
        experiment=experiment,
        policy=policy,
    )


def named_behaviors(facts: AgentFacts) -> list[str]:
    """Every behavior the rules may pick for this agent, in precedence order."""
    names = [facts.pin.behavior] if facts.pin is not None else []
    for grant in (facts.experiment, facts.policy):
        if grant is not None:
            names.append(grant.behavior)
            names.extend(s.revision.behavior for s in grant.scripts)
    if facts.behavior_ref is not None:
        names.append(facts.behavior_ref)
    return list(dict.fromkeys(names))


async def decide_agent(
    catalog: BehaviorCatalog, facts: AgentFacts
) -> tuple[Decision, dict[str, BehaviorFacts]]:
    behaviors: dict[str, BehaviorFacts] = {}
    pinned_revision = facts.pin is not None and facts.pin.revision is not None
    for name in named_behaviors(facts):
        with_revisions = pinned_revision and facts.pin is not None and name == facts.pin.behavior
        found = await catalog.facts(name, with_revisions=with_revisions)
        if found is not None:
            behaviors[name] = found
    return catalog.explained(decide(facts, behaviors)), behaviors


def pin_condition(facts: AgentFacts, decision: Decision) -> Cond | None:
    """`Pinned`: True while a pin applies, False with the reason it does not; no condition
    without a pin annotation."""
    problem = next((p for p in decision.problems if p.condition == PIN_CONDITION), None)
    if problem is not None:
        return Cond(PIN_CONDITION, "False", problem.reason, problem.message)
    if decision.source == "Pin":
        return Cond(PIN_CONDITION, "True", "Pinned", decision.reason)
    return None


@dataclass(frozen=True)
class Applied:
    """What applying a decision did."""

    changed: bool  # a new assignment was opened (an Event is due)
    assignment: AssignmentRecord | None


def limits_of(states: BehaviorIndex, namespace: str, name: str) -> dict[str, int]:
    state = one(states, (namespace, name))
    limits = (state.spec.get("limits") if isinstance(state, ObjectState) else None) or {}
    return {str(k): int(v) for k, v in limits.items() if v is not None}


async def apply_decision(
    ctx: OperatorContext,
    agent: ObjectState,
    decision: Decision,
    catalog: BehaviorCatalog,
    behavior_states: BehaviorIndex,
    *,
    before: AssignmentRecord | Unread | None = UNREAD,
    assign: Assigner | None = None,
) -> Applied:
    """Record the decision in the registry (a new assignment when the primary script or the
    source changed) and apply the agent's ConfigMap with the decided bundle.

    The open assignment is always read from the registry, never taken from the Agent's
    status: the status lags by up to one write-back interval, and a change followed by a
    change back within it (a rollout started and aborted) would otherwise leave the registry,
    and then the status, on the wrong decision. A batch passes `before` as it read it in bulk
    for the whole batch, in the same (serialized) reconcile of the agent, and `assign`, which
    writes the assignments of many agents together (GroupAssigner)."""
    primary = decision.primary
    if primary is None:
        return Applied(False, None)
    agent_id = f"{agent.namespace}/{agent.name}"
    if isinstance(before, Unread):
        before = await open_assignment(ctx.registry, agent_id)
    record = await catalog.record(primary.behavior)
    changed = before is None or (
        record is None
        or before.behavior_id != record.id
        or before.behavior_revision != primary.revision
        or before.source != decision.source
    )
    reason = decision.reason
    if (
        before is not None
        and record is not None
        and before.behavior_id == record.id
        and before.source == decision.source
        and before.behavior_revision != primary.revision
    ):
        # The same decision, a new script: the history says it was a hot reload.
        reason = f"{reason} (hot reload: revision {before.behavior_revision} -> {primary.revision})"
    records: dict[str, BehaviorRecord] = {}
    for share in decision.scripts:
        found = await catalog.record(share.revision.behavior)
        if found is None:
            return Applied(False, before)  # deleted meanwhile: the next event decides again
        records[share.revision.behavior] = found
    assignment = before
    if len(decision.scripts) > 1:
        # The registry counts outcomes only of scripts it delivered to the agent.
        await ctx.registry.allow_scripts(
            agent_id,
            [
                ScriptRef(
                    behavior_id=records[s.revision.behavior].id,
                    revision=s.revision.revision,
                    sha256=s.revision.sha256,
                )
                for s in decision.scripts
            ],
        )
    if changed:
        request = AssignRequest(
            agent_id=agent_id,
            behavior_id=records[primary.behavior].id,
            assigned_by=ASSIGNED_BY,
            reason=reason,
            revision=primary.revision,
            source=decision.source,
            evidence=dict(decision.evidence),
        )
        if assign is not None:
            assignment = await assign(request)
        else:
            assignment = await ctx.registry.assign_behavior(
                request.agent_id,
                request.behavior_id,
                assigned_by=request.assigned_by,
                reason=request.reason,
                revision=request.revision,
                source=request.source,
                evidence=request.evidence,
            )
    entries = [
        rendering.WeightedBehavior(
            snapshot=rendering.BehaviorSnapshot(
                name=share.revision.behavior,
                namespace=agent.namespace,
                revision=share.revision.revision,
                sha256=share.revision.sha256,
                script=await catalog.script(share.revision),
                limits=limits_of(behavior_states, agent.namespace, share.revision.behavior),
            ),
            weight=share.weight,
        )
        for share in decision.scripts
    ]
    owner = rendering.Owner(name=agent.name, namespace=agent.namespace, uid=agent.uid)
    manifest = rendering.render_bundle_configmap(owner, entries)
    # Applied by this process already, with exactly this content: no API call (a behavior's
    # new revision re-decides all its agents; an unchanged ConfigMap is most of them on a
    # restart's second pass). The first apply after a start always happens.
    digest = hashlib.sha256(
        json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    ).digest()
    key = (agent.namespace, agent.name)
    applied = ctx.applied_configmaps.get(key)
    if applied is None or applied.manifest != digest:
        await ctx.kube.apply(manifest)
        ctx.applied_configmaps[key] = AppliedConfigMap(digest, data_digest(manifest.get("data")))
    return Applied(changed, assignment)


__all__ = [
    "UNREAD",
    "Applied",
    "Assigner",
    "BehaviorCatalog",
    "GroupAssigner",
    "Unread",
    "agent_facts",
    "apply_decision",
    "decide_agent",
    "facts_for",
    "limits_of",
    "named_behaviors",
    "pin_condition",
]
