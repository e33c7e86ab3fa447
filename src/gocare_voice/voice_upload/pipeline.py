"""Recorded message -> transcript -> reply -> spoken reply, with the same providers as the live worker.

Stages run one after the other (each needs the previous one's output), each under ``settings.stage_timeout``.
A failing stage stops the pipeline but never throws away what came before: the result carries the
transcript when the LLM is down, transcript and reply when TTS (or the reply's MP3 encode, part of the
"tts" stage) fails, and names the stage and the reason,
so the app can still show the user what was understood.

Providers come from ``gocare_voice.providers`` (``build_stt``/``build_llm``/``build_tts``), so an upload is
answered by exactly the models, keys, base URLs and fallbacks the worker uses. They are built once per event
loop and reused: their HTTP clients (httpx for OpenAI) keep connections to the providers open between
uploads, and they are bound to the loop they were first used on.

Telling the room (``notify_room``) runs concurrently with TTS once the transcript and reply exist; its own
bound keeps it from adding more than ``settings.notify_timeout`` to an upload.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from gocare_voice.audio import SPEECH_FORMAT, AudioError, AudioWorkers, DecodedAudio, shared_audio_workers
from gocare_voice.conversation.identity import first_name as first_name_of
from gocare_voice.conversation.prompts import upload_instructions
from gocare_voice.settings import Settings
from gocare_voice.voice_upload.notify import notify_room

if TYPE_CHECKING:
    from livekit.agents import APIConnectOptions

log = logging.getLogger("gocare.voice_upload")

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

STAGE_LABELS = {
    "stt": "speech-to-text service",
    "llm": "language model",
    "tts": "text-to-speech service",
}

UPLOAD_NOTE = (
    " The user sent this as a recorded voice message instead of a live call; your answer will be played "
    "back to them as audio, so keep it to a few spoken sentences."
)


@dataclass(frozen=True, slots=True, kw_only=True)
class StageFailure:
    """Why the pipeline stopped: ``stage`` is stt/llm/tts; ``status`` 422 (no speech), 502 (the provider
    failed), 503 (not configured) or 504 (timed out)."""

    stage: str
    status: int
    error: str
    detail: str


@dataclass(slots=True, kw_only=True)
class UploadResult:
    transcript: str | None = None
    reply: str | None = None
    speech_audio: bytes | None = None
    speech_format: str | None = None
    agent_notified: bool = False
    room: str | None = None
    failure: StageFailure | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failure is None


class _StageError(Exception):
    def __init__(self, failure: StageFailure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


@dataclass(slots=True)
class _Providers:
    """One event loop's provider instances, or the configuration problem that prevents building one."""

    http_session: Any = None
    stt: Any = None
    llm: Any = None
    tts: Any = None
    problems: dict[str, list[str]] = field(default_factory=dict)


