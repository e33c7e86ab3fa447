"""The app, played by the ``livekit`` Python rtc SDK, doing what the Flutter app does.

Fetch a token from our token service over HTTP, connect, publish a microphone track (real speech from
espeak-ng, silence in between, paced like a microphone), subscribe to the agent's audio and measure it,
read ``lk.transcription``, send data packets on topic ``gocare``, call the agent's RPC methods and
``set_metadata``. Every observation is kept with its time so a test can ask "after I did X, did Y arrive".
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import numpy as np
from livekit import rtc

from scripted.audio_tools import rms_s16, speech_pcm

MIC_RATE = 48000
FRAME_MS = 20
"""The microphone's and the agent-audio reader's frame: 20 ms, as a phone's WebRTC stack sends (the SDK
re-chunks what it is given; each frame is one FFI round trip, so 10 ms frames cost the test process twice
the CPU for the same audio)."""
FRAME_SAMPLES = MIC_RATE * FRAME_MS // 1000
SPEECH_RMS = 300.0
"""Agent audio louder than this is speech (espeak-ng speech is in the thousands; silence is ~0)."""

T = TypeVar("T")


class ClientError(AssertionError):
    """What the app waited for did not happen; the message says what was seen instead."""


@dataclass(frozen=True)
class Packet:
    at: float
    topic: str | None
    sender: str | None
    payload: Any
    """The JSON value, or the raw bytes when it was not JSON."""


@dataclass(frozen=True)
class Transcript:
    at: float
    participant: str
    text: str
    final: bool
    segment_id: str | None


@dataclass
class AgentAudio:
    """RMS of every ``FRAME_MS`` frame of the agent's audio track, with its arrival time."""

    frames: list[tuple[float, float]] = field(default_factory=list)
    sample_rate: int | None = None

    def loud_since(self, since: float, threshold: float = SPEECH_RMS) -> list[tuple[float, float]]:
        return [(t, r) for t, r in self.frames if t >= since and r >= threshold]

    def speech_seconds_since(self, since: float, threshold: float = SPEECH_RMS) -> float:
        return len(self.loud_since(since, threshold)) * FRAME_MS / 1000


@dataclass(frozen=True)
class Joined:
    url: str
    token: str
    response: dict[str, Any]


async def fetch_token(service_url: str, *, body: dict[str, Any], endpoint: str = "/api/token",
                      bearer: str | None = None) -> Joined:
    """POST to the token service exactly as the app does; both response shapes are understood."""
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(service_url + endpoint, json=body, headers=headers)
    if answer.status_code not in (200, 201):
        raise ClientError(f"token service answered {answer.status_code}: {answer.text}")
    data = answer.json()
    if endpoint == "/api/token":
        return Joined(url=data["server_url"], token=data["participant_token"], response=data)
    return Joined(url=data["serverUrl"], token=data["token"], response=data)


class Microphone:
    """A published audio track fed at real time: queued speech, silence otherwise."""

    def __init__(self) -> None:
        self.source = rtc.AudioSource(MIC_RATE, 1, queue_size_ms=100)
        self.track = rtc.LocalAudioTrack.create_audio_track("microphone", self.source)
        self._queue: deque[bytes] = deque()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self.sent_seconds = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._pump(), name="app-microphone")

    async def _pump(self) -> None:
        silence = bytes(FRAME_SAMPLES * 2)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        pending = b""
        while True:
            if len(pending) < FRAME_SAMPLES * 2 and self._queue:
                pending += self._queue.popleft()
            if pending:
                chunk, pending = pending[: FRAME_SAMPLES * 2], pending[FRAME_SAMPLES * 2:]
                chunk = chunk.ljust(FRAME_SAMPLES * 2, b"\0")
            else:
                chunk = silence
                self._drained.set()
            frame = rtc.AudioFrame(chunk, MIC_RATE, 1, FRAME_SAMPLES)
            await self.source.capture_frame(frame)
            self.sent_seconds += FRAME_MS / 1000
            next_at += FRAME_MS / 1000
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.5:  # fell far behind (a busy machine): do not burst to catch up
                next_at = loop.time()

    async def play(self, pcm: bytes) -> None:
        """Queue 48 kHz mono s16 PCM and wait until the last sample went out."""
        self._drained.clear()
        self._queue.append(pcm)
        await self._drained.wait()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.source.aclose()


