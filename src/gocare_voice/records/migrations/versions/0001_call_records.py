"""call records: gocare_calls and gocare_call_turns

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gocare_calls",
        sa.Column("call_id", sa.String(64), primary_key=True),
        sa.Column("room", sa.String(128), nullable=True),
        sa.Column("participant_identity", sa.String(128), nullable=True),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("verified_user_id", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("modes", sa.JSON, nullable=False),
        sa.Column("commands", sa.JSON, nullable=False),
        sa.Column("voice_uploads", sa.Integer, nullable=False),
        sa.Column("verification", sa.JSON, nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("agent_name", sa.String(64), nullable=True),
        sa.Column("summary", sa.Text, nullable=True),
        sa.Column("resumed_from", sa.String(64), nullable=True),
        sa.Column("webhook_status", sa.String(16), nullable=True),
    )
    for column in ("started_at", "participant_identity", "verified_user_id", "user_id", "status"):
        op.create_index(f"ix_gocare_calls_{column}", "gocare_calls", [column])
    op.create_table(
        "gocare_call_turns",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(64), sa.ForeignKey("gocare_calls.call_id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_gocare_call_turns_call_id_seq", "gocare_call_turns", ["call_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_gocare_call_turns_call_id_seq", table_name="gocare_call_turns")
    op.drop_table("gocare_call_turns")
    for column in ("started_at", "participant_identity", "verified_user_id", "user_id", "status"):
        op.drop_index(f"ix_gocare_calls_{column}", table_name="gocare_calls")
    op.drop_table("gocare_calls")
