"""``CallRecorder``: one call's events -> its record, written as the call goes.

``apply_event`` is the pure part (what an event changes in the record, which turns it adds). The recorder
keeps the record in memory and a writer task saves it, the call row and the turns added since the last save
in one transaction, off the event loop (``asyncio.to_thread``): a burst of events is one write, the event
loop never waits for the database, and a killed job leaves everything up to its last save, ``in_progress``.
A heartbeat touches the record while the call is quiet, so readers can tell a live call from a dead job's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from .events import (
    CallEvent,
    CallEvents,
    CommandReceived,
    ModeEntered,
    SessionClosed,
    TurnAdded,
    VerificationChecked,
    VoiceUploadReceived,
)
from .model import (
    HEARTBEAT_SECONDS,
    MAX_TURNS,
    ROLES,
    CallRecord,
    CallStatus,
    EndReason,
    RecordLevel,
    Turn,
    bound_turn,
    mask_text,
    utcnow,
)

logger = logging.getLogger("gocare.records")


def apply_event(record: CallRecord, event: CallEvent) -> list[Turn]:
    """Change ``record`` for ``event``; returns the turns to store (none at the ``metadata`` level).
    Text is masked here, before it is kept anywhere."""
    keep_text = record.level is RecordLevel.transcript
    added: list[Turn] = []
    if isinstance(event, TurnAdded):
        text = event.text.strip()
        if keep_text and event.role in ROLES and text:
            added.append(Turn(role=event.role, text=mask_text(text), at=event.at, source=event.source))
    elif isinstance(event, ModeEntered):
        if event.mode not in record.modes:  # the modes used, in order of first use
            record.modes.append(event.mode)
    elif isinstance(event, CommandReceived):
        record.commands[event.name] = record.commands.get(event.name, 0) + 1
    elif isinstance(event, VoiceUploadReceived):
        record.voice_uploads += 1
        if keep_text and event.transcript.strip():
            added.append(Turn(role="user", text=mask_text(event.transcript.strip()), at=event.at, source="upload"))
            if event.reply and event.reply.strip():
                added.append(Turn(role="assistant", text=mask_text(event.reply.strip()), at=event.at, source="upload"))
    elif isinstance(event, VerificationChecked):
        record.verification.append(event.outcome)
        if event.outcome == "verified" and event.user_id:
            record.verified_user_id = event.user_id
            record.user_id = record.user_id or event.user_id
    room = MAX_TURNS - len(record.turns)
    added = added[: max(room, 0)]
    record.turns.extend(added)
    return added


NUMBER_CHECK_WINDOW = 3
"""How many of the caller's turns before verification are masked as one text."""


def remask_number_check(record: CallRecord, window: list[tuple[int, str]], index: int, said: str) -> list[int]:
    """Before the call is verified the caller is saying their number, and one who pauses between groups
    ("98765" ... "43210") gives turns that each hold too few digits to be masked alone. The last
    ``NUMBER_CHECK_WINDOW`` user turns (``window``: their index in ``record.turns`` and what was said, kept in
    memory only) are masked as one text (``redact.mask_numbers_across``): the stored turns that change are
    replaced in ``record.turns``; their indexes are returned (the earlier ones are already saved)."""
    from gocare_voice.redact import mask_numbers_across

    window.append((index, said))
    del window[:-NUMBER_CHECK_WINDOW]
    changed: list[int] = []
    for (i, _), masked in zip(window, mask_numbers_across([text for _, text in window]), strict=True):
        text = bound_turn(masked)
        if record.turns[i].text != text:
            record.turns[i] = dataclasses.replace(record.turns[i], text=text)
            changed.append(i)
    return changed


Store = Any
"""``records.store.CallStore`` (or anything with its ``create``/``save``/``touch``)."""


