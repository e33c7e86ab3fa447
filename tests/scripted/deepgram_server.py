"""A scripted Deepgram on 127.0.0.1: ``/v1/listen`` prerecorded (``POST``) and live (``GET``, websocket), and
``POST /v1/speak`` (TTS, REST).

No recognizer: the test scripts the transcript. What is real is the audio check. Every prerecorded
``/v1/listen`` request is parsed the way Deepgram does (the WAV header when the body is a container;
``encoding`` and ``sample_rate`` query parameters when it is raw ``linear16``), and recorded as a
``ListenRequest`` with the sample rate, channels, sample width and duration it carried and how loud it was, so
a test can assert that the service sent the *decoded* recording (16 kHz mono, as long as the source) and not the
uploaded bytes. Silence (RMS below ``silence_rms``) gets an empty transcript, as from the real service.

Live streaming (what ``livekit-plugins-deepgram``'s ``SpeechStream`` speaks): ``GET /v1/listen`` upgraded to a
websocket, ``Authorization: Token <key>`` and ``encoding=linear16&sample_rate=..[&channels=..]`` checked before the
upgrade. The client sends binary s16le audio and the text messages ``KeepAlive`` (ignored), ``Finalize`` and
``CloseStream``. The server cuts the audio into utterances by energy, in audio time (samples / rate, never the
wall clock, so pushing faster than real time changes nothing): an utterance starts at the first ~20 ms window
whose RMS reaches ``silence_rms`` and ends after ``endpoint_silence`` seconds of quieter windows, at ``Finalize``,
or at ``CloseStream``/socket close. Messages sent, shaped as Deepgram's:

- ``SpeechStarted`` at an utterance's start, when the query has ``vad_events=true``;
- one interim ``Results`` (``is_final: false``, the transcript's first word) about 0.3 s into an utterance, when
  the query has ``interim_results=true`` and a transcript is scripted;
- at its end a final ``Results`` (``is_final: true``; ``speech_final`` true unless it was ended by ``Finalize``;
  ``from_finalize``) with the next transcript from ``script_live(...)``, or an empty one when none is scripted
  (an unscripted utterance is heard but produces no text);
- ``UtteranceEnd`` (``last_word_end``: the end of the last word) when the query has ``utterance_end_ms``, the last
  final had words and then ``utterance_end_ms`` of audio passed after its last word with no new speech: as Deepgram
  does, it is about a gap in the words, so a pause shorter than ``utterance_end_ms`` never brings one, and it comes
  well after the final that ``speech_final`` marked;
- ``Finalize`` with no speech since the last final: an empty final ``Results`` with ``from_finalize: true``;
- ``CloseStream``: the final of an utterance in progress, then ``Metadata``, then a normal close.

Each utterance is recorded as a ``LiveUtterance`` (rate, channels, loud span's duration and RMS, transcript, what
ended it) and each connection attempt as a ``LiveConnection``; ``wait_for_utterances`` blocks until enough arrived.

Faults for tests: ``fail_status``/``speak_fail_status`` answer listen (prerecorded, and the live handshake) and
speak requests with that HTTP status and a Deepgram error body; ``delay``/``speak_delay`` sleep before answering a
prerecorded listen/speak request (timeouts, and the fixed per-stage latency of the benchmarks), ``live_delay``
before each final live ``Results`` (without holding up the reading of audio). ``reset()`` clears scripts,
recordings and faults, so one server can serve many tests.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import threading
import time
import uuid
import wave
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from aiohttp import web

from scripted.audio_tools import rms_s16, speech_pcm
from scripted.openai_server import ThreadedServer, _ThreadRunner

DEFAULT_TRANSCRIPT = "Hello, I would like to check the status of my appointment for tomorrow morning."

LIVE_WINDOW = 0.02  # seconds of audio per energy measurement
INTERIM_AFTER = 0.3  # seconds into an utterance at which its one interim result is sent


@dataclass(frozen=True)
class ListenRequest:
    """What one ``/v1/listen`` call carried, as Deepgram would have understood it."""

    query: dict[str, str]
    content_type: str
    authorization: str
    body_bytes: int
    sample_rate: int | None
    channels: int | None
    sample_width: int | None
    duration: float | None
    rms: float
    problem: str | None = None


@dataclass(frozen=True)
class LiveUtterance:
    """One utterance of a live stream, as the server's energy endpointing cut it."""

    sample_rate: int
    channels: int
    start: float  # seconds into the stream's audio where the first loud window begins
    duration: float  # first loud window's start .. last loud window's end (trailing silence not included)
    rms: float  # over that span
    transcript: str  # what was answered (from script_live, or "" when nothing was scripted)
    ended_by: str  # "silence" | "finalize" | "close"
    query: dict[str, str]
    authorization: str
    ended_at: float = 0.0  # time.time() when its final Results was made (before any ``live_delay``)


