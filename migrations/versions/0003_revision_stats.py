"""Attribution: exact counts per (agent, script) in agent_revision_stats, the open
assignment's script on the agent (current_sha256), and a decision's source and evidence on
its assignment.

Backfill: every script an agent was ever assigned gets its row (the registry delivered it,
so a runtime still reporting its outcomes after the upgrade is not refused), labelled with
its latest assignment's behavior and revision, counting what its assignments counted: the
closed assignments' own counters plus, for the open one, the agent's current_* counters.
Those counts keep the old attribution (before 0003, late outcomes of a replaced script were
credited to the assignment that was open when they arrived); per-script task times were
never recorded, so first_task_at/last_task_at start empty.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COUNTERS = ("tasks", "successes", "timed_tasks", "total_response_time_ms")
_CHUNK = 5_000


def _counter(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "agent_revision_stats",
        sa.Column("agent_id", sa.String(length=512), nullable=False),
        sa.Column("script_sha256", sa.String(length=64), nullable=False),
        sa.Column("behavior_id", sa.Uuid(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        _counter("tasks"),
        _counter("successes"),
        _counter("timed_tasks"),
        sa.Column(
            "total_response_time_ms", sa.Double(), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("first_task_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_task_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agent_registry.agent_id"], name="agent_revision_stats_agent_id_fkey"
        ),
        sa.ForeignKeyConstraint(
            ["behavior_id"], ["agent_behaviors.id"], name="agent_revision_stats_behavior_id_fkey"
        ),
        sa.PrimaryKeyConstraint("agent_id", "script_sha256", name="agent_revision_stats_pkey"),
    )
    op.create_index(
        "agent_revision_stats_behavior_id_revision_index",
        "agent_revision_stats",
        ["behavior_id", "revision"],
    )
    with op.batch_alter_table("agent_registry") as batch:
        batch.add_column(sa.Column("current_sha256", sa.String(length=64), nullable=True))
    with op.batch_alter_table("agent_behavior_assignments") as batch:
        batch.add_column(sa.Column("source", sa.Text(), nullable=True))
        batch.add_column(sa.Column("evidence", sa.JSON(none_as_null=True), nullable=True))
    _backfill()


# Lightweight tables: the migration must not depend on the models of later revisions.
_agents = sa.table(
    "agent_registry",
    sa.column("agent_id", sa.String()),
    sa.column("current_sha256", sa.String()),
    sa.column("current_tasks_completed", sa.BigInteger()),
    sa.column("current_successes", sa.BigInteger()),
    sa.column("current_timed_tasks", sa.BigInteger()),
    sa.column("current_total_response_time_ms", sa.Double()),
)
_assignments = sa.table(
    "agent_behavior_assignments",
    sa.column("agent_id", sa.String()),
    sa.column("behavior_id", sa.Uuid()),
    sa.column("behavior_revision", sa.Integer()),
    sa.column("script_sha256", sa.String()),
    sa.column("assigned_at", sa.DateTime(timezone=True)),
    sa.column("unassigned_at", sa.DateTime(timezone=True)),
    sa.column("tasks_completed", sa.BigInteger()),
    sa.column("successes", sa.BigInteger()),
    sa.column("timed_tasks", sa.BigInteger()),
    sa.column("total_response_time_ms", sa.Double()),
)
_stats = sa.table(
    "agent_revision_stats",
    sa.column("agent_id", sa.String()),
    sa.column("script_sha256", sa.String()),
    sa.column("behavior_id", sa.Uuid()),
    sa.column("revision", sa.Integer()),
    *(
        sa.column(name, sa.Double() if name.endswith("_ms") else sa.BigInteger())
        for name in _COUNTERS
    ),
    sa.column("delivered_at", sa.DateTime(timezone=True)),
)


def _backfill() -> None:
    bind = op.get_bind()
    # The open assignment's script becomes the agent's current script.
    bind.execute(
        _agents.update().values(
            current_sha256=sa.select(_assignments.c.script_sha256)
            .where(
                _assignments.c.agent_id == _agents.c.agent_id,
                _assignments.c.unassigned_at.is_(None),
            )
            .scalar_subquery()
        )
    )
    current = {
        row.agent_id: row
        for row in bind.execute(sa.select(_agents).where(_agents.c.current_sha256.is_not(None)))
    }
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    history = sa.select(_assignments).order_by(_assignments.c.agent_id, _assignments.c.assigned_at)
    for a in bind.execute(history):
        key = (a.agent_id, a.script_sha256)
        row = rows.setdefault(
            key,
            {
                "agent_id": a.agent_id,
                "script_sha256": a.script_sha256,
                "delivered_at": a.assigned_at,
            }
            | dict.fromkeys(_COUNTERS, 0),
        )
        # In assigned_at order: the latest assignment of the script labels the row.
        row["behavior_id"], row["revision"] = a.behavior_id, a.behavior_revision
        if a.unassigned_at is None:
            # While open, its counters live on the agent row.
            agent = current[a.agent_id]
            counts = (
                agent.current_tasks_completed,
                agent.current_successes,
                agent.current_timed_tasks,
                agent.current_total_response_time_ms,
            )
        else:
            counts = (a.tasks_completed, a.successes, a.timed_tasks, a.total_response_time_ms)
        for name, value in zip(_COUNTERS, counts, strict=True):
            row[name] += value
    for chunk in _chunks(list(rows.values())):
        bind.execute(_stats.insert(), chunk)


def _chunks(items: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def downgrade() -> None:
    with op.batch_alter_table("agent_behavior_assignments") as batch:
        batch.drop_column("evidence")
        batch.drop_column("source")
    with op.batch_alter_table("agent_registry") as batch:
        batch.drop_column("current_sha256")
    op.drop_index("agent_revision_stats_behavior_id_revision_index", "agent_revision_stats")
    op.drop_table("agent_revision_stats")
