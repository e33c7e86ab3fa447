"""Room events -> session state, commands and greetings, kept apart from LiveKit itself.

``RoomHandlers`` takes the small parts of a room, a participant, a data packet and an RPC call named in
``worker/seams.py`` (``typing.Protocol``s). The worker passes the real ``rtc.Room``; tests pass small
Python objects, so every malformed input the network can produce is exercised without a LiveKit server.
The session-side collaborators (the command executor, the greeting) arrive in one call,
``bind_session``, once the AgentSession runs; until then commands are answered ``not_ready``.

Every room callback here is synchronous and only schedules work on the ``TaskScheduler``; the callbacks
themselves catch everything, because an exception escaping into livekit's event dispatch would be
logged far from its cause or, worse, stop later listeners from running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from gocare_voice import protocol as proto
from gocare_voice.conversation.identity import Identity, identity_from_participant, welcome_payload
from gocare_voice.conversation.state import SessionState
from gocare_voice.worker.seams import CommandRunner, DataPacket, Participant, Room, RpcInvocation
from gocare_voice.worker.metrics import NO_METRICS, CallMetrics
from gocare_voice.worker.tasks import TaskScheduler

logger = logging.getLogger("gocare.worker")

Greeter = Callable[[], Coroutine[Any, Any, Any]]


def _identity_of(participant: Participant | None) -> str | None:
    value = participant.identity if participant is not None else None
    return value if isinstance(value, str) and value else None


def _sid_of(participant: Participant) -> str | None:
    value = participant.sid
    return value if isinstance(value, str) and value else None


def _size(value: Any) -> int | None:
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    return None


def _attributes_of(participant: Participant | None) -> Mapping[str, Any] | None:
    attrs = participant.attributes if participant is not None else None
    return attrs if isinstance(attrs, Mapping) else None


class RoomHandlers:
    """The worker's side of one room: who the user is, what they asked, what we told them."""

    def __init__(
        self,
        *,
        room: Room,
        state: SessionState,
        job_metadata: Any = None,
        scheduler: TaskScheduler | None = None,
        log: logging.Logger | None = None,
        bind_user_id_to_identity: bool = False,
        metrics: CallMetrics = NO_METRICS,
    ) -> None:
        self.room = room
        self.metrics = metrics
        self.state = state
        self.job_metadata = job_metadata
        self.room_name = room.name if isinstance(room.name, str) else None
        self.scheduler = scheduler or TaskScheduler(room_name=self.room_name)
        self.executor: CommandRunner | None = None
        self.greet: Greeter | None = None
        self.refresh: Greeter | None = None
        self.log = log or logger
        self.bind_user_id_to_identity = bind_user_id_to_identity
        """With caller authentication (JWT) the token service sets the participant identity to the verified
        ``sub``: then that identity is the user id, and a ``userId`` in metadata, attributes or the dispatch
        is ignored (the app can rewrite its own metadata, ``canUpdateOwnMetadata``). Names still come from there."""
        self.user_identity: str | None = None
        self.reconnect_grace: float | None = None
        """Seconds to wait for the user to come back before ``end_call`` (None: livekit-agents ends the
        session itself when the user leaves)."""
        self.end_call: Callable[[], Any] | None = None
        self._gone: asyncio.Task[None] | None = None
        self._welcomed: set[tuple[str, str | None]] = set()
        self._greeting_scheduled = False
        self._waiting_for_name = False
        self._name_known = asyncio.Event()
        self.ignored_packets = 0

    def bind_session(
        self, *, executor: CommandRunner | None = None, greet: Greeter | None = None,
        refresh: Greeter | None = None, end_call: Callable[[], Any] | None = None,
        reconnect_grace: float | None = None,
    ) -> None:
        """The running session's side, in one call: ``executor`` answers commands (``not_ready`` until
        bound), ``greet`` says the greeting once, ``refresh`` tells the agent a late name, ``end_call``
        ends the call when the user has not come back within ``reconnect_grace`` seconds."""
        self.executor = executor
        self.greet = greet
        self.refresh = refresh
        self.end_call = end_call
        self.reconnect_grace = reconnect_grace

    # --- helpers -----------------------------------------------------------------------------------

    def _extra(self, participant: str | None = None) -> dict[str, Any]:
        return {"room": self.room_name, "participant": participant or self.user_identity}

    def read_identity(self, participant: Participant | None, *, metadata: Any = None) -> tuple[Identity, list[str]]:
        """The same pure function ``gocare test-metadata`` uses, over everything we know."""
        raw = metadata if metadata is not None or participant is None else participant.metadata
        identity, problems = identity_from_participant(
            metadata=raw, attributes=_attributes_of(participant), job_metadata=self.job_metadata
        )
        if self.bind_user_id_to_identity:
            bound = _identity_of(participant)
            if identity.user_id is not None and identity.user_id != bound:
                problems = [*problems, "userId in metadata ignored: the user id is the authenticated identity"]
            identity = dataclasses.replace(identity, user_id=bound)
        return identity, problems

    def update_identity(self, participant: Participant | None, *, metadata: Any = None, why: str) -> Identity:
        identity, problems = self.read_identity(participant, metadata=metadata)
        who = _identity_of(participant)
        for problem in problems:
            self.log.warning("identity: %s (room=%s participant=%s)", problem, self.room_name, who, extra=self._extra(who))
        changed = self.state.apply_identity(identity)
        if self.state.user_name:
            self._name_known.set()
        self.log.info(
            "identity extracted (%s): user_id=%s named=%s source=%s changed=%s",
            why, identity.user_id, bool(identity.user_name), identity.source, changed, extra=self._extra(who),
        )
        return identity

    def _is_user(self, participant: Participant) -> bool:
        who = _identity_of(participant)
        return who is not None and who == self.user_identity

    # --- wiring ------------------------------------------------------------------------------------

    def attach(self) -> None:
        """Register the synchronous callbacks on the room."""
        self.room.on("participant_metadata_changed", self.on_participant_metadata_changed)
        self.room.on("participant_attributes_changed", self.on_participant_attributes_changed)
        self.room.on("data_received", self.on_data_received)
        self.room.on("participant_disconnected", self.on_participant_disconnected)
        self.room.on("participant_connected", self.on_participant_connected)

    def register_rpc(self) -> list[str]:
        """One RPC method per command on the agent participant (the method name is the command)."""
        local = self.room.local_participant
        for name in proto.COMMANDS:
            local.register_rpc_method(name, self.handle_rpc)
        return list(proto.COMMANDS)

    def link_user(self, participant: Participant) -> Identity:
        """The user joined (or was already there): remember who they are and read their identity."""
        self.user_identity = _identity_of(participant)
        self.state.participant_identity = self.user_identity
        self.log.info(
            "user connected (room=%s participant=%s metadata=%s chars, attributes=%s)",
            self.room_name, self.user_identity, _size(participant.metadata),
            len(_attributes_of(participant) or {}), extra=self._extra(),
        )
        return self.update_identity(participant, why="join")

    # --- room callbacks (synchronous, never raise) --------------------------------------------------

    def on_participant_metadata_changed(
        self, participant: Participant, old_metadata: Any = None, new_metadata: Any = None
    ) -> None:
        try:
            if not self._is_user(participant):
                return
            self.log.info(
                "metadata received (room=%s participant=%s, %s chars)",
                self.room_name, self.user_identity,
                _size(new_metadata if new_metadata is not None else participant.metadata),
                extra=self._extra(),
            )
            self.update_identity(participant, metadata=new_metadata, why="metadata changed")
            self._maybe_greet()
        except Exception:  # a callback must never take the job down
            self.log.exception("metadata change not handled (room=%s participant=%s)", self.room_name, _identity_of(participant))

    def on_participant_attributes_changed(self, changed_attributes: Any, participant: Participant) -> None:
        try:
            if not self._is_user(participant):
                return
            keys = sorted(str(k) for k in changed_attributes) if isinstance(changed_attributes, Mapping) else []
            self.log.info(
                "attributes changed (room=%s participant=%s keys=%s)", self.room_name, self.user_identity, keys[:16],
                extra=self._extra(),
            )
            self.update_identity(participant, why="attributes changed")
            self._maybe_greet()
        except Exception:
            self.log.exception("attributes change not handled (room=%s participant=%s)", self.room_name, _identity_of(participant))

    def on_data_received(self, packet: DataPacket) -> None:
        try:
            self._on_data(packet)
        except Exception:
            self.ignored_packets += 1
            self.log.exception("data packet not handled (room=%s)", self.room_name)

    def _on_data(self, packet: DataPacket) -> None:
        topic = packet.topic
        sender = packet.participant
        sender_id = _identity_of(sender)
        parsed = proto.parse_data_packet(packet.data, topic=topic if isinstance(topic, str) else None)
        if parsed is None:
            return  # not ours (lk.chat and friends belong to RoomIO)
        if sender is not None and self.user_identity is not None and sender_id != self.user_identity:
            self.ignored_packets += 1
            self.metrics.command_error(proto.E_FORBIDDEN)
            self.log.warning(
                "data packet from another participant ignored (room=%s participant=%s)", self.room_name, sender_id,
                extra=self._extra(sender_id),
            )
            return
        if isinstance(parsed, proto.CommandError):
            self.ignored_packets += 1
            self.metrics.command_error(parsed.code)
            self.log.warning(
                "data packet ignored: %s: %s (room=%s participant=%s)", parsed.code, parsed.message, self.room_name, sender_id,
                extra=self._extra(sender_id),
            )
            return
        if isinstance(parsed, proto.VoiceUpload):
            # only the token service (server API: no sending participant) tells us about uploads, and only
            # once the user is verified: an app could otherwise plant words in the agent's conversation
            if sender is not None or not self.state.authenticated:
                self.ignored_packets += 1
                self.log.warning(
                    "voice_upload packet ignored: %s (room=%s participant=%s)",
                    "sent by a participant, not the server" if sender is not None else "the user is not verified yet",
                    self.room_name, sender_id, extra=self._extra(sender_id),
                )
                return
            self.log.info(
                "voice upload received (room=%s, transcript %d chars)", self.room_name, len(parsed.transcript),
                extra=self._extra(sender_id),
            )
            self.scheduler.spawn(self._voice_upload(parsed), what="voice_upload", participant=sender_id)
            return
        self.log.info("command %s received by data packet (room=%s participant=%s)", parsed.name, self.room_name, sender_id, extra=self._extra(sender_id))
        self.scheduler.spawn(self._command_from_packet(parsed, sender_id), what=f"command {parsed.name}", participant=sender_id)

    def on_participant_connected(self, participant: Participant) -> None:
        """The room's user came back (a reconnect after a network change is a new participant, new sid):
        they get the welcome packet again (docs/protocol.md §2). Other participants are only logged."""
        try:
            who = _identity_of(participant)
            if who is None or who != self.user_identity:
                self.log.info("participant joined (room=%s participant=%s)", self.room_name, who, extra=self._extra(who))
                return
            self.log.info(
                "user reconnected (room=%s participant=%s sid=%s)", self.room_name, who, _sid_of(participant),
                extra=self._extra(who),
            )
            if self._gone is not None:
                self._gone.cancel()
                self._gone = None
            self.scheduler.spawn(self._welcome_again(participant), what="welcome", participant=who)
        except Exception:
            self.log.exception("participant join not handled (room=%s)", self.room_name)

    async def _welcome_again(self, participant: Participant) -> None:
        try:
            await self.send_welcome(participant)
        except Exception:  # the scheduler would log it too; say what it was
            self.log.exception("welcome not sent (room=%s participant=%s)", self.room_name, self.user_identity)

    def on_participant_disconnected(self, participant: Participant) -> None:
        try:
            who = _identity_of(participant)
            if who is None or who != self.user_identity:
                self.log.info("participant left (room=%s participant=%s)", self.room_name, who, extra=self._extra(who))
                return
            self.log.info(
                "user disconnected (room=%s participant=%s authenticated=%s)",
                self.room_name, who, self.state.authenticated, extra=self._extra(who),
            )
            if self.reconnect_grace is not None and self.end_call is not None and self._gone is None:
                self._gone = self.scheduler.spawn(self._end_unless_back(self.reconnect_grace), what="reconnect wait",
                                                  participant=who)
        except Exception:
            self.log.exception("disconnect not handled (room=%s)", self.room_name)

    # --- the work, on the event loop ---------------------------------------------------------------

    async def _end_unless_back(self, grace: float) -> None:
        await asyncio.sleep(grace)
        self._gone = None
        if any(_identity_of(p) == self.user_identity for p in self.room.remote_participants.values()):
            return
        self.log.info("user did not come back within %.0fs (room=%s participant=%s); ending the call",
                      grace, self.room_name, self.user_identity, extra=self._extra())
        assert self.end_call is not None
        self.end_call()

    async def run_command(self, command: proto.Command | proto.CommandError, *, caller: str | None) -> dict[str, Any]:
        if isinstance(command, proto.CommandError):
            self.metrics.command_error(command.code)
            return command.answer()
        if self.executor is None:
            self.metrics.command_error(proto.E_NOT_READY)
            return proto.CommandError(proto.E_NOT_READY, "the agent is still starting", command.request_id).answer()
        answer = await self.executor.execute(command)
        if not answer.get("ok"):
            self.metrics.command_error(str(answer.get("error")))
        level = logging.INFO if answer.get("ok") else logging.WARNING
        self.log.log(
            level, "command %s -> %s (room=%s participant=%s)", command.name,
            "ok" if answer.get("ok") else answer.get("error"), self.room_name, caller, extra=self._extra(caller),
        )
        return answer

    async def _command_from_packet(self, command: proto.Command, sender: str | None) -> None:
        answer = await self.run_command(command, caller=sender)
        if sender is not None:
            # data-packet senders get the same answer RPC callers get, as a packet back to them only
            await self.publish(proto.command_result_packet(answer), to=sender)

    async def _voice_upload(self, upload: proto.VoiceUpload) -> None:
        if self.executor is None:
            self.log.warning("voice upload arrived before the session started; not added (room=%s)", self.room_name)
            return
        await self.executor.add_voice_upload(upload)

    async def handle_rpc(self, data: RpcInvocation) -> str:
        """RPC handler for every command: always a JSON answer (``{"ok": ...}``), never an exception."""
        caller = data.caller_identity
        method = data.method
        try:
            if self.user_identity is not None and caller != self.user_identity:
                self.log.warning("rpc %s from another participant refused (room=%s participant=%s)", proto.shown(method), self.room_name, caller, extra=self._extra(caller))
                self.metrics.command_error(proto.E_FORBIDDEN)
                return json.dumps(proto.CommandError(proto.E_FORBIDDEN, "commands are accepted from the room's user only").answer())
            parsed = proto.parse_rpc(method, data.payload)
            if isinstance(parsed, proto.CommandError):
                self.log.warning("rpc %s refused: %s (room=%s participant=%s)", proto.shown(method), parsed.code, self.room_name, caller, extra=self._extra(caller))
            else:
                self.log.info("command %s received by rpc (room=%s participant=%s)", parsed.name, self.room_name, caller, extra=self._extra(caller))
            return json.dumps(await self.run_command(parsed, caller=caller))
        except Exception as error:  # the caller gets an answer, the job lives on
            self.log.exception("rpc %s failed (room=%s participant=%s)", proto.shown(method), self.room_name, caller)
            self.metrics.command_error(proto.E_FAILED)
            return json.dumps(proto.CommandError(proto.E_FAILED, type(error).__name__).answer())

    async def publish(self, payload: Mapping[str, Any], *, to: str | None) -> None:
        await self.room.local_participant.publish_data(
            proto.encode(payload), reliable=True, topic=proto.TOPIC, destination_identities=[to] if to else []
        )

    async def send_welcome(self, participant: Participant) -> bool:
        """The welcome packet, once per participant (a reconnect is a new participant: new sid)."""
        who = _identity_of(participant)
        if who is None:
            return False
        key = (who, _sid_of(participant))
        if key in self._welcomed:
            return False
        self._welcomed.add(key)
        payload = welcome_payload(self.state.identity)
        try:
            await self.publish(payload, to=who)
        except Exception:
            self._welcomed.discard(key)
            raise
        self.log.info(
            "welcome sent (room=%s participant=%s named=%s)", self.room_name, who, bool(payload.get("userName")),
            extra=self._extra(who),
        )
        return True

    async def greet_when_ready(self, *, grace: float, participant: Participant | None = None) -> bool:
        """Greet once the name is known, or after ``grace`` seconds without one; then send the welcome.

        The app may call ``setMetadata`` just after joining: waiting a moment turns "Welcome." into
        "Welcome John!". With the name already in the token there is no wait at all.
        Returns True when this call greeted.
        """
        greeted = False
        if not self.state.user_name:
            self._waiting_for_name = True
            try:
                await asyncio.wait_for(self._name_known.wait(), timeout=grace)
            except asyncio.TimeoutError:
                self.log.info(
                    "no name after %.1fs (room=%s participant=%s); greeting without it",
                    grace, self.room_name, self.user_identity, extra=self._extra(),
                )
            finally:
                self._waiting_for_name = False
        if self.greet is not None and not self.state.greeted:
            try:
                await self.greet()
                greeted = True
            except Exception:  # no greeting is bad, a dead job is worse
                self.log.exception("greeting failed (room=%s participant=%s)", self.room_name, self.user_identity)
        if participant is not None:
            try:
                await self.send_welcome(participant)
            except Exception:
                self.log.exception("welcome not sent (room=%s participant=%s)", self.room_name, self.user_identity)
        return greeted

    def _maybe_greet(self) -> None:
        """Metadata arrived after the join: greet with the name if the agent has not greeted yet (when
        ``greet_when_ready`` is waiting, the name wakes it instead); once greeted, only refresh what the
        agent knows (its instructions use the name)."""
        if self._waiting_for_name:
            return
        if self.state.greeted:
            if self.refresh is not None:
                self.scheduler.spawn(self.refresh(), what="identity refresh", participant=self.user_identity)
            return
        if self.greet is None or self._greeting_scheduled or not self.state.user_name:
            return
        self._greeting_scheduled = True
        self.scheduler.spawn(self._greet(), what="greeting", participant=self.user_identity)

    async def _greet(self) -> None:
        try:
            if self.greet is not None and not self.state.greeted:
                await self.greet()
        finally:
            self._greeting_scheduled = False