@dataclass(frozen=True)
class LiveConnection:
    """One ``GET /v1/listen`` attempt; ``status`` 101 when it was upgraded, else the HTTP error answered."""

    query: dict[str, str]
    authorization: str
    opened_at: float  # time.time()
    closed_at: float | None = None  # None while the socket is open
    audio_seconds: float = 0.0
    status: int = 101


@dataclass(frozen=True)
class SpeakRequest:
    query: dict[str, str]
    text: str
    authorization: str


@dataclass
class ScriptedDeepgramServer(ThreadedServer):
    """``start()``/``stop()`` or a context manager; ``listen_url`` for ``deepgram.STT(base_url=...)``."""

    transcript: str = DEFAULT_TRANSCRIPT
    api_key: str = "dg-test-key"
    fail_status: int | None = None
    delay: float = 0.0
    speak_fail_status: int | None = None
    speak_delay: float = 0.0
    speak_words_per_minute: int | None = None
    """How fast the voice of ``/v1/speak`` speaks (espeak-ng's own rate by default)."""
    live_delay: float = 0.0
    silence_rms: float = 60.0
    # fixed, not the query's ``endpointing`` (the plugin asks for 25 ms, which would cut espeak's pauses between
    # words into separate utterances): one scripted phrase is one utterance
    endpoint_silence: float = 0.5
    live_transcriber: Callable[[float], str] | None = None
    """Transcribe a live utterance by its loud duration in seconds instead of from ``script_live``'s queue: for
    concurrent calls, whose utterances arrive in no fixed order (the benchmark's long number, short question)."""
    host: str = "127.0.0.1"
    listens: list[ListenRequest] = field(default_factory=list)
    speaks: list[SpeakRequest] = field(default_factory=list)
    utterances: list[LiveUtterance] = field(default_factory=list)
    connections: list[LiveConnection] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._live_script: deque[str] = deque()
        self._sockets: set[web.WebSocketResponse] = set()  # open live sockets, closed at shutdown
        self._runner = _ThreadRunner(self._make_app, host=self.host, port=0)

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The API root, what ``GOCARE_DEEPGRAM_BASE_URL`` takes."""
        return self._runner.url

    @property
    def listen_url(self) -> str:
        return f"{self._runner.url}/v1/listen"

    def listen_requests(self) -> list[ListenRequest]:
        with self._lock:
            return list(self.listens)

    # --- live: script and recordings (thread-safe; the server runs on its own thread) ---------------
    def script_live(self, *transcripts: str) -> None:
        """Queue what the next live utterances are transcribed as, in order, across all connections."""
        with self._lock:
            self._live_script.extend(transcripts)

    def live_utterances(self) -> list[LiveUtterance]:
        with self._lock:
            return list(self.utterances)

    def live_connections(self) -> list[LiveConnection]:
        with self._lock:
            return list(self.connections)

    def wait_for_utterances(self, n: int, timeout: float = 10.0) -> list[LiveUtterance]:
        """Block until ``n`` live utterances were recorded and return them all (from a thread, or through
        ``asyncio.to_thread``); ``TimeoutError`` naming what did arrive otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            utterances = self.live_utterances()
            if len(utterances) >= n:
                return utterances
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(utterances)} of {n} live utterances within {timeout} s: {utterances}")
            time.sleep(0.02)

    def reset(self) -> None:
        """Forget scripts, recordings and faults (not ``transcript``, ``silence_rms``, ``endpoint_silence``)."""
        with self._lock:
            self._live_script.clear()
            self.listens.clear()
            self.speaks.clear()
            self.utterances.clear()
            self.connections.clear()
            self.fail_status = self.speak_fail_status = None
            self.delay = self.speak_delay = self.live_delay = 0.0

    def _next_live_transcript(self, duration: float) -> str:
        if self.live_transcriber is not None:
            return self.live_transcriber(duration)
        with self._lock:
            return self._live_script.popleft() if self._live_script else ""

    def _peek_live_transcript(self, duration: float) -> str:
        if self.live_transcriber is not None:
            return self.live_transcriber(duration)
        with self._lock:
            return self._live_script[0] if self._live_script else ""

    # --- HTTP ------------------------------------------------------------------------------------
    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/listen", self._listen)
        app.router.add_get("/v1/listen", self._listen_live)
        app.router.add_post("/v1/speak", self._speak)
        app.router.add_get("/v1/speak", self._speak_live)
        app.on_shutdown.append(self._close_sockets)
        return app

    def _error(self, status: int, message: str) -> web.Response:
        # Deepgram's error shape
        body = {"err_code": "SCRIPTED_ERROR", "err_msg": message, "request_id": str(uuid.uuid4())}
        return web.json_response(body, status=status)

    async def _listen(self, http: web.Request) -> web.Response:
        body = await http.read()
        query = dict(http.query)
        auth = http.headers.get("Authorization", "")
        record = _inspect_audio(body, query=query, content_type=http.headers.get("Content-Type", ""), auth=auth)
        with self._lock:
            self.listens.append(record)
        if self.delay:
            await asyncio.sleep(self.delay)
        if auth != f"Token {self.api_key}":
            return self._error(401, "Invalid credentials.")
        if self.fail_status is not None:
            return self._error(self.fail_status, "scripted failure")
        if record.problem:
            return self._error(400, record.problem)
        spoken = record.rms >= self.silence_rms
        transcript = self.transcript if spoken else ""
        return web.json_response(_prerecorded_response(transcript, record.duration or 0.0, query))

    def _speak_refusal(self, auth: str, query: dict[str, str]) -> web.Response | None:
        """What both speak endpoints (REST and streaming) answer before any audio: a wrong key, a scripted
        failure, an encoding this server does not make."""
        if auth != f"Token {self.api_key}":
            return self._error(401, "Invalid credentials.")
        if self.speak_fail_status is not None:
            return self._error(self.speak_fail_status, "scripted failure")
        if query.get("encoding", "linear16") != "linear16":
            return self._error(400, "this scripted server speaks linear16 only")
        return None

    async def _speak_live(self, http: web.Request) -> web.StreamResponse:
        """Deepgram's streaming TTS websocket, the path livekit's deepgram ``TTS.stream()`` takes (and so a
        ``FallbackAdapter`` does): ``Speak`` messages collect text, ``Flush`` answers with the audio of what
        was collected (real espeak-ng speech, linear16 at the requested rate) and then ``Flushed``."""
        auth = http.headers.get("Authorization", "")
        query = dict(http.query)
        refused = self._speak_refusal(auth, query)
        if refused is not None:
            return refused
        rate = int(query.get("sample_rate", "24000"))
        ws = web.WebSocketResponse()
        await ws.prepare(http)
        self._sockets.add(ws)
        text: list[str] = []
        flushed = 0
        try:
            async for message in ws:
                if message.type != web.WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                if data.get("type") == "Speak":
                    text.append(str(data.get("text", "")))
                elif data.get("type") == "Flush":
                    spoken = " ".join("".join(text).split())
                    text.clear()
                    if spoken:
                        with self._lock:
                            self.speaks.append(SpeakRequest(query=query, text=spoken, authorization=auth))
                        if self.speak_delay:
                            await asyncio.sleep(self.speak_delay)
                        pcm = await asyncio.to_thread(speech_pcm, spoken, rate=rate,
                                                      words_per_minute=self.speak_words_per_minute)
                        for start in range(0, len(pcm), 9600):
                            await ws.send_bytes(pcm[start:start + 9600])
                    flushed += 1
                    await ws.send_json({"type": "Flushed", "sequence_id": flushed})
                elif data.get("type") == "Close":
                    break
        finally:
            self._sockets.discard(ws)
            await ws.close()
        return ws

    async def _speak(self, http: web.Request) -> web.StreamResponse:
        auth = http.headers.get("Authorization", "")
        query = dict(http.query)
        try:
            text = str((await http.json()).get("text", ""))
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return self._error(400, "body must be JSON {\"text\": ...}")
        with self._lock:
            self.speaks.append(SpeakRequest(query=query, text=text, authorization=auth))
        if self.speak_delay:
            await asyncio.sleep(self.speak_delay)
        refused = self._speak_refusal(auth, query)
        if refused is not None:
            return refused
        rate = int(query.get("sample_rate", "24000"))
        pcm = await asyncio.to_thread(speech_pcm, text, rate=rate, words_per_minute=self.speak_words_per_minute)
        return web.Response(body=pcm, content_type="application/octet-stream")

    # --- live streaming (websocket) ----------------------------------------------------------------
    async def _listen_live(self, http: web.Request) -> web.StreamResponse:
        query = dict(http.query)
        auth = http.headers.get("Authorization", "")
        opened_at = time.time()
        # all checked before the upgrade, as Deepgram does: a refused stream is a plain HTTP error, which the
        # client sees as a failed handshake with that status
        refusal: tuple[int, str] | None = None
        if auth != f"Token {self.api_key}":
            refusal = (401, "Invalid credentials.")
        elif self.fail_status is not None:
            refusal = (self.fail_status, "scripted failure")
        elif problem := _live_query_problem(query):
            refusal = (400, problem)
        elif not web.WebSocketResponse().can_prepare(http).ok:
            refusal = (400, "live transcription needs a websocket upgrade")
        if refusal is not None:
            with self._lock:
                self.connections.append(LiveConnection(query, auth, opened_at, closed_at=opened_at, status=refusal[0]))
            return self._error(*refusal)

        stream = _LiveStream(self, query=query, authorization=auth)
        ws = web.WebSocketResponse()
        ws.headers["dg-request-id"] = stream.request_id  # the plugin logs the dg-* headers of the handshake
        await ws.prepare(http)
        record = LiveConnection(query, auth, opened_at)
        with self._lock:
            self.connections.append(record)
        self._sockets.add(ws)
        # answers go through a queue so that ``live_delay`` holds up the answers, not the reading of audio
        outbox: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        sender = asyncio.create_task(_send_live(ws, outbox))
        close_stream = False
        try:
            async for message in ws:
                if message.type == web.WSMsgType.BINARY:
                    self._post(outbox, stream.feed(message.data))
                elif message.type == web.WSMsgType.TEXT:
                    kind = _control_type(message.data)
                    if kind == "Finalize":
                        self._post(outbox, stream.finalize())
                    elif kind == "CloseStream":
                        close_stream = True
                        self._post(outbox, stream.close())
                        break
                    # KeepAlive (and anything else) only keeps the socket open
        finally:
            if close_stream:
                await outbox.join()  # the last final and Metadata go out before the close frame
            else:
                stream.close()  # the socket went away: record an utterance it cut off, no one to answer
            sender.cancel()
            await ws.close()
            self._sockets.discard(ws)
            with self._lock:
                for i, known in enumerate(self.connections):
                    if known is record:  # gone when reset() ran meanwhile
                        self.connections[i] = replace(record, closed_at=time.time(), audio_seconds=stream.now)
        return ws

    def _post(self, outbox: asyncio.Queue[tuple[float, dict[str, Any]]], messages: list[dict[str, Any]]) -> None:
        now = asyncio.get_running_loop().time()
        for message in messages:
            final = message["type"] == "Results" and message["is_final"]
            outbox.put_nowait((now + (self.live_delay if final else 0.0), message))

    def _record_utterance(self, utterance: LiveUtterance) -> None:
        with self._lock:
            self.utterances.append(utterance)

    def drop_live(self, timeout: float = 5.0) -> int:
        """Close every open live stream from the server side, as a Deepgram outage or a network cut does
        (code 1011); returns how many were dropped. The plugin is expected to reconnect."""
        loop = self._runner._loop
        if loop is None:
            return 0

        async def drop() -> int:
            sockets = list(self._sockets)
            for ws in sockets:
                await ws.close(code=1011, message=b"scripted outage")
            return len(sockets)

        return asyncio.run_coroutine_threadsafe(drop(), loop).result(timeout)

    async def _close_sockets(self, _app: web.Application) -> None:
        # without this, stopping the server waits for every open stream's client to hang up
        for ws in list(self._sockets):
            await ws.close(code=1001, message=b"server shutdown")