class CallRecorder:
    """Listens to one call's ``CallEvents``; ``start`` creates the record, ``finish`` ends it."""

    def __init__(self, *, store: Store, record: CallRecord, heartbeat: float = HEARTBEAT_SECONDS) -> None:
        self.store = store
        self.record = record
        self.heartbeat = heartbeat
        self.closed: SessionClosed | None = None
        self._saved_turns = 0
        self._dirty = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._beat: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self.write_errors = 0
        self.listeners: list[Callable[[CallEvent], None]] = []
        self._number_check: list[tuple[int, str]] = []
        self._rewritten: set[int] = set()

    def listen(self, events: CallEvents) -> None:
        events.subscribe(self.on_event)

    def on_event(self, event: CallEvent) -> None:
        if isinstance(event, SessionClosed):
            self.closed = event
            return
        if self.record.status is not CallStatus.in_progress:
            return
        first = len(self.record.turns)
        added = apply_event(self.record, event)
        if self.record.verified_user_id is not None:
            self._number_check.clear()  # verified: the number is said; later turns are masked one by one
        elif isinstance(event, TurnAdded) and added and added[0].role == "user":
            self._rewritten.update(remask_number_check(self.record, self._number_check, first, event.text.strip()))
        self._dirty.set()

    def _snapshot(self) -> CallRecord:
        """The record as it is now, for the writer thread: its lists and counts copied (the event loop goes
        on changing them), the turns shared (they are frozen and only ever appended)."""
        record = self.record
        return dataclasses.replace(record, modes=list(record.modes), commands=dict(record.commands),
                                   verification=list(record.verification), turns=list(record.turns))

    async def start(self) -> None:
        self.record.updated_at = utcnow()
        snapshot = self._snapshot()
        await asyncio.to_thread(self.store.create, snapshot)
        self._saved_turns = len(snapshot.turns)
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="call-record-writer")
        if self.heartbeat > 0:
            self._beat = asyncio.get_running_loop().create_task(self._heartbeat_loop(), name="call-record-heartbeat")

    async def _write_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self.flush()

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await asyncio.to_thread(self.store.touch, self.record.call_id)
            except Exception as error:  # noqa: BLE001 - a missed heartbeat is logged; the next one may work
                logger.warning("call record heartbeat failed (call=%s): %s", self.record.call_id, type(error).__name__)

    async def flush(self) -> None:
        """Save what changed since the last save (the call row and the new turns)."""
        async with self._write_lock:
            self.record.updated_at = utcnow()
            snapshot = self._snapshot()
            new_turns = snapshot.turns[self._saved_turns:]
            # turns saved before and masked again since (the number check): their text as it is now
            rewritten, self._rewritten = self._rewritten, set()
            changed = [(i, snapshot.turns[i]) for i in sorted(rewritten) if i < self._saved_turns]
            try:
                await asyncio.to_thread(self.store.save, snapshot, new_turns=new_turns, first_seq=self._saved_turns,
                                        changed_turns=changed)
            except Exception as error:  # noqa: BLE001 - the call goes on without its record; say so, once per failure
                self._rewritten |= rewritten
                self.write_errors += 1
                logger.error("call record not saved (call=%s): %s", self.record.call_id, type(error).__name__)
                return
            self._saved_turns = len(snapshot.turns)

    async def finish(self, reason: EndReason, *, user_id: str | None = None) -> CallRecord:
        """End the record (idempotent): stop the writer and the heartbeat, save the final state."""
        for task in (self._writer, self._beat):
            if task is not None:
                task.cancel()
        for task in (self._writer, self._beat):
            if task is not None:
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the tasks log their own errors
                    pass
        self._writer = self._beat = None
        if self.record.status is CallStatus.in_progress:
            self.record.status = CallStatus.ended
            self.record.end_reason = reason
            self.record.ended_at = utcnow()
            if user_id and not self.record.user_id:
                self.record.user_id = user_id
        await self.flush()
        return self.record

    async def update(self, **fields: Any) -> None:
        """Set fields after the end (the summary, the webhook's outcome) and save them."""
        for name, value in fields.items():
            setattr(self.record, name, value)
        await self.flush()
