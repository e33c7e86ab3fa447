"""call analysis: gocare_calls.analysis (the plan's values, or a failed analysis and its reason)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable: the records made before it (and calls not analysed) have none; SQLite adds a column in place
    with op.batch_alter_table("gocare_calls") as batch:
        batch.add_column(sa.Column("analysis", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gocare_calls") as batch:
        batch.drop_column("analysis")
