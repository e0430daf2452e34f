"""RegistryService: the seed's AgentRegistryService, async, exact under concurrency.

One service (one engine) per event loop. Every method runs in its own transaction and returns
frozen records; database outages raise RegistryUnavailable (retry), other failures the typed
errors of agent_registry.registry.errors.

The methods are thin: each concern is implemented in its own module, as functions of the
service's Database (transactions.py): agents.py, behaviors.py, assignments.py,
ingestion.py (task outcomes, stats, loaded and refused scripts), revisions.py (counts per
script) and retention.py (pruning the batch records).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from agent_registry.registry import (
    agents,
    assignments,
    behaviors,
    ingestion,
    retention,
    revisions,
)
from agent_registry.registry.behaviors import script_sha256
from agent_registry.registry.coalescing import Coalescer
from agent_registry.registry.delivered import DeliveredScripts
from agent_registry.registry.engine import create_engine_for
from agent_registry.registry.ingestion import STATS_FIELDS, LoadFailureLike
from agent_registry.registry.notifications import ChangeHub, behavior_changed
from agent_registry.registry.records import (
    AgentRecord,
    AgentRevisionStatsRecord,
    AssignmentRecord,
    BehaviorChanged,
    BehaviorRecord,
    BehaviorRevisionRecord,
    BehaviorSummary,
    LoadConfirmation,
    RecordResult,
    RevisionStatsRecord,
    ScriptCounts,
    ScriptRef,
    UnderperformingAgent,
)
from agent_registry.registry.stats import Outcome
from agent_registry.registry.transactions import Database


class RegistryService:
    """Async registry API. Create with `RegistryService.from_url(url)`, close with
    `await service.close()`. Not shared across event loops (its engine belongs to one)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._db = Database(engine)
        self._hub = ChangeHub()
        self._delivered = DeliveredScripts()
        self._single_outcomes: Coalescer[tuple[bool, float | None], RecordResult] = Coalescer(
            self.record_tasks
        )

    @classmethod
    def from_url(cls, url: str, **engine_kwargs: Any) -> RegistryService:
        """`postgresql+psycopg://...` or `sqlite+aiosqlite:///path` (plain postgresql:// and
        sqlite:// are mapped to those drivers). Extra keywords go to create_async_engine."""
        return cls(create_engine_for(url, **engine_kwargs))

    @property
    def engine(self) -> AsyncEngine:
        return self._db.engine

    async def close(self) -> None:
        await self._db.close()

    # -- registration ------------------------------------------------------------------------

    async def register_agent(
        self,
        agent_id: str,
        role: str,
        *,
        name: str | None = None,
        created_by: str = "system",
    ) -> AgentRecord:
        """Register an agent. A `stopped` agent is reactivated (agents restart): status back
        to active, role/name updated, history and counters kept. An agent that is active or
        paused raises AgentAlreadyRegistered."""
        return await agents.register_agent(self._db, agent_id, role, name, created_by)

    async def register_agents(
        self, agents_: Sequence[tuple[str, str, str | None]], *, created_by: str = "system"
    ) -> dict[str, AgentRecord]:
        """Register many (agent_id, role, name) in one transaction; stopped ones are
        reactivated, registered ones left as they are. Their records, by agent_id."""
        return await agents.register_agents(self._db, agents_, created_by)

    async def unregister_agent(self, agent_id: str) -> AgentRecord:
        """Mark the agent stopped. Nothing is deleted: counters, assignments and the current
        assignment stay (a re-registered agent continues with them)."""
        return await self.set_status(agent_id, "stopped")

    async def set_status(self, agent_id: str, status: str) -> AgentRecord:
        return await agents.set_status(self._db, agent_id, status)

    async def update_agent(
        self,
        agent_id: str,
        *,
        role: str | None = None,
        name: str | None = None,
        notes: str | None = None,
    ) -> AgentRecord:
        """Update identity fields (the operator mirrors spec.role/displayName/notes). Only the
        arguments given (not None) change."""
        return await agents.update_agent(self._db, agent_id, role, name, notes)

    # -- behaviors ---------------------------------------------------------------------------

    async def create_behavior(
        self,
        name: str,
        role_type: str,
        lua_script: str,
        *,
        namespace: str = "default",
        parent_behavior_id: uuid.UUID | None = None,
        description: str | None = None,
    ) -> BehaviorRecord:
        """Create or update the behavior (namespace, name). A new behavior gets revision 1;
        the same script (same sha256) makes no new revision; a changed script makes
        revision + 1 (even when it equals an older revision's script: revisions only go up).
        Every revision's script is kept in agent_behavior_revisions. role_type, parent and
        description are updated in place. A behavior marked deleted is revived."""
        return await behaviors.create_behavior(
            self._db, name, role_type, lua_script, namespace, parent_behavior_id, description
        )

    async def get_behavior(self, behavior_id: uuid.UUID) -> BehaviorRecord:
        """The behavior, also when marked deleted (history refers to it)."""
        return await behaviors.get_behavior(self._db, behavior_id)

    async def get_behavior_by_name(self, namespace: str, name: str) -> BehaviorRecord:
        """The behavior, also when marked deleted (check `deleted_at`)."""
        return await behaviors.get_behavior_by_name(self._db, namespace, name)

    async def list_behaviors(
        self, *, namespace: str | None = None, include_deleted: bool = False
    ) -> list[BehaviorRecord]:
        return await behaviors.list_behaviors(self._db, namespace, include_deleted)

    async def mark_behavior_deleted(self, namespace: str, name: str) -> BehaviorRecord:
        """Mark deleted, keep everything (assignments and lineage refer to it). It can no
        longer be assigned; create_behavior with the same name revives it."""
        return await behaviors.mark_behavior_deleted(self._db, namespace, name)

    async def behavior_revisions(self, behavior_id: uuid.UUID) -> list[BehaviorRevisionRecord]:
        """Every script the behavior has had, oldest first."""
        return await behaviors.behavior_revisions(self._db, behavior_id)

    async def get_behavior_revision(
        self, behavior_id: uuid.UUID, revision: int
    ) -> BehaviorRevisionRecord:
        return await behaviors.get_behavior_revision(self._db, behavior_id, revision)

    async def behavior_lineage(self, behavior_id: uuid.UUID) -> list[BehaviorRecord]:
        """The behavior and its ancestors through parent_behavior_id: itself first, the root
        last. A parent cycle (possible by editing) ends the walk instead of looping."""
        return await behaviors.behavior_lineage(self._db, behavior_id)

    async def behavior_summary(self, behavior_id: uuid.UUID) -> BehaviorSummary:
        return await behaviors.behavior_summary(self._db, behavior_id)

    # -- assignment --------------------------------------------------------------------------

    async def assign_behavior(
        self,
        agent_id: str,
        behavior_id: uuid.UUID,
        *,
        assigned_by: str = "system",
        reason: str = "manual",
        revision: int | None = None,
        source: str | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> AssignmentRecord:
        """Assign a revision of the behavior (None: its current one; else a stored one, e.g.
        a pin `behavior@3` or a rollback to the stable revision; BehaviorRevisionNotFound if
        it never had it), in one transaction: close the open assignment (unassigned_at,
        outcome_notes; its counters are already exact) and open a new one, delivering its
        script (outcomes of it count from now on). `source` is the rule that decided it
        (Spec, Pin, Experiment, Policy, Rollout) and `evidence` (JSON) what it rested on;
        both are kept in the history.

        No-op (no history row, the open assignment returned) when the open assignment has
        the same behavior and revision and, if `source` is given, the same source: a new
        decision for the same script (say a Pin taking over from Spec) is a new history row.
        Subscribers get a BehaviorChanged when one was opened."""
        assignment, opened = await assignments.assign(
            self._db,
            self._delivered,
            agent_id,
            behavior_id,
            assigned_by=assigned_by,
            reason=reason,
            revision=revision,
            source=source,
            evidence=evidence,
        )
        if opened:
            self._hub.publish(behavior_changed(assignment))
        return assignment

    async def assign_behaviors(
        self, requests: Sequence[assignments.AssignRequest]
    ) -> list[AssignmentRecord]:
        """assign_behavior for many agents (one request each) in one transaction with a few
        statements per few hundred agents; the open assignments, in the order asked."""
        results = await assignments.assign_many(self._db, self._delivered, requests)
        for assignment, opened in results:
            if opened:
                self._hub.publish(behavior_changed(assignment))
        return [assignment for assignment, _ in results]

    async def hot_reload_behavior(
        self, agent_id: str, behavior_id: uuid.UUID, reason: str = "hot_reload"
    ) -> AssignmentRecord:
        """Assign the current revision (as "system") and always notify subscribers, even
        when the assignment was already current: a hot reload is also a request to reload."""
        assignment, _ = await assignments.assign(
            self._db,
            self._delivered,
            agent_id,
            behavior_id,
            assigned_by="system",
            reason=reason,
        )
        self._hub.publish(behavior_changed(assignment, reason=reason))
        return assignment

    async def allow_scripts(self, agent_id: str, scripts: Sequence[ScriptRef]) -> None:
        """Deliver extra scripts to the agent besides its assignment's (the other scripts of
        a multi-script bundle: a canary, an experiment arm), so their outcomes count, each
        on its own row. Call it before the bundle reaches the agent. Idempotent; a script
        delivered again under another (behavior, revision), as after a revert, takes that
        label. Each ref must name a stored revision with that sha256
        (BehaviorRevisionNotFound, ValueError); a behavior marked deleted is accepted (its
        revisions stay stored). Assigning is assign_behavior's job: this changes no
        assignment and no current_* counter."""
        await assignments.allow_scripts(self._db, self._delivered, agent_id, scripts)

    async def get_agent_behavior(self, agent_id: str) -> BehaviorRecord:
        """The behavior currently assigned (its current row; the assigned revision and sha256
        are on current_assignment)."""
        return await assignments.get_agent_behavior(self._db, agent_id)

    async def current_assignment(self, agent_id: str) -> AssignmentRecord:
        """The open assignment (NoBehaviorAssigned if none)."""
        return await assignments.current_assignment(self._db, agent_id)

    async def assignment_history(self, agent_id: str) -> list[AssignmentRecord]:
        """Every assignment of the agent, newest first (the open one, if any, first)."""
        return await assignments.assignment_history(self._db, agent_id)

    # -- reports from the runtime ------------------------------------------------------------

    async def confirm_loaded(
        self, agent_id: str, sha256: str, loaded_at: datetime
    ) -> LoadConfirmation:
        """The agent's runtime reports the script it has loaded. Stored on the agent
        (loaded_sha256/loaded_at; an older confirmation arriving late does not overwrite a
        newer one). `new` is True only the first time the current assignment's own script is
        confirmed: that moment also goes to the assignment's loaded_at."""
        return await ingestion.confirm_loaded(self._db, agent_id, sha256, loaded_at)

    async def record_load_failure(self, agent_id: str, failure: LoadFailureLike) -> bool:
        """The agent's runtime refused a script (`failure`: .sha256, .error, .line,
        .failed_at; reports.LoadFailure fits) and keeps running its last good one. Stored on
        the agent until a later confirm_loaded of that script, or of any script loaded after
        the failure, clears it. A failure older than the stored one, or than the last
        confirmed load, is stale and ignored. Returns True when stored."""
        return await ingestion.record_load_failure(self._db, agent_id, failure)

    # -- stats -------------------------------------------------------------------------------

    async def update_stats(self, agent_id: str, **fields: Any) -> AgentRecord:
        """Set stats fields to absolute values (the seed's update_stats). Unknown fields raise
        UnknownStatsField. The seed's derived fields are converted to the stored counters:
        success_rate -> successes = round(rate * tasks_completed), avg_response_time_ms ->
        total_response_time_ms = avg * timed_tasks (timed_tasks = tasks_completed if it was 0).
        For counting, use record_task(s): this is a plain set, under the row lock. It sets the
        agent's lifetime stats only; the current assignment's and the scripts' counters are
        not touched."""
        return await ingestion.update_stats(self._db, agent_id, fields)

    async def record_task(
        self, agent_id: str, success: bool, *, duration_ms: float | None = None
    ) -> bool:
        """Count one task of the agent's current script (the seed's record_task, plus its
        duration). Returns once counted: True, or False when refused because the agent has
        no assignment (no script to count it for). Concurrent calls for the same agent are
        written together (see coalescing.py)."""
        result = await self._single_outcomes.submit(agent_id, (success, duration_ms))
        # A merged write holds only outcomes without a script: all refused, or none.
        return not result.refused

    async def record_tasks(
        self,
        agent_id: str,
        outcomes: Iterable[Outcome],
        *,
        batch_id: uuid.UUID | None = None,
        cycles: int = 0,
        loaded_sha256: str | None = None,
    ) -> RecordResult:
        """Count a batch of task outcomes (in the order they happened), atomically and
        exactly under any concurrency (see hotpath.py). Each outcome counts for the script
        that ran it: its `behavior_sha256`; without one (older runtimes), `loaded_sha256`
        (the report's loaded script); without that, the agent's current script (resolved
        under the agent row's lock). Counted on that script's row (agent_revision_stats), on
        the agent's lifetime counters, and on the open assignment's only if it is the
        assignment's script. An outcome of a script never delivered to the agent (by
        assign_behavior or allow_scripts), or with no script at all, is refused (listed in
        the result with its index and reason); the rest of the batch counts.

        With a batch_id the batch counts at most once while its record is kept (see
        prune_report_batches): a repeat records 0 and is `duplicate`. `cycles` adds to
        cycles_completed."""
        return await ingestion.record_tasks(
            self._db, self._delivered, agent_id, outcomes, batch_id, cycles, loaded_sha256
        )

    async def prune_report_batches(self, before: datetime) -> int:
        """Forget the batch ids processed before `before` (how many): a batch retried after
        that would count again, so `before` must lie beyond any runtime's retries."""
        return await retention.prune_processed_batches(self._db, before)

    async def revision_stats(
        self,
        *,
        namespace: str | None = None,
        role: str | None = None,
        behavior_id: uuid.UUID | None = None,
        agent_ids: Sequence[str] | None = None,
    ) -> list[RevisionStatsRecord]:
        """Counts per script (behavior, revision, sha256) summed over the selected agents,
        in one query. Filters combine: agents of a namespace, of a role (agent_role), scripts
        of a behavior, the listed agents. Ordered by behavior and revision."""
        return await revisions.revision_stats(
            self._db, namespace=namespace, role=role, behavior_id=behavior_id, agent_ids=agent_ids
        )

    async def agent_revision_stats(
        self,
        *,
        namespace: str | None = None,
        agent_ids: Sequence[str] | None = None,
        behavior_id: uuid.UUID | None = None,
    ) -> list[AgentRevisionStatsRecord]:
        """The per-(agent, script) counts, in one query, by agent_id then behavior,
        revision and sha256. Filters combine as in revision_stats."""
        return await revisions.agent_revision_stats(
            self._db, namespace=namespace, agent_ids=agent_ids, behavior_id=behavior_id
        )

    async def agent_script_counts(
        self,
        *,
        namespace: str,
        role: str | None = None,
        agent_ids: Sequence[str] | None = None,
    ) -> list[ScriptCounts]:
        """agent_revision_stats' tasks and successes of a namespace's agents (of one role
        (agent_role), of the listed agents, if given), as plain tuples in the same order: a
        fraction of the cost where thousands of rows are read (a policy's or an
        experiment's evaluation)."""
        return await revisions.agent_script_counts(
            self._db, namespace=namespace, role=role, agent_ids=agent_ids
        )

    # -- queries -----------------------------------------------------------------------------

    async def get_by_agent_id(self, agent_id: str) -> AgentRecord:
        return await agents.get_by_agent_id(self._db, agent_id)

    async def get_agents(self, agent_ids: Sequence[str]) -> dict[str, AgentRecord]:
        """The records of those of these agents that exist, by agent_id (bulk: one query
        per few hundred ids)."""
        return await agents.get_agents(self._db, agent_ids)

    async def agent_ids_changed_since(self, since: datetime) -> list[str]:
        """The agent_ids whose row was written at or after `since` (registration,
        assignment, outcomes, load confirmations and failures all stamp `updated_at`)."""
        return await agents.agent_ids_changed_since(self._db, since)

    async def current_assignments(self, agent_ids: Sequence[str]) -> dict[str, AssignmentRecord]:
        """The open assignments of these agents, by agent_id (bulk; agents without one are
        left out)."""
        return await assignments.current_assignments(self._db, agent_ids)

    async def list_active_agents(self) -> list[AgentRecord]:
        """Active agents, newest first (as the seed)."""
        return await agents.list_active_agents(self._db)

    async def list_agents_by_role(self, role: str) -> list[AgentRecord]:
        """Active agents of a role."""
        return await agents.list_agents_by_role(self._db, role)

    async def list_agents(
        self, *, namespace: str | None = None, status: str | None = None
    ) -> list[AgentRecord]:
        """All agents (any status unless given), optionally of one namespace, by agent_id."""
        return await agents.list_agents(self._db, namespace, status)

    async def live_agent_ids(self, *, created_by: str, namespace: str | None = None) -> list[str]:
        """The agent_ids not stopped that `created_by` registered, optionally of one namespace
        (the operator's sweep for Agents deleted while it did not watch)."""
        return await agents.live_agent_ids(self._db, created_by, namespace)

    async def list_underperforming_agents(
        self,
        threshold: float = 0.7,
        *,
        min_tasks: int = 10,
        limit: int | None = None,
        namespace: str | None = None,
    ) -> list[UnderperformingAgent]:
        """Active agents whose CURRENT assignment has at least `min_tasks` tasks and a success
        rate below `threshold`, worst first (its counters count only its own script). The
        agent's lifetime counters are not judged: an agent switched to a good behavior is
        judged on that behavior alone. Agents without an assignment are not listed (there
        is no behavior to judge). `limit`: the worst N only; `namespace`: that namespace's
        agents only (ranked among themselves)."""
        return await agents.list_underperforming_agents(
            self._db, threshold, min_tasks, limit, namespace
        )

    # -- notifications -----------------------------------------------------------------------

    def subscribe(self) -> AbstractAsyncContextManager[AsyncIterator[BehaviorChanged]]:
        """`async with registry.subscribe() as events: async for event in events: ...`:
        BehaviorChanged events from assign_behavior (when it opens an assignment) and
        hot_reload_behavior (always), in this process."""
        return self._hub.subscribe()


__all__ = ["STATS_FIELDS", "LoadFailureLike", "RegistryService", "script_sha256"]
