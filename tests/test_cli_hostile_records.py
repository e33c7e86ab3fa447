"""Issue 28, items 2 to 4 on the CLI side: ``gocare calls`` and ``gocare users`` print what a record or a user
holds as literal text (no rich markup, no terminal control sequence reaches the terminal, ``list`` never fails
because of a record), the CSV export neutralises formulas (OWASP CSV injection), and any ``--since`` is exit 2
with one line. Through the real root CLI on a real SQLite file, and once in a subprocess with colours forced
(rich writes escape sequences of its own there, so only the record's must be absent)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gocare_voice.cli import app
from gocare_voice.cli.calls import csv_cell
from gocare_voice.conversation.directory import UserDirectory
from gocare_voice.records.model import CallRecord, CallStatus, EndReason, Turn, utcnow
from gocare_voice.records.store import CallStore

runner = CliRunner()

CLOSE_TAG = "[/x]"
LINK = "[link=https://evil.example/]alice[/link]"
TITLE = "\x1b]0;title\x07"
CLEAR = "\x1b[2J"
OSC8 = "\x1b]8;;https://evil.example/\x1b\\click here\x1b]8;;\x1b\\"
CSI = "\x9b31mred"
HOSTILE_SEQUENCES = ("\x1b]0;", "\x1b[2J", "\x1b]8;", "\x9b", "\x07", "evil.example/\x1b")
"""What must never reach the terminal from a record (rich's own colour codes are ``\\x1b[...m``)."""


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'users.db'}"
    monkeypatch.setenv("GOCARE_DATABASE_URL", url)
    return url


def seed_hostile(url: str) -> None:
    with CallStore(url=url) as store:
        evil = CallRecord(call_id="AJ_evil[/]", room=LINK, participant_identity=CLOSE_TAG, user_id=TITLE,
                          verified_user_id=CLEAR, status=CallStatus.ended, started_at=utcnow() - timedelta(minutes=2),
                          ended_at=utcnow(), end_reason=EndReason.user_left, modes=["[bold]assistant", CSI],
                          summary=OSC8, updated_at=utcnow())
        evil.turns = [Turn(role="user", text=CSI + " " + TITLE, at=utcnow()),
                      Turn(role="assistant", text=f"{LINK} {OSC8} {CLEAR}", at=utcnow())]
        store.create(evil)
        plain = CallRecord(call_id="AJ_plain", room="room-1", participant_identity="user-42",
                           status=CallStatus.ended, started_at=utcnow() - timedelta(minutes=5), ended_at=utcnow(),
                           end_reason=EndReason.user_left, updated_at=utcnow())
        store.create(plain)


def calls(*args: str):
    return runner.invoke(app, ["calls", *args])


def assert_no_control(output: str) -> None:
    for sequence in HOSTILE_SEQUENCES:
        assert sequence not in output, repr(sequence)


def test_list_prints_hostile_fields_as_text_and_never_fails(db_url: str) -> None:
    seed_hostile(db_url)
    listed = calls("list")
    assert listed.exit_code == 0, listed.output  # "[/x]" once made it a MarkupError for every record
    assert CLOSE_TAG in listed.output and "AJ_plain" in listed.output and "AJ_evil[/]" in listed.output
    assert "\\x1b[2J" in listed.output and "\\x9b31mred" in listed.output  # shown escaped
    assert "\x1b" not in listed.output  # not a terminal: nothing of rich's either
    assert "[bold]assistant" in listed.output


def test_show_prints_the_transcript_literally(db_url: str) -> None:
    seed_hostile(db_url)
    shown = calls("show", "AJ_evil[/]")
    assert shown.exit_code == 0, shown.output
    assert "\x1b" not in shown.output and "\x9b" not in shown.output and "\x07" not in shown.output
    assert "[link=https://evil.example/]alice[/link]" in shown.output.replace("\n", "")
    assert "\\x1b]8;;https://evil.example/" in shown.output.replace("\n", "")
    assert "\\x9b31mred" in shown.output and "\\x1b]0;title\\x07" in shown.output


