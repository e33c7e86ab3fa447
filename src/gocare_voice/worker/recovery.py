"""When a job process dies mid-call, the agent comes back instead of leaving a silent, dead room.

A job process can die without its room hearing of it: killed by the kernel (out of memory, SIGKILL), by
livekit-agents (``job_memory_limit_mb``), or by a native crash. LiveKit then keeps the dead agent in the
room for about 20 s (it waits for a reconnect) and never dispatches again: the user sits in a room with an
agent that does not answer. Measured in tests/room/test_room_faults.py.

So the worker's main process watches its job processes end. For one that ended in failure (non-zero exit)
while its room still has a user, it removes the dead agent participant at once and dispatches the agent into
the room again: a fresh agent greets the user again and asks for the number (what the dead process knew is
gone with it). A room gets at most ``GOCARE_WORKER_REDISPATCH_LIMIT`` such dispatches an hour; past that
the user is told, with an ``agent_unavailable`` packet on topic ``gocare`` (docs/protocol.md), instead of
an agent that crashes again and again.

A job that ends on purpose (the user left, too many wrong numbers) exits 0 and is left alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from gocare_voice import protocol
from gocare_voice.settings import Settings

logger = logging.getLogger("gocare.worker")

WINDOW_SECONDS = 3600.0


@dataclass
class RedispatchBudget:
    """At most ``limit`` re-dispatches per room in any ``window`` seconds (pure; the clock is passed in)."""

    limit: int
    window: float = WINDOW_SECONDS
    _used: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))

    def take(self, room: str, now: float) -> bool:
        used = self._used[room]
        while used and now - used[0] >= self.window:
            used.popleft()
        if len(used) >= self.limit:
            return False
        used.append(now)
        return True


@dataclass(frozen=True)
class LostJob:
    """What the main process knows of a job whose process died."""

    room: str
    agent_identity: str
    agent_name: str
    metadata: str
    job_id: str = ""
    """Also the call record's id (records/): the main process ends that record, which its job cannot."""


def lost_job(proc: Any) -> LostJob | None:
    """The job of a closed job executor, when it ended in failure (None for a clean end, an idle process,
    or a console job). Reads livekit-agents' ``JobExecutor.status`` / ``running_job``; the fault test pins
    them."""
    from livekit.agents.ipc.job_executor import JobStatus

    job = proc.running_job
    if job is None or job.fake_job:
        return None
    try:
        failed = proc.status == JobStatus.FAILED
    except RuntimeError:  # no status: the job never started
        return None
    if not failed:
        return None
    return LostJob(
        room=job.job.room.name, agent_identity=job.accept_arguments.identity,
        agent_name=job.job.agent_name, metadata=job.job.metadata, job_id=job.job.id,
    )


class CrashRecovery:
    """Attached to an ``AgentServer``; its work runs on the worker's event loop."""

    def __init__(self, *, settings: Settings) -> None:
        self.settings = settings
        self.budget = RedispatchBudget(limit=settings.worker_redispatch_limit)
        self._tasks: set[asyncio.Task[str]] = set()

    @property
    def _records_on(self) -> bool:
        from gocare_voice.records.model import RecordLevel

        return self.settings.records_level is not RecordLevel.off

    def attach(self, server: Any) -> None:
        # livekit-agents has no public event for job ends: one private hook, pinned by a test
        from gocare_voice.worker.livekit_private import on_job_process_closed

        on_job_process_closed(server, self.on_process_closed)

    def on_process_closed(self, proc: Any) -> None:
        try:
            lost = lost_job(proc)
        except Exception:  # a callback of livekit's pool must never raise
            logger.exception("could not read the closed job process")
            return
        if lost is None:
            return
        logger.error("job process died mid-call (room=%s exit=%s)", lost.room, getattr(proc, "exitcode", None))
        task = asyncio.get_running_loop().create_task(self.recover(lost))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def recover(self, lost: LostJob) -> str:
        """Returns what was done: ``redispatched`` | ``told`` | ``empty`` | ``failed``; the lost job's call
        record ends ``job_crashed`` (``agent_unavailable`` when the user was told), before any re-dispatch
        so the next job finds it crashed and links its own record to it. Its analysis, alert and webhook
        come after the re-dispatch (the user waits for none of them), bounded by GOCARE_CALL_ANALYSIS_TIMEOUT."""
        outcome = await self._recover(lost)
        if lost.job_id:
            from gocare_voice.records.model import EndReason
            from gocare_voice.worker.metrics import metrics_for
            from gocare_voice.worker.recording import mark_lost_job

            reason = EndReason.agent_unavailable if outcome == "told" else EndReason.job_crashed
            try:
                await mark_lost_job(self.settings, lost.job_id, reason=reason, metrics=metrics_for(self.settings))
            except Exception as error:  # noqa: BLE001 - readers report it crashed anyway (stale heartbeat)
                logger.error("call record of the lost job not ended (room=%s): %s", lost.room, type(error).__name__)
        return outcome

    async def _before_dispatch(self, lost: LostJob) -> None:
        if not lost.job_id:
            return
        from gocare_voice.records.model import EndReason
        from gocare_voice.records.store import CallStore

        def mark() -> None:
            with CallStore.from_settings(self.settings) as store:
                store.mark_crashed(lost.job_id, reason=EndReason.job_crashed)

        try:
            await asyncio.to_thread(mark)
        except Exception as error:  # noqa: BLE001 - recovery goes on; the record is reported crashed anyway
            logger.error("call record of the lost job not marked (room=%s): %s", lost.room, type(error).__name__)

    async def _recover(self, lost: LostJob) -> str:
        from livekit import api

        settings = self.settings
        lkapi = api.LiveKitAPI(url=settings.livekit_http_url, api_key=settings.livekit_api_key,
                               api_secret=settings.livekit_api_secret.get_secret_value())
        try:
            participants = (await lkapi.room.list_participants(api.ListParticipantsRequest(room=lost.room))).participants
            if any(p.identity == lost.agent_identity for p in participants):
                await lkapi.room.remove_participant(
                    api.RoomParticipantIdentity(room=lost.room, identity=lost.agent_identity))
            users = [p.identity for p in participants
                     if p.kind != api.ParticipantInfo.Kind.AGENT and p.identity != lost.agent_identity]
            if not users:
                logger.info("nobody left in room %s; not dispatched again", lost.room)
                return "empty"
            if self.settings.worker_redispatch_limit and self.budget.take(lost.room, time.monotonic()):
                if self._records_on:
                    await self._before_dispatch(lost)
                await lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
                    agent_name=lost.agent_name, room=lost.room, metadata=lost.metadata))
                logger.warning("agent dispatched again into room %s after its job process died", lost.room)
                return "redispatched"
            await lkapi.room.send_data(api.SendDataRequest(
                room=lost.room, topic=protocol.TOPIC, kind=api.DataPacket.Kind.RELIABLE,
                destination_identities=users, data=protocol.encode(protocol.agent_unavailable_packet()),
            ))
            logger.error("room %s: job processes keep dying; the user was told (redispatch limit %d/h)",
                         lost.room, self.settings.worker_redispatch_limit)
            return "told"
        except Exception as error:  # noqa: BLE001 - recovery is best effort; say why it failed
            logger.error("could not recover room %s: %s: %s", lost.room, type(error).__name__, str(error)[:200])
            return "failed"
        finally:
            await lkapi.aclose()
