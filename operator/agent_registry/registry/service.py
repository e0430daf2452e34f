"""RegistryService: the seed's AgentRegistryService, async, exact under concurrency.

One service (one engine) per event loop. Every method runs in its own transaction and returns
frozen records; database outages raise RegistryUnavailable (retry), other failures the typed
errors of agent_registry.registry.errors.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Row, and_, func, insert, literal_column, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from agent_registry.registry import hotpath
from agent_registry.registry.coalescing import Coalescer
from agent_registry.registry.engine import WRITE_OPTION, create_engine_for
from agent_registry.registry.errors import (
    AgentAlreadyRegistered,
    AgentNotFound,
    BehaviorNotFound,
    InvalidStatus,
    NoBehaviorAssigned,
    RegistryError,
    UnknownStatsField,
)
from agent_registry.registry.models import AGENTS, ASSIGNMENTS, BEHAVIORS, REVISIONS, utcnow
from agent_registry.registry.notifications import ChangeHub
from agent_registry.registry.outages import translated_errors
from agent_registry.registry.pgfast import PgFastPath
from agent_registry.registry.records import (
    STATUSES,
    AgentRecord,
    AssignmentRecord,
    BehaviorChanged,
    BehaviorRecord,
    BehaviorRevisionRecord,
    BehaviorSummary,
    LoadConfirmation,
    UnderperformingAgent,
)
from agent_registry.registry.stats import Outcome, batch_effect, outcome_notes

_A = AGENTS
_B = BEHAVIORS
_R = REVISIONS
_S = ASSIGNMENTS

# Fields update_stats accepts: the seed's update_stats_changeset, plus the exact counters.
# The seed's rates are converted to counters (see update_stats).
STATS_FIELDS = frozenset(
    {
        "cycles_completed",
        "tasks_completed",
        "success_rate",
        "avg_response_time_ms",
        "last_task_at",
        "last_success_at",
        "last_failure_at",
        "consecutive_failures",
        "successes",
        "timed_tasks",
        "total_response_time_ms",
    }
)
_MAX_LINEAGE = 1000
_NO_LOAD_FAILURE: dict[str, Any] = {
    "load_error": None,
    "load_error_line": None,
    "load_failed_sha256": None,
    "load_failed_at": None,
}


class LoadFailureLike(Protocol):
    """What record_load_failure reads (reports.LoadFailure fits; the registry does not
    import the report models)."""

    @property
    def sha256(self) -> str: ...
    @property
    def error(self) -> str: ...
    @property
    def line(self) -> int | None: ...
    @property
    def failed_at(self) -> datetime: ...


_COMPUTED = {"success_rate", "avg_response_time_ms"}


def script_sha256(lua_script: str) -> str:
    return hashlib.sha256(lua_script.encode("utf-8")).hexdigest()


# Assignment counter -> the agent column holding it while the assignment is open.
CURRENT = {
    "tasks_completed": "current_tasks_completed",
    "successes": "current_successes",
    "timed_tasks": "current_timed_tasks",
    "total_response_time_ms": "current_total_response_time_ms",
}
_CURRENT_COLS = [_A.c[name] for name in CURRENT.values()]


# The open assignment's counters an AgentRecord carries (the rest stay internal).
_CURRENT_IN_RECORD = frozenset({"current_tasks_completed", "current_successes"})


def _agent(row: Row[Any] | Mapping[str, Any]) -> AgentRecord:
    data = dict(row._mapping if isinstance(row, Row) else row)
    for column in CURRENT.values():
        if column not in _CURRENT_IN_RECORD:
            data.pop(column, None)
    return AgentRecord.model_validate(data)


def _open_assignment_record(
    assignment: Mapping[Any, Any], agent: Mapping[Any, Any]
) -> AssignmentRecord:
    """An open assignment's record: its counters come from the agent row."""
    data = dict(assignment)
    for field, column in CURRENT.items():
        data[field] = agent[column]
    return AssignmentRecord.model_validate(data)


def _assignment(row: Row[Any] | Mapping[str, Any]) -> AssignmentRecord:
    data = row._mapping if isinstance(row, Row) else row
    return AssignmentRecord.model_validate(dict(data))


def _behavior(row: Row[Any]) -> BehaviorRecord:
    return BehaviorRecord.model_validate(dict(row._mapping))


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise InvalidStatus(status)


