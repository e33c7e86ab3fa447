"""Schema changes of the call records: Alembic, run from code on our own engine (SQLite and PostgreSQL).

Why Alembic and not a home-made version table: it is SQLAlchemy's own migration tool, it renders each
change for the dialect (SQLite's "batch" table copies for the ALTERs SQLite lacks), and an operator who
knows it can inspect the state with its usual commands. It runs without an ``alembic.ini``: the script
folder is this package's ``migrations/`` and the connection is handed in. The version table is
``gocare_calls_alembic_version`` (not ``alembic_version``), so it never collides with an application's own.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

SCRIPT_LOCATION = str(Path(__file__).with_name("migrations"))
VERSION_TABLE = "gocare_calls_alembic_version"
HEAD = "0002"
"""The newest revision in ``migrations/versions`` (a test checks it is Alembic's head): a database already
there needs no Alembic import, which costs a job process ~0.3 s."""


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
    """The revision the database is at (None: never migrated). Plain SQL on Alembic's version table, so a
    process that finds the schema up to date (a job, the token service) never imports Alembic."""
    if not inspect(engine).has_table(VERSION_TABLE):
        return None
    with engine.connect() as connection:
        versions = list(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
    return versions[0] if len(versions) == 1 else None


LOCK_KEY = 0x6763_6361_6C6C  # "gccall": PostgreSQL advisory lock of the call records' migrations


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Bring the database to ``revision`` (idempotent; a no-op when it is there). Returns the revision.

    Several workers may start at once against one database: on PostgreSQL the migration holds an advisory
    lock for its transaction, so the others wait and then find the schema done; elsewhere (SQLite) a
    migration that failed because another process did it first is not a failure."""
    if revision == "head" and current(engine) == HEAD:
        return HEAD  # the common case, without Alembic at all
    from alembic import command

    for attempt in range(1, ATTEMPTS + 1):
        try:
            with engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
                command.upgrade(_config(connection), revision)
            break
        except SQLAlchemyError:
            if revision == "head" and _at_head(engine):
                break  # another process migrated it meanwhile
            if attempt == ATTEMPTS:
                raise
            time.sleep(0.2 * attempt)  # SQLite: another process held the write lock past the busy timeout
    return current(engine)


ATTEMPTS = 3


def _at_head(engine: Engine) -> bool:
    try:
        return current(engine) == HEAD
    except SQLAlchemyError:
        return False


def downgrade(engine: Engine, revision: str) -> str | None:
    from alembic import command

    with engine.begin() as connection:
        command.downgrade(_config(connection), revision)
    return current(engine)