def _cause(error: BaseException, kind: type[E]) -> E | None:
    """``error`` or the first exception of type ``kind`` in its ``__cause__``/``__context__`` chain."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class VoiceUploadPipeline:
    """Built once per app (``build_voice_router``); ``process`` is safe to call concurrently."""

    def __init__(self, *, settings: Settings, audio: AudioWorkers | None = None, max_retry: int = 1) -> None:
        from gocare_voice.providers import missing_stt_settings

        self._settings = settings
        self.audio = audio or shared_audio_workers()
        # the transcript is the first stage: without its provider every upload is answered "not configured"
        # at once, and the service needs neither livekit-agents nor its plugins (a token service started
        # with no configuration at all takes half the CPU to come up: 1.2 instead of 2.4 s, measured)
        self._stt_missing = missing_stt_settings(settings)
        self._conn_options: APIConnectOptions | None = None
        self._llm_options: APIConnectOptions | None = None
        if not self._stt_missing:
            self._load_livekit(max_retry)
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Providers] = (
            weakref.WeakKeyDictionary()
        )

    def _load_livekit(self, max_retry: int) -> None:
        from livekit.agents import APIConnectOptions

        from gocare_voice.logging_setup import quiet_livekit_noise
        from gocare_voice.providers import import_plugins

        # livekit plugins register themselves on import and refuse to do so off the main thread; the app is
        # built on the main thread, requests may run elsewhere (TestClient's portal), so import them now
        import_plugins(self._settings)
        quiet_livekit_noise()  # the app may run under any log configuration (uvicorn, tests, a host app)
        settings = self._settings
        self._conn_options = APIConnectOptions(
            max_retry=max_retry, retry_interval=0.5, timeout=min(10.0, settings.stage_timeout)
        )
        # the language model's attempt is bounded by GOCARE_LLM_TIMEOUT, as in the worker (10 s by default)
        self._llm_options = APIConnectOptions(
            max_retry=max_retry, retry_interval=0.5, timeout=min(settings.llm_timeout, settings.stage_timeout)
        )

    # --- providers -------------------------------------------------------------------------------
    def _providers(self) -> _Providers:
        loop = asyncio.get_running_loop()
        providers = self._by_loop.get(loop)
        if providers is None:
            providers = self._build()
            self._by_loop[loop] = providers
        return providers

    def _build(self) -> _Providers:
        from gocare_voice.providers import ProviderConfigError, build_llm, build_stt, build_tts

        if self._stt_missing:  # nothing past the transcript can run: build nothing, import no plugin
            return _Providers(problems={"stt": list(self._stt_missing)})

        import aiohttp

        # the Deepgram plugins would take their aiohttp session from livekit's job context, which a web
        # process does not have: give them one that lives as long as these providers
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit_per_host=50, keepalive_timeout=120))
        providers = _Providers(http_session=session)
        builders: dict[str, Callable[[], Any]] = {
            "stt": lambda: build_stt(self._settings, http_session=session),
            "llm": lambda: build_llm(self._settings),
            "tts": lambda: build_tts(self._settings, http_session=session),
        }
        for stage, build in builders.items():
            try:
                setattr(providers, stage, build())
            except ProviderConfigError as error:
                providers.problems[stage] = list(error.problems)
        return providers

    async def aclose(self) -> None:
        """Close the provider clients of the current loop (the app's shutdown)."""
        providers = self._by_loop.pop(asyncio.get_running_loop(), None)
        if providers is None:
            return
        for instance in (providers.stt, providers.llm, providers.tts):
            close = getattr(instance, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception as error:  # noqa: BLE001 - shutdown continues
                    log.debug("closing %s failed: %s", type(instance).__name__, error)
        if providers.http_session is not None:
            await providers.http_session.close()

    # --- the pipeline ----------------------------------------------------------------------------
    async def process(
        self, *, audio: DecodedAudio, room: str | None, caller_name: str | None, authenticated: bool = False
    ) -> UploadResult:
        result = UploadResult(room=room)
        providers = self._providers()
        try:
            result.transcript = await self._stage(
                "stt", providers, result, lambda stt: self._transcribe(stt, audio)
            )
            if not result.transcript:
                raise _StageError(StageFailure(
                    stage="stt", status=422, error="no_speech",
                    detail="No speech was recognised in the recording. Please speak clearly and try again.",
                ))
            result.reply = await self._stage(
                "llm", providers, result, lambda llm: self._reply(llm, result.transcript or "", caller_name, authenticated)
            )
            notify = self._start_notify(result)
            try:
                # synthesis and the MP3 encode are one stage: a failure in either is a tts failure that
                # keeps the transcript and the reply, never a 500
                result.speech_audio = await self._stage(
                    "tts", providers, result, lambda tts: self._speak(tts, result.reply or "", result)
                )
                result.speech_format = SPEECH_FORMAT
            finally:
                if notify is not None:
                    result.agent_notified = await notify
        except _StageError as error:
            result.failure = error.failure
            if result.transcript and result.reply is None and room and not result.agent_notified:
                # the agent still learns what the user said when the LLM failed
                notify = self._start_notify(result)
                if notify is not None:
                    result.agent_notified = await notify
        return result

    def _start_notify(self, result: UploadResult) -> asyncio.Task[bool] | None:
        if not result.room or not result.transcript:
            return None
        return asyncio.create_task(
            notify_room(settings=self._settings, room=result.room, transcript=result.transcript, reply=result.reply)
        )

    async def _stage(
        self, stage: str, providers: _Providers, result: UploadResult, run: Callable[[Any], Awaitable[T]]
    ) -> T:
        label = STAGE_LABELS[stage]
        if stage in providers.problems:
            # the setting names are for the operator (logged); the detail is a sentence for the app's user
            log.error("voice upload: the %s stage is not configured: %s", stage, "; ".join(providers.problems[stage]))
            raise _StageError(StageFailure(
                stage=stage, status=503, error=f"{stage}_not_configured",
                detail=f"Voice messages are not available right now: the {label} is not set up on the server.",
            ))
        from livekit.agents import APIConnectionError, APIError, APIStatusError, APITimeoutError

        instance = getattr(providers, stage)
        timeout = self._settings.stage_timeout
        started = time.perf_counter()
        try:
            return await asyncio.wait_for(run(instance), timeout)
        except (asyncio.TimeoutError, APITimeoutError):
            failure = self._timeout_failure(stage, time.perf_counter() - started)
        except APIError as error:
            # after its retries a plugin raises APIConnectionError *from* the last error: look inside
            status_error = _cause(error, APIStatusError)
            if status_error is not None:
                failure = StageFailure(
                    stage=stage, status=502, error=f"{stage}_failed",
                    detail=f"The {label} answered with an error (HTTP {status_error.status_code}).",
                )
            elif _cause(error, APITimeoutError) is not None:
                failure = self._timeout_failure(stage, time.perf_counter() - started)
            elif isinstance(error, APIConnectionError):
                failure = StageFailure(
                    stage=stage, status=502, error=f"{stage}_failed",
                    detail=f"The {label} could not be reached or gave no usable answer.",
                )
            else:
                failure = StageFailure(
                    stage=stage, status=502, error=f"{stage}_failed",
                    # not error.message: a provider's own words may echo the request, the text or the key
                    detail=f"The {label} failed ({type(error).__name__}).",
                )
        except AudioError as error:  # the reply's encode (tts stage): our own audio, the message says so
            failure = StageFailure(stage=stage, status=502, error=f"{stage}_failed", detail=error.message[:300])
        except Exception as error:  # a plugin error we do not know: still keep what we have
            log.error("voice upload: unexpected %s in the %s stage", type(error).__name__, stage, exc_info=error)
            failure = StageFailure(
                stage=stage, status=502, error=f"{stage}_failed",
                detail=f"The {label} failed unexpectedly ({type(error).__name__}).",
            )
        finally:
            result.timings[stage] = time.perf_counter() - started
        log.warning("voice upload: %s stage failed (%s): %s", stage, failure.error, failure.detail)
        raise _StageError(failure)

    def _timeout_failure(self, stage: str, waited: float) -> StageFailure:
        """The time really waited, not the setting: the plugin's own connection timeout (at most 10 s per
        attempt, one retry) may give up long before GOCARE_STAGE_TIMEOUT (a 600 s setting said "600 s"
        after ~22 s)."""
        return StageFailure(
            stage=stage, status=504, error=f"{stage}_timeout",
            detail=f"The {STAGE_LABELS[stage]} did not answer (gave up after {waited:.1f} s).",
        )

    async def _transcribe(self, stt: Any, audio: DecodedAudio) -> str:
        from livekit import rtc

        frame = rtc.AudioFrame(
            data=audio.pcm, sample_rate=audio.sample_rate, num_channels=1, samples_per_channel=audio.samples
        )
        event = await stt.recognize(frame, conn_options=self._conn_options)
        texts = [alt.text.strip() for alt in event.alternatives[:1] if alt.text]
        return " ".join(t for t in texts if t)

    async def _reply(self, llm: Any, transcript: str, caller_name: str | None, authenticated: bool) -> str:
        from livekit.agents import APIError
        from livekit.agents import llm as lk_llm

        chat_ctx = lk_llm.ChatContext.empty()
        chat_ctx.add_message(
            role="system",
            content=upload_instructions(first_name=first_name_of(caller_name), authenticated=authenticated)
            + UPLOAD_NOTE,
        )
        chat_ctx.add_message(role="user", content=transcript)
        parts: list[str] = []
        async with llm.chat(chat_ctx=chat_ctx, conn_options=self._llm_options) as stream:
            async for chunk in stream:
                if chunk.delta and chunk.delta.content:
                    parts.append(chunk.delta.content)
        reply = "".join(parts).strip()
        if not reply:
            raise APIError("the language model returned an empty reply", retryable=False)
        return reply

    async def _speak(self, tts: Any, text: str, result: UploadResult) -> bytes:
        frame = await self._synthesize(tts, text)
        started = time.perf_counter()
        try:
            return await self.audio.encode(
                bytes(frame.data), sample_rate=frame.sample_rate, num_channels=frame.num_channels
            )
        finally:
            result.timings["encode"] = time.perf_counter() - started

    async def _synthesize(self, tts: Any, text: str) -> Any:
        async with tts.synthesize(text, conn_options=self._conn_options) as stream:
            return await stream.collect()
