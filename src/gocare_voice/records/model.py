"""The call record, pure: no SQLAlchemy, no LiveKit. One record per job (``call_id`` is LiveKit's job id).

A record is written while the call goes on (``status`` ``in_progress``); a job process that is killed
cannot finish its own record, so an ``in_progress`` record whose heartbeat stopped is reported as
``crashed`` with the end reason ``job_crashed`` (``effective``), and persisted so by the worker's main
process, ``gocare calls prune`` and the worker's start.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from gocare_voice.redact import mask_numbers
from gocare_voice.settings import CallRecordsMode


RecordLevel = CallRecordsMode
"""``GOCARE_CALL_RECORDS``: ``off`` keeps nothing, ``metadata`` everything but what was said (no transcript,
no summary), ``transcript`` the turns too (numbers masked)."""


class CallStatus(str, enum.Enum):
    in_progress = "in_progress"
    ended = "ended"
    crashed = "crashed"


class EndReason(str, enum.Enum):
    """Why a call ended: a fixed set the app and the operator can count on."""

    user_left = "user_left"
    verification_failed = "verification_failed"
    """The goodbye after too many wrong numbers."""
    agent_unavailable = "agent_unavailable"
    """The job process died and the room's re-dispatch budget was used up: the user was told."""
    worker_drained = "worker_drained"
    error = "error"
    job_crashed = "job_crashed"
    """The job process died (killed, out of memory) before it could finish the record."""


END_REASONS: tuple[str, ...] = tuple(reason.value for reason in EndReason)
ROLES = ("user", "assistant")
TURN_SOURCES = ("voice", "upload")

STALE_AFTER = timedelta(seconds=120)
"""An ``in_progress`` record not touched for this long belongs to a dead job (the recorder touches it at
least every ``HEARTBEAT_SECONDS``)."""
HEARTBEAT_SECONDS = 30.0
MAX_TURN_CHARS = 4000
"""One stored turn at most (a push-to-talk monologue is long; a record is not an archive of it)."""
MAX_TURNS = 500


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive (they were stored as UTC): make them UTC-aware again."""
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def mask_text(text: str) -> str:
    """What is stored of something said: ``redact.mask_numbers``, the one masking function of logs, records,
    summaries and exports, so a spoken mobile number is as unreadable in a record as in a log line; bounded."""
    return bound_turn(mask_numbers(text))


def bound_turn(masked: str) -> str:
    """A masked turn cut to ``MAX_TURN_CHARS``."""
    return masked if len(masked) <= MAX_TURN_CHARS else masked[: MAX_TURN_CHARS - 1] + "\u2026"


def end_reason_for(*, close_reason: str | None, locked_out: bool, user_left: bool, draining: bool) -> EndReason:
    """A session's close (livekit's ``CloseReason`` value) and our own outcomes -> one end reason.

    Our outcomes win: the goodbye after failed verification closes the session as ``task_completed`` or
    ``user_initiated`` to livekit; a user who did not come back within the reconnect grace is ended by us."""
    if locked_out:
        return EndReason.verification_failed
    if close_reason == "error":
        return EndReason.error
    if user_left or close_reason in ("participant_disconnected", "user_initiated", "task_completed"):
        return EndReason.user_left
    if draining:
        return EndReason.worker_drained
    if close_reason == "job_shutdown":
        return EndReason.user_left  # the room went away (everyone left): livekit shuts the job down
    return EndReason.error


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    text: str
    at: datetime
    source: str = "voice"

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "text": self.text, "at": _iso(self.at), "source": self.source}


class AnalysisStatus(str, enum.Enum):
    done = "done"
    failed = "failed"


@dataclass(frozen=True, kw_only=True, slots=True)
class CallAnalysis:
    """What the configured LLM made of a finished call by the analysis plan (records/analysis.py).

    A failed analysis is kept too, with its reason (``error``): an operator sees that the call was not
    analysed and why, instead of a silent gap in a list."""

    status: AnalysisStatus
    plan: str
    """The plan's ``name``."""
    values: dict[str, Any] = field(default_factory=dict)
    success: bool | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    """The plan's alert values this call has (``[{"field": "urgency", "value": "urgent"}]``)."""
    error: str | None = None
    attempts: int = 0
    analysed_at: datetime = field(default_factory=lambda: utcnow())

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "plan": self.plan, "values": dict(self.values), "success": self.success,
                "alerts": [dict(a) for a in self.alerts], "error": self.error, "attempts": self.attempts,
                "analysed_at": _iso(self.analysed_at)}

    @classmethod
    def from_dict(cls, data: Any) -> CallAnalysis | None:
        """The stored JSON back (None for anything that is not an analysis: a reader never crashes on it)."""
        if not isinstance(data, dict):
            return None
        try:
            status = AnalysisStatus(data.get("status"))
        except ValueError:
            return None
        when = data.get("analysed_at")
        try:
            analysed_at = aware(datetime.fromisoformat(when.replace("Z", "+00:00"))) if isinstance(when, str) else None
        except ValueError:
            analysed_at = None
        values = data.get("values")
        alerts = data.get("alerts")
        return cls(status=status, plan=str(data.get("plan") or ""), values=dict(values) if isinstance(values, dict) else {},
                   success=data.get("success") if isinstance(data.get("success"), bool) else None,
                   alerts=[a for a in alerts if isinstance(a, dict)] if isinstance(alerts, list) else [],
                   error=data.get("error") if isinstance(data.get("error"), str) else None,
                   attempts=int(data.get("attempts") or 0), analysed_at=analysed_at or utcnow())


