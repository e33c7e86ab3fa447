"""``gocare test-metadata --connect``: join a room as the app would and time the agent's arrival.

The probe mints its own participant token with the token service's ``TokenMinter`` (the same claims an app
gets: the agent dispatch for ``settings.agent_name``, ``can_update_own_metadata``; the metadata given), joins,
and waits for an agent participant and its ``welcome`` packet on topic ``gocare``. It answers what
arrived and how long each step took, or raises ``ProbeError`` with one line saying what went wrong
(unreachable server, refused credentials, no agent, no welcome). CI smoke tests run it against a real
server; the unit tests cover its parts and its failure paths.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from gocare_voice import protocol
from gocare_voice.protocol import TOPIC
from gocare_voice.settings import Settings

logger = logging.getLogger("gocare.probe")

PROBE_IDENTITY_PREFIX = "gocare-probe-"


class ProbeError(Exception):
    """The probe failed; ``str(error)`` is the one line to print. ``kind``: unreachable | refused |
    connect | no_agent | no_welcome."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True)
class ProbeResult:
    room: str
    identity: str
    agent_identity: str | None = None
    welcome: dict[str, Any] | None = None
    connect_seconds: float | None = None
    agent_seconds: float | None = None
    welcome_seconds: float | None = None
    other_packets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.agent_identity is not None and self.welcome is not None

    def describe(self) -> str:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value * 1000:.0f} ms"

        lines = [
            f"room            {self.room}",
            f"probe identity  {self.identity}",
            f"connected in    {ms(self.connect_seconds)}",
            f"agent           {self.agent_identity or '-'} after {ms(self.agent_seconds)}",
            f"welcome         after {ms(self.welcome_seconds)}",
        ]
        if self.welcome is not None:
            lines.append(f"  message       {self.welcome.get('message')}")
            lines.append(f"  userId        {self.welcome.get('userId')}")
            lines.append(f"  userName      {self.welcome.get('userName')}")
        return "\n".join(lines)


def new_probe_names(room: str | None) -> tuple[str, str]:
    suffix = secrets.token_hex(4)
    return (room or f"gocare-probe-{suffix}", f"{PROBE_IDENTITY_PREFIX}{suffix}")


def build_probe_token(settings: Settings, *, room: str, identity: str, metadata: str, ttl_seconds: int = 300) -> str:
    """A participant token minted exactly as the token service mints an app's (``TokenMinter``), with a
    short lifetime of its own."""
    from gocare_voice.token_service.minting import TokenMinter, TokenRequest

    minter = TokenMinter(
        api_key=settings.livekit_api_key, api_secret=settings.livekit_api_secret.get_secret_value(),
        agent_name=settings.agent_name, ttl_seconds=ttl_seconds,
    )
    return minter.mint(TokenRequest(room=room, identity=identity, name="gocare probe", metadata=metadata))


def _is_agent(participant: Any) -> bool:
    from livekit import rtc

    return getattr(participant, "kind", None) == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


class ProbeWaiter:
    """Collects what the room tells us; synchronous callbacks resolve futures (no LiveKit needed to test)."""

    def __init__(self, *, started: float, is_agent: Any = _is_agent) -> None:
        self.started = started
        self._is_agent = is_agent
        loop = asyncio.get_running_loop()
        self.agent: asyncio.Future[tuple[str, float]] = loop.create_future()
        self.welcome: asyncio.Future[tuple[dict[str, Any], float]] = loop.create_future()
        self.other_packets: list[dict[str, Any]] = []

    def on_participant(self, participant: Any) -> None:
        if self.agent.done() or not self._is_agent(participant):
            return
        self.agent.set_result((str(getattr(participant, "identity", "")), time.perf_counter() - self.started))

    def on_data(self, packet: Any) -> None:
        if self.welcome.done():
            return
        payload = protocol.parse_agent_packet(getattr(packet, "data", None), topic=getattr(packet, "topic", None))
        if payload is None:
            return
        if payload.get("type") == protocol.WELCOME:
            self.welcome.set_result((payload, time.perf_counter() - self.started))
            sender = getattr(packet, "participant", None)
            if sender is not None:
                self.on_participant(sender)
        elif len(self.other_packets) < 20:
            self.other_packets.append(payload)


async def _reachable(settings: Settings, timeout: float) -> None:
    from gocare_voice.worker.preflight import check_livekit

    result = await check_livekit(settings, attempts=1, attempt_timeout=max(0.5, min(timeout, 5.0)))
    if not result.ok:
        raise ProbeError(str(result.problem), kind="refused" if result.kind == "refused" else "unreachable")


async def probe_room(settings: Settings, *, metadata: str, room: str | None, timeout: float) -> ProbeResult:
    """Join, wait for the agent and its welcome (``timeout`` seconds in all), leave."""
    from livekit import rtc

    deadline = time.perf_counter() + timeout
    await _reachable(settings, timeout)
    room_name, identity = new_probe_names(room)
    token = build_probe_token(settings, room=room_name, identity=identity, metadata=metadata)
    result = ProbeResult(room=room_name, identity=identity)

    lk_room = rtc.Room()
    started = time.perf_counter()
    waiter = ProbeWaiter(started=started)
    lk_room.on("participant_connected", waiter.on_participant)
    lk_room.on("data_received", waiter.on_data)
    try:
        remaining = max(0.5, deadline - time.perf_counter())
        try:
            await asyncio.wait_for(
                lk_room.connect(settings.livekit_url, token, options=rtc.RoomOptions(auto_subscribe=False)),
                timeout=remaining,
            )
        except asyncio.TimeoutError:
            raise ProbeError(f"could not join room {room_name} within {timeout:.0f}s", kind="connect") from None
        except Exception as error:  # noqa: BLE001 - rtc.ConnectError and friends
            raise ProbeError(f"could not join room {room_name}: {error}", kind="connect") from None
        result.connect_seconds = time.perf_counter() - started
        for participant in lk_room.remote_participants.values():
            waiter.on_participant(participant)

        try:
            result.agent_identity, result.agent_seconds = await asyncio.wait_for(
                asyncio.shield(waiter.agent), timeout=max(0.0, deadline - time.perf_counter())
            )
        except asyncio.TimeoutError:
            raise ProbeError(
                f"no agent '{settings.agent_name}' joined room {room_name} within {timeout:.0f}s "
                "(is `gocare worker start` running against this server?)",
                kind="no_agent",
            ) from None
        try:
            result.welcome, result.welcome_seconds = await asyncio.wait_for(
                asyncio.shield(waiter.welcome), timeout=max(0.0, deadline - time.perf_counter())
            )
        except asyncio.TimeoutError:
            raise ProbeError(
                f"agent {result.agent_identity} joined but sent no welcome packet on topic '{TOPIC}' "
                f"within {timeout:.0f}s",
                kind="no_welcome",
            ) from None
        result.other_packets = list(waiter.other_packets)
        return result
    finally:
        try:
            await asyncio.wait_for(lk_room.disconnect(), timeout=5.0)
        except Exception:  # leaving is best effort
            logger.debug("probe disconnect failed", exc_info=True)
