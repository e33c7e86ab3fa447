"""``gocare calls``: the call records the worker keeps (docs/call-records.md).

``list`` and ``show`` are rich tables (``--json`` for scripts; ``--where FIELD=VALUE`` filters on the call
analysis, docs/call-records.md "Analysis"), ``export`` writes JSON lines or CSV,
``prune`` enforces ``GOCARE_CALL_RETENTION_DAYS``, ``migrate`` brings the schema up to date. Reading commands
never create a database. Stored transcripts are already masked (numbers), so nothing is masked again here;
everything from a record is printed as literal text (never rich markup) with its control characters shown
escaped (``common.literal``), and CSV cells that a spreadsheet would run as a formula are neutralised. SQLAlchemy and Alembic are imported inside
the commands, keeping ``gocare --help`` fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from gocare_voice.cli.common import fail, literal, load_cli_settings, new_app

if TYPE_CHECKING:
    from rich.console import Console

    from gocare_voice.records.model import CallRecord
    from gocare_voice.records.store import CallQuery, CallStore

calls_app = new_app(name="calls", help="Call records: who called, when, how it ended, what was said (masked).")

_DB_HELP = "Database URL (default: GOCARE_DATABASE_URL, else sqlite:///gocare-users.db)."
CSV_COLUMNS = ("call_id", "started_at", "ended_at", "duration_seconds", "status", "end_reason", "room",
               "participant_identity", "user_id", "verified_user_id", "modes", "commands", "voice_uploads",
               "turns", "summary", "analysis")


def _console() -> Console:
    """Wide enough for call ids and dates when the output is not a terminal (a pipe, a test)."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)


@contextmanager
def _store(ctx: typer.Context, database_url: Optional[str], *, writable: bool = False) -> Iterator[CallStore]:
    from sqlalchemy.exc import SQLAlchemyError

    from gocare_voice.conversation.directory import DirectoryError
    from gocare_voice.records.store import CallStore

    settings = load_cli_settings(ctx, **({"database_url": database_url} if database_url else {}))
    try:
        store = CallStore.from_settings(settings, writable=writable)
    except (DirectoryError, SQLAlchemyError) as error:
        fail(f"cannot open the call records: {getattr(error, 'orig', None) or error}")
    try:
        yield store
    except SQLAlchemyError as error:
        fail(f"cannot use the call records at {store.url_for_display}: {getattr(error, 'orig', None) or type(error).__name__}")
    finally:
        store.close()


def _query(user: Optional[str], since: Optional[str], *, limit: int = 50, offset: int = 0,
           where: tuple[Any, ...] = ()) -> CallQuery:
    from gocare_voice.records.model import parse_since
    from gocare_voice.records.store import CallQuery

    try:
        when = parse_since(since) if since else None
    except ValueError as error:
        fail(f"--since: {error}", 2)
    return CallQuery(user_id=user, since=when, limit=limit, offset=offset, where=where)


def _where(ctx: typer.Context, expressions: Optional[list[str]], database_url: Optional[str]) -> tuple[Any, ...]:
    """``--where FIELD=VALUE`` (repeatable; all must hold) -> the store's conditions, by the configured plan."""
    if not expressions:
        return ()
    from gocare_voice.records.plan import configured_plan, parse_wheres

    settings = load_cli_settings(ctx, **({"database_url": database_url} if database_url else {}))
    try:
        return parse_wheres(configured_plan(settings.call_analysis_plan), expressions)
    except ValueError as error:
        fail(f"--where: {error}", 2)


_WHERE_HELP = ("Only analysed calls whose analysis has FIELD=VALUE (repeatable, all must hold): "
               "follow_up_needed=true, urgency=urgent; a text field matches what it contains.")


def _analysis_cell(record: CallRecord) -> str:
    """The list's ANALYSIS column: done or failed, and the alert values the analysis found."""
    analysis = record.analysis
    if analysis is None:
        return ""
    fired = " ".join(f"{a.get('field')}={_shown(a.get('value'))}" for a in analysis.alerts)
    return f"{analysis.status.value} {fired}".strip()


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _duration(record: CallRecord) -> str:
    seconds = record.duration_seconds
    if seconds is None:
        return ""
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}:{rest:02d}"


