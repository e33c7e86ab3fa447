"""The worker's side of call records: one job's session events -> ``records.CallRecorder``; the end of the
call (end reason, summary, analysis, alert, webhook); the end of a call whose job process died, made by the
worker's main process (end reason, analysis, alert, webhook: ``mark_lost_job``); the worker start's
migration, crash sweep and retention.

The pure parts live in ``gocare_voice.records``; this module only connects them to a job. Room handlers do
not know records exist: the commands and uploads they pass on reach ``ObservedCommands`` (a
``CommandRunner`` around the executor) which publishes what happened, the session's own events
(``conversation_item_added``, ``close``) are published here, and the number check's outcomes arrive
through ``SessionState.on_verification``. The recorder listens to all of it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from gocare_voice import protocol as proto
from gocare_voice.conversation.state import SessionState, VerificationOutcome
from gocare_voice.records.events import (
    CallEvents,
    CommandReceived,
    ModeEntered,
    SessionClosed,
    TurnAdded,
    VerificationChecked,
    VoiceUploadReceived,
)
from gocare_voice.records.model import CallRecord, EndReason, RecordLevel, end_reason_for, utcnow
from gocare_voice.records.recorder import CallRecorder
from gocare_voice.records.store import CallStore
from gocare_voice.settings import Settings
from gocare_voice.worker.seams import CommandRunner

if TYPE_CHECKING:
    from gocare_voice.records.model import CallAnalysis
    from gocare_voice.worker.metrics import CallMetrics

logger = logging.getLogger("gocare.worker")

STORE_KEY = "call_records"
RESUME_WINDOW = timedelta(hours=1)
DRAIN_SHUTDOWN = "parent process shutdown"
"""The reason livekit-agents gives a job its main process shuts down (a drain that timed out, a stop)."""


def store_for(proc_userdata: dict[str, Any], settings: Settings) -> CallStore:
    """One store per job process (its engine is reused by every job of the process). Blocking: in a thread."""
    store = proc_userdata.get(STORE_KEY)
    if store is None:
        store = proc_userdata[STORE_KEY] = CallStore.from_settings(settings)
    return store


def prepare_records(settings: Settings) -> str:
    """At worker start: migrate the schema, persist crashed jobs' records, delete expired ones. Blocking.
    Returns the line the worker logs."""
    if settings.records_level is RecordLevel.off:
        return "call records are off (GOCARE_CALL_RECORDS=off)"
    with CallStore.from_settings(settings) as store:
        crashed = store.sweep_stale()
        pruned = store.prune(retention_days=settings.call_retention_days)
    keep = f"{settings.call_retention_days} days" if settings.call_retention_days else "forever"
    return (f"call records: {settings.records_level.value}, kept {keep}; {pruned} expired record(s) deleted, "
            f"{crashed} left by crashed jobs marked")


class ObservedCommands:
    """The executor as the handlers see it, publishing each command it ran and each upload it added."""

    def __init__(self, *, inner: CommandRunner, events: CallEvents) -> None:
        self.inner = inner
        self.events = events

    async def execute(self, command: proto.Command | proto.CommandError) -> dict[str, Any]:
        answer = await self.inner.execute(command)
        if isinstance(command, proto.Command):
            self.events.publish(CommandReceived(name=command.name, ok=bool(answer.get("ok"))))
        return answer

    async def add_voice_upload(self, upload: proto.VoiceUpload) -> dict[str, Any]:
        answer = await self.inner.add_voice_upload(upload)
        self.events.publish(VoiceUploadReceived(transcript=upload.transcript, reply=upload.reply))
        return answer


class CallRecording:
    """One job's record, from ``start`` to ``end``."""

    def __init__(self, *, settings: Settings, store: CallStore, recorder: CallRecorder, events: CallEvents,
                 state: SessionState, metrics: CallMetrics | None = None) -> None:
        self.settings = settings
        self.store = store
        self.recorder = recorder
        self.events = events
        self.state = state
        self.metrics = metrics
        self._prefetched: tuple[str, str | None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ended = False

    @classmethod
    async def start(cls, *, settings: Settings, store: CallStore, state: SessionState, call_id: str,
                    room: str | None, identity: str | None, metrics: CallMetrics | None = None) -> CallRecording:
        record = CallRecord(call_id=call_id, room=room, participant_identity=identity, user_id=state.user_id,
                            started_at=utcnow(), level=settings.records_level, agent_name=settings.agent_name)
        record.resumed_from = await asyncio.to_thread(_crashed_before, store, room, identity)
        events = CallEvents()
        recorder = CallRecorder(store=store, record=record)
        recorder.listen(events)
        recording = cls(settings=settings, store=store, recorder=recorder, events=events, state=state,
                        metrics=metrics)
        await recorder.start()
        recording._observe_verification()
        if recording.memory_on and state.user_id:
            # the claimed user's memory, fetched now and used only once the number proves it is them
            user_id = state.user_id
            recording._prefetched = (user_id, await asyncio.to_thread(recording._memory_of, user_id))
        logger.info("call record started (room=%s call=%s level=%s resumed_from=%s)", room, call_id,
                    record.level.value, record.resumed_from)
        return recording

    @property
    def memory_on(self) -> bool:
        return self.settings.call_memory and self.settings.records_level is RecordLevel.transcript

    @property
    def analysis_on(self) -> bool:
        return analysis_on(self.settings)

    def _memory_of(self, user_id: str) -> str | None:
        from gocare_voice.records.summary import memory_text

        return memory_text(self.store.recent_summaries(user_id, limit=self.settings.call_memory_calls))

    def _observe_verification(self) -> None:
        previous = self.state.on_verification

        def observed(outcome: VerificationOutcome) -> None:
            if previous is not None:
                previous(outcome)
            verified_id = self.state.user_id if outcome == "verified" else None
            self.events.publish(VerificationChecked(outcome=outcome, user_id=verified_id))
            if verified_id and self.memory_on:
                self._remember(verified_id)

        self.state.on_verification = observed

    def _remember(self, user_id: str) -> None:
        if self._prefetched is not None and self._prefetched[0] == user_id:
            self.state.memory = self._prefetched[1]  # at once: the assistant is built right after the welcome
            return

        async def fetch() -> None:
            self.state.memory = await asyncio.to_thread(self._memory_of, user_id)

        self._spawn(fetch())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("call record task failed: %s", type(task.exception()).__name__)

    def observe(self, executor: CommandRunner) -> ObservedCommands:
        return ObservedCommands(inner=executor, events=self.events)

    def attach(self, session: Any) -> None:
        """The session's own events: every message added to the conversation, every handoff."""
        from gocare_voice.conversation.agents import mode_of_agent

        def _on_item(ev: Any) -> None:
            item = getattr(ev, "item", None)
            kind = getattr(item, "type", None)
            if kind == "agent_handoff":
                mode = mode_of_agent(getattr(item, "new_agent_id", None))
                if mode is not None:
                    self.events.publish(ModeEntered(mode=mode))
            elif kind == "message" and (role := getattr(item, "role", None)) in ("user", "assistant"):
                text = getattr(item, "text_content", None)
                if isinstance(text, str) and text.strip():
                    self.events.publish(TurnAdded(role=str(role), text=text))

        session.on("conversation_item_added", _on_item)

    def closed(self, *, close_reason: str | None, user_left: bool) -> None:
        self.events.publish(SessionClosed(close_reason=close_reason, user_left=user_left))

    async def end(self, shutdown_reason: str, *, llm_factory: Callable[[], Any] | None = None) -> CallRecord:
        """The job's shutdown callback (after the agent left the room, so the user waits for none of it):
        the end reason; the summary of a verified call and the analysis, side by side (one LLM); an alert
        as soon as the analysis has one; the end-of-call webhook, which carries the analysis."""
        if self._ended:
            return self.recorder.record
        self._ended = True
        for task in list(self._tasks):
            task.cancel()
        closed = self.recorder.closed
        reason = end_reason_for(
            close_reason=closed.close_reason if closed else None,
            locked_out=self.state.verifications[-1:] == ["locked_out"],
            user_left=bool(closed and closed.user_left),
            draining=DRAIN_SHUTDOWN in shutdown_reason,
        )
        record = await self.recorder.finish(reason, user_id=self.state.user_id)
        logger.info("call record ended (call=%s reason=%s turns=%d)", record.call_id, reason.value, len(record.turns))
        alerting: list[asyncio.Task[Any]] = []
        if llm_factory is not None:
            llm = _Once(llm_factory)
            await asyncio.gather(self._summarise(llm) if self.memory_on else _nothing(),
                                 self._analyse(llm, alerting) if self.analysis_on else _nothing())
        await deliver_webhook(self.settings, self.store, record)
        if alerting:
            await asyncio.gather(*alerting, return_exceptions=True)
        return record

    async def _summarise(self, llm_factory: Callable[[], Any]) -> None:
        from gocare_voice.records.summary import summarize, worth_summarising

        record = self.recorder.record
        if not worth_summarising(record):
            return
        timeout = self.settings.call_summary_timeout
        try:
            llm = await asyncio.to_thread(llm_factory)
            summary = await asyncio.wait_for(summarize(llm, record, timeout=timeout), timeout=timeout + 1)
        except Exception as error:  # noqa: BLE001 - no summary is a call without memory, not a failed call
            logger.warning("call summary not made (call=%s): %s", record.call_id, type(error).__name__)
            return
        if summary:
            await self.recorder.update(summary=summary)
            logger.info("call summary stored (call=%s, %d chars)", record.call_id, len(summary))

    async def _analyse(self, llm_factory: Callable[[], Any], alerting: list[asyncio.Task[Any]]) -> None:
        alert = await analyse_call(self.settings, self.recorder.record, llm_factory,
                                   save=lambda analysis: self.recorder.update(analysis=analysis), metrics=self.metrics)
        if alert is not None:
            alerting.append(alert)


def analysis_on(settings: Settings) -> bool:
    """GOCARE_CALL_ANALYSIS, for records kept at ``transcript`` level (the analysis reads the words)."""
    return settings.call_analysis and settings.records_level is RecordLevel.transcript


async def analyse_call(settings: Settings, record: CallRecord, llm_factory: Callable[[], Any], *,
                       save: Callable[[CallAnalysis], Awaitable[None]],
                       metrics: CallMetrics | None = None) -> asyncio.Task[Any] | None:
    """The end-of-call analysis of ``record``, for both ends a call can have: the job's own shutdown
    (``CallRecording.end``) and the worker's main process when the job's process died (``mark_lost_job``).

    Fill the plan (read now: a file changed since the start costs the analysis, never the webhook) with the
    LLM ``llm_factory`` builds (blocking: in a thread), bounded by GOCARE_CALL_ANALYSIS_TIMEOUT; any error is
    a failed analysis with its reason. ``save`` it (failed ones too), count it, and when it alerts start the
    ``call.alert`` and return once that alert's first attempt is answered, so it reaches the receiver before
    ``call.ended``. Returns the alert's task (its retries go on beside call.ended; the caller awaits it
    last), None when there is none. Nothing when the record is not worth analysing (no words of the caller)."""
    from gocare_voice.records.analysis import analyse, failed, worth_analysing
    from gocare_voice.records.plan import configured_plan

    if not worth_analysing(record):
        return None
    timeout = settings.call_analysis_timeout
    try:
        plan = await asyncio.to_thread(configured_plan, settings.call_analysis_plan)
    except Exception as error:  # noqa: BLE001 - checked at start; a file changed since must not lose the webhook
        logger.error("call analysis not made (call=%s): the plan cannot be read now: %s", record.call_id,
                     type(error).__name__)
        return None
    try:
        llm = await asyncio.to_thread(llm_factory)
        analysis = await asyncio.wait_for(analyse(llm, record, plan, timeout=timeout), timeout=timeout + 1)
    except Exception as error:  # noqa: BLE001 - no LLM (not configured), or the bound itself: a failed analysis
        analysis = failed(plan, f"not analysed: {type(error).__name__}", attempts=0)
    await save(analysis)
    logger.info("call analysis %s (call=%s attempts=%d%s)", analysis.status.value, record.call_id,
                analysis.attempts, f": {analysis.error}" if analysis.error else "")
    if metrics is not None:
        metrics.call_analysed(plan, analysis.status.value, analysis.values)
    if not analysis.alerts:
        return None
    # the alert goes out before call.ended: wait for its first attempt's answer; its retries, if any, go on
    # beside call.ended (the caller awaits them last)
    first_attempt = asyncio.Event()
    alert = asyncio.get_running_loop().create_task(
        deliver_alert(settings, record, analysis, first_attempt=first_attempt), name="call-alert")
    await first_attempt.wait()
    return alert


class _Once:
    """The LLM both the summary and the analysis use, built once (in a thread) by whichever asks first."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._built: Any = None

    def __call__(self) -> Any:
        with self._lock:
            if self._built is None:
                self._built = self._factory()
            return self._built


async def _nothing() -> None:
    return None


async def deliver_alert(settings: Settings, record: CallRecord, analysis: CallAnalysis, *,
                        first_attempt: asyncio.Event | None = None) -> bool | None:
    """``call.alert`` to GOCARE_CALL_ALERT_WEBHOOK_URL (else GOCARE_CALL_WEBHOOK_URL): signed, retried like
    the end-of-call webhook; None when no webhook is configured. ``first_attempt`` is set once its first POST
    is answered (or when there is nothing to send), whatever happens."""
    from gocare_voice.records.webhook import WebhookSender, alert_envelope

    try:
        sender = WebhookSender.for_alerts(settings)
        if sender is None:
            logger.warning("call alert not sent: no webhook configured (call=%s alerts=%s)", record.call_id,
                           ",".join(str(a.get("field")) for a in analysis.alerts))
            return None
        await asyncio.to_thread(importlib.import_module, "httpx")
        delivery = await sender.deliver(alert_envelope(record.to_dict(turns=False), analysis.alerts),
                                        call_id=record.call_id, what="call alert", first_attempt=first_attempt)
        return delivery.delivered
    finally:
        if first_attempt is not None:
            first_attempt.set()


async def deliver_webhook(settings: Settings, store: CallStore, record: CallRecord) -> bool | None:
    """The end-of-call report to ``GOCARE_CALL_WEBHOOK_URL`` (None: no webhook configured); its outcome is
    kept in the record (``webhook_status``)."""
    from gocare_voice.records.webhook import WebhookSender, envelope

    sender = WebhookSender.from_settings(settings)
    if sender is None:
        return None
    # httpx imports rich and httpcore (~0.5 s, seen as a stalled event loop in the room tests): in a thread
    await asyncio.to_thread(importlib.import_module, "httpx")
    record.webhook_status = "pending"
    delivery = await sender.deliver(envelope(record.to_dict()), call_id=record.call_id)
    status = "sent" if delivery.delivered else "failed"
    record.webhook_status = status
    try:
        await asyncio.to_thread(store.set_webhook_status, record.call_id, status)
    except Exception as error:  # noqa: BLE001 - the delivery happened (or not) either way; say so
        logger.warning("webhook status not saved (call=%s): %s", record.call_id, type(error).__name__)
    return delivery.delivered


def _crashed_before(store: CallStore, room: str | None, identity: str | None) -> str | None:
    """The call id of the crashed job this one takes over from: the same room and user, crashed lately."""
    if room is None:
        return None
    from gocare_voice.records.model import CallStatus
    from gocare_voice.records.store import CallQuery

    since = utcnow() - RESUME_WINDOW
    for earlier in store.list(CallQuery(identity=identity, since=since, limit=20)):
        if earlier.room == room and earlier.status is CallStatus.crashed:
            return earlier.call_id
    return None


async def mark_lost_job(settings: Settings, call_id: str, *, reason: EndReason,
                        metrics: CallMetrics | None = None) -> None:
    """The worker's main process saw a job process die: end its record now (``job_crashed``, or
    ``agent_unavailable`` when the user was told no agent comes back), analyse it as the job would have
    (``analysis_on``; its alert first), and send its webhook. ``metrics``: the main process's counters."""
    if settings.records_level is RecordLevel.off:
        return

    def mark() -> tuple[CallStore, CallRecord | None]:
        store = CallStore.from_settings(settings)
        store.mark_crashed(call_id, reason=reason)
        return store, store.get(call_id)

    store, record = await asyncio.to_thread(mark)
    try:
        if record is not None:
            logger.info("call record of the lost job ended (call=%s reason=%s)", call_id, reason.value)
            alert = None
            if analysis_on(settings) and record.analysis is None:
                alert = await _analyse_lost(settings, store, record, metrics)
            await deliver_webhook(settings, store, record)
            if alert is not None:
                await asyncio.gather(alert, return_exceptions=True)
    finally:
        store.close()


async def _analyse_lost(settings: Settings, store: CallStore, record: CallRecord,
                        metrics: CallMetrics | None) -> asyncio.Task[Any] | None:
    """``analyse_call`` in the worker's main process: the LLM's clients are built here and closed here (the
    process lives on), the result saved straight to the store. Never raises: the record's webhook goes out
    whatever happens here."""
    from gocare_voice import providers

    build = providers.ClosingLLMFactory(settings)

    async def save(analysis: CallAnalysis) -> None:
        record.analysis = analysis  # the webhook carries it even when the store refuses it
        try:
            await asyncio.to_thread(store.set_analysis, record.call_id, analysis)
        except Exception as error:  # noqa: BLE001 - said in the log; the webhook still carries the analysis
            logger.error("call analysis not saved (call=%s): %s", record.call_id, type(error).__name__)

    try:
        return await analyse_call(settings, record, build, save=save, metrics=metrics)
    except Exception as error:  # noqa: BLE001 - recovery and the webhook go on without the analysis
        logger.error("call analysis of the lost job failed (call=%s): %s", record.call_id, type(error).__name__)
        return None
    finally:
        await build.aclose()
