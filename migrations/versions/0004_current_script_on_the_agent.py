"""The current script's counts stay on the agent row: agent_registry gains current_revision,
current_first_task_at and current_last_task_at, and a script row no longer includes what the
open assignment counted (the agent's current_* hold that until the assignment closes).

With 0003 every outcome of the current script was added to its row AND to current_*, so the
row minus current_* is exactly what the earlier assignments of that script counted. Task
times stay on the row (they cover the current tasks too, which a read's LEAST/GREATEST
with the still empty current times keeps right).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Script row counter -> the agent's counter of the open assignment.
_COUNTERS = {
    "tasks": "current_tasks_completed",
    "successes": "current_successes",
    "timed_tasks": "current_timed_tasks",
    "total_response_time_ms": "current_total_response_time_ms",
}


def _move_current(sign: str) -> None:
    """Subtract (upgrade) or add back (downgrade) each agent's current_* on its current
    script's row. Correlated subqueries: portable to SQLite, which has no UPDATE ... FROM
    before 3.33."""

    def agent(column: str) -> str:
        return (
            f"(SELECT a.{column} FROM agent_registry a WHERE a.agent_id ="
            " agent_revision_stats.agent_id)"
        )

    sets = ", ".join(f"{row} = {row} {sign} {agent(cur)}" for row, cur in _COUNTERS.items())
    op.execute(
        f"UPDATE agent_revision_stats SET {sets} WHERE script_sha256 = {agent('current_sha256')}"
    )


def upgrade() -> None:
    with op.batch_alter_table("agent_registry") as batch:
        batch.add_column(sa.Column("current_revision", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("current_first_task_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(
            sa.Column("current_last_task_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.execute(
        "UPDATE agent_registry SET current_revision = (SELECT s.behavior_revision"
        " FROM agent_behavior_assignments s WHERE s.agent_id = agent_registry.agent_id"
        " AND s.unassigned_at IS NULL)"
    )
    _move_current("-")


def downgrade() -> None:
    _move_current("+")
    with op.batch_alter_table("agent_registry") as batch:
        batch.drop_column("current_last_task_at")
        batch.drop_column("current_first_task_at")
        batch.drop_column("current_revision")
