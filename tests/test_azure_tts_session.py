"""Azure text-to-speech in a worker session: the worker's own provider code (``session_providers``,
``build_session``) builds a real ``AgentSession`` whose TTS is livekit's azure plugin, pointed at the scripted
Azure endpoint; the greeting is spoken through it. A recording audio output stands in for the room's track."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from livekit.agents.utils import http_context

from audio_sink import RecordingAudioOutput
from gocare_voice.conversation.agents import build_entry_agent
from gocare_voice.conversation.directory import UserDirectory
from gocare_voice.conversation.identity import Identity, greeting_text
from gocare_voice.providers import build_vad, import_plugins
from gocare_voice.conversation.state import SessionState
from gocare_voice.settings import Settings
from gocare_voice.worker.entrypoint import build_session, session_providers
from scripted.audio_tools import rms_s16, speech_pcm

pytest.importorskip("livekit.plugins.azure")


async def test_the_greeting_is_spoken_by_azure(tmp_path: Path, deepgram_server, openai_server,
                                               azure_tts_server) -> None:
    settings = Settings(
        deepgram_api_key=deepgram_server.api_key, deepgram_base_url=deepgram_server.url,
        llm_api_key="llm-test-key", llm_base_url=openai_server.base_url,
        tts_provider="azure", tts_voice="en-IN-NeerjaNeural", azure_speech_key=azure_tts_server.api_key,
        azure_speech_region=azure_tts_server.region, azure_speech_endpoint=azure_tts_server.endpoint,
        database_url=f"sqlite:///{tmp_path / 'users.db'}",
    )
    state = SessionState.from_identity(Identity(user_id="user-1", user_name="Priya Sharma"))
    import_plugins(settings)  # as the job does: livekit registers plugins on the main thread only
    parts = await asyncio.to_thread(session_providers, settings)  # as the job builds them: in a thread
    session = build_session(settings, vad=build_vad(), state=state, parts=parts)
    sink = RecordingAudioOutput()
    session.output.audio = sink
    # a worker job opens livekit's shared HTTP session; the plugins built without one take it from there
    async with http_context.open():
        with UserDirectory.from_settings(settings) as directory:
            try:
                await session.start(build_entry_agent(state=state, settings=settings, directory=directory))
                await asyncio.wait_for(sink.finished.wait(), 20)
            finally:
                await session.aclose()

    greeting = greeting_text(state.identity)
    assert greeting.startswith("Welcome Priya!")
    (request,) = azure_tts_server.synth_requests()
    assert (request.status, request.text, request.voice) == (200, greeting, "en-IN-NeerjaNeural")
    assert request.output_format == "raw-24khz-16bit-mono-pcm"
    # what the session played is Azure's audio for the greeting: espeak-ng's length, speech not silence
    assert sink.seconds() == pytest.approx(len(speech_pcm(greeting, rate=24000)) / 2 / 24000, abs=0.15)
    assert rms_s16(sink.pcm()) > 500
    assert openai_server.chat_requests() == []  # the greeting is said, not generated