def _in_namespace(namespace: str) -> Any:
    """agent_ids of a namespace are "<ns>/<name>". A prefix comparison with substr, not a
    range or LIKE: correct under any collation and needs no wildcard escaping."""
    prefix = f"{namespace}/"
    return func.substr(_A.c.agent_id, 1, len(prefix)) == prefix


class RegistryService:
    """Async registry API. Create with `RegistryService.from_url(url)`, close with
    `await service.close()`. Not shared across event loops (its engine belongs to one)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = engine.execution_options(**{WRITE_OPTION: True})
        self._dialect: str = engine.dialect.name
        self._fast: PgFastPath | None = None
        if self._dialect == "postgresql":
            # As many hot-path connections as the engine's pool has (its own, see pgfast.py).
            size = getattr(engine.pool, "size", lambda: 10)()
            self._fast = PgFastPath(engine, size=max(int(size), 1))
            self._plain_sql = self._fast.compile(hotpath.PLAIN)
            self._batched_sql = self._fast.compile(hotpath.POSTGRES_BATCHED)
        self._hub = ChangeHub()
        self._single_outcomes: Coalescer[tuple[bool, float | None]] = Coalescer(self.record_tasks)

    @classmethod
    def from_url(cls, url: str, **engine_kwargs: Any) -> RegistryService:
        """`postgresql+psycopg://...` or `sqlite+aiosqlite:///path` (plain postgresql:// and
        sqlite:// are mapped to those drivers). Extra keywords go to create_async_engine."""
        return cls(create_engine_for(url, **engine_kwargs))

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        if self._fast is not None:
            await self._fast.close()
        await self._engine.dispose()

    # -- transactions ------------------------------------------------------------------------

    @asynccontextmanager
    async def _write(self, operation: str) -> AsyncIterator[AsyncConnection]:
        async with translated_errors(operation), self._writer.begin() as conn:
            yield conn

    @asynccontextmanager
    async def _read(self, operation: str) -> AsyncIterator[AsyncConnection]:
        async with translated_errors(operation), self._engine.connect() as conn:
            yield conn

    def _for_update(self, stmt: Any) -> Any:
        # SQLite has no row locks: its write transactions (BEGIN IMMEDIATE) are serialized.
        return stmt.with_for_update() if self._dialect == "postgresql" else stmt

    async def _agent_row(
        self, conn: AsyncConnection, agent_id: str, *, lock: bool = False
    ) -> Row[Any]:
        stmt = select(_A).where(_A.c.agent_id == agent_id)
        row = (await conn.execute(self._for_update(stmt) if lock else stmt)).first()
        if row is None:
            raise AgentNotFound(agent_id)
        return row

    async def _behavior_row(self, conn: AsyncConnection, behavior_id: uuid.UUID) -> Row[Any]:
        row = (await conn.execute(select(_B).where(_B.c.id == behavior_id))).first()
        if row is None:
            raise BehaviorNotFound(behavior_id)
        return row

    async def _open_assignment(self, conn: AsyncConnection, agent_id: str) -> Row[Any] | None:
        """The open assignment's row as stored (its counters are on the agent row)."""
        stmt = select(_S).where(_S.c.agent_id == agent_id, _S.c.unassigned_at.is_(None))
        return (await conn.execute(stmt)).first()

    async def _open_assignment_full(
        self, conn: AsyncConnection, agent_id: str
    ) -> AssignmentRecord | None:
        stmt = (
            select(_S, *_CURRENT_COLS)
            .join(_A, _A.c.agent_id == _S.c.agent_id)
            .where(_S.c.agent_id == agent_id, _S.c.unassigned_at.is_(None))
        )
        row = (await conn.execute(stmt)).first()
        if row is None:
            return None
        data = dict(row._mapping)
        return _open_assignment_record({c.name: data[c.name] for c in _S.c}, data)

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
        now = utcnow()
        async with self._write("register_agent") as conn:
            existing = (
                await conn.execute(
                    self._for_update(select(_A.c.status).where(_A.c.agent_id == agent_id))
                )
            ).first()
            if existing is None:
                try:
                    async with conn.begin_nested():
                        await conn.execute(
                            insert(_A).values(
                                id=uuid.uuid4(),
                                agent_id=agent_id,
                                agent_role=role,
                                agent_name=name,
                                status="active",
                                created_by=created_by,
                                inserted_at=now,
                                updated_at=now,
                            )
                        )
                except IntegrityError as error:  # registered concurrently
                    raise AgentAlreadyRegistered(agent_id, "active") from error
            elif existing.status != "stopped":
                raise AgentAlreadyRegistered(agent_id, existing.status)
            else:
                await conn.execute(
                    update(_A)
                    .where(_A.c.agent_id == agent_id)
                    .values(status="active", agent_role=role, agent_name=name, updated_at=now)
                )
            return _agent(await self._agent_row(conn, agent_id))

    async def unregister_agent(self, agent_id: str) -> AgentRecord:
        """Mark the agent stopped. Nothing is deleted: counters, assignments and the current
        assignment stay (a re-registered agent continues with them)."""
        return await self.set_status(agent_id, "stopped")

    async def set_status(self, agent_id: str, status: str) -> AgentRecord:
        _check_status(status)
        async with self._write("set_status") as conn:
            result = await conn.execute(
                update(_A)
                .where(_A.c.agent_id == agent_id)
                .values(status=status, updated_at=utcnow())
            )
            if result.rowcount == 0:
                raise AgentNotFound(agent_id)
            return _agent(await self._agent_row(conn, agent_id))

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
        values: dict[str, Any] = {}
        if role is not None:
            values["agent_role"] = role
        if name is not None:
            values["agent_name"] = name
        if notes is not None:
            values["notes"] = notes
        async with self._write("update_agent") as conn:
            if values:
                values["updated_at"] = utcnow()
                result = await conn.execute(
                    update(_A).where(_A.c.agent_id == agent_id).values(**values)
                )
                if result.rowcount == 0:
                    raise AgentNotFound(agent_id)
            return _agent(await self._agent_row(conn, agent_id))

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
        for attempt in range(2):
            try:
                return await self._upsert_behavior(
                    name, role_type, lua_script, namespace, parent_behavior_id, description
                )
            except RegistryError as error:
                # Two creators of a new name raced: the loser retries as an update.
                if attempt == 0 and isinstance(error.__cause__, IntegrityError):
                    continue
                raise
        raise AssertionError("unreachable")

    async def _upsert_behavior(
        self,
        name: str,
        role_type: str,
        lua_script: str,
        namespace: str,
        parent_behavior_id: uuid.UUID | None,
        description: str | None,
    ) -> BehaviorRecord:
        sha = script_sha256(lua_script)
        now = utcnow()
        async with self._write("create_behavior") as conn:
            if parent_behavior_id is not None:
                await self._behavior_row(conn, parent_behavior_id)
            stmt = select(_B).where(_B.c.namespace == namespace, _B.c.name == name)
            row = (await conn.execute(self._for_update(stmt))).first()
            if row is None:
                behavior_id = uuid.uuid4()
                await conn.execute(
                    insert(_B).values(
                        id=behavior_id,
                        namespace=namespace,
                        name=name,
                        role_type=role_type,
                        lua_script=lua_script,
                        script_sha256=sha,
                        revision=1,
                        parent_behavior_id=parent_behavior_id,
                        description=description,
                        inserted_at=now,
                        updated_at=now,
                    )
                )
                await self._insert_revision(conn, behavior_id, 1, lua_script, sha, now)
            else:
                behavior_id = row.id
                values: dict[str, Any] = {}
                if row.script_sha256 != sha:
                    revision = row.revision + 1
                    values |= {"lua_script": lua_script, "script_sha256": sha, "revision": revision}
                    await self._insert_revision(conn, behavior_id, revision, lua_script, sha, now)
                wanted = {
                    "role_type": role_type,
                    "parent_behavior_id": parent_behavior_id,
                    "description": description,
                    "deleted_at": None,
                }
                values |= {k: v for k, v in wanted.items() if getattr(row, k) != v}
                if values:
                    values["updated_at"] = now
                    await conn.execute(update(_B).where(_B.c.id == behavior_id).values(**values))
            return _behavior(await self._behavior_row(conn, behavior_id))

    @staticmethod
    async def _insert_revision(
        conn: AsyncConnection,
        behavior_id: uuid.UUID,
        revision: int,
        lua_script: str,
        sha: str,
        now: datetime,
    ) -> None:
        await conn.execute(
            insert(_R).values(
                behavior_id=behavior_id,
                revision=revision,
                lua_script=lua_script,
                script_sha256=sha,
                inserted_at=now,
            )
        )

    async def get_behavior(self, behavior_id: uuid.UUID) -> BehaviorRecord:
        """The behavior, also when marked deleted (history refers to it)."""
        async with self._read("get_behavior") as conn:
            return _behavior(await self._behavior_row(conn, behavior_id))

    async def get_behavior_by_name(self, namespace: str, name: str) -> BehaviorRecord:
        """The behavior, also when marked deleted (check `deleted_at`)."""
        async with self._read("get_behavior_by_name") as conn:
            stmt = select(_B).where(_B.c.namespace == namespace, _B.c.name == name)
            row = (await conn.execute(stmt)).first()
            if row is None:
                raise BehaviorNotFound(f"{namespace}/{name}")
            return _behavior(row)

    async def list_behaviors(
        self, *, namespace: str | None = None, include_deleted: bool = False
    ) -> list[BehaviorRecord]:
        stmt = select(_B).order_by(_B.c.namespace, _B.c.name)
        if namespace is not None:
            stmt = stmt.where(_B.c.namespace == namespace)
        if not include_deleted:
            stmt = stmt.where(_B.c.deleted_at.is_(None))
        async with self._read("list_behaviors") as conn:
            return [_behavior(row) for row in await conn.execute(stmt)]

    async def mark_behavior_deleted(self, namespace: str, name: str) -> BehaviorRecord:
        """Mark deleted, keep everything (assignments and lineage refer to it). It can no
        longer be assigned; create_behavior with the same name revives it."""
        async with self._write("mark_behavior_deleted") as conn:
            stmt = select(_B.c.id).where(_B.c.namespace == namespace, _B.c.name == name)
            row = (await conn.execute(stmt)).first()
            if row is None:
                raise BehaviorNotFound(f"{namespace}/{name}")
            now = utcnow()
            await conn.execute(
                update(_B)
                .where(_B.c.id == row.id, _B.c.deleted_at.is_(None))
                .values(deleted_at=now, updated_at=now)
            )
            return _behavior(await self._behavior_row(conn, row.id))

    async def behavior_revisions(self, behavior_id: uuid.UUID) -> list[BehaviorRevisionRecord]:
        """Every script the behavior has had, oldest first."""
        async with self._read("behavior_revisions") as conn:
            await self._behavior_row(conn, behavior_id)
            stmt = select(_R).where(_R.c.behavior_id == behavior_id).order_by(_R.c.revision)
            return [
                BehaviorRevisionRecord.model_validate(dict(r._mapping))
                for r in await conn.execute(stmt)
            ]

    async def get_behavior_revision(
        self, behavior_id: uuid.UUID, revision: int
    ) -> BehaviorRevisionRecord:
        async with self._read("get_behavior_revision") as conn:
            stmt = select(_R).where(_R.c.behavior_id == behavior_id, _R.c.revision == revision)
            row = (await conn.execute(stmt)).first()
            if row is None:
                raise BehaviorNotFound(f"{behavior_id} revision {revision}")
            return BehaviorRevisionRecord.model_validate(dict(row._mapping))

    async def behavior_lineage(self, behavior_id: uuid.UUID) -> list[BehaviorRecord]:
        """The behavior and its ancestors through parent_behavior_id: itself first, the root
        last. A parent cycle (possible by editing) ends the walk instead of looping."""
        lineage: list[BehaviorRecord] = []
        seen: set[uuid.UUID] = set()
        async with self._read("behavior_lineage") as conn:
            current: uuid.UUID | None = behavior_id
            while current is not None and current not in seen and len(lineage) < _MAX_LINEAGE:
                seen.add(current)
                row = (await conn.execute(select(_B).where(_B.c.id == current))).first()
                if row is None:
                    if not lineage:
                        raise BehaviorNotFound(behavior_id)
                    break
                lineage.append(_behavior(row))
                current = row.parent_behavior_id
        return lineage

    async def behavior_summary(self, behavior_id: uuid.UUID) -> BehaviorSummary:
        async with self._read("behavior_summary") as conn:
            await self._behavior_row(conn, behavior_id)
            agents = await conn.execute(
                select(func.count())
                .select_from(_S.join(_A, _A.c.agent_id == _S.c.agent_id))
                .where(
                    _S.c.behavior_id == behavior_id,
                    _S.c.unassigned_at.is_(None),
                    _A.c.status != "stopped",
                )
            )
            agent_count = int(agents.scalar_one())
            closed = (
                await conn.execute(
                    select(
                        func.coalesce(func.sum(_S.c.tasks_completed), 0),
                        func.coalesce(func.sum(_S.c.successes), 0),
                    ).where(_S.c.behavior_id == behavior_id, _S.c.unassigned_at.is_not(None))
                )
            ).one()
            open_ = (
                await conn.execute(
                    select(
                        func.coalesce(func.sum(_A.c.current_tasks_completed), 0),
                        func.coalesce(func.sum(_A.c.current_successes), 0),
                    )
                    .select_from(_S.join(_A, _A.c.agent_id == _S.c.agent_id))
                    .where(_S.c.behavior_id == behavior_id, _S.c.unassigned_at.is_(None))
                )
            ).one()
            return BehaviorSummary(
                behavior_id=behavior_id,
                agent_count=agent_count,
                tasks_completed=int(closed[0]) + int(open_[0]),
                successes=int(closed[1]) + int(open_[1]),
            )

    # -- assignment --------------------------------------------------------------------------

    async def assign_behavior(
        self,
        agent_id: str,
        behavior_id: uuid.UUID,
        assigned_by: str = "system",
        reason: str = "manual",
    ) -> AssignmentRecord:
        """Assign the behavior's current revision, in one transaction: close the open
        assignment (unassigned_at, outcome_notes; its counters are already exact) and open a
        new one. The same behavior at the same revision is a no-op (no history row); at a
        newer revision it closes and reopens (a script edit shows in history). Returns the
        open assignment; subscribers get a BehaviorChanged when one was opened."""
        assignment, opened = await self._assign(agent_id, behavior_id, assigned_by, reason)
        if opened:
            self._publish(assignment)
        return assignment

    async def hot_reload_behavior(
        self, agent_id: str, behavior_id: uuid.UUID, reason: str = "hot_reload"
    ) -> AssignmentRecord:
        """Assign (as "system") and always notify subscribers, even when the assignment was
        already current: a hot reload is also a request to reload."""
        assignment, _ = await self._assign(agent_id, behavior_id, "system", reason)
        self._publish(assignment, reason=reason)
        return assignment

    def _publish(self, assignment: AssignmentRecord, *, reason: str | None = None) -> None:
        self._hub.publish(
            BehaviorChanged(
                agent_id=assignment.agent_id,
                behavior_id=assignment.behavior_id,
                revision=assignment.behavior_revision,
                script_sha256=assignment.script_sha256,
                reason=reason or assignment.reason or "",
            )
        )

    async def _assign(
        self, agent_id: str, behavior_id: uuid.UUID, assigned_by: str, reason: str
    ) -> tuple[AssignmentRecord, bool]:
        now = utcnow()
        async with self._write("assign_behavior") as conn:
            # The agent row's lock orders this against record_tasks (which updates only that
            # row): the open assignment's counters read here are final.
            agent = await self._agent_row(conn, agent_id, lock=True)
            behavior = await self._behavior_row(conn, behavior_id)
            if behavior.deleted_at is not None:
                raise BehaviorNotFound(behavior_id)
            current = await self._open_assignment(conn, agent_id)
            if (
                current is not None
                and current.behavior_id == behavior_id
                and current.behavior_revision == behavior.revision
            ):
                return _open_assignment_record(current._mapping, agent._mapping), False
            if current is not None:
                notes = outcome_notes(
                    tasks=agent.current_tasks_completed,
                    successes=agent.current_successes,
                    total_response_time_ms=agent.current_total_response_time_ms,
                    timed_tasks=agent.current_timed_tasks,
                    replaced_by=(
                        f"{behavior.namespace}/{behavior.name} revision {behavior.revision} "
                        f"({reason}, by {assigned_by})"
                    ),
                )
                await conn.execute(
                    update(_S)
                    .where(_S.c.id == current.id)
                    .values(
                        unassigned_at=now,
                        outcome_notes=notes,
                        **{field: agent._mapping[column] for field, column in CURRENT.items()},
                    )
                )
            new_id = uuid.uuid4()
            await conn.execute(
                insert(_S).values(
                    id=new_id,
                    agent_id=agent_id,
                    behavior_id=behavior_id,
                    behavior_revision=behavior.revision,
                    script_sha256=behavior.script_sha256,
                    assigned_at=now,
                    assigned_by=assigned_by,
                    reason=reason,
                )
            )
            await conn.execute(
                update(_A)
                .where(_A.c.agent_id == agent_id)
                .values(
                    behavior_id=behavior_id,
                    behavior_assigned_at=now,
                    updated_at=now,
                    **dict.fromkeys(CURRENT.values(), 0),
                )
            )
            row = (await conn.execute(select(_S).where(_S.c.id == new_id))).one()
            return _assignment(row), True

    async def get_agent_behavior(self, agent_id: str) -> BehaviorRecord:
        """The behavior currently assigned (its current row; the assigned revision and sha256
        are on current_assignment)."""
        async with self._read("get_agent_behavior") as conn:
            agent = await self._agent_row(conn, agent_id)
            if agent.behavior_id is None:
                raise NoBehaviorAssigned(agent_id)
            return _behavior(await self._behavior_row(conn, agent.behavior_id))

    async def current_assignment(self, agent_id: str) -> AssignmentRecord:
        """The open assignment (NoBehaviorAssigned if none)."""
        async with self._read("current_assignment") as conn:
            await self._agent_row(conn, agent_id)
            record = await self._open_assignment_full(conn, agent_id)
            if record is None:
                raise NoBehaviorAssigned(agent_id)
            return record

    async def assignment_history(self, agent_id: str) -> list[AssignmentRecord]:
        """Every assignment of the agent, newest first (the open one, if any, first)."""
        async with self._read("assignment_history") as conn:
            agent = await self._agent_row(conn, agent_id)
            stmt = (
                select(_S)
                .where(_S.c.agent_id == agent_id)
                .order_by(_S.c.assigned_at.desc(), _S.c.unassigned_at.is_(None).desc())
            )
            return [
                _open_assignment_record(row._mapping, agent._mapping)
                if row.unassigned_at is None
                else _assignment(row)
                for row in await conn.execute(stmt)
            ]

    async def confirm_loaded(
        self, agent_id: str, sha256: str, loaded_at: datetime
    ) -> LoadConfirmation:
        """The agent's runtime reports the script it has loaded. Stored on the agent
        (loaded_sha256/loaded_at; an older confirmation arriving late does not overwrite a
        newer one). `new` is True only the first time the current assignment's own script is
        confirmed: that moment also goes to the assignment's loaded_at."""
        async with self._write("confirm_loaded") as conn:
            result = await conn.execute(
                update(_A)
                .where(
                    _A.c.agent_id == agent_id,
                    (_A.c.loaded_at.is_(None)) | (_A.c.loaded_at <= loaded_at),
                )
                .values(loaded_sha256=sha256, loaded_at=loaded_at)
            )
            if result.rowcount == 0:
                await self._agent_row(conn, agent_id)  # raises AgentNotFound if missing
            else:
                # A load of the refused script, or of anything after the refusal, supersedes it.
                await conn.execute(
                    update(_A)
                    .where(
                        _A.c.agent_id == agent_id,
                        _A.c.load_failed_sha256.is_not(None),
                        (_A.c.load_failed_sha256 == sha256) | (_A.c.load_failed_at <= loaded_at),
                    )
                    .values(**_NO_LOAD_FAILURE)
                )
            current = await self._open_assignment(conn, agent_id)
            if current is None:
                return LoadConfirmation(new=False, matches_assignment=False, assigned_at=None)
            matches = current.script_sha256 == sha256
            new = False
            if matches and current.loaded_at is None:
                marked = await conn.execute(
                    update(_S)
                    .where(_S.c.id == current.id, _S.c.loaded_at.is_(None))
                    .values(loaded_at=loaded_at)
                )
                new = marked.rowcount == 1
            return LoadConfirmation(
                new=new, matches_assignment=matches, assigned_at=current.assigned_at
            )

    async def record_load_failure(self, agent_id: str, failure: LoadFailureLike) -> bool:
        """The agent's runtime refused a script (`failure`: .sha256, .error, .line,
        .failed_at; reports.LoadFailure fits) and keeps running its last good one. Stored on
        the agent until a later confirm_loaded of that script, or of any script loaded after
        the failure, clears it. A failure older than the stored one, or than the last
        confirmed load, is stale and ignored. Returns True when stored."""
        failed_at = failure.failed_at
        async with self._write("record_load_failure") as conn:
            result = await conn.execute(
                update(_A)
                .where(
                    _A.c.agent_id == agent_id,
                    _A.c.load_failed_at.is_(None) | (_A.c.load_failed_at <= failed_at),
                    _A.c.loaded_at.is_(None) | (_A.c.loaded_at < failed_at),
                )
                .values(
                    load_error=failure.error,
                    load_error_line=failure.line,
                    load_failed_sha256=failure.sha256,
                    load_failed_at=failed_at,
                )
            )
            if result.rowcount == 0:
                await self._agent_row(conn, agent_id)  # raises AgentNotFound if missing
                return False
            return True

    # -- stats -------------------------------------------------------------------------------

    async def update_stats(self, agent_id: str, **fields: Any) -> AgentRecord:
        """Set stats fields to absolute values (the seed's update_stats). Unknown fields raise
        UnknownStatsField. The seed's derived fields are converted to the stored counters:
        success_rate -> successes = round(rate * tasks_completed), avg_response_time_ms ->
        total_response_time_ms = avg * timed_tasks (timed_tasks = tasks_completed if it was 0).
        For counting, use record_task(s): this is a plain set, under the row lock. It sets the
        agent's lifetime stats only; the current assignment's counters are not touched."""
        unknown = sorted(set(fields) - STATS_FIELDS)
        if unknown:
            raise UnknownStatsField(unknown)
        async with self._write("update_stats") as conn:
            row = await self._agent_row(conn, agent_id, lock=True)
            values = {
                k: v for k, v in fields.items() if k not in ("success_rate", "avg_response_time_ms")
            }
            tasks = int(values.get("tasks_completed", row.tasks_completed))
            if "success_rate" in fields:
                values["successes"] = round(float(fields["success_rate"]) * tasks)
            if "avg_response_time_ms" in fields:
                timed = int(values.get("timed_tasks", row.timed_tasks)) or tasks
                values["timed_tasks"] = timed
                values["total_response_time_ms"] = float(fields["avg_response_time_ms"]) * timed
            values["updated_at"] = utcnow()
            await conn.execute(update(_A).where(_A.c.agent_id == agent_id).values(**values))
            return _agent(await self._agent_row(conn, agent_id))

    async def record_task(
        self, agent_id: str, success: bool, *, duration_ms: float | None = None
    ) -> None:
        """Count one task (the seed's record_task, plus its duration). Returns once counted.
        Concurrent calls for the same agent are written together (see coalescing.py)."""
        await self._single_outcomes.submit(agent_id, (success, duration_ms))

    async def record_tasks(
        self,
        agent_id: str,
        outcomes: Iterable[Outcome],
        *,
        batch_id: uuid.UUID | None = None,
        cycles: int = 0,
    ) -> int:
        """Count a batch of task outcomes (in the order they happened) on the agent and its
        open assignment, atomically and exactly under any concurrency (see hotpath.py).
        With a batch_id the batch counts at most once, ever: a repeat returns 0. Returns the
        number of outcomes recorded. `cycles` adds to cycles_completed."""
        now = utcnow()
        effect = batch_effect(outcomes, now)
        if cycles < 0:
            raise ValueError("cycles must be >= 0")
        values = hotpath.params(agent_id, effect, cycles, now, batch_id)
        if self._fast is not None:
            sql = self._plain_sql if batch_id is None else self._batched_sql
            if await self._fast.fetch_one(sql, values) is not None:
                return effect.tasks
            # Nothing changed: the agent does not exist, or the batch was counted before.
            async with self._read("record_tasks") as conn:
                known = await conn.execute(select(_A.c.id).where(_A.c.agent_id == agent_id))
                if known.first() is None:
                    raise AgentNotFound(agent_id)
            return 0
        async with self._write("record_tasks") as conn:
            if (await conn.execute(hotpath.PLAIN, values)).first() is None:
                raise AgentNotFound(agent_id)
            if batch_id is not None:
                inserted = await conn.execute(
                    hotpath.SQLITE_BATCH_INSERT,
                    {
                        "batch_id": batch_id,
                        "agent_id": agent_id,
                        "recorded": effect.tasks,
                        "processed_at": now,
                    },
                )
                if inserted.first() is None:
                    await conn.rollback()
                    return 0
        return effect.tasks

    # -- queries -----------------------------------------------------------------------------

    async def get_by_agent_id(self, agent_id: str) -> AgentRecord:
        async with self._read("get_by_agent_id") as conn:
            return _agent(await self._agent_row(conn, agent_id))

    async def list_active_agents(self) -> list[AgentRecord]:
        """Active agents, newest first (as the seed)."""
        stmt = (
            select(_A)
            .where(_A.c.status == "active")
            .order_by(_A.c.inserted_at.desc(), _A.c.agent_id)
        )
        async with self._read("list_active_agents") as conn:
            return [_agent(row) for row in await conn.execute(stmt)]

    async def list_agents_by_role(self, role: str) -> list[AgentRecord]:
        """Active agents of a role."""
        stmt = (
            select(_A)
            .where(_A.c.agent_role == role, _A.c.status == "active")
            .order_by(_A.c.agent_id)
        )
        async with self._read("list_agents_by_role") as conn:
            return [_agent(row) for row in await conn.execute(stmt)]

    async def list_agents(
        self, *, namespace: str | None = None, status: str | None = None
    ) -> list[AgentRecord]:
        """All agents (any status unless given), optionally of one namespace, by agent_id."""
        stmt = select(_A).order_by(_A.c.agent_id)
        if namespace is not None:
            stmt = stmt.where(_in_namespace(namespace))
        if status is not None:
            _check_status(status)
            stmt = stmt.where(_A.c.status == status)
        async with self._read("list_agents") as conn:
            return [_agent(row) for row in await conn.execute(stmt)]

    async def list_underperforming_agents(
        self, threshold: float = 0.7, *, min_tasks: int = 10, limit: int | None = None
    ) -> list[UnderperformingAgent]:
        """Active agents whose CURRENT assignment has at least `min_tasks` tasks and a success
        rate below `threshold`, worst first. The agent's lifetime counters are not judged: an
        agent switched to a good behavior is judged on that behavior alone. Agents without an
        assignment are not listed (there is no behavior to judge). `limit`: the worst N only."""
        min_tasks = max(1, min_tasks)
        rate = (_A.c.current_successes * literal_column("1.0")) / _A.c.current_tasks_completed
        # Rank on the agent table alone (its row holds the open assignment's counters), then
        # join the few flagged agents to their open assignment rows.
        flagged = (
            select(
                _A.c.agent_id,
                rate.label("rate"),
                _A.c.current_tasks_completed.label("judged_tasks"),
            )
            .where(
                _A.c.status == "active",
                _A.c.behavior_id.is_not(None),
                _A.c.current_tasks_completed >= min_tasks,
                rate < threshold,
            )
            .order_by(rate.asc(), _A.c.current_tasks_completed.desc(), _A.c.agent_id)
        )
        if limit is not None:
            flagged = flagged.limit(max(0, limit))
        ranked = flagged.subquery("flagged")
        assignment_cols = [c.label(f"s_{c.name}") for c in _S.c]
        stmt = (
            select(_A, *assignment_cols)
            .join(ranked, ranked.c.agent_id == _A.c.agent_id)
            .join(_S, and_(_S.c.agent_id == _A.c.agent_id, _S.c.unassigned_at.is_(None)))
            .order_by(ranked.c.rate.asc(), ranked.c.judged_tasks.desc(), _A.c.agent_id)
        )
        async with self._read("list_underperforming_agents") as conn:
            rows = (await conn.execute(stmt)).all()
        result = []
        for row in rows:
            data = dict(row._mapping)
            stored = {c.name: data.pop(f"s_{c.name}") for c in _S.c}
            assignment = _open_assignment_record(stored, data)
            result.append(
                UnderperformingAgent.model_validate(
                    {**_agent(data).model_dump(exclude=_COMPUTED), "assignment": assignment}
                )
            )
        return result

    # -- notifications -----------------------------------------------------------------------

    def subscribe(self) -> AbstractAsyncContextManager[AsyncIterator[BehaviorChanged]]:
        """`async with registry.subscribe() as events: async for event in events: ...`:
        BehaviorChanged events from assign_behavior (when it opens an assignment) and
        hot_reload_behavior (always), in this process."""
        return self._hub.subscribe()


__all__ = ["STATS_FIELDS", "LoadFailureLike", "RegistryService", "script_sha256"]
