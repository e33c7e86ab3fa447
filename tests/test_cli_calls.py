"""``gocare calls`` through the real root CLI app on a real SQLite file, and ``gocare users remove`` taking a
user's records with it."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gocare_voice.cli import app
from gocare_voice.conversation.directory import UserDirectory
from gocare_voice.records.model import CallRecord, CallStatus, EndReason, Turn, utcnow
from gocare_voice.records.store import CallStore

runner = CliRunner()


@pytest.fixture
def db_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'users.db'}"
    monkeypatch.setenv("GOCARE_DATABASE_URL", url)
    monkeypatch.delenv("GOCARE_CALL_RETENTION_DAYS", raising=False)
    return url


def seed(url: str) -> None:
    started = utcnow() - timedelta(hours=3)  # once: two clock reads made the duration 95.004 s under load
    with CallStore(url=url) as store:
        john = CallRecord(call_id="AJ_john1", room="user-42-care", participant_identity="user-42", user_id="user-42",
                          verified_user_id="user-42", status=CallStatus.ended, started_at=started,
                          ended_at=started + timedelta(seconds=95), end_reason=EndReason.user_left,
                          modes=["assistant", "attorney"], commands={"switch_agent": 1}, voice_uploads=1,
                          summary="Asked about knee surgery.", updated_at=utcnow())
        john.turns = [Turn(role="assistant", text="Welcome John! [bold]x[/bold]", at=utcnow()),
                      Turn(role="user", text="********10", at=utcnow())]
        store.create(john)
        asha = CallRecord(call_id="AJ_asha1", room="room-a", participant_identity="user-77", user_id="user-77",
                          status=CallStatus.ended, started_at=utcnow() - timedelta(minutes=5), ended_at=utcnow(),
                          end_reason=EndReason.verification_failed, updated_at=utcnow())
        store.create(asha)
        old = CallRecord(call_id="AJ_old", room="r", participant_identity="user-9", started_at=utcnow() - timedelta(days=90),
                         updated_at=utcnow() - timedelta(days=90))
        store.create(old)


def calls(*args: str):
    return runner.invoke(app, ["calls", *args])


def test_list_show_and_filters(db_url: str) -> None:
    seed(db_url)
    listed = calls("list")
    assert listed.exit_code == 0, listed.output
    assert listed.output.index("AJ_asha1") < listed.output.index("AJ_john1")  # newest first
    assert "verification_failed" in listed.output and "job_crashed" in listed.output  # the old one: crashed
    only = calls("list", "--user", "user-42", "--json")
    assert [c["call_id"] for c in json.loads(only.output)] == ["AJ_john1"]
    recent = json.loads(calls("list", "--since", "1h", "--json").output)
    assert [c["call_id"] for c in recent] == ["AJ_asha1"]
    assert calls("list", "--since", "yesterday-ish").exit_code == 2

    shown = calls("show", "AJ_john1")
    assert shown.exit_code == 0, shown.output
    for expected in ("user_left", "user-42", "attorney", "Asked about knee surgery.", "Welcome John! [bold]x[/bold]",
                     "********10", "95.0"):
        assert expected in shown.output, expected
    as_json = json.loads(calls("show", "AJ_john1", "--json").output)
    assert as_json["duration_seconds"] == 95.0 and len(as_json["turns"]) == 2
    missing = calls("show", "AJ_nope")
    assert missing.exit_code == 1 and "no call record 'AJ_nope'" in missing.output


def test_export_jsonl_and_csv(db_url: str, tmp_path: Path) -> None:
    seed(db_url)
    lines = calls("export").output.strip().splitlines()
    assert [json.loads(line)["call_id"] for line in lines] == ["AJ_old", "AJ_john1", "AJ_asha1"]
    target = tmp_path / "calls.csv"
    written = calls("export", "--format", "csv", "--output", str(target), "--user", "user-42")
    assert written.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [r["call_id"] for r in rows] == ["AJ_john1"] and "user: ********10" in rows[0]["turns"]
    assert calls("export", "--format", "xml").exit_code == 2


def test_prune_enforces_the_retention(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(db_url)
    monkeypatch.setenv("GOCARE_CALL_RETENTION_DAYS", "30")
    pruned = calls("prune")
    assert pruned.exit_code == 0 and "deleted 1 call record(s) older than 30 days" in pruned.output
    assert "marked 1 record(s) of crashed jobs" in pruned.output  # the old one was never finished
    assert [c["call_id"] for c in json.loads(calls("list", "--json").output)] == ["AJ_asha1", "AJ_john1"]
    assert "nothing deleted" in calls("prune", "--days", "0").output
    assert "revision 0002" in calls("migrate").output


def test_reading_commands_create_no_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    listed = runner.invoke(app, ["calls", "list", "--database-url", url])
    assert listed.exit_code == 0 and "no calls recorded" in listed.output
    assert not (tmp_path / "none.db").exists()


def test_users_remove_takes_their_call_records(db_url: str) -> None:
    with UserDirectory(url=db_url) as directory:
        directory.add(user_id="user-42", name="John Doe", phone="+919876543210")
    seed(db_url)
    removed = runner.invoke(app, ["users", "remove", "user-42"])
    assert removed.exit_code == 0 and "and 1 call record(s)" in removed.output
    assert [c["call_id"] for c in json.loads(calls("list", "--json").output)] == ["AJ_asha1", "AJ_old"]


def test_help_stays_lazy() -> None:
    code = ("import sys, gocare_voice.cli.app; "
            "print(sorted(m for m in ('sqlalchemy', 'alembic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_where_filters_on_the_analysis_and_show_prints_it_as_text(db_url: str) -> None:
    """``--where FIELD=VALUE`` (repeatable) by the configured plan; a wrong field or value exits 2 with one
    line; ``show`` prints the analysis, its values as literal text (the model wrote them from a caller's words)."""
    from gocare_voice.records.model import AnalysisStatus, CallAnalysis

    seed(db_url)
    with CallStore(url=db_url) as store:
        store.set_analysis("AJ_john1", CallAnalysis(status=AnalysisStatus.done, plan="gocare-default", values={
            "reason": "Asked for a callback about [red]knee[/red] surgery", "resolved": False,
            "follow_up_needed": True, "urgency": "urgent", "callback_time": "after 5 pm"}, success=False,
            alerts=[{"field": "urgency", "value": "urgent"}], attempts=1))
        store.set_analysis("AJ_asha1", CallAnalysis(status=AnalysisStatus.failed, plan="gocare-default",
                                                    error="invalid answer: the answer is not JSON", attempts=2))
    follow = calls("list", "--where", "follow_up_needed=true", "--json")
    assert follow.exit_code == 0, follow.output
    assert [c["call_id"] for c in json.loads(follow.output)] == ["AJ_john1"]
    both = calls("list", "--where", "follow_up_needed=yes", "--where", "urgency=urgent")
    assert both.exit_code == 0 and "AJ_john1" in both.output and "AJ_asha1" not in both.output
    assert "done urgency=urgent" in both.output
    assert json.loads(calls("list", "--where", "urgency=routine", "--json").output) == []
    assert [c["call_id"] for c in json.loads(calls("list", "--where", "reason=KNEE", "--json").output)] == ["AJ_john1"]
    for wrong, line in [("mood=sad", "'mood' is not a field of the analysis plan"),
                        ("urgency=asap", "urgency: 'asap' is not one of routine, soon, urgent"),
                        ("follow_up_needed", "'follow_up_needed' is not FIELD=VALUE")]:
        refused = calls("list", "--where", wrong)
        assert refused.exit_code == 2 and line in refused.output, refused.output
        assert len(refused.output.strip().splitlines()) == 1
    shown = calls("show", "AJ_john1")
    assert shown.exit_code == 0, shown.output
    for expected in ("Analysis (done, plan gocare-default)", "Asked for a callback about [red]knee[/red] surgery",
                     "follow_up_needed", "true", "after 5 pm", "urgency=urgent"):
        assert expected in shown.output, expected
    failed = calls("show", "AJ_asha1")
    assert "Analysis (failed" in failed.output and "invalid answer: the answer is not JSON" in failed.output
    assert "not analysed" in calls("show", "AJ_old").output
    exported = [json.loads(line) for line in calls("export", "--where", "urgency=urgent").output.strip().splitlines()]
    assert [r["call_id"] for r in exported] == ["AJ_john1"] and exported[0]["analysis"]["values"]["urgency"] == "urgent"
