"""Alembic's environment for the call records: always run from ``records.migrate`` with a connection of ours
(``config.attributes["connection"]``), so there is no ``alembic.ini`` and no URL here. The version table has
a name of its own, so an application that runs its own Alembic history on the same database is not confused."""

from __future__ import annotations

from alembic import context

from gocare_voice.records.schema import metadata

VERSION_TABLE = "gocare_calls_alembic_version"

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
