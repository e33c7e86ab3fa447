"""A scripted OpenAI speech endpoint on 127.0.0.1: ``POST /v1/audio/speech``.

Answers with real audio: the requested ``input`` spoken by espeak-ng (a tone when it is missing), encoded in
the requested ``response_format`` (mp3, wav, pcm, aac, opus, flac) with the matching Content-Type, the way an
OpenAI-compatible server that ignores ``stream_format`` does (the livekit openai plugin handles that shape).
Every request is recorded (``requests``) so a test can check what text was spoken, with which model/voice.

Faults for tests: ``fail_status`` answers with that HTTP status and an OpenAI error body; ``delay`` sleeps
before answering (timeouts, and the fixed per-stage latency of the benchmarks).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from scripted.audio_tools import MIME_TYPES, encode, speech_pcm
from scripted.openai_server import ThreadedServer, _ThreadRunner

OPENAI_TTS_RATE = 24000


@dataclass
class ScriptedSpeechServer(ThreadedServer):
    """``start()``/``stop()`` or a context manager; ``base_url`` ends with ``/v1``."""

    api_key: str = "tts-test-key"
    fail_status: int | None = None
    delay: float = 0.0
    request_ids: bool = True
    """False: answer without ``x-request-id``, like most OpenAI-compatible servers but OpenAI's own."""
    words_per_minute: int | None = None
    """How fast the voice speaks (espeak-ng's own rate by default)."""
    host: str = "127.0.0.1"
    requests: list[dict[str, Any]] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)
    """``time.time()`` of each successful answer, when its audio is ready to send: the benchmark's TTS first byte."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._runner = _ThreadRunner(self._make_app, host=self.host, port=0)

    @property
    def base_url(self) -> str:
        return f"{self._runner.url}/v1"

    def speech_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests)

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/audio/speech", self._speech)
        return app

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"error": {"message": message, "type": "scripted_error", "code": status}},
                                 status=status)

    async def _speech(self, http: web.Request) -> web.Response:
        try:
            body = await http.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._error(400, "invalid JSON")
        if not isinstance(body, dict):
            return self._error(400, "body must be an object")
        with self._lock:
            self.requests.append({**body, "_authorization": http.headers.get("Authorization", "")})
        if self.delay:
            await asyncio.sleep(self.delay)
        if http.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Incorrect API key provided")
        if self.fail_status is not None:
            return self._error(self.fail_status, "scripted failure")
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            return self._error(400, "'input' must be a non-empty string")
        fmt = str(body.get("response_format") or "mp3")
        if fmt not in MIME_TYPES:
            return self._error(400, f"unsupported response_format {fmt!r}")
        pcm = await asyncio.to_thread(speech_pcm, text, rate=OPENAI_TTS_RATE,
                                      words_per_minute=self.words_per_minute)
        audio = await asyncio.to_thread(encode, pcm, rate=OPENAI_TTS_RATE, fmt=fmt)
        with self._lock:
            self.answered_at.append(time.time())
        # OpenAI names every response; livekit's TTS warns on each synthesis without it
        headers = {"Content-Type": MIME_TYPES[fmt]}
        if self.request_ids:
            headers["x-request-id"] = f"req_{uuid.uuid4().hex}"
        return web.Response(body=audio, headers=headers)