def _in_a_terminal(*args: str, env: dict[str, str]) -> str:
    """The CLI in a subprocess with colours forced, as a terminal would get it."""
    run = subprocess.run([sys.executable, "-m", "gocare_voice", *args], capture_output=True, text=True,
                         env={**os.environ, **env, "FORCE_COLOR": "1", "COLUMNS": "200"}, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_in_a_terminal_no_record_sequence_reaches_it(db_url: str) -> None:
    seed_hostile(db_url)
    env = {"GOCARE_DATABASE_URL": db_url}
    for args, literal in ((("calls", "list"), CLOSE_TAG), (("calls", "show", "AJ_evil[/]"), LINK)):
        out = _in_a_terminal(*args, env=env)
        assert "\x1b[" in out  # rich styles the table: the test sees a terminal's output
        assert_no_control(out)  # no OSC 8 link either: "[link=...]" stayed text
        assert literal in out, args


def test_users_list_escapes_names(db_url: str) -> None:
    """The directory strips control characters from names it is given; a row written around it (a restored
    backup, another tool) is still printed escaped."""
    from sqlalchemy import text

    with UserDirectory(url=db_url) as directory:
        directory.add(user_id="user-42", name="John", phone="+919876543210")
        with directory.engine.begin() as conn:
            conn.execute(text("UPDATE gocare_registered_users SET name = :name"), {"name": f"John {TITLE}{CLEAR} [/x]"})
    listed = runner.invoke(app, ["users", "list"])
    assert listed.exit_code == 0, listed.output
    assert "\x1b" not in listed.output and "\x07" not in listed.output
    assert "John \\x1b]0;title\\x07\\x1b[2J [/x]" in listed.output


@pytest.mark.parametrize(("value", "expected"), [
    ('=HYPERLINK("https://evil.example","x")', '\'=HYPERLINK("https://evil.example","x")'),
    ("@SUM(1+1)", "'@SUM(1+1)"),
    ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
    ("-2+3", "'-2+3"),
    ("\t=1+1", "'\t=1+1"),
    ("\r=1+1", "'\r=1+1"),
    ("  =1+1", "'  =1+1"),
    ("user-42", "user-42"),
    ("", ""),
    (None, None),
    (95.0, 95.0),
])
def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(value: object, expected: object) -> None:
    assert csv_cell(value) == expected


def test_csv_export_neutralises_every_cell(db_url: str, tmp_path: Path) -> None:
    with CallStore(url=db_url) as store:
        record = CallRecord(call_id="AJ_csv", room="@SUM(1+1)", participant_identity='=HYPERLINK("https://evil.example")',
                            user_id="+cmd|' /C calc'!A0", verified_user_id="-1+1", status=CallStatus.ended,
                            started_at=utcnow(), ended_at=utcnow(), end_reason=EndReason.user_left,
                            summary='x","=1+1', updated_at=utcnow())
        record.turns = [Turn(role="user", text="=2+2", at=utcnow())]
        store.create(record)
    target = tmp_path / "calls.csv"
    written = calls("export", "--format", "csv", "--output", str(target))
    assert written.exit_code == 0, written.output
    raw = target.read_text()
    rows = list(csv.DictReader(io.StringIO(raw)))
    assert len(rows) == 1
    row = rows[0]
    assert row["room"] == "'@SUM(1+1)" and row["participant_identity"] == "'=HYPERLINK(\"https://evil.example\")"
    assert row["user_id"] == "'+cmd|' /C calc'!A0" and row["verified_user_id"] == "'-1+1"
    assert row["summary"] == 'x","=1+1'  # one cell: the quote and comma inside it are quoted, not a new cell
    assert row["turns"] == "user: =2+2"
    first_cells = [line.split('","')[0] for line in raw.splitlines()]
    assert all(cell.startswith('"') for cell in first_cells if cell)  # QUOTE_ALL
    for cell in row.values():
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell


@pytest.mark.parametrize("since", ["99999999999d", "999999999999w", "-5d", "garbage", "2026-13-45", "²d",
                                   "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00", "1" * 5000 + "d"])
def test_any_since_is_exit_2_with_one_line(db_url: str, since: str) -> None:
    seed_hostile(db_url)
    for command in (("list",), ("export",)):
        result = calls(*command, "--since", since)
        assert result.exit_code == 2, (since, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --since: "), result.output
        assert "Traceback" not in result.output
    assert calls("list", "--since", "36600d", "--json").exit_code == 0
    assert json.loads(calls("list", "--since", "2000-01-01", "--json").output)
