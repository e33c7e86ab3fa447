"""A scripted Deepgram on 127.0.0.1: ``POST /v1/listen`` (prerecorded) and ``POST /v1/speak`` (TTS, REST).

No recognizer: the test scripts the transcript. What is real is the audio check. Every ``/v1/listen``
request is parsed the way Deepgram does (the WAV header when the body is a container; ``encoding`` and
``sample_rate`` query parameters when it is raw ``linear16``), and recorded as a ``ListenRequest`` with the
sample rate, channels, sample width and duration it carried and how loud it was, so a test can assert that
the service sent the *decoded* recording (16 kHz mono, as long as the source) and not the uploaded bytes.
Silence (RMS below ``silence_rms``) gets an empty transcript, as from the real service.

Faults for tests: ``fail_status``/``speak_fail_status`` answer listen/speak requests with that HTTP status
and a Deepgram error body; ``delay``/``speak_delay`` sleep before answering (timeouts, and the fixed
per-stage latency of the benchmarks).
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
import uuid
import wave
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from scripted.audio_tools import rms_s16, speech_pcm
from scripted.openai_server import ThreadedServer, _ThreadRunner

DEFAULT_TRANSCRIPT = "Hello, I would like to check the status of my appointment for tomorrow morning."


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
    silence_rms: float = 60.0
    host: str = "127.0.0.1"
    listens: list[ListenRequest] = field(default_factory=list)
    speaks: list[SpeakRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
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

    # --- HTTP ------------------------------------------------------------------------------------
    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/listen", self._listen)
        app.router.add_post("/v1/speak", self._speak)
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
        if auth != f"Token {self.api_key}":
            return self._error(401, "Invalid credentials.")
        if self.speak_fail_status is not None:
            return self._error(self.speak_fail_status, "scripted failure")
        if query.get("encoding", "linear16") != "linear16":
            return self._error(400, "this scripted server speaks linear16 only")
        rate = int(query.get("sample_rate", "24000"))
        pcm = await asyncio.to_thread(speech_pcm, text, rate=rate)
        return web.Response(body=pcm, content_type="application/octet-stream")


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