@calls_app.command("list")
def list_calls(
    ctx: typer.Context,
    user: Optional[str] = typer.Option(None, "--user", help="Only this user's calls (user id or identity)."),
    since: Optional[str] = typer.Option(None, "--since", help="Only calls since: 2026-12-01, 2026-12-01T08:00Z, 12h, 7d."),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000, help="Show at most this many (newest first)."),
    where: Optional[list[str]] = typer.Option(None, "--where", metavar="FIELD=VALUE", help=_WHERE_HELP),
    as_json: bool = typer.Option(False, "--json", help="JSON (one array, no transcripts) instead of a table."),
    database_url: Optional[str] = typer.Option(None, "--database-url", help=_DB_HELP),
) -> None:
    """List calls, newest first."""
    query = _query(user, since, limit=limit, where=_where(ctx, where, database_url))
    with _store(ctx, database_url) as store:
        records = store.list(query)
        total = store.count(query)
    if as_json:
        typer.echo(json.dumps([r.to_dict(turns=False) for r in records], indent=2))
        return
    if not records:
        typer.echo("no calls recorded")
        return
    from rich.table import Table

    table = Table(title=f"Calls ({len(records)} of {total})", title_justify="left")
    for column in ("CALL ID", "STARTED (UTC)", "DURATION", "IDENTITY", "VERIFIED", "END", "MODES", "UPLOADS",
                   "ANALYSIS"):
        table.add_column(column, overflow="fold")
    for r in records:
        # every cell literal text: an identity of "[/x]" is not markup (it once made list exit with a
        # MarkupError for every record), "[link=...]" not a link, an ESC byte shown as \x1b; identities, modes
        # and analysis values come from callers and the model
        table.add_row(*(literal(cell) for cell in (
            r.call_id, _when(r.started_at), _duration(r), r.participant_identity or "", r.verified_user_id or "no",
            r.end_reason.value if r.end_reason else r.status.value, ",".join(r.modes), r.voice_uploads,
            _analysis_cell(r))))
    _console().print(table)


