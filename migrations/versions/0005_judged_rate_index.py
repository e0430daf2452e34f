"""An index on the open assignment's success rate, for the underperformers query.

Without it the query scans every agent row (50-65 ms at 100,000 agents, more under load).
The expression must be the one `registry.models.judged_rate` builds, token for token: the
planners (PostgreSQL's and SQLite's) only use an expression index for the same expression.
It is rebuilt here from plain SQLAlchemy constructs, not imported, so that this migration
stays what it is when the application code moves on.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "agent_registry_current_rate_index"


def _judged_rate() -> sa.ColumnElement[float]:
    agents = sa.table(
        "agent_registry",
        sa.column("current_successes", sa.BigInteger()),
        sa.column("current_tasks_completed", sa.BigInteger()),
    )
    successes = sa.cast(agents.c.current_successes, sa.Double)
    divide = successes.op("/", return_type=sa.Double)
    return divide(sa.func.nullif(agents.c.current_tasks_completed, sa.literal_column("0")))


def upgrade() -> None:
    op.create_index(_NAME, "agent_registry", [_judged_rate()])


def downgrade() -> None:
    op.drop_index(_NAME, table_name="agent_registry")
