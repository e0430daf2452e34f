"""An index on processed_report_batches.processed_at, for pruning the idempotency records.

A batch id is remembered so that a retried batch counts once. A runtime retries a batch until
the registry answers it, so a record only has to outlive that; the operator deletes the ones
older than `--report-batch-retention`, and this index makes that a range scan instead of a
scan of a table that grows by one row per report (about 170 million a day for 10,000 busy
agents reporting every 5 s).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "processed_report_batches_processed_at_index"


def upgrade() -> None:
    op.create_index(_NAME, "processed_report_batches", ["processed_at"])


def downgrade() -> None:
    op.drop_index(_NAME, table_name="processed_report_batches")