@calls_app.command("show")
def show(
    ctx: typer.Context,
    call_id: str = typer.Argument(..., help="The call id (the first column of 'gocare calls list')."),
    as_json: bool = typer.Option(False, "--json", help="The record as JSON, transcript included."),
    database_url: Optional[str] = typer.Option(None, "--database-url", help=_DB_HELP),
) -> None:
    """One call: its facts and its transcript (numbers masked)."""
    with _store(ctx, database_url) as store:
        record = store.get(call_id)
    if record is None:
        fail(f"no call record {call_id!r}")
    if as_json:
        typer.echo(json.dumps(record.to_dict(), indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    facts = Table(title=Text("Call ") + literal(record.call_id), show_header=False, title_justify="left")
    facts.add_column("field", style="bold")
    facts.add_column("value", overflow="fold")
    data = record.to_dict(turns=False)
    for key in ("status", "end_reason", "started_at", "ended_at", "duration_seconds", "room",
                "participant_identity", "user_id", "verified_user_id", "verification", "modes", "commands",
                "voice_uploads", "level", "resumed_from", "webhook_status", "summary"):
        value = data[key]
        shown = "" if value is None else (json.dumps(value) if isinstance(value, (list, dict)) else str(value))
        facts.add_row(key, literal(shown))
    console = _console()
    console.print(facts)
    _print_analysis(console, record)
    if not record.turns:
        console.print("no transcript" + (" (GOCARE_CALL_RECORDS=metadata)" if record.level.value == "metadata" else ""))
        return
    transcript = Table(title="Transcript", title_justify="left")
    transcript.add_column("TIME (UTC)")
    transcript.add_column("WHO")
    transcript.add_column("TEXT", overflow="fold")
    for turn in record.turns:
        who = turn.role + (" (upload)" if turn.source == "upload" else "")
        transcript.add_row(turn.at.strftime("%H:%M:%S"), literal(who), literal(turn.text))
    console.print(transcript)


def _print_analysis(console: Console, record: CallRecord) -> None:
    """The analysis as a table of its own; every value printed as literal text (the model wrote it from what
    a caller said)."""
    from rich.table import Table
    from rich.text import Text

    analysis = record.analysis
    if analysis is None:
        console.print("not analysed")
        return
    title = Text(f"Analysis ({analysis.status.value}, plan ") + literal(analysis.plan) + Text(")")
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in analysis.values.items():
        table.add_row(literal(str(name)), literal(_shown(value)))
    if analysis.success is not None:
        table.add_row("success", _shown(analysis.success))
    if analysis.alerts:
        table.add_row("alerts", literal(", ".join(f"{a.get('field')}={_shown(a.get('value'))}" for a in analysis.alerts)))
    if analysis.error:
        table.add_row("error", literal(analysis.error))
    table.add_row("attempts", str(analysis.attempts))
    console.print(table)


@calls_app.command("export")
def export(
    ctx: typer.Context,
    output_format: str = typer.Option("jsonl", "--format", help="jsonl (one record per line, transcripts included) or csv."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file (default: standard output)."),
    user: Optional[str] = typer.Option(None, "--user", help="Only this user's calls."),
    since: Optional[str] = typer.Option(None, "--since", help="Only calls since (as for list)."),
    where: Optional[list[str]] = typer.Option(None, "--where", metavar="FIELD=VALUE", help=_WHERE_HELP),
    database_url: Optional[str] = typer.Option(None, "--database-url", help=_DB_HELP),
) -> None:
    """Export records, oldest first, for analysis or an archive."""
    if output_format not in ("jsonl", "csv"):
        fail(f"--format: {output_format!r} is not jsonl or csv", 2)
    query = _query(user, since, limit=10_000_000, where=_where(ctx, where, database_url))
    handle: Any = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout
    count = 0
    try:
        with _store(ctx, database_url) as store:
            if output_format == "jsonl":
                for record in store.iter_all(query):
                    handle.write(json.dumps(record.to_dict()) + "\n")
                    count += 1
            else:
                import csv

                # every cell quoted (a comma or quote inside a value cannot start a new cell) and formulas
                # neutralised (``csv_cell``): OWASP's CSV-injection guidance
                writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, quoting=csv.QUOTE_ALL)
                writer.writeheader()
                for record in store.iter_all(query):
                    writer.writerow(_csv_row(record))
                    count += 1
    finally:
        if output:
            handle.close()
    if output:
        typer.echo(f"exported {count} call record(s) to {output}", err=True)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a cell as a formula (OWASP, CSV injection)."""


def csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run (``=HYPERLINK(...)``, ``@SUM(...)``, ``+cmd|...``, also after
    leading spaces) gets a single quote in front, so it is shown as text; numbers and empty cells unchanged.
    The identity, room and user id are the caller's choice and the summary can be steered by what they say."""
    if not isinstance(value, str) or not value:
        return value
    if value.startswith(FORMULA_STARTS) or value.lstrip(" ").startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv_row(record: CallRecord) -> dict[str, Any]:
    data = record.to_dict()
    row = {key: data.get(key) for key in CSV_COLUMNS}
    row["modes"] = " ".join(record.modes)
    row["commands"] = json.dumps(record.commands)
    row["turns"] = "\n".join(f"{t.role}: {t.text}" for t in record.turns)
    row["analysis"] = "" if record.analysis is None else json.dumps(record.analysis.to_dict())
    return {key: csv_cell(value) for key, value in row.items()}


@calls_app.command("prune")
def prune(
    ctx: typer.Context,
    days: Optional[int] = typer.Option(None, "--days", min=0, help="Keep this many days (default: GOCARE_CALL_RETENTION_DAYS; 0 keeps all)."),
    database_url: Optional[str] = typer.Option(None, "--database-url", help=_DB_HELP),
) -> None:
    """Delete records older than the retention, and mark the records crashed jobs left unfinished."""
    settings = load_cli_settings(ctx, **({"database_url": database_url} if database_url else {}))
    keep = settings.call_retention_days if days is None else days
    with _store(ctx, database_url, writable=True) as store:
        crashed = store.sweep_stale()
        removed = store.prune(retention_days=keep)
    typer.echo(f"deleted {removed} call record(s) older than {keep} days" if keep else "retention is off (0 days): nothing deleted")
    if crashed:
        typer.echo(f"marked {crashed} record(s) of crashed jobs")


@calls_app.command("migrate")
def migrate_schema(
    ctx: typer.Context,
    database_url: Optional[str] = typer.Option(None, "--database-url", help=_DB_HELP),
) -> None:
    """Bring the call records' tables to the newest schema (the worker does it at start too)."""
    from gocare_voice.records import migrate

    with _store(ctx, database_url, writable=True) as store:
        revision = migrate.current(store.engine)
    typer.echo(f"call records schema at revision {revision}")