async def _send_live(ws: web.WebSocketResponse, outbox: asyncio.Queue[tuple[float, dict[str, Any]]]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due, message = await outbox.get()
        try:
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not ws.closed:
                await ws.send_json(message)
        except ConnectionError:
            pass  # the client went away; what it missed is still recorded
        finally:
            outbox.task_done()


def _control_type(text: str) -> str:
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        return ""
    return str(message.get("type", "")) if isinstance(message, dict) else ""


def _live_query_problem(query: dict[str, str]) -> str | None:
    if query.get("encoding") != "linear16":
        return "live audio needs encoding=linear16"
    try:
        rate, channels = int(query.get("sample_rate", "")), int(query.get("channels", "1"))
    except ValueError:
        return "live audio needs a numeric sample_rate (and channels)"
    if rate <= 0 or channels <= 0:
        return "sample_rate and channels must be positive"
    return None


class _LiveStream:
    """One live socket's audio cut into utterances by energy; each method returns the messages to answer.

    The clock is the audio: ``frames`` (samples per channel) received so far over the sample rate."""

    def __init__(self, server: ScriptedDeepgramServer, *, query: dict[str, str], authorization: str) -> None:
        self.server = server
        self.query = query
        self.authorization = authorization
        self.rate = int(query["sample_rate"])
        self.channels = int(query.get("channels", "1"))
        self.frame_bytes = 2 * self.channels
        self.window_bytes = max(1, round(self.rate * LIVE_WINDOW)) * self.frame_bytes
        self.request_id = str(uuid.uuid4())
        self.model = query.get("model", "nova-3")
        self.pending = bytearray()
        self.frames = 0
        self.cursor = 0.0  # where the next Results begins: the end of the last final one
        # the utterance in progress; speech_start is None between utterances
        self.speech_start: float | None = None
        self.last_loud_end = 0.0
        self.sum_squares = 0.0  # of every window since speech_start ...
        self.samples = 0
        self.loud_sum_squares = 0.0  # ... and of those up to the last loud one (the recorded span)
        self.loud_samples = 0
        self.interim_sent = False
        # UtteranceEnd waits for utterance_end_ms of audio after the last word: (due at, last word's end)
        self.utterance_end: tuple[float, float] | None = None

    @property
    def now(self) -> float:
        return self.frames / self.rate

    def feed(self, pcm: bytes) -> list[dict[str, Any]]:
        self.pending += pcm
        out: list[dict[str, Any]] = []
        while len(self.pending) >= self.window_bytes:
            out += self._window(bytes(self.pending[: self.window_bytes]))
            del self.pending[: self.window_bytes]
        return out

    def finalize(self) -> list[dict[str, Any]]:
        out = self._drain()
        if self.speech_start is None:
            # nothing pending: Deepgram still answers a Finalize, with an empty final
            out.append(self._results("", 0.0, 0.0, is_final=True, speech_final=False, from_finalize=True))
            self.cursor = self.now
            return out
        return out + self._end("finalize")

    def close(self) -> list[dict[str, Any]]:
        out = self._drain()
        if self.speech_start is not None:
            out += self._end("close")
        model_uuid = _model_uuid(self.model)
        out.append({
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": "0" * 64,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "duration": round(self.now, 3),
            "channels": self.channels,
            "models": [model_uuid],
            "model_info": {model_uuid: _model_info(self.model)},
        })
        return out

    def _drain(self) -> list[dict[str, Any]]:
        # the tail shorter than a window still counts (the plugin flushes a partial chunk before Finalize)
        tail = bytes(self.pending[: len(self.pending) // self.frame_bytes * self.frame_bytes])
        self.pending.clear()
        return self._window(tail) if tail else []

    def _window(self, pcm: bytes) -> list[dict[str, Any]]:
        start = self.now
        self.frames += len(pcm) // self.frame_bytes
        end = self.now
        rms = rms_s16(pcm)
        samples = len(pcm) // 2
        out: list[dict[str, Any]] = []
        loud = rms >= self.server.silence_rms
        if self.utterance_end is not None:
            if loud:
                self.utterance_end = None  # words again before the gap was long enough: no UtteranceEnd
            elif end >= self.utterance_end[0]:
                out.append({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": self.utterance_end[1]})
                self.utterance_end = None
        if loud and self.speech_start is None:
            self.speech_start = start
            self.sum_squares, self.samples, self.interim_sent = 0.0, 0, False
            if self.query.get("vad_events") == "true":
                out.append({"type": "SpeechStarted", "channel": [0], "timestamp": round(start, 3)})
        if self.speech_start is None:
            return out
        self.sum_squares += rms * rms * samples
        self.samples += samples
        if loud:
            self.last_loud_end = end
            self.loud_sum_squares, self.loud_samples = self.sum_squares, self.samples
            if self.query.get("interim_results") == "true" and not self.interim_sent \
                    and end - self.speech_start >= INTERIM_AFTER:
                self.interim_sent = True
                first_word = " ".join(self.server._peek_live_transcript(end - self.speech_start).split()[:1])
                if first_word:
                    out.append(self._results(first_word, self.speech_start, end, is_final=False, speech_final=False,
                                             from_finalize=False))
        elif end - self.last_loud_end >= self.server.endpoint_silence:
            out += self._end("silence")
        return out

    def _end(self, ended_by: str) -> list[dict[str, Any]]:
        assert self.speech_start is not None
        start, end = self.speech_start, self.last_loud_end
        transcript = self.server._next_live_transcript(end - start)
        self.server._record_utterance(LiveUtterance(
            sample_rate=self.rate,
            channels=self.channels,
            start=start,
            duration=end - start,
            rms=math.sqrt(self.loud_sum_squares / max(1, self.loud_samples)),
            transcript=transcript,
            ended_by=ended_by,
            query=self.query,
            authorization=self.authorization,
            ended_at=time.time(),
        ))
        out = [self._results(transcript, start, end, is_final=True, speech_final=ended_by != "finalize",
                             from_finalize=ended_by == "finalize")]
        self.speech_start = None
        self.cursor = self.now
        if transcript and "utterance_end_ms" in self.query:
            gap = int(self.query["utterance_end_ms"]) / 1000
            self.utterance_end = (end + gap, round(end, 3))
        return out

    def _results(self, transcript: str, start: float, end: float, *, is_final: bool, speech_final: bool,
                 from_finalize: bool) -> dict[str, Any]:
        """A live ``Results`` message; its words are spread evenly over the utterance's loud span."""
        words = transcript.split()
        step = (end - start) / max(1, len(words))
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(self.now - self.cursor, 3),
            "start": round(self.cursor, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [{
                    "transcript": transcript,
                    "confidence": 0.98 if words else 0.0,
                    "words": [
                        {
                            "word": w.strip(",.?!").lower(),
                            "start": round(start + i * step, 3),
                            "end": round(start + (i + 1) * step, 3),
                            "confidence": 0.98,
                            "punctuated_word": w,
                        }
                        for i, w in enumerate(words)
                    ],
                }]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": _model_info(self.model),
                "model_uuid": _model_uuid(self.model),
            },
        }


def _model_info(model: str) -> dict[str, str]:
    return {"name": f"general-{model}", "version": "scripted", "arch": model}


def _model_uuid(model: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"scripted-deepgram/{model}"))


def _inspect_audio(body: bytes, *, query: dict[str, str], content_type: str, auth: str) -> ListenRequest:
    base: dict[str, Any] = {
        "query": query, "content_type": content_type, "authorization": auth, "body_bytes": len(body)
    }
    if query.get("encoding"):
        # raw audio: Deepgram needs encoding + sample_rate (+ channels) in the query
        if query["encoding"] != "linear16" or "sample_rate" not in query:
            return ListenRequest(**base, sample_rate=None, channels=None, sample_width=None, duration=None, rms=0.0,
                                 problem="raw audio needs encoding=linear16 and sample_rate")
        rate = int(query["sample_rate"])
        channels = int(query.get("channels", "1"))
        frames = len(body) // (2 * channels)
        return ListenRequest(**base, sample_rate=rate, channels=channels, sample_width=2, duration=frames / rate,
                             rms=rms_s16(body))
    try:
        with wave.open(io.BytesIO(body)) as wav:
            rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
            pcm = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as error:
        return ListenRequest(**base, sample_rate=None, channels=None, sample_width=None, duration=None, rms=0.0,
                             problem=f"could not read the audio as WAV: {error}")
    frames = len(pcm) // (width * channels)
    return ListenRequest(**base, sample_rate=rate, channels=channels, sample_width=width, duration=frames / rate,
                         rms=rms_s16(pcm) if width == 2 else 0.0)


def _prerecorded_response(transcript: str, duration: float, query: dict[str, str]) -> dict[str, Any]:
    words = transcript.split()
    step = duration / max(1, len(words))
    word_items = [
        {
            "word": w.strip(",.?!").lower(),
            "start": round(i * step, 3),
            "end": round((i + 1) * step, 3),
            "confidence": 0.98,
            "punctuated_word": w,
        }
        for i, w in enumerate(words)
    ]
    return {
        "metadata": {
            "request_id": str(uuid.uuid4()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "duration": duration,
            "channels": 1,
            "models": [query.get("model", "nova-3")],
        },
        "results": {
            "channels": [
                {"alternatives": [{"transcript": transcript, "confidence": 0.98 if words else 0.0, "words": word_items}]}
            ]
        },
    }
