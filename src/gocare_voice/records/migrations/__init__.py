"""Alembic migrations of the call-record tables (``records.migrate`` runs them; ``versions/`` holds them)."""
