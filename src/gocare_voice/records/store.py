"""``CallStore``: call records on the directory database's SQLAlchemy engine (SQLite by default, PostgreSQL
by URL). Synchronous, small queries on indexes; the worker calls them from a thread (``recorder``).

Writers (the worker, ``gocare calls prune``/``migrate``) bring the schema up to date (``migrate.upgrade``);
readers (``gocare calls list``, ``GET /calls``) never create anything: no database file or no tables yet is
simply "no calls".
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, delete, func, insert, inspect, or_, select, update
from sqlalchemy.engine import Row

from gocare_voice.conversation.directory import DatabaseMissing, make_engine

from . import migrate
from .model import STALE_AFTER, CallAnalysis, CallRecord, CallStatus, EndReason, RecordLevel, Turn, aware, utcnow
from .plan import Condition
from .schema import calls, turns

logger = logging.getLogger("gocare.records")

_C = calls.c
_T = turns.c


@dataclass(frozen=True, slots=True)
class CallQuery:
    """Which records a reader wants. ``identity`` and ``user_id`` match either the participant identity or
    the verified/claimed user id; ``None`` means no filter (an operator)."""

    identity: str | None = None
    user_id: str | None = None
    since: datetime | None = None
    limit: int = 50
    offset: int = 0
    where: tuple[Condition, ...] = ()
    """Analysis filters (``records.plan.parse_where``): only analysed calls whose values match every one."""


def _record(row: Row[Any], turn_rows: Sequence[Row[Any]] = ()) -> CallRecord:
    return CallRecord(
        call_id=row.call_id,
        room=row.room,
        participant_identity=row.participant_identity,
        user_id=row.user_id,
        verified_user_id=row.verified_user_id,
        status=CallStatus(row.status),
        started_at=aware(row.started_at) or utcnow(),
        ended_at=aware(row.ended_at),
        updated_at=aware(row.updated_at),
        end_reason=EndReason(row.end_reason) if row.end_reason else None,
        modes=list(row.modes or []),
        commands=dict(row.commands or {}),
        voice_uploads=int(row.voice_uploads or 0),
        verification=list(row.verification or []),
        level=RecordLevel(row.level),
        agent_name=row.agent_name,
        summary=row.summary,
        resumed_from=row.resumed_from,
        webhook_status=row.webhook_status,
        analysis=CallAnalysis.from_dict(row.analysis),
        turns=[Turn(role=t.role, text=t.text, at=aware(t.at) or utcnow(), source=t.source) for t in turn_rows],
    )


def _fields(record: CallRecord) -> dict[str, Any]:
    """The call row of ``record`` (everything but the turns)."""
    return {
        "room": record.room,
        "participant_identity": record.participant_identity,
        "user_id": record.user_id,
        "verified_user_id": record.verified_user_id,
        "status": record.status.value,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "updated_at": record.updated_at or utcnow(),
        "end_reason": record.end_reason.value if record.end_reason else None,
        "modes": list(record.modes),
        "commands": dict(record.commands),
        "voice_uploads": record.voice_uploads,
        "verification": list(record.verification),
        "level": record.level.value,
        "agent_name": record.agent_name,
        "summary": record.summary,
        "resumed_from": record.resumed_from,
        "webhook_status": record.webhook_status,
        "analysis": None if record.analysis is None else record.analysis.to_dict(),
    }


def _analysis_condition(condition: Condition) -> Any:
    """One filter as SQL on the JSON column, the same on SQLite (``JSON_EXTRACT``) and PostgreSQL (``#>``):
    the analysis must be ``done`` and its value match. Text matches case-insensitively as "contains"."""
    value = _C.analysis[("values", condition.field)]
    done = _C.analysis[("status",)].as_string() == "done"
    if condition.type == "boolean":
        return and_(done, value.as_boolean() == condition.value)
    if condition.type == "number":
        return and_(done, value.as_float() == condition.value)
    if condition.type == "choice":
        return and_(done, value.as_string() == condition.value)
    needle = str(condition.value).lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return and_(done, func.lower(value.as_string()).like(f"%{needle}%", escape="\\"))


class CallStore:
    """``writable``: migrate the schema to the newest revision when opening (the worker, prune);
    otherwise a missing database or missing tables read as no calls, and nothing is created."""

    def __init__(self, *, url: str, writable: bool = True, engine: Engine | None = None) -> None:
        self._missing = False
        if engine is None:
            try:
                engine = make_engine(url, create=writable)
            except DatabaseMissing:
                self._missing = True
                engine = make_engine("sqlite://")  # an empty stand-in, never written
        self._engine = engine
        self.url_for_display = engine.url.render_as_string(hide_password=True)
        if writable:
            migrate.upgrade(engine)
        elif not self._missing:
            self._missing = not inspect(engine).has_table(calls.name)

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> CallStore:
        return cls(url=settings.database_url, **kwargs)

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def available(self) -> bool:
        """False for a reader that found no database or no tables (yet): it reads as no calls."""
        return not self._missing

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> CallStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- writes (the recorder) -------------------------------------------------------------------
    def create(self, record: CallRecord) -> None:
        with self._engine.begin() as conn:
            conn.execute(insert(calls).values(call_id=record.call_id, **_fields(record)))
            self._add_turns(conn, record.call_id, record.turns, first_seq=0)

    def save(self, record: CallRecord, *, new_turns: Sequence[Turn] = (), first_seq: int = 0,
             changed_turns: Sequence[tuple[int, Turn]] = ()) -> None:
        """The call row as it is now, the turns added since the last save, and the new text of saved turns
        masked again since (``changed_turns``: seq and turn), in one transaction."""
        with self._engine.begin() as conn:
            conn.execute(update(calls).where(_C.call_id == record.call_id).values(**_fields(record)))
            for seq, turn in changed_turns:
                conn.execute(update(turns).where(and_(_T.call_id == record.call_id, _T.seq == seq))
                             .values(text=turn.text))
            self._add_turns(conn, record.call_id, new_turns, first_seq=first_seq)

    @staticmethod
    def _add_turns(conn: Any, call_id: str, new_turns: Sequence[Turn], *, first_seq: int) -> None:
        if new_turns:
            conn.execute(insert(turns), [
                {"call_id": call_id, "seq": first_seq + i, "role": t.role, "source": t.source, "text": t.text, "at": t.at}
                for i, t in enumerate(new_turns)
            ])

    def touch(self, call_id: str, *, now: datetime | None = None) -> None:
        """The heartbeat of a call in progress: its job is alive."""
        with self._engine.begin() as conn:
            conn.execute(update(calls).where(and_(_C.call_id == call_id, _C.status == CallStatus.in_progress.value))
                         .values(updated_at=now or utcnow()))

    def set_analysis(self, call_id: str, analysis: CallAnalysis) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(calls).where(_C.call_id == call_id).values(analysis=analysis.to_dict()))

    def set_webhook_status(self, call_id: str, status: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(calls).where(_C.call_id == call_id).values(webhook_status=status))

    def mark_crashed(self, call_id: str, *, reason: EndReason = EndReason.job_crashed,
                     now: datetime | None = None) -> bool:
        """A job whose process died (the worker's main process saw it): its record ends here, if it was
        still in progress. ``agent_unavailable`` when the user was told no agent comes back."""
        when = now or utcnow()
        with self._engine.begin() as conn:
            done = conn.execute(
                update(calls).where(and_(_C.call_id == call_id, _C.status == CallStatus.in_progress.value))
                .values(status=CallStatus.crashed.value, end_reason=reason.value, ended_at=when, updated_at=when)
            ).rowcount
        return bool(done)

    def sweep_stale(self, *, now: datetime | None = None) -> int:
        """Persist what readers already show: an ``in_progress`` record nobody touched for ``STALE_AFTER``
        is a crashed job's. Safe with several workers on one database: live jobs touch their records."""
        when = now or utcnow()
        if self._missing:
            return 0
        with self._engine.begin() as conn:
            stale = conn.execute(select(_C.call_id, _C.updated_at).where(
                and_(_C.status == CallStatus.in_progress.value, _C.updated_at < when - STALE_AFTER))).all()
            for call_id, updated_at in stale:
                conn.execute(update(calls).where(and_(_C.call_id == call_id, _C.status == CallStatus.in_progress.value))
                             .values(status=CallStatus.crashed.value, end_reason=EndReason.job_crashed.value,
                                     ended_at=updated_at))
        return len(stale)

    def prune(self, *, retention_days: int, now: datetime | None = None) -> int:
        """Delete records that started more than ``retention_days`` ago (0: keep forever). Returns how many."""
        if retention_days <= 0 or self._missing:
            return 0
        cutoff = (now or utcnow()) - timedelta(days=retention_days)
        return self._delete(_C.started_at < cutoff)

    def delete_user(self, user_id: str) -> int:
        """Every record of one user (``gocare users remove``): verified as them, or called as them."""
        if self._missing:
            return 0
        return self._delete(or_(_C.verified_user_id == user_id, _C.user_id == user_id,
                                _C.participant_identity == user_id))

    def _delete(self, where: Any) -> int:
        with self._engine.begin() as conn:
            ids = list(conn.execute(select(_C.call_id).where(where)).scalars())
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                conn.execute(delete(turns).where(_T.call_id.in_(chunk)))
                conn.execute(delete(calls).where(_C.call_id.in_(chunk)))
        return len(ids)

    # --- reads -----------------------------------------------------------------------------------
    def _where(self, query: CallQuery) -> list[Any]:
        conditions: list[Any] = []
        if query.identity is not None:
            conditions.append(_C.participant_identity == query.identity)
        if query.user_id is not None:
            conditions.append(or_(_C.verified_user_id == query.user_id, _C.user_id == query.user_id,
                                  _C.participant_identity == query.user_id))
        if query.since is not None:
            conditions.append(_C.started_at >= query.since)
        conditions.extend(_analysis_condition(c) for c in query.where)
        return conditions

    def list(self, query: CallQuery = CallQuery()) -> list[CallRecord]:
        """Newest first, without turns, crashes reported as such (``CallRecord.effective``)."""
        if self._missing:
            return []
        select_calls = (select(calls).where(*self._where(query)).order_by(_C.started_at.desc(), _C.call_id)
                        .limit(max(query.limit, 0)).offset(max(query.offset, 0)))
        now = utcnow()
        with self._engine.connect() as conn:
            return [_record(row).effective(now=now) for row in conn.execute(select_calls)]

    def count(self, query: CallQuery = CallQuery()) -> int:
        if self._missing:
            return 0
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(calls).where(*self._where(query))).scalar_one())

    def get(self, call_id: str) -> CallRecord | None:
        if self._missing or not isinstance(call_id, str) or not call_id:
            return None
        with self._engine.connect() as conn:
            row = conn.execute(select(calls).where(_C.call_id == call_id)).first()
            if row is None:
                return None
            turn_rows = conn.execute(select(turns).where(_T.call_id == call_id).order_by(_T.seq)).all()
        return _record(row, turn_rows).effective()

    def iter_all(self, query: CallQuery = CallQuery(limit=1_000_000), *, batch: int = 200) -> Iterator[CallRecord]:
        """Every matching record with its turns, oldest first, in batches (``gocare calls export``)."""
        if self._missing:
            return
        offset = 0
        while True:
            with self._engine.connect() as conn:
                rows = conn.execute(select(calls).where(*self._where(query)).order_by(_C.started_at, _C.call_id)
                                    .limit(batch).offset(offset)).all()
                if not rows:
                    return
                ids = [r.call_id for r in rows]
                by_call: dict[str, list[Row[Any]]] = {i: [] for i in ids}
                for t in conn.execute(select(turns).where(_T.call_id.in_(ids)).order_by(_T.call_id, _T.seq)):
                    by_call[t.call_id].append(t)
            for row in rows:
                yield _record(row, by_call[row.call_id]).effective()
            offset += batch

    def recent_summaries(self, verified_user_id: str, *, limit: int = 3) -> builtins.list[tuple[datetime, str]]:
        """The summaries of a verified user's last calls, newest first (the next call's memory)."""
        if self._missing or limit <= 0:
            return []
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(_C.started_at, _C.summary)
                .where(and_(_C.verified_user_id == verified_user_id, _C.summary.is_not(None)))
                .order_by(_C.started_at.desc()).limit(limit)
            ).all()
        return [(aware(r.started_at) or utcnow(), r.summary) for r in rows if r.summary]