class AppClient:
    """One app user in one room."""

    def __init__(self, joined: Joined) -> None:
        self.joined = joined
        self.room = rtc.Room()
        self.packets: list[Packet] = []
        self.transcripts: list[Transcript] = []
        self.agent_audio = AgentAudio()
        self.agent_identity: str | None = None
        self.agent_left_at: float | None = None
        self.microphone: Microphone | None = None
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.room.on("data_received", self._on_data)
        self.room.on("participant_connected", self._on_participant)
        self.room.on("participant_disconnected", self._on_participant_left)
        self.room.on("track_subscribed", self._on_track)
        self.room.on("participant_attributes_changed", lambda *_: self._notify())
        self.room.register_text_stream_handler("lk.transcription", self._on_transcription)

    # --- joining and leaving -------------------------------------------------------------------
    @classmethod
    async def join(cls, service_url: str, *, body: dict[str, Any], endpoint: str = "/api/token",
                   bearer: str | None = None, microphone: bool = True, subscribe: bool = True) -> AppClient:
        client = cls(await fetch_token(service_url, body=body, endpoint=endpoint, bearer=bearer))
        await client.connect(microphone=microphone, subscribe=subscribe)
        return client

    async def connect(self, *, microphone: bool = True, subscribe: bool = True) -> None:
        """``subscribe=False``: no media at all (a client that only sends data; many of them in one test
        process would otherwise spend its CPU decoding the agent's audio)."""
        options = rtc.RoomOptions(auto_subscribe=subscribe)
        await asyncio.wait_for(self.room.connect(self.joined.url, self.joined.token, options), timeout=20)
        for participant in self.room.remote_participants.values():
            self._on_participant(participant)
        if microphone:
            self.microphone = Microphone()
            options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            await self.room.local_participant.publish_track(self.microphone.track, options)
            self.microphone.start()

    @property
    def identity(self) -> str:
        return self.room.local_participant.identity

    async def leave(self) -> None:
        if self.microphone is not None:
            await self.microphone.aclose()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()

    # --- callbacks (synchronous, as livekit calls them) ------------------------------------------
    def _notify(self) -> None:
        self._changed.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_participant(self, participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and self.agent_identity is None:
            self.agent_identity = participant.identity
            self._notify()

    def _on_participant_left(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity == self.agent_identity:
            self.agent_left_at = time.monotonic()
            self._notify()

    def follow_next_agent(self) -> str | None:
        """The agent followed so far left: follow the next one. One already in the room is taken at once (a
        re-dispatched agent can join before the client hears that the dead one left, and its join event then
        went by while the old one was still followed); otherwise ``wait_agent`` waits for the next join."""
        gone = self.agent_identity
        self.agent_identity = next(
            (p.identity for p in self.room.remote_participants.values()
             if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and p.identity != gone), None)
        return self.agent_identity

    def _on_data(self, packet: rtc.DataPacket) -> None:
        try:
            payload: Any = json.loads(packet.data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            payload = bytes(packet.data)
        sender = packet.participant.identity if packet.participant is not None else None
        self.packets.append(Packet(time.monotonic(), packet.topic, sender, payload))
        self._notify()

    def _on_track(self, track: rtc.Track, _pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            self._spawn(self._listen(track))

    async def _listen(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=MIC_RATE, num_channels=1, frame_size_ms=FRAME_MS)
        try:
            async for event in stream:
                frame = event.frame
                self.agent_audio.sample_rate = frame.sample_rate
                self.agent_audio.frames.append((time.monotonic(), rms_s16(bytes(frame.data))))
                if len(self.agent_audio.frames) % (100 // FRAME_MS) == 0:  # waiters look every 100 ms of audio
                    self._notify()
        finally:
            await stream.aclose()

    def _on_transcription(self, reader: rtc.TextStreamReader, participant_identity: str) -> None:
        self._spawn(self._read_transcription(reader, participant_identity))

    async def _read_transcription(self, reader: rtc.TextStreamReader, participant_identity: str) -> None:
        text = await reader.read_all()
        attributes = reader.info.attributes or {}
        self.transcripts.append(Transcript(
            time.monotonic(), participant_identity, text, attributes.get("lk.transcription_final") == "true",
            attributes.get("lk.segment_id"),
        ))
        self._notify()

    # --- waiting ---------------------------------------------------------------------------------
    async def wait_for(self, check: Callable[[], T | None], *, timeout: float, what: str,
                       seen: Callable[[], str] | None = None) -> T:
        """Wait until ``check()`` returns something truthy; fail with what was seen instead."""
        deadline = time.monotonic() + timeout
        while True:
            found = check()
            if found:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClientError(f"{what}: not within {timeout:.0f}s; seen: {(seen or self.describe)()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.25))
            except asyncio.TimeoutError:
                pass

    def describe(self) -> str:
        packets = [p.payload for p in self.packets][-8:]
        transcripts = [(t.participant == self.agent_identity and "agent" or "user", t.text) for t in self.transcripts][-8:]
        return f"agent={self.agent_identity} packets={packets} transcripts={transcripts}"

    async def wait_agent(self, *, timeout: float = 20) -> str:
        return await self.wait_for(lambda: self.agent_identity, timeout=timeout, what="agent joined")

    def agent_state(self) -> str | None:
        """What livekit-agents says its agent is doing (``lk.agent.state``: listening, thinking, speaking)."""
        agent = self.room.remote_participants.get(self.agent_identity or "")
        return agent.attributes.get("lk.agent.state") if agent is not None else None

    async def wait_agent_listening(self, *, timeout: float = 30, quiet: float = 0.3) -> None:
        """Until the agent has finished speaking and listens again: its state says so, and none of its audio
        that arrived in the last ``quiet`` seconds was speech (the state changes when the agent's side has
        sent its last frame; the client's jitter buffer may still be playing the end)."""
        def listening() -> bool:
            return self.agent_state() == "listening" and not self.agent_audio.loud_since(time.monotonic() - quiet)

        await self.wait_for(listening, timeout=timeout, what="agent listening",
                            seen=lambda: f"agent state {self.agent_state()!r}; {self.describe()}")

    async def wait_packet(self, kind: str, *, since: float = 0.0, timeout: float = 20, topic: str = "gocare") -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            for packet in self.packets:
                if packet.at >= since and packet.topic == topic and isinstance(packet.payload, dict) \
                        and packet.payload.get("type") == kind:
                    return packet.payload
            return None

        return await self.wait_for(check, timeout=timeout, what=f"packet type={kind!r}")

    def agent_transcripts(self, *, since: float = 0.0) -> list[Transcript]:
        return [t for t in self.transcripts if t.at >= since and t.participant == self.agent_identity and t.text.strip()]

    async def wait_agent_says(self, pattern: str, *, since: float = 0.0, timeout: float = 30) -> Transcript:
        regex = re.compile(pattern, re.I)

        def check() -> Transcript | None:
            return next((t for t in self.agent_transcripts(since=since) if regex.search(t.text)), None)

        return await self.wait_for(check, timeout=timeout, what=f"agent transcript matching {pattern!r}")

    async def wait_agent_speech(self, *, since: float, seconds: float = 0.5, timeout: float = 30) -> float:
        """Wait until the agent's audio carried ``seconds`` of speech after ``since``; return when it began."""
        await self.wait_for(
            lambda: self.agent_audio.speech_seconds_since(since) >= seconds, timeout=timeout,
            what=f"{seconds}s of agent speech",
            seen=lambda: f"{self.agent_audio.speech_seconds_since(since):.2f}s loud of {len(self.agent_audio.frames)} frames",
        )
        return self.agent_audio.loud_since(since)[0][0]

    async def wait_agent_left(self, *, timeout: float = 30) -> float:
        return await self.wait_for(lambda: self.agent_left_at, timeout=timeout, what="agent left the room")

    # --- acting ----------------------------------------------------------------------------------
    async def say(self, text: str) -> float:
        """Speak ``text`` (espeak-ng) into the microphone; returns the speech's length in seconds once it
        has been sent. The silence after it is what ends the turn."""
        if self.microphone is None:
            raise ClientError("no microphone published")
        pcm = await asyncio.to_thread(speech_pcm, text, rate=MIC_RATE)
        await self.microphone.play(pcm)
        return len(pcm) / 2 / MIC_RATE

    async def say_with_pauses(self, *phrases: str, pause: float, voice: str | None = None,
                              words_per_minute: int | None = None) -> list[float]:
        """Speak ``phrases`` as one stretch of audio with exactly ``pause`` seconds of silence between them (espeak's
        own lead-in and tail trimmed), in espeak-ng's ``voice`` at ``words_per_minute``; returns when each
        phrase's last sample was sent (monotonic), once all were."""
        from scripted.audio_tools import trim_silence

        if self.microphone is None:
            raise ClientError("no microphone published")
        pieces = [trim_silence(await asyncio.to_thread(speech_pcm, text, rate=MIC_RATE, voice=voice,
                                                       words_per_minute=words_per_minute), rate=MIC_RATE)
                  for text in phrases]
        gap = bytes(int(pause * MIC_RATE) * 2)
        await self.microphone.play(gap.join(pieces))
        ended = time.monotonic()
        lengths = [len(piece) / 2 / MIC_RATE for piece in pieces]
        ends, total = [], 0.0
        for i, length in enumerate(lengths):
            total += length + (pause if i else 0.0)
            ends.append(total)
        return [ended - (total - end) for end in ends]

    async def rpc(self, method: str, payload: Any = "", *, timeout: float = 10) -> dict[str, Any]:
        agent = self.agent_identity or await self.wait_agent()
        text = payload if isinstance(payload, str) else json.dumps(payload)
        answer = await self.room.local_participant.perform_rpc(
            destination_identity=agent, method=method, payload=text, response_timeout=timeout
        )
        return json.loads(answer)

    async def send(self, payload: Any, *, topic: str = "gocare") -> float:
        """A reliable data packet (a dict is sent as JSON); returns when it was sent."""
        data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        sent_at = time.monotonic()
        await self.room.local_participant.publish_data(data, reliable=True, topic=topic)
        return sent_at

    async def set_metadata(self, metadata: str) -> None:
        await self.room.local_participant.set_metadata(metadata)


def pcm_duration(pcm: bytes, rate: int = MIC_RATE) -> float:
    return len(pcm) / 2 / rate


def loud_seconds(pcm: bytes, rate: int, threshold: float = SPEECH_RMS) -> float:
    """Seconds of ``pcm`` in 10 ms windows louder than ``threshold`` (how long espeak actually spoke)."""
    window = rate // 100
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    count = 0
    for start in range(0, len(samples) - window + 1, window):
        if np.sqrt(np.mean(samples[start:start + window] ** 2)) >= threshold:
            count += 1
    return count * 0.01
