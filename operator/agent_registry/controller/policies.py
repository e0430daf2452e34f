"""BehaviorPolicy: evaluate the role's agents on a timer, record switches in the policy's
status, and hand them to the arbiter as grants.

The decision rule is pure (`agent_registry.decisions.policy.recommend`); this module reads its
evidence (three bulk registry reads per evaluation, whatever the fleet size), writes the
outcome to the policy's status (the source of truth: it survives restarts), and re-decides the
agents whose grant changed when that status arrives through the watch. A deleted policy takes
its grants along: its agents return to their spec.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from agent_registry.controller.conditions import Cond, merge_conditions, timestamp
from agent_registry.controller.context import IndexMap, OperatorContext, context_of
from agent_registry.controller.events import post_event
from agent_registry.controller.indexes import Key, ObjectState, state_of
from agent_registry.controller.retrying import retry_on_outage
from agent_registry.controller.status import status_patch
from agent_registry.decisions.arbiter import Grant
from agent_registry.decisions.evidence import Counts
from agent_registry.decisions.policy import (
    AgentEvidence,
    CandidateEvidence,
    PolicySettings,
    candidate_interval,
    recommend,
)
from agent_registry.decisions.policy_windows import PolicyWindows, Recent, ScriptKey
from agent_registry.resources.common import parse_duration
from agent_registry.resources.policy import (
    MAX_RECOMMENDATIONS,
    MAX_SWITCHED,
    BehaviorPolicySpec,
)

logger = logging.getLogger(__name__)

READY = "Ready"
SWITCHING = "Switching"


def states_in(index: IndexMap, namespace: str) -> list[ObjectState]:
    found: list[ObjectState] = []
    for (ns, _), store in list(index.items()):
        if ns == namespace:
            found.extend(v for v in store if isinstance(v, ObjectState))
    return found


def policy_states(body: Mapping[str, Any], **_: Any) -> dict[Key, ObjectState]:
    state = state_of("BehaviorPolicy", body)
    return {(state.namespace, state.name): state}


def _switched(policy: ObjectState) -> dict[str, dict[str, Any]]:
    """Agent -> its entry in status.switched; once per snapshot (looked up for every agent
    of the namespace at each decision: rebuilt each time, that was quadratic)."""

    def build(state: ObjectState) -> dict[str, dict[str, Any]]:
        return {
            str(entry.get("agent")): entry
            for entry in state.status.get("switched") or []
            if isinstance(entry, dict)
        }

    return policy.derived("switched", build)


def _role_of(policy: ObjectState) -> str:
    return str(policy.spec.get("role", ""))


def policy_grant(agent: ObjectState, policies: IndexMap) -> Grant | None:
    """The switch an Auto policy of the agent's role made for it, if any (the oldest policy
    by name wins when several claim the agent)."""
    role = agent.spec.get("role")
    for policy in sorted(states_in(policies, agent.namespace), key=lambda p: p.name):
        if _role_of(policy) != role or policy.spec.get("mode", "Auto") != "Auto":
            continue
        entry = _switched(policy).get(agent.name)
        if entry is not None:
            return Grant(
                source="Policy",
                behavior=str(entry.get("to")),
                reason=f"BehaviorPolicy {policy.name}: {entry.get('reason', '')}",
                evidence={"policy": policy.name, "from": entry.get("from"), "at": entry.get("at")},
                owner=policy.name,
            )
    return None


def _selected(agent: ObjectState, spec: BehaviorPolicySpec) -> bool:
    if agent.spec.get("role") != spec.role:
        return False
    if spec.selector is not None and not spec.selector.matches(dict(agent.labels)):
        return False
    return (agent.status.get("phase") or "Active") == "Active"


def _epoch(value: Any) -> float | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _valid(behavior: ObjectState) -> bool:
    return any(
        c.get("type") == "Valid" and c.get("status") == "True"
        for c in behavior.status.get("conditions") or []
    )


class PolicyEvaluation:
    """One evaluation of one policy: evidence in, recommendations and the new status out."""

    def __init__(self, ctx: OperatorContext, policy: ObjectState) -> None:
        self.ctx = ctx
        self.policy = policy
        self.spec = BehaviorPolicySpec.model_validate(policy.spec)
        self.settings = PolicySettings(
            min_tasks=self.spec.min_tasks,
            confidence=self.spec.confidence,
            cooldown_seconds=parse_duration(self.spec.cooldown),
            max_switch_fraction=self.spec.max_switch_fraction,
        )

    async def run(self, now: datetime.datetime) -> dict[str, Any]:
        assert self.ctx.indexes is not None
        namespace = self.policy.namespace
        indexes = self.ctx.indexes
        agents = [a for a in states_in(indexes.agent_states, namespace) if _selected(a, self.spec)]
        # Pins and experiments win over a policy: their agents are not judged.
        judged = [
            a
            for a in agents
            if (a.status.get("behavior") or {}).get("source") not in ("Pin", "Experiment")
        ]
        names = self._candidate_names(states_in(indexes.behavior_states, namespace))
        registry = self.ctx.registry
        records = {r.agent_id: r for r in await registry.list_agents(namespace=namespace)}
        behaviors = {b.id: b for b in await registry.list_behaviors(namespace=namespace)}
        by_name = {b.name: b for b in behaviors.values()}
        fleet: dict[tuple[uuid.UUID, int], Counts] = {}
        runners: dict[tuple[uuid.UUID, int], int] = {}
        for total in await registry.revision_stats(namespace=namespace, role=self.spec.role):
            key = (total.behavior_id, total.revision)
            fleet[key] = fleet.get(key, Counts()) + Counts(total.tasks, total.successes)
            runners[key] = runners.get(key, 0) + total.agents
        history: dict[str, dict[str, Counts]] = {}
        scripts: dict[ScriptKey, Counts] = {}
        # Only the policy's role: the other agents' rows are neither judged nor candidates.
        for row in await registry.agent_script_counts(namespace=namespace, role=self.spec.role):
            counts = Counts(row.tasks, row.successes)
            # The behavior as a string: a tuple of strings hashes from cached hashes, a uuid's
            # hash is computed in Python at every lookup (the windows look up every row).
            row_key = (row.agent_id, str(row.behavior_id), row.revision, row.script_sha256)
            scripts[row_key] = counts
            behavior = behaviors.get(row.behavior_id)
            if behavior is None:
                continue
            mine = history.setdefault(row.agent_id, {})
            mine[behavior.name] = mine.get(behavior.name, Counts()) + counts
        recent = self._windows().observe(
            now.timestamp(),
            scripts=scripts,
            assignments={
                r.agent_id: (
                    (r.behavior_id, r.behavior_assigned_at, r.current_sha256),
                    Counts(r.current_tasks_completed, r.current_successes),
                )
                for r in records.values()
                if r.behavior_id is not None
            },
            role={r.agent_id for r in records.values() if r.agent_role == self.spec.role},
        )
        candidates = [
            self._candidate(name, by_name[name].id, by_name[name].revision, fleet, runners, recent)
            for name in names
            if name in by_name
        ]
        switched = _switched(self.policy)
        evidence = []
        for agent in judged:
            agent_id = f"{namespace}/{agent.name}"
            record = records.get(agent_id)
            current = (agent.status.get("behavior") or {}).get("name")
            if record is None or not current:
                continue
            evidence.append(
                AgentEvidence(
                    agent=agent_id,
                    current=str(current),
                    current_counts=Counts(record.current_tasks_completed, record.current_successes),
                    history=history.get(agent_id, {}),
                    last_switch_at=_epoch((switched.get(agent.name) or {}).get("at")),
                    recent_counts=recent.agent(agent_id) if recent is not None else None,
                )
            )
        cooldown = self.settings.cooldown_seconds
        in_window = sum(
            1
            for entry in switched.values()
            if (at := _epoch(entry.get("at"))) is not None and now.timestamp() - at < cooldown
        )
        # Pure and CPU-bound (about 60 ms per 1,000 judged agents): in a thread, so the event
        # loop (status writes, the reconciler, the API) keeps its turns meanwhile.
        recommendations = await asyncio.to_thread(
            recommend,
            evidence,
            candidates,
            settings=self.settings,
            now=now.timestamp(),
            switches_in_window=in_window,
            role_agents=len(agents),
        )
        return self._status(now, agents, candidates, recommendations, switched)

    def _windows(self) -> PolicyWindows:
        """This policy's ring of snapshots (a new one when the role or the window changed:
        the candidates' last windows are the role's)."""
        key = (self.policy.namespace, self.policy.name)
        shape = (self.spec.role, self.settings.window_seconds)
        held = self.ctx.policy_windows.get(key)
        if isinstance(held, tuple) and held[0] == shape and isinstance(held[1], PolicyWindows):
            return held[1]
        ring = PolicyWindows(
            self.settings.window_seconds,
            # Snapshots older than two windows are dropped, or than a window and three
            # evaluations if the policy evaluates less often than that.
            max_age=self.settings.window_seconds + 3 * self.ctx.config.policy_interval,
        )
        self.ctx.policy_windows[key] = (shape, ring)
        return ring

    @staticmethod
    def _candidate(
        name: str,
        behavior_id: uuid.UUID,
        revision: int,
        fleet: Mapping[tuple[uuid.UUID, int], Counts],
        runners: Mapping[tuple[uuid.UUID, int], int],
        recent: Recent | None,
    ) -> CandidateEvidence:
        window = recent.candidate(str(behavior_id), revision) if recent is not None else None
        counts = fleet.get((behavior_id, revision), Counts())
        if window is None:
            return CandidateEvidence(
                name, revision, counts, agents=runners.get((behavior_id, revision))
            )
        return CandidateEvidence(name, revision, counts, recent_counts=window[0], agents=window[1])

    def _candidate_names(self, behaviors: Iterable[ObjectState]) -> list[str]:
        if self.spec.candidates:
            return [c.name for c in self.spec.candidates]
        return sorted(
            b.name for b in behaviors if b.spec.get("roleType") == self.spec.role and _valid(b)
        )

    def _status(
        self,
        now: datetime.datetime,
        agents: list[ObjectState],
        candidates: list[CandidateEvidence],
        recommendations: Iterable[Any],
        switched: Mapping[str, dict[str, Any]],
    ) -> dict[str, Any]:
        current = self.policy.status
        # A copy: `switched` is the policy snapshot's own (shared by every policy_grant).
        switched = dict(switched)
        proposed = [
            {
                "agent": r.agent.partition("/")[2],
                "from": r.from_behavior,
                "to": r.to_behavior,
                "reason": r.reason[:1024],
            }
            for r in recommendations
        ][:MAX_RECOMMENDATIONS]
        auto = self.spec.mode == "Auto"
        switches = int(current.get("switches") or 0)
        last_switch = current.get("lastSwitchAt")
        if auto and proposed:
            stamp = timestamp(now)
            for item in proposed:
                switched[item["agent"]] = {**item, "at": stamp}
            switches += len(proposed)
            last_switch = stamp
        # Agents that left (deleted, other role) keep no grant.
        present = {a.name for a in agents}
        kept = [switched[name] for name in sorted(switched) if name in present][:MAX_SWITCHED]
        observed = self.policy.generation
        conditions = merge_conditions(
            current.get("conditions"),
            [
                Cond(
                    READY,
                    "True",
                    "Evaluated",
                    f"{len(agents)} agents, {len(candidates)} candidates",
                ),
                Cond(
                    SWITCHING,
                    "True" if auto and proposed else "False",
                    ("Switched" if auto else "Recommended") if proposed else "NoBetterBehavior",
                    f"{len(proposed)} agent(s) {'switched' if auto else 'would be switched'}"
                    if proposed
                    else "no agent has a credibly better behavior",
                ),
            ],
            now=now,
            observed_generation=observed,
        )
        return {
            "observedGeneration": observed,
            "agents": len(agents),
            "candidates": [
                {
                    "name": c.name,
                    "revision": c.revision,
                    "tasks": c.counts.tasks,
                    "successRate": round(c.counts.rate, 4),
                    "interval": [
                        round(x, 4) for x in candidate_interval(c.counts, self.spec.confidence)
                    ],
                    **(
                        {}
                        if c.recent_counts is None
                        else {
                            "recentTasks": c.recent_counts.tasks,
                            "recentSuccessRate": round(c.recent_counts.rate, 4),
                        }
                    ),
                }
                for c in candidates
            ],
            "recommendations": proposed,
            "switched": kept,
            "switches": switches,
            "lastSwitchAt": last_switch,
            "conditions": conditions,
        }


@retry_on_outage
async def evaluate_policy(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any) -> None:
    """The policy's timer: judge the agents, write the status (and Events for news)."""
    ctx = context_of(memo)
    policy = state_of("BehaviorPolicy", body)
    now = datetime.datetime.now(datetime.UTC)
    desired = await PolicyEvaluation(ctx, policy).run(now)
    # lastEvaluatedAt is left out of the comparison: a patch only when something changed.
    changes = status_patch(policy.status, desired)
    if not changes:
        return
    patch.status.update(changes)
    patch.status["lastEvaluatedAt"] = timestamp(now)
    before = {(r.get("agent"), r.get("to")) for r in policy.status.get("recommendations") or []}
    for item in desired["recommendations"]:
        if (item["agent"], item["to"]) in before:
            continue
        verb = "switched" if policy.spec.get("mode", "Auto") == "Auto" else "recommends"
        await post_event(
            ctx,
            policy,
            reason="Switched" if verb == "switched" else "Recommendation",
            message=f"{verb} {item['agent']}: {item['from']} -> {item['to']}: {item['reason']}",
        )


async def apply_policy_grants(body: kopf.Body, memo: kopf.Memo, type: str | None, **_: Any) -> None:
    """Every watch event of a policy (its status included): re-decide the agents whose grant
    may have changed, i.e. the ones it lists now and the ones it listed before."""
    from agent_registry.controller.agents import redecide_agents

    ctx = context_of(memo)
    policy = state_of("BehaviorPolicy", body)
    key = (policy.namespace, policy.name)
    now_listed = set() if type == "DELETED" else set(_switched(policy))
    before = ctx.policy_grants.get(key, set())
    if type == "DELETED":
        ctx.policy_grants.pop(key, None)
        ctx.policy_windows.pop(key, None)
    else:
        ctx.policy_grants[key] = now_listed
    affected = now_listed | before
    if not affected or ctx.indexes is None:
        return
    agents = [
        a for a in states_in(ctx.indexes.agent_states, policy.namespace) if a.name in affected
    ]
    await redecide_agents(ctx, agents)


__all__ = [
    "PolicyEvaluation",
    "apply_policy_grants",
    "evaluate_policy",
    "policy_grant",
    "policy_states",
    "states_in",
]
