"""A scripted Azure text-to-speech REST endpoint on 127.0.0.1: ``POST /cognitiveservices/v1``.

Speaks the API the way livekit's azure plugin calls it: the key in ``Ocp-Apim-Subscription-Key`` (or a
token in ``Authorization: Bearer``), ``Content-Type: application/ssml+xml``, the output format in
``X-Microsoft-OutputFormat`` and an SSML document as the body. Like Azure it answers 401 for a wrong key,
415 for another content type, 400 for an unknown output format or SSML that does not parse (the stdlib XML
parser: an unescaped ``&`` or ``<`` in the text is exactly what makes Azure answer 400), and otherwise the
text of the ``<voice>`` element spoken by espeak-ng, in the requested format: ``raw-*-16bit-mono-pcm``
(what the plugin asks for, by sample rate), ``riff-*`` (WAV) or ``audio-*-mono-mp3``.

Every request is recorded (``requests``): the parsed text, voice and language, the output format, the key
sent, and the status answered, so a test checks what was spoken and that a refused request was refused.

Faults for tests: ``fail_status`` answers with that status; ``delay`` sleeps before answering.
"""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from aiohttp import web

from scripted.audio_tools import encode, speech_pcm
from scripted.openai_server import ThreadedServer, _ThreadRunner

SSML_NS = "{http://www.w3.org/2001/10/synthesis}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
# "raw-24khz-16bit-mono-pcm", "riff-22050hz-16bit-mono-pcm", "audio-24khz-48kbitrate-mono-mp3"
_FORMAT = re.compile(
    r"^(?P<kind>raw|riff|audio)-(?P<rate>8khz|16khz|22050hz|24khz|44100hz|48khz)-"
    r"(?:16bit-mono-pcm|\d+kbitrate-mono-mp3)$"
)
_RATES = {"8khz": 8000, "16khz": 16000, "22050hz": 22050, "24khz": 24000, "44100hz": 44100, "48khz": 48000}
CHUNK_BYTES = 4800  # Azure sends the audio chunked; the plugin reads it chunk by chunk


@dataclass(frozen=True)
class AzureFormat:
    container: str  # "pcm" | "wav" | "mp3" (the names of audio_tools.encode)
    rate: int
    content_type: str

    @classmethod
    def parse(cls, name: str) -> AzureFormat | None:
        name = name.strip().lower()
        match = _FORMAT.match(name)
        if match is None:
            return None
        kind, rate = match["kind"], _RATES[match["rate"]]
        if kind == "audio":
            return cls("mp3", rate, "audio/mpeg") if name.endswith("mp3") else None
        if not name.endswith("pcm"):
            return None
        return cls("pcm", rate, "audio/pcm") if kind == "raw" else cls("wav", rate, "audio/x-wav")


@dataclass
class AzureRequest:
    """One request as the server saw it; ``text``/``voice``/``language`` are None when the SSML did not parse."""

    status: int
    output_format: str
    key: str
    authorization: str
    content_type: str
    ssml: str
    text: str | None = None
    voice: str | None = None
    language: str | None = None


def parse_ssml(ssml: str) -> tuple[str, str | None, str | None]:
    """(spoken text, voice name, xml:lang) of an SSML document; ``ET.ParseError`` or ``ValueError`` when it is
    not one Azure would speak."""
    root = ET.fromstring(ssml)
    if root.tag != f"{SSML_NS}speak":
        raise ValueError(f"root element is {root.tag}, not speak")
    voice = root.find(f"{SSML_NS}voice")
    if voice is None:
        raise ValueError("no voice element")
    # the text of every child too: prosody and mstts:express-as wrap the words when the plugin uses them
    return "".join(voice.itertext()).strip(), voice.get("name"), root.get(XML_LANG)


@dataclass
class ScriptedAzureTTSServer(ThreadedServer):
    """``start()``/``stop()`` or a context manager; ``endpoint`` is the full URL for ``speech_endpoint``."""

    api_key: str = "azure-test-key"
    region: str = "westeurope"
    fail_status: int | None = None
    delay: float = 0.0
    words_per_minute: int | None = None
    """How fast the voice speaks (espeak-ng's own rate by default)."""
    host: str = "127.0.0.1"
    requests: list[AzureRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._runner = _ThreadRunner(self._make_app, host=self.host, port=0)

    @property
    def endpoint(self) -> str:
        return f"{self._runner.url}/cognitiveservices/v1"

    def synth_requests(self) -> list[AzureRequest]:
        with self._lock:
            return list(self.requests)

    def spoken(self) -> list[str | None]:
        """The texts of the requests that were answered with audio."""
        return [r.text for r in self.synth_requests() if r.status == 200]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
        self.fail_status = None
        self.delay = 0.0

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/cognitiveservices/v1", self._synthesize)
        return app

    def _record(self, request: AzureRequest) -> None:
        with self._lock:
            self.requests.append(request)

    async def _synthesize(self, http: web.Request) -> web.StreamResponse:
        body = await http.read()
        request = AzureRequest(
            status=200, output_format=http.headers.get("X-Microsoft-OutputFormat", ""),
            key=http.headers.get("Ocp-Apim-Subscription-Key", ""),
            authorization=http.headers.get("Authorization", ""),
            content_type=http.headers.get("Content-Type", ""), ssml=body.decode("utf-8", "replace"),
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        status, answer = self._check(request)
        request.status = status
        self._record(request)
        if answer is not None:
            return answer
        fmt = AzureFormat.parse(request.output_format)
        assert fmt is not None  # _check refused the others
        audio = b""
        if request.text:  # Azure answers an empty document with no audio, not with an error
            pcm = await asyncio.to_thread(speech_pcm, request.text, rate=fmt.rate,
                                        words_per_minute=self.words_per_minute)
            audio = await asyncio.to_thread(encode, pcm, rate=fmt.rate, fmt=fmt.container)
        response = web.StreamResponse(headers={"Content-Type": fmt.content_type, "X-RequestId": uuid.uuid4().hex})
        await response.prepare(http)
        for start in range(0, len(audio), CHUNK_BYTES):
            await response.write(audio[start : start + CHUNK_BYTES])
        await response.write_eof()
        return response

    def _check(self, request: AzureRequest) -> tuple[int, web.Response | None]:
        """(status, error response) for what Azure refuses; (200, None) when the request is to be spoken.
        Fills in the parsed text, voice and language."""

        def refuse(status: int, reason: str) -> tuple[int, web.Response]:
            # Azure's TTS errors have an empty body; the reason is for whoever reads a failing test's log
            return status, web.Response(status=status, reason=reason)

        if request.key != self.api_key and request.authorization != f"Bearer {self.api_key}":
            return refuse(401, "Unauthorized")
        if request.content_type.split(";")[0].strip().lower() != "application/ssml+xml":
            return refuse(415, "Unsupported Media Type")
        if AzureFormat.parse(request.output_format) is None:
            return refuse(400, f"Unsupported output format {request.output_format!r}")
        try:
            request.text, request.voice, request.language = parse_ssml(request.ssml)
        except (ET.ParseError, ValueError) as error:
            return refuse(400, f"Invalid SSML: {error}"[:200].replace("\n", " "))
        if not request.voice:
            return refuse(400, "Voice name is missing")
        if self.fail_status is not None:
            return refuse(self.fail_status, "Scripted failure")
        return 200, None
