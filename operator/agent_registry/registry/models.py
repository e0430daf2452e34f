"""The schema, as SQLAlchemy 2 typed models. Migrations in migrations/versions/ create the
same tables (a test runs alembic's autogenerate comparison and expects no difference).

The seed's tables and indexes are kept. What changed, and why:
- Rates are not stored: `successes`, `timed_tasks` and `total_response_time_ms` are, and the
  rates are derived on read (exact under concurrency, one atomic UPDATE per batch).
- The OPEN assignment's counters live on the agent row (`current_*`), next to the agent's
  lifetime counters, so a batch of outcomes is one single-row UPDATE (one hot row lock, like
  pgbench's). assign_behavior, holding that row's lock, copies them into the assignment row it
  closes and resets them. A closed assignment's counters are its own columns; records of the
  open assignment read them from the agent. (Two rows updated per batch would need two
  statements on PostgreSQL to see an assignment switched concurrently, and would hold the hot
  lock for more round trips.)
- `agent_behaviors` is keyed by (namespace, name) and carries `revision`/`script_sha256`;
  every script a behavior ever had stays in `agent_behavior_revisions`, and an assignment
  records the revision and sha256 it assigned, so history says exactly which script ran.
- At most one open assignment per agent (a partial unique index), which the hot path uses.
- `processed_report_batches` makes reports idempotent: a batch id is counted once within the
  retention (`--report-batch-retention`, 7 days; registry/retention.py prunes older ones).
- Attribution (migrations 0003, 0004): every outcome counts for the script that ran it.
  `agent_revision_stats` has one row per (agent, script sha256) the registry delivered to
  that agent (assign_behavior, allow_scripts); rows are never deleted, so "delivered" is
  monotonic and an outcome of a script without a row is refused. The agent's `current_*`
  counters count only outcomes of `current_sha256` (the open assignment's script), decided
  under the agent row's lock, so an assignment's results are its own script's alone.
- The current script's outcomes are counted ONLY in the agent's `current_*` (one row per
  batch, as before attribution); its script row holds what earlier assignments of it
  counted, and assign_behavior folds `current_*` into it when the assignment closes. A
  script's counts are its row plus, while it is current, the agent's `current_*` (what the
  reads return). Outcomes of any other script (a canary, late ones of a replaced script)
  go to that script's row.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    Uuid,
    func,
    literal_column,
    text,
)
from sqlalchemy import cast as cast_
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

NAMING_CONVENTION = {
    "ix": "%(table_name)s_%(column_0_N_name)s_index",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "ck": "%(table_name)s_%(constraint_name)s_check",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
    "pk": "%(table_name)s_pkey",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends. SQLite has no time zones: store naive
    UTC there (fixed-width text, so comparisons in SQL stay chronological)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        # A naive datetime is taken as UTC (what clients without an offset mean here).
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _counter() -> Mapped[int]:
    return mapped_column(BigInteger, nullable=False, default=0, server_default=text("0"))


class AgentBehavior(Base):
    __tablename__ = "agent_behaviors"
    __table_args__ = (
        Index("agent_behaviors_namespace_name_index", "namespace", "name", unique=True),
        Index("agent_behaviors_role_type_index", "role_type"),
        Index("agent_behaviors_parent_behavior_id_index", "parent_behavior_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    namespace: Mapped[str] = mapped_column(String(253), nullable=False)
    name: Mapped[str] = mapped_column(String(253), nullable=False)
    role_type: Mapped[str] = mapped_column(Text, nullable=False)
    lua_script: Mapped[str] = mapped_column(Text, nullable=False)
    script_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    revision: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    parent_behavior_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("agent_behaviors.id", ondelete="SET NULL"), nullable=True
    )
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    inserted_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AgentBehaviorRevision(Base):
    __tablename__ = "agent_behavior_revisions"
    __table_args__ = (Index("agent_behavior_revisions_script_sha256_index", "script_sha256"),)

    behavior_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("agent_behaviors.id", ondelete="CASCADE"), primary_key=True
    )
    revision: Mapped[int] = mapped_column(Integer, primary_key=True)
    lua_script: Mapped[str] = mapped_column(Text, nullable=False)
    script_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    inserted_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Agent(Base):
    __tablename__ = "agent_registry"
    __table_args__ = (
        # The seed has both UNIQUE(agent_id) and this index; one unique index is both.
        Index("agent_registry_agent_id_index", "agent_id", unique=True),
        Index("agent_registry_role_index", "agent_role"),
        Index("agent_registry_behavior_id_index", "behavior_id"),
        Index("agent_registry_status_index", "status"),
        CheckConstraint("status IN ('active', 'paused', 'stopped')", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    agent_id: Mapped[str] = mapped_column(String(512), nullable=False)
    agent_role: Mapped[str] = mapped_column(Text, nullable=False)
    agent_name: Mapped[str | None] = mapped_column(Text, nullable=True)
    behavior_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("agent_behaviors.id"), nullable=True
    )
    behavior_assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, default="active", server_default=text("'active'")
    )
    cycles_completed: Mapped[int] = _counter()
    tasks_completed: Mapped[int] = _counter()
    successes: Mapped[int] = _counter()
    timed_tasks: Mapped[int] = _counter()
    total_response_time_ms: Mapped[float] = mapped_column(
        Double, nullable=False, default=0.0, server_default=text("0")
    )
    last_task_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    consecutive_failures: Mapped[int] = _counter()
    # Counters of the open assignment (see the module docstring).
    current_tasks_completed: Mapped[int] = _counter()
    current_successes: Mapped[int] = _counter()
    current_timed_tasks: Mapped[int] = _counter()
    current_total_response_time_ms: Mapped[float] = mapped_column(
        Double, nullable=False, default=0.0, server_default=text("0")
    )
    # The open assignment's script: the only one whose outcomes the current_* counters count.
    # Set by assign_behavior, never cleared (there is no unassign), so once an agent has it,
    # it has it for good. Migration 0003.
    current_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Its revision (of behavior_id) and the times of the tasks current_* counted: the rest
    # of the script's counts, until they are folded into its row. Migration 0004.
    current_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    current_first_task_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    current_last_task_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    loaded_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    loaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The last script the runtime refused (it keeps running the last good one); cleared by a
    # later confirmed load. Migration 0002.
    load_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    load_error_line: Mapped[int | None] = mapped_column(Integer, nullable=True)
    load_failed_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    load_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[str | None] = mapped_column(Text, nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    inserted_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Assignment(Base):
    __tablename__ = "agent_behavior_assignments"
    __table_args__ = (
        Index("agent_behavior_assignments_agent_id_index", "agent_id"),
        Index("agent_behavior_assignments_behavior_id_index", "behavior_id"),
        Index("agent_behavior_assignments_assigned_at_index", "assigned_at"),
        Index(
            "agent_behavior_assignments_open_index",
            "agent_id",
            unique=True,
            postgresql_where=text("unassigned_at IS NULL"),
            sqlite_where=text("unassigned_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    agent_id: Mapped[str] = mapped_column(
        String(512), ForeignKey("agent_registry.agent_id"), nullable=False
    )
    behavior_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("agent_behaviors.id"), nullable=False
    )
    behavior_revision: Mapped[int] = mapped_column(Integer, nullable=False)
    script_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    assigned_by: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    unassigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Filled when the assignment closes; while open, the agent row's current_* hold them.
    tasks_completed: Mapped[int] = _counter()
    successes: Mapped[int] = _counter()
    timed_tasks: Mapped[int] = _counter()
    total_response_time_ms: Mapped[float] = mapped_column(
        Double, nullable=False, default=0.0, server_default=text("0")
    )
    outcome_notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    loaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Which rule decided it (Spec, Pin, Experiment, Policy, Rollout) and the numbers or
    # objects it rested on; NULL for assignments made before 0003 or without a source.
    source: Mapped[str | None] = mapped_column(Text, nullable=True)
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)


class AgentRevisionStats(Base):
    """Exact counts of one script on one agent, but for the open assignment's (still on the
    agent row while it is open). A row exists iff the registry delivered that script to that
    agent; (behavior_id, revision) is the label it was last delivered under (a script can
    recur: a revert makes a new revision with an older script)."""

    __tablename__ = "agent_revision_stats"
    __table_args__ = (
        # The per-revision aggregates (revision_stats) read all rows of a behavior revision.
        # No INCLUDE of the counters: an indexed column changed by every batch would rule
        # out HOT updates and add index writes to the hot path.
        Index("agent_revision_stats_behavior_id_revision_index", "behavior_id", "revision"),
    )

    agent_id: Mapped[str] = mapped_column(
        String(512), ForeignKey("agent_registry.agent_id"), primary_key=True
    )
    script_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    behavior_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("agent_behaviors.id"), nullable=False
    )
    revision: Mapped[int] = mapped_column(Integer, nullable=False)
    tasks: Mapped[int] = _counter()
    successes: Mapped[int] = _counter()
    timed_tasks: Mapped[int] = _counter()
    total_response_time_ms: Mapped[float] = mapped_column(
        Double, nullable=False, default=0.0, server_default=text("0")
    )
    # Of the tasks counted on this row (NULL for counts carried over by migration 0003,
    # whose times were never recorded per script).
    first_task_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_task_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delivered_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ProcessedBatch(Base):
    """One row per report batch counted: the idempotency record, kept for the retention
    (registry/retention.py)."""

    __tablename__ = "processed_report_batches"
    __table_args__ = (
        Index("processed_report_batches_agent_id_index", "agent_id"),
        Index("processed_report_batches_processed_at_index", "processed_at"),
    )

    batch_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    agent_id: Mapped[str] = mapped_column(String(512), nullable=False)
    recorded: Mapped[int] = mapped_column(Integer, nullable=False)
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


# The Core tables, typed as Table (DeclarativeBase types __table__ as a FromClause).
AGENTS = cast(Table, Agent.__table__)


def judged_rate(agents: Table) -> ColumnElement[float]:
    """The success rate of an agent's open assignment, NULL before its first task: what the
    underperformers query ranks on. One expression for the index and the query, because the
    planners only use an expression index for the same expression. Literal 0, not a bound
    parameter, for the same reason."""
    tasks = agents.c.current_tasks_completed
    successes = cast_(agents.c.current_successes, Double)
    # A plain operator: SQLAlchemy's `/` adds casts of its own, per dialect.
    divide = successes.op("/", return_type=Double)
    return divide(func.nullif(tasks, literal_column("0")))


# Underperformers at 100,000 agents without a scan. It holds counters, so a report's update of
# the agent row is no longer a HOT update: measured in docs/benchmarks.md (ingestion).
Index("agent_registry_current_rate_index", judged_rate(AGENTS))
BEHAVIORS = cast(Table, AgentBehavior.__table__)
REVISIONS = cast(Table, AgentBehaviorRevision.__table__)
ASSIGNMENTS = cast(Table, Assignment.__table__)
BATCHES = cast(Table, ProcessedBatch.__table__)
REVISION_STATS = cast(Table, AgentRevisionStats.__table__)

__all__ = [
    "AGENTS",
    "ASSIGNMENTS",
    "BATCHES",
    "BEHAVIORS",
    "REVISIONS",
    "REVISION_STATS",
    "Agent",
    "AgentBehavior",
    "AgentBehaviorRevision",
    "AgentRevisionStats",
    "Assignment",
    "Base",
    "ProcessedBatch",
    "UTCDateTime",
    "judged_rate",
    "utcnow",
]
