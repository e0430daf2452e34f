"""The last script an agent's runtime refused: load_error, load_error_line,
load_failed_sha256, load_failed_at on agent_registry (all nullable; NULL = no failure known).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("load_error", "load_error_line", "load_failed_sha256", "load_failed_at")


def upgrade() -> None:
    # batch mode: SQLite cannot drop columns in place (downgrade), and it is harmless here.
    with op.batch_alter_table("agent_registry") as batch:
        batch.add_column(sa.Column("load_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("load_error_line", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("load_failed_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("load_failed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agent_registry") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