@dataclass(kw_only=True, slots=True)
class CallRecord:
    """Everything one call leaves behind. ``turns`` is empty at the ``metadata`` level."""

    call_id: str
    room: str | None
    participant_identity: str | None
    user_id: str | None = None
    """Who the call was for (the token's user id or the metadata's); not proof of anything."""
    verified_user_id: str | None = None
    """Set only when the mobile number check succeeded: the user the call is kept for."""
    status: CallStatus = CallStatus.in_progress
    started_at: datetime
    ended_at: datetime | None = None
    updated_at: datetime | None = None
    end_reason: EndReason | None = None
    modes: list[str] = field(default_factory=list)
    commands: dict[str, int] = field(default_factory=dict)
    voice_uploads: int = 0
    verification: list[str] = field(default_factory=list)
    level: RecordLevel = RecordLevel.transcript
    agent_name: str | None = None
    summary: str | None = None
    resumed_from: str | None = None
    """The call id of the crashed job this one took over from (the agent dispatched again into the room)."""
    webhook_status: str | None = None
    analysis: CallAnalysis | None = None
    """None: not analysed (analysis off, a ``metadata`` record, nothing said, a call whose whole worker died)."""
    turns: list[Turn] = field(default_factory=list)

    @property
    def duration_seconds(self) -> float | None:
        end = self.ended_at
        return None if end is None else max(0.0, (end - self.started_at).total_seconds())

    @property
    def verified(self) -> bool:
        return self.verified_user_id is not None

    def effective(self, *, now: datetime | None = None) -> CallRecord:
        """What a reader should be told: an ``in_progress`` record whose job stopped touching it is a crash."""
        if self.status is not CallStatus.in_progress:
            return self
        last = self.updated_at or self.started_at
        if (now or utcnow()) - last < STALE_AFTER:
            return self
        from dataclasses import replace

        return replace(self, status=CallStatus.crashed, end_reason=EndReason.job_crashed, ended_at=last)

    def to_dict(self, *, turns: bool = True) -> dict[str, Any]:
        """The JSON every reader sees (the webhook body, ``GET /calls/{id}``, ``gocare calls show --json``)."""
        out: dict[str, Any] = {
            "call_id": self.call_id,
            "room": self.room,
            "participant_identity": self.participant_identity,
            "user_id": self.user_id,
            "verified_user_id": self.verified_user_id,
            "verified": self.verified,
            "status": self.status.value,
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "duration_seconds": None if self.duration_seconds is None else round(self.duration_seconds, 3),
            "end_reason": self.end_reason.value if self.end_reason else None,
            "modes": list(self.modes),
            "commands": dict(self.commands),
            "voice_uploads": self.voice_uploads,
            "verification": list(self.verification),
            "level": self.level.value,
            "agent_name": self.agent_name,
            "summary": self.summary,
            "resumed_from": self.resumed_from,
            "webhook_status": self.webhook_status,
            "analysis": None if self.analysis is None else self.analysis.to_dict(),
        }
        if turns:
            out["turns"] = [t.to_dict() for t in self.turns]
        return out


def _iso(value: datetime | None) -> str | None:
    value = aware(value)
    return None if value is None else value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


_RELATIVE = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_SINCE_DAYS = 36_600
"""How far back ``since`` may reach as a span (about a century): ``99999999999d`` is refused, not a 500."""
SINCE_PATTERN = (
    r"^(?:[0-9]{1,12}[mhdwMHDW]"
    r"|[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}(?::[0-9]{2}(?::[0-9]{2}(?:[.][0-9]{1,6})?)?)?"
    r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?)$"
)
"""The shapes ``since`` takes (``GET /calls`` states it in its OpenAPI schema; the CLI checks the same). The
pattern allows spans longer than ``MAX_SINCE_DAYS`` and dates that do not exist (``2026-13-45``) on purpose:
those are refused by ``parse_since`` with a message, and a schema-driven test run reaches that code."""
_SINCE = re.compile(SINCE_PATTERN)
_SINCE_FORMS = "a date (2026-12-01), a date-time (2026-12-01T08:00:00Z) or a span (30m, 12h, 7d, 2w)"


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """``--since`` / ``?since=``: an ISO date or date-time (UTC unless it says otherwise), or a span back from
    now: ``30m``, ``12h``, ``7d``, ``2w`` (at most ``MAX_SINCE_DAYS``). UTC-aware; ``ValueError`` with a
    message for anything else (garbage, a date that does not exist, a span that would overflow)."""
    text = value.strip()
    shown = repr(text if len(text) <= 40 else text[:40] + "\u2026")
    if not _SINCE.fullmatch(text):
        raise ValueError(f"{shown} is not {_SINCE_FORMS}")
    if text[-1].lower() in _RELATIVE:
        seconds = int(text[:-1]) * _RELATIVE[text[-1].lower()]
        if seconds > MAX_SINCE_DAYS * 86400:
            raise ValueError(f"{shown} reaches back more than {MAX_SINCE_DAYS} days")
        return (now or utcnow()) - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (aware(parsed) or parsed).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise ValueError(f"{shown} is not a date or date-time that exists and is in range "
                         "(2026-12-01, 2026-12-01T08:00:00Z)") from None
