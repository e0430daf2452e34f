"""Initial schema: behaviors (+ revisions), agents, assignments, processed report batches.

The seed's tables and indexes, with exact counters instead of stored rates (see
agent_registry/registry/models.py for the reasons).

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN = sa.text("unassigned_at IS NULL")


def _ts(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _counter(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False)


def _stats() -> list[sa.Column[object]]:
    return [
        _counter("tasks_completed"),
        _counter("successes"),
        _counter("timed_tasks"),
        sa.Column(
            "total_response_time_ms", sa.Double(), server_default=sa.text("0"), nullable=False
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "agent_behaviors",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("namespace", sa.String(length=253), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("role_type", sa.Text(), nullable=False),
        sa.Column("lua_script", sa.Text(), nullable=False),
        sa.Column("script_sha256", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("parent_behavior_id", sa.Uuid(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        _ts("inserted_at", nullable=False),
        _ts("updated_at", nullable=False),
        _ts("deleted_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["parent_behavior_id"],
            ["agent_behaviors.id"],
            name="agent_behaviors_parent_behavior_id_fkey",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="agent_behaviors_pkey"),
    )
    op.create_index(
        "agent_behaviors_namespace_name_index",
        "agent_behaviors",
        ["namespace", "name"],
        unique=True,
    )
    op.create_index(
        "agent_behaviors_parent_behavior_id_index", "agent_behaviors", ["parent_behavior_id"]
    )
    op.create_index("agent_behaviors_role_type_index", "agent_behaviors", ["role_type"])

    op.create_table(
        "agent_behavior_revisions",
        sa.Column("behavior_id", sa.Uuid(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("lua_script", sa.Text(), nullable=False),
        sa.Column("script_sha256", sa.String(length=64), nullable=False),
        _ts("inserted_at", nullable=False),
        sa.ForeignKeyConstraint(
            ["behavior_id"],
            ["agent_behaviors.id"],
            name="agent_behavior_revisions_behavior_id_fkey",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("behavior_id", "revision", name="agent_behavior_revisions_pkey"),
    )
    op.create_index(
        "agent_behavior_revisions_script_sha256_index",
        "agent_behavior_revisions",
        ["script_sha256"],
    )

    op.create_table(
        "agent_registry",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("agent_id", sa.String(length=512), nullable=False),
        sa.Column("agent_role", sa.Text(), nullable=False),
        sa.Column("agent_name", sa.Text(), nullable=True),
        sa.Column("behavior_id", sa.Uuid(), nullable=True),
        _ts("behavior_assigned_at", nullable=True),
        sa.Column(
            "status", sa.String(length=16), server_default=sa.text("'active'"), nullable=False
        ),
        _counter("cycles_completed"),
        *_stats(),
        _ts("last_task_at", nullable=True),
        _ts("last_success_at", nullable=True),
        _ts("last_failure_at", nullable=True),
        _counter("consecutive_failures"),
        _counter("current_tasks_completed"),
        _counter("current_successes"),
        _counter("current_timed_tasks"),
        sa.Column(
            "current_total_response_time_ms",
            sa.Double(),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column("loaded_sha256", sa.String(length=64), nullable=True),
        _ts("loaded_at", nullable=True),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        _ts("inserted_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'paused', 'stopped')", name="agent_registry_status_check"
        ),
        sa.ForeignKeyConstraint(
            ["behavior_id"], ["agent_behaviors.id"], name="agent_registry_behavior_id_fkey"
        ),
        sa.PrimaryKeyConstraint("id", name="agent_registry_pkey"),
    )
    op.create_index("agent_registry_agent_id_index", "agent_registry", ["agent_id"], unique=True)
    op.create_index("agent_registry_role_index", "agent_registry", ["agent_role"])
    op.create_index("agent_registry_behavior_id_index", "agent_registry", ["behavior_id"])
    op.create_index("agent_registry_status_index", "agent_registry", ["status"])

    op.create_table(
        "agent_behavior_assignments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("agent_id", sa.String(length=512), nullable=False),
        sa.Column("behavior_id", sa.Uuid(), nullable=False),
        sa.Column("behavior_revision", sa.Integer(), nullable=False),
        sa.Column("script_sha256", sa.String(length=64), nullable=False),
        _ts("assigned_at", nullable=False),
        sa.Column("assigned_by", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        _ts("unassigned_at", nullable=True),
        *_stats(),
        sa.Column("outcome_notes", sa.Text(), nullable=True),
        _ts("loaded_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agent_registry.agent_id"],
            name="agent_behavior_assignments_agent_id_fkey",
        ),
        sa.ForeignKeyConstraint(
            ["behavior_id"],
            ["agent_behaviors.id"],
            name="agent_behavior_assignments_behavior_id_fkey",
        ),
        sa.PrimaryKeyConstraint("id", name="agent_behavior_assignments_pkey"),
    )
    op.create_index(
        "agent_behavior_assignments_agent_id_index", "agent_behavior_assignments", ["agent_id"]
    )
    op.create_index(
        "agent_behavior_assignments_behavior_id_index",
        "agent_behavior_assignments",
        ["behavior_id"],
    )
    op.create_index(
        "agent_behavior_assignments_assigned_at_index",
        "agent_behavior_assignments",
        ["assigned_at"],
    )
    # At most one open assignment per agent; also the index of the record_tasks hot path.
    op.create_index(
        "agent_behavior_assignments_open_index",
        "agent_behavior_assignments",
        ["agent_id"],
        unique=True,
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )

    op.create_table(
        "processed_report_batches",
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("agent_id", sa.String(length=512), nullable=False),
        sa.Column("recorded", sa.Integer(), nullable=False),
        _ts("processed_at", nullable=False),
        sa.PrimaryKeyConstraint("batch_id", name="processed_report_batches_pkey"),
    )
    op.create_index(
        "processed_report_batches_agent_id_index", "processed_report_batches", ["agent_id"]
    )


def downgrade() -> None:
    # Tables in reverse dependency order; their indexes go with them.
    op.drop_table("processed_report_batches")
    op.drop_table("agent_behavior_assignments")
    op.drop_table("agent_registry")
    op.drop_table("agent_behavior_revisions")
    op.drop_table("agent_behaviors")
