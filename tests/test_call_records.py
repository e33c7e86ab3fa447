"""Call records without LiveKit: the model, the store on a real SQLite file and a throwaway PostgreSQL (one
Alembic migration path for both, checked against the table definitions), the recorder's incremental writes,
and the memory text."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import inspect

from gocare_voice.records import migrate
from gocare_voice.records.events import (
    CallEvents,
    CommandReceived,
    ModeEntered,
    SessionClosed,
    TurnAdded,
    VerificationChecked,
    VoiceUploadReceived,
)
from gocare_voice.records.model import (
    STALE_AFTER,
    CallRecord,
    CallStatus,
    EndReason,
    RecordLevel,
    Turn,
    end_reason_for,
    mask_text,
    utcnow,
)
from gocare_voice.records.recorder import CallRecorder, apply_event
from gocare_voice.records.store import CallQuery, CallStore
from gocare_voice.records.summary import bounded, memory_text, worth_summarising
from gocare_voice.redact import mask_digit_runs



def new_record(call_id: str | None = None, **fields: object) -> CallRecord:
    values: dict[str, object] = {"room": "room-1", "participant_identity": "user-42", "user_id": "user-42",
                                 "started_at": utcnow(), "updated_at": utcnow()}
    values.update(fields)
    return CallRecord(call_id=call_id or f"AJ_{uuid.uuid4().hex[:12]}", **values)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path) -> Iterator[CallStore]:
    with CallStore(url=f"sqlite:///{tmp_path / 'calls.db'}") as opened:
        yield opened


def test_stored_text_is_masked_by_the_logs_function() -> None:
    said = "my number is 98765 43210, nine eight seven six five four three two one zero"
    assert mask_text(said) == mask_digit_runs(said)
    assert "98765" not in mask_text(said) and "43210" not in mask_text(said)
    assert "nine eight seven" not in mask_text(said)


@pytest.mark.parametrize(("close", "locked", "left", "draining", "expected"), [
    ("task_completed", True, False, False, EndReason.verification_failed),
    ("participant_disconnected", False, False, False, EndReason.user_left),
    ("user_initiated", False, True, False, EndReason.user_left),
    ("error", False, False, False, EndReason.error),
    ("job_shutdown", False, False, True, EndReason.worker_drained),
    ("job_shutdown", False, False, False, EndReason.user_left),
])
def test_end_reasons(close, locked, left, draining, expected) -> None:
    assert end_reason_for(close_reason=close, locked_out=locked, user_left=left, draining=draining) is expected


def test_apply_event_at_each_level() -> None:
    record = new_record()
    assert apply_event(record, TurnAdded(role="user", text="It is 98765 43210")) == record.turns
    assert record.turns[0].text.endswith("********10")
    apply_event(record, ModeEntered(mode="assistant"))
    apply_event(record, ModeEntered(mode="attorney"))
    apply_event(record, ModeEntered(mode="assistant"))
    apply_event(record, CommandReceived(name="switch_agent", ok=True))
    apply_event(record, CommandReceived(name="switch_agent", ok=False))
    apply_event(record, VoiceUploadReceived(transcript="status of my appointment", reply="Tomorrow."))
    apply_event(record, VerificationChecked(outcome="verified", user_id="user-42"))
    apply_event(record, TurnAdded(role="system", text="ignored"))
    assert record.modes == ["assistant", "attorney"]
    assert record.commands == {"switch_agent": 2}
    assert record.voice_uploads == 1 and record.verified_user_id == "user-42"
    assert [(t.role, t.source) for t in record.turns] == [("user", "voice"), ("user", "upload"), ("assistant", "upload")]

    metadata = new_record(level=RecordLevel.metadata)
    apply_event(metadata, TurnAdded(role="user", text="anything"))
    apply_event(metadata, VoiceUploadReceived(transcript="secret", reply="reply"))
    assert metadata.turns == [] and metadata.voice_uploads == 1


def test_store_round_trip_list_and_filters(store: CallStore) -> None:
    first = new_record(started_at=utcnow() - timedelta(hours=2))
    first.turns.append(Turn(role="user", text="hello", at=utcnow()))
    store.create(first)
    first.verified_user_id = "user-42"
    first.status, first.end_reason, first.ended_at = CallStatus.ended, EndReason.user_left, utcnow()
    store.save(first, new_turns=[Turn(role="assistant", text="hi John", at=utcnow())], first_seq=1)
    other = new_record(participant_identity="user-77", user_id="user-77")
    store.create(other)

    got = store.get(first.call_id)
    assert got is not None and got.status is CallStatus.ended and got.end_reason is EndReason.user_left
    assert [t.text for t in got.turns] == ["hello", "hi John"]
    assert got.duration_seconds is not None and got.duration_seconds > 7000
    assert got.started_at.tzinfo is not None
    assert [r.call_id for r in store.list()] == [other.call_id, first.call_id]  # newest first
    assert [r.call_id for r in store.list(CallQuery(identity="user-77"))] == [other.call_id]
    assert [r.call_id for r in store.list(CallQuery(user_id="user-42"))] == [first.call_id]
    assert store.list(CallQuery(since=utcnow() - timedelta(hours=1))) == store.list(CallQuery(identity="user-77"))
    assert store.count() == 2 and store.count(CallQuery(identity="nobody")) == 0
    assert [r.call_id for r in store.list(CallQuery(limit=1, offset=1))] == [first.call_id]
    exported = list(store.iter_all(batch=1))
    assert [r.call_id for r in exported] == [first.call_id, other.call_id] and len(exported[0].turns) == 2
    assert store.delete_user("user-42") == 1 and store.get(first.call_id) is None and store.count() == 1


def test_a_record_nobody_touches_reads_as_a_crash_and_sweep_persists_it(store: CallStore) -> None:
    old = utcnow() - STALE_AFTER - timedelta(seconds=5)
    dead = new_record(started_at=old, updated_at=old)
    live = new_record()
    store.create(dead)
    store.create(live)
    shown = store.get(dead.call_id)
    assert shown is not None and shown.status is CallStatus.crashed and shown.end_reason is EndReason.job_crashed
    assert store.get(live.call_id).status is CallStatus.in_progress  # type: ignore[union-attr]
    assert store.sweep_stale() == 1 and store.sweep_stale() == 0
    assert store.mark_crashed(live.call_id, reason=EndReason.agent_unavailable) is True
    assert store.mark_crashed(live.call_id) is False  # only once: it is no longer in progress
    assert store.get(live.call_id).end_reason is EndReason.agent_unavailable  # type: ignore[union-attr]


def test_prune_keeps_recent_records(store: CallStore) -> None:
    store.create(new_record("AJ_old", started_at=utcnow() - timedelta(days=40)))
    store.create(new_record("AJ_new"))
    assert store.prune(retention_days=0) == 0
    assert store.prune(retention_days=30) == 1
    assert [r.call_id for r in store.list()] == ["AJ_new"]


def test_readers_create_nothing(tmp_path) -> None:
    path = tmp_path / "none.db"
    with CallStore(url=f"sqlite:///{path}", writable=False) as reader:
        assert reader.list() == [] and reader.count() == 0 and reader.get("x") is None
    assert not path.exists()
    from gocare_voice.conversation.directory import UserDirectory

    UserDirectory(url=f"sqlite:///{path}").close()  # a directory without call tables yet
    with CallStore(url=f"sqlite:///{path}", writable=False) as reader:
        assert reader.list() == [] and reader.recent_summaries("user-42") == []
    assert not inspect(reader.engine).has_table("gocare_calls")


def _migration_checks(url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from gocare_voice.conversation.directory import make_engine
    from gocare_voice.records.schema import metadata

    engine = make_engine(url)
    try:
        migrate.downgrade(engine, "base") if migrate.current(engine) else None
        assert migrate.current(engine) is None
        assert migrate.upgrade(engine) == migrate.head() == migrate.HEAD  # the constant is Alembic's head
        assert migrate.upgrade(engine) == migrate.HEAD  # idempotent
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": migrate.VERSION_TABLE})
            diff = [d for d in compare_metadata(context, metadata)
                    if not (d[0] == "remove_table" and not d[1].name.startswith("gocare_call"))]
        assert diff == [], diff  # the migrations build exactly the tables schema.py defines
        assert migrate.downgrade(engine, "base") is None
        assert not inspect(engine).has_table("gocare_calls")
        migrate.upgrade(engine)
    finally:
        engine.dispose()


def test_migrations_on_sqlite(tmp_path) -> None:
    _migration_checks(f"sqlite:///{tmp_path / 'm.db'}")



def _concurrent_upgrades(url: str) -> None:
    """Workers starting together against one fresh database (processes, as workers are: Alembic's
    ``context`` is one per process): every one of them ends at the head revision."""
    import subprocess
    import sys

    from gocare_voice.conversation.directory import make_engine

    engine = make_engine(url)
    try:
        migrate.downgrade(engine, "base")
    finally:
        engine.dispose()
    code = ("import sys; from gocare_voice.records import migrate; "
            "from gocare_voice.conversation.directory import make_engine; "
            "print(migrate.upgrade(make_engine(sys.argv[1])))")
    workers = [subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(4)]
    results = [(w.communicate(timeout=120), w.returncode) for w in workers]
    assert [(out.strip(), rc) for (out, _err), rc in results] == [(migrate.HEAD, 0)] * 4, results


def test_concurrent_upgrades_on_sqlite(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    CallStore(url=url).close()
    _concurrent_upgrades(url)


def test_migrations_and_store_on_postgresql(postgres_url: str) -> None:
    _migration_checks(postgres_url)
    _concurrent_upgrades(postgres_url)
    with CallStore(url=postgres_url) as pg:
        record = new_record()
        record.turns.append(Turn(role="user", text="hello", at=utcnow()))
        pg.create(record)
        record.summary = "Asked about knee surgery."
        record.verified_user_id = "user-42"
        pg.save(record, new_turns=[Turn(role="assistant", text="hi", at=utcnow())], first_seq=1)
        got = pg.get(record.call_id)
        assert got is not None and [t.text for t in got.turns] == ["hello", "hi"]
        assert pg.recent_summaries("user-42")[0][1] == "Asked about knee surgery."
        assert pg.delete_user("user-42") >= 1


async def test_recorder_writes_as_the_call_goes_and_finishes_once(store: CallStore) -> None:
    events = CallEvents()
    recorder = CallRecorder(store=store, record=new_record(), heartbeat=0.05)
    recorder.listen(events)
    await recorder.start()
    call_id = recorder.record.call_id
    assert store.get(call_id).status is CallStatus.in_progress  # type: ignore[union-attr]
    events.publish(TurnAdded(role="assistant", text="Welcome John!"))
    events.publish(TurnAdded(role="user", text="98765 43210"))
    for _ in range(100):
        await asyncio.sleep(0.02)
        saved = store.get(call_id)
        if saved is not None and len(saved.turns) == 2:
            break
    saved = store.get(call_id)
    assert saved is not None and [t.text for t in saved.turns] == ["Welcome John!", "********10"]
    before = saved.updated_at
    await asyncio.sleep(0.2)
    assert store.get(call_id).updated_at > before  # type: ignore[union-attr, operator]  # the heartbeat
    events.publish(SessionClosed(close_reason="participant_disconnected"))
    assert recorder.closed is not None and recorder.closed.close_reason == "participant_disconnected"
    finished = await recorder.finish(EndReason.user_left)
    again = await recorder.finish(EndReason.error)
    assert again.end_reason is EndReason.user_left and finished.status is CallStatus.ended
    events.publish(TurnAdded(role="user", text="after the end"))  # ignored
    stored = store.get(call_id)
    assert stored is not None and stored.end_reason is EndReason.user_left and len(stored.turns) == 2


async def test_recorder_survives_a_broken_database(tmp_path) -> None:
    store = CallStore(url=f"sqlite:///{tmp_path / 'c.db'}")
    recorder = CallRecorder(store=store, record=new_record(), heartbeat=0)
    await recorder.start()
    store.engine.dispose()
    (tmp_path / "c.db").unlink()
    (tmp_path / "c.db").mkdir()  # the database is gone: writes fail, the call must not
    recorder.on_event(TurnAdded(role="user", text="hello"))
    await recorder.flush()
    assert recorder.write_errors >= 1
    await recorder.finish(EndReason.user_left)


def test_summary_is_bounded_and_masked() -> None:
    assert bounded("  ") is None
    long = bounded("word " * 400)
    assert long is not None and len(long) <= 601 and long.endswith("\u2026")
    assert "98765" not in (bounded("Call me on 98765 43210") or "")
    record = new_record()
    assert not worth_summarising(record)
    record.verified_user_id = "user-42"
    record.turns.append(Turn(role="user", text="knee surgery", at=utcnow()))
    assert worth_summarising(record)
    when = utcnow()
    assert memory_text([(when, "Asked about knee surgery.")]) == f"- {when:%Y-%m-%d}: Asked about knee surgery."
    assert memory_text([]) is None


def test_the_drain_shutdown_reason_is_livekits_own_words() -> None:
    """``worker_drained`` is told apart by the reason livekit-agents gives a job its main process shuts down."""
    import inspect

    from livekit.agents.ipc import job_proc_lazy_main

    from gocare_voice.worker.recording import DRAIN_SHUTDOWN

    assert f'"{DRAIN_SHUTDOWN}"' in inspect.getsource(job_proc_lazy_main)


def test_worker_start_sweeps_and_prunes(tmp_path) -> None:
    from gocare_voice.settings import Settings
    from gocare_voice.worker.recording import prepare_records

    url = f"sqlite:///{tmp_path / 'users.db'}"
    with CallStore(url=url) as store:
        store.create(new_record("AJ_expired", started_at=utcnow() - timedelta(days=31)))
        stale = utcnow() - STALE_AFTER - timedelta(minutes=1)
        store.create(new_record("AJ_dead", started_at=stale, updated_at=stale))
    line = prepare_records(Settings(database_url=url))
    assert line == "call records: transcript, kept 30 days; 1 expired record(s) deleted, 1 left by crashed jobs marked"
    with CallStore(url=url) as store:
        dead = store.get("AJ_dead")
        assert dead is not None and dead.status is CallStatus.crashed and store.get("AJ_expired") is None
    assert prepare_records(Settings(database_url=url, call_records="off")).startswith("call records are off")


async def test_observed_commands_publish_what_the_executor_ran() -> None:
    from gocare_voice import protocol as proto
    from gocare_voice.worker.recording import ObservedCommands

    class Executor:
        async def execute(self, command):
            return {"ok": getattr(command, "name", None) not in ("end_turn", None)}

        async def add_voice_upload(self, upload):
            return {"ok": True}

    events = CallEvents()
    seen: list[object] = []
    events.subscribe(seen.append)
    observed = ObservedCommands(inner=Executor(), events=events)
    switch = proto.parse_rpc("switch_agent", '{"agent": "attorney"}')
    end = proto.parse_rpc("end_turn", "")
    refused = proto.parse_rpc("switch_agent", "{not json")
    assert isinstance(switch, proto.Command) and isinstance(end, proto.Command)
    assert await observed.execute(switch) == {"ok": True}
    await observed.execute(end)
    await observed.execute(refused)  # malformed: answered, not a command received
    await observed.add_voice_upload(proto.VoiceUpload(transcript="hello", reply="hi"))
    assert seen == [CommandReceived(name="switch_agent", ok=True), CommandReceived(name="end_turn", ok=False),
                    VoiceUploadReceived(transcript="hello", reply="hi", at=seen[-1].at)]  # type: ignore[attr-defined]


def test_a_process_that_finds_the_schema_current_never_imports_alembic(tmp_path) -> None:
    """A job process opens the store at every call start: on a migrated database that costs no Alembic import."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'calls.db'}"
    CallStore(url=url).close()
    code = ("import sys; from gocare_voice.records.store import CallStore; CallStore(url=sys.argv[1]).close(); "
            "print('alembic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
