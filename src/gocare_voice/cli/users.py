"""``gocare users``: manage the registered-user directory the agent checks mobile numbers against.

Numbers are masked in every listing unless ``--show-numbers`` is given, so a screen share or a CI log does
not leak them. Errors are one line on stderr and a non-zero exit code (1 for a refused operation, 2 for
configuration). SQLAlchemy and phonenumbers are imported inside the commands, keeping ``gocare --help`` fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from gocare_voice.cli.common import load_cli_settings, new_app, print_error, visible

if TYPE_CHECKING:
    from gocare_voice.conversation.directory import UserDirectory
    from gocare_voice.settings import Settings

users_app = new_app(name="users", help="Manage registered users (user id, name, mobile number) in the directory.")

_DB_HELP = "Database URL (default: GOCARE_DATABASE_URL, else sqlite:///gocare-users.db)."


def _settings(ctx: typer.Context, database_url: Optional[str]) -> Settings:
    return load_cli_settings(ctx, **({"database_url": database_url} if database_url else {}))


@contextmanager
def _directory(
    ctx: typer.Context,
    database_url: Optional[str], *, reading: bool = False, missing_ok: bool = False
) -> Iterator[UserDirectory]:
    """The directory for one command: a refused operation (invalid or duplicate number, unknown user, broken
    database, a file that is not a database) is one error line and exit code 1; the connection is closed
    whatever happens. ``reading`` commands never create a database; with ``missing_ok`` its absence is
    raised (``DatabaseMissing``) for the command to answer."""
    from sqlalchemy.exc import SQLAlchemyError

    from gocare_voice.conversation.directory import DatabaseMissing, DirectoryError, UserDirectory

    settings = _settings(ctx, database_url)
    try:
        directory = UserDirectory.from_settings(settings, create_schema=not reading)
    except DirectoryError as error:
        if missing_ok and isinstance(error, DatabaseMissing):
            raise
        print_error(str(error))
        raise typer.Exit(1) from None
    try:
        yield directory
    except DirectoryError as error:
        print_error(str(error))
        raise typer.Exit(1) from None
    except SQLAlchemyError as error:
        # e.g. "file is not a database", "no such table": the driver's own words, without SQLAlchemy's
        # statement dump and link (which can carry parameters)
        reason = getattr(error, "orig", None) or type(error).__name__
        print_error(f"cannot use the user directory at {directory.url_for_display}: {reason}")
        raise typer.Exit(1) from None
    finally:
        directory.close()


@users_app.command("add")
def add(
    ctx: typer.Context,
    user_id: str = typer.Argument(..., help="The app's user id (the userId in the participant metadata)."),
    name: str = typer.Argument(..., help="Full name; the agent greets with the first name."),
    phone: str = typer.Argument(..., help="Mobile number, with or without country code (GOCARE_PHONE_REGION)."),
    database_url: Optional[str] = typer.Option(None, "--database-url", help=_DB_HELP),
) -> None:
    """Register one user."""
    with _directory(ctx, database_url) as directory:
        record = directory.add(user_id=user_id, name=name, phone=phone)
    typer.echo(f"added {visible(record.user_id)} ({visible(record.name or 'no name')}, {record.masked_phone})")


@users_app.command("import")
def import_csv(
    ctx: typer.Context,
    csv_file: Path = typer.Argument(..., help="CSV with a header row: user_id,name,phone ('-' reads stdin)."),
    skip_errors: bool = typer.Option(
        False, "--skip-errors", help="Import the good rows and report the bad ones (exit code 1 if any was skipped; default: all or nothing)."
    ),
    update: bool = typer.Option(
        False, "--update", help="Upsert: a user id already registered gets the row's name and number."
    ),
    database_url: Optional[str] = typer.Option(None, "--database-url", help=_DB_HELP),
) -> None:
    """Import users from a comma-separated file with a header row user_id,name,phone; every row needs all
    three (all or nothing unless --skip-errors)."""
    import sys

    from gocare_voice.conversation.directory import CsvImportError

    with _directory(ctx, database_url) as directory:
        try:
            source = sys.stdin if str(csv_file) == "-" else csv_file
            result = directory.import_csv(source, skip_errors=skip_errors, update=update)
        except CsvImportError as error:
            for problem in error.problems:
                print_error(str(problem))
            print_error(f"{error} (use --skip-errors to import the good rows)")
            raise typer.Exit(1) from None
    for problem in result.skipped:
        typer.echo(f"skipped {problem}", err=True)
    typer.echo(
        f"imported {result.added} user(s)"
        + (f", updated {result.updated}" if update else "")
        + (f", skipped {len(result.skipped)} row(s)" if result.skipped else "")
    )
    if result.skipped:
        raise typer.Exit(1)


@users_app.command("migrate")
def migrate(
    ctx: typer.Context,
    database_url: Optional[str] = typer.Option(None, "--database-url", help=_DB_HELP),
) -> None:
    """Create the directory's table when it is missing (the workers do it too, at their first call); run
    once before many workers start on one PostgreSQL, whose concurrent CREATE TABLEs could collide."""
    with _directory(ctx, database_url) as directory:
        users = directory.count()
    typer.echo(f"user directory ready at {directory.url_for_display} ({users} user(s))")


@users_app.command("list")
def list_users(
    ctx: typer.Context,
    show_numbers: bool = typer.Option(False, "--show-numbers", help="Show full numbers (masked by default)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Show at most this many users."),
    database_url: Optional[str] = typer.Option(None, "--database-url", help=_DB_HELP),
) -> None:
    """List registered users, numbers masked unless --show-numbers."""
    from gocare_voice.conversation.directory import DatabaseMissing

    try:
        with _directory(ctx, database_url, reading=True, missing_ok=True) as directory:
            records = directory.list(limit=limit)
            total = directory.count()
    except DatabaseMissing as missing:
        typer.echo(f"no registered users: {missing}")
        return
    if not records:
        typer.echo("no registered users")
        return
    rows = [
        (
            visible(r.user_id),
            visible(r.name or ""),
            r.phone if show_numbers else r.masked_phone,
            r.created_at.strftime("%Y-%m-%d %H:%M") if r.created_at else "",
        )
        for r in records
    ]
    header = ("USER ID", "NAME", "PHONE", "CREATED (UTC)")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        typer.echo("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    if total > len(records):
        typer.echo(f"({len(records)} of {total} shown)")


@users_app.command("remove")
def remove(
    ctx: typer.Context,
    user_id: str = typer.Argument(..., help="The user id to remove."),
    database_url: Optional[str] = typer.Option(None, "--database-url", help=_DB_HELP),
) -> None:
    """Remove one user, and their call records (transcripts, summaries)."""
    from gocare_voice.records.store import CallStore

    with _directory(ctx, database_url, reading=True) as directory:
        record = directory.remove(user_id)
        with CallStore(url=directory.url_for_display, engine=directory.engine, writable=False) as calls:
            removed_calls = calls.delete_user(user_id)
    typer.echo(f"removed {visible(record.user_id)} ({record.masked_phone}) and {removed_calls} call record(s)")
