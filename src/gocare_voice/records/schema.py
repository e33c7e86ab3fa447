"""The call-record tables (SQLAlchemy Core), on their own ``MetaData``: the directory's ``create_all`` never
touches them, only the migrations (``records/migrations``) do. A test compares these definitions with what
the migrations build (Alembic's ``compare_metadata``), so they cannot drift apart."""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

ID_MAX = 128

calls = Table(
    "gocare_calls",
    metadata,
    Column("call_id", String(64), primary_key=True),
    Column("room", String(ID_MAX), nullable=True),
    Column("participant_identity", String(ID_MAX), nullable=True),
    Column("user_id", String(ID_MAX), nullable=True),
    Column("verified_user_id", String(ID_MAX), nullable=True),
    Column("status", String(16), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("end_reason", String(32), nullable=True),
    Column("modes", JSON, nullable=False),
    Column("commands", JSON, nullable=False),
    Column("voice_uploads", Integer, nullable=False),
    Column("verification", JSON, nullable=False),
    Column("level", String(16), nullable=False),
    Column("agent_name", String(64), nullable=True),
    Column("summary", Text, nullable=True),
    Column("resumed_from", String(64), nullable=True),
    Column("webhook_status", String(16), nullable=True),
    # records/model.py ``CallAnalysis.to_dict``; ``GET /calls?where=`` and ``--where`` filter on its values
    Column("analysis", JSON(none_as_null=True), nullable=True),
    Index("ix_gocare_calls_started_at", "started_at"),
    Index("ix_gocare_calls_participant_identity", "participant_identity"),
    Index("ix_gocare_calls_verified_user_id", "verified_user_id"),
    Index("ix_gocare_calls_user_id", "user_id"),
    Index("ix_gocare_calls_status", "status"),
)

turns = Table(
    "gocare_call_turns",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("call_id", String(64), ForeignKey("gocare_calls.call_id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("source", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_gocare_call_turns_call_id_seq", "call_id", "seq"),
)
