"""Schema changes of the call records: Alembic, run from code on our own engine (SQLite and PostgreSQL).

Why Alembic and not a home-made version table: it is SQLAlchemy's own migration tool, it renders each
change for the dialect (SQLite's "batch" table copies for the ALTERs SQLite lacks), and an operator who
knows it can inspect the state with its usual commands. It runs without an ``alembic.ini``: the script
folder is this package's ``migrations/`` and the connection is handed in. The version table is
``gocare_calls_alembic_version`` (not ``alembic_version``), so it never collides with an application's own.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect

SCRIPT_LOCATION = str(Path(__file__).with_name("migrations"))
VERSION_TABLE = "gocare_calls_alembic_version"


def _config(connection: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


@functools.cache
def head() -> str:
    """The newest revision the code knows (read once per process)."""
    from alembic.script import ScriptDirectory

    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    found = ScriptDirectory.from_config(config).get_current_head()
    assert found is not None
    return found


def current(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    if not inspect(engine).has_table(VERSION_TABLE):
        return None
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Bring the database to ``revision`` (idempotent; a no-op when it is there). Returns the revision."""
    from alembic import command

    if revision == "head" and current(engine) == head():
        return head()  # the common case, without Alembic's script loading
    with engine.begin() as connection:
        command.upgrade(_config(connection), revision)
    return current(engine)


def downgrade(engine: Engine, revision: str) -> str | None:
    from alembic import command

    with engine.begin() as connection:
        command.downgrade(_config(connection), revision)
    return current(engine)
