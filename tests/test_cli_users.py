"""``gocare users`` through the real root CLI app (CliRunner) and once as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gocare_voice.cli import app
from gocare_voice.conversation.directory import UserDirectory

runner = CliRunner()
JOHN = "+919876543210"


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'users.db'}"
    monkeypatch.setenv("GOCARE_DATABASE_URL", url)
    return url


def gocare(*args: str):
    return runner.invoke(app, ["users", *args])


def test_add_list_remove(db_url: str) -> None:
    added = gocare("add", "user-john", "John Doe", "98765 43210")
    assert added.exit_code == 0, added.output
    assert added.output.strip() == "added user-john (John Doe, +91******3210)"

    listed = gocare("list")
    assert listed.exit_code == 0
    assert "user-john" in listed.output and "+91******3210" in listed.output and JOHN not in listed.output

    shown = gocare("list", "--show-numbers")
    assert JOHN in shown.output

    removed = gocare("remove", "user-john")
    assert removed.exit_code == 0 and "removed user-john" in removed.output
    assert gocare("list").output.strip() == "no registered users"


def test_invalid_and_duplicate_numbers_are_one_line_errors(db_url: str) -> None:
    assert gocare("add", "user-john", "John Doe", JOHN).exit_code == 0

    invalid = gocare("add", "user-x", "X", "12345")
    assert invalid.exit_code == 1
    assert invalid.stderr.strip() == "error: invalid phone number for 'user-x': too few digits (5)"

    duplicate = gocare("add", "user-y", "Y", "+91 98765-43210")
    assert duplicate.exit_code == 1
    assert duplicate.stderr.strip() == "error: number +91******3210 is already registered (user 'user-john')"
    assert "Traceback" not in duplicate.output

    missing = gocare("remove", "nobody")
    assert missing.exit_code == 1 and missing.stderr.strip() == "error: no registered user with id 'nobody'"


def test_import_csv(db_url: str, tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("user_id,name,phone\nu1,John Doe,98765 43210\nu2,Priya Sharma,+91 91234 55789\n")
    result = gocare("import", str(good))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "imported 2 user(s)"

    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,name,phone\nu3,Ok,90000 00001\nu4,Bad,12\nu5,Dup,9876543210\n")
    refused = gocare("import", str(bad))
    assert refused.exit_code == 1
    assert refused.stderr.splitlines() == [
        "error: line 3: invalid phone number for 'u4': too few digits (2)",
        "error: line 4: number +91******3210 is already registered",
        "error: 2 bad row(s), nothing imported (use --skip-errors to import the good rows)",
    ]
    with UserDirectory(url=db_url) as users:
        assert users.count() == 2

    partial = gocare("import", str(bad), "--skip-errors")
    assert partial.exit_code == 1  # something was skipped
    assert "imported 1 user(s), skipped 2 row(s)" in partial.stdout

    nofile = gocare("import", str(tmp_path / "nope.csv"))
    assert nofile.exit_code == 1 and nofile.stderr.startswith("error: no such file")


def test_list_limit(db_url: str) -> None:
    for i in range(3):
        assert gocare("add", f"u{i}", f"User {i}", f"9000000{i:03d}").exit_code == 0
    limited = gocare("list", "--limit", "2")
    assert limited.exit_code == 0 and "(2 of 3 shown)" in limited.output


def test_bad_settings_exit_2_with_the_variable_named(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    monkeypatch.setenv("GOCARE_PHONE_REGION", "XX")
    result = gocare("list")
    assert result.exit_code == 2
    assert "GOCARE_PHONE_REGION" in result.stderr


def test_database_url_option_and_bad_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    assert gocare("add", "u1", "U", JOHN, "--database-url", url).exit_code == 0
    assert "u1" in gocare("list", "--database-url", url).output
    bad = gocare("list", "--database-url", "nonsense")
    assert bad.exit_code == 1 and bad.stderr.startswith("error: not a database URL")


def test_real_command_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOCARE_")}
    env["GOCARE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    cmd = [sys.executable, "-m", "gocare_voice", "users"]
    ok = subprocess.run([*cmd, "add", "u1", "John Doe", "nine eight seven six five four three two one zero"],
                        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    dup = subprocess.run([*cmd, "add", "u2", "Jane", JOHN], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert dup.returncode == 1
    assert dup.stderr.strip() == "error: number +91******3210 is already registered (user 'u1')"


# --- what a new user trips over ---------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["list"], ["remove", "u1"], ["add", "u1", "Bob", "9876543210"]])
def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path, command: list[str]) -> None:
    bad = tmp_path / "notdb.db"
    bad.write_text("this is not a database\n" * 100)
    result = runner.invoke(app, ["users", *command, "--database-url", f"sqlite:///{bad}"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: {lines[0][7:]}"] and "file is not a database" in lines[0]
    assert "Traceback" not in result.output


def test_reading_commands_never_create_a_database(tmp_path: Path) -> None:
    missing_dir = tmp_path / "nonexistent" / "dir"
    result = runner.invoke(app, ["users", "list", "--database-url", f"sqlite:///{missing_dir / 'x.db'}"])
    assert result.exit_code == 1 and str(missing_dir) in result.output and "does not exist" in result.output
    assert not (tmp_path / "nonexistent").exists()
    fresh = tmp_path / "fresh.db"
    result = runner.invoke(app, ["users", "list", "--database-url", f"sqlite:///{fresh}"])
    assert result.exit_code == 0 and result.output.startswith("no registered users") and not fresh.exists()
    result = runner.invoke(app, ["users", "remove", "u1", "--database-url", f"sqlite:///{fresh}"])
    assert result.exit_code == 1 and not fresh.exists()


def test_import_update_delimiter_hint_and_empty_names(tmp_path: Path, db_url: str) -> None:
    first = tmp_path / "a.csv"
    first.write_text("user_id,name,phone\nu1,Ann,9876543210\nu2,Bo,9876543211\n")
    assert gocare("import", str(first)).exit_code == 0
    second = tmp_path / "b.csv"
    second.write_text("user_id,name,phone\nu1,Ann Lee,9876543219\nu3,Cy,9876543212\n")
    refused = gocare("import", str(second))
    assert refused.exit_code == 1 and "--update" in refused.output
    updated = gocare("import", "--update", str(second))
    assert updated.exit_code == 0 and "imported 1 user(s), updated 1" in updated.output
    with UserDirectory(url=db_url) as directory:
        ann = directory.get("u1")
        assert ann is not None and (ann.name, ann.phone) == ("Ann Lee", "+919876543219")
        assert directory.count() == 3
    clash = tmp_path / "c.csv"  # u3 may not take u2's number, even with --update
    clash.write_text("user_id,name,phone\nu3,Cy,9876543211\n")
    assert gocare("import", "--update", str(clash)).exit_code == 1
    semi = tmp_path / "semi.csv"
    semi.write_text("user_id;name;phone\nu9;A;9876543213\n")
    hinted = gocare("import", str(semi))
    assert hinted.exit_code == 1 and "seems to use ';'" in hinted.output
    nameless = tmp_path / "nameless.csv"
    nameless.write_text("user_id,name,phone\nu9,,9876543213\n")
    empty = gocare("import", str(nameless))
    assert empty.exit_code == 1 and "line 2: name is empty" in empty.output


def test_migrate_creates_the_table_once_and_hides_the_password(tmp_path: Path, db_url: str) -> None:
    """The chart's migration Job and compose's one-shot run it before the workers start."""
    first = gocare("migrate")
    assert first.exit_code == 0, first.output
    assert first.output.strip() == f"user directory ready at {db_url} (0 user(s))"
    assert gocare("add", "user-john", "John Doe", "98765 43210").exit_code == 0
    again = gocare("migrate")
    assert again.exit_code == 0 and again.output.strip().endswith("(1 user(s))")
    refused = gocare("migrate", "--database-url", "postgresql+psycopg://gocare:hunter2@127.0.0.1:1/gocare")
    assert refused.exit_code == 1
    assert "hunter2" not in refused.output and "cannot open the user directory" in refused.output
