"""``GOCARE_TTS_PROVIDER=azure`` through ``POST /voice/upload``: real recordings, the real Deepgram, OpenAI and
Azure plugins talking HTTP to scripted servers on 127.0.0.1 (Azure's through ``GOCARE_AZURE_SPEECH_ENDPOINT``).
The seed deployment ran on Azure speech; these prove the reply is spoken by Azure, in full, whatever the LLM
wrote."""

from __future__ import annotations

import base64
import io
import socket
from typing import Any

import av
import pytest
from fastapi.testclient import TestClient

from gocare_voice.settings import Settings
from gocare_voice.token_service.app import create_app
from scripted.audio_tools import speech_pcm
from scripted.openai_server import Reply, Rule

pytest.importorskip("livekit.plugins.azure")

REPLY = "Your appointment is tomorrow at nine in the morning."


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def azure_settings(deepgram_server, openai_server, azure_tts_server):
    """Deepgram hears, the LLM answers, Azure speaks; LiveKit is a closed port (no room to notify)."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "deepgram_api_key": deepgram_server.api_key, "deepgram_base_url": deepgram_server.url,
            "llm_api_key": "llm-test-key", "llm_base_url": openai_server.base_url,
            "tts_provider": "azure", "azure_speech_key": azure_tts_server.api_key,
            "azure_speech_region": azure_tts_server.region, "azure_speech_endpoint": azure_tts_server.endpoint,
            "rate_limit": "off", "livekit_url": f"ws://127.0.0.1:{_closed_port()}",
            "notify_timeout": 1.0, "stage_timeout": 10.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


def _upload(settings: Settings, data: bytes) -> dict[str, Any]:
    with TestClient(create_app(settings)) as client:
        response = client.post("/voice/upload", files={"file": ("message.mp3", data, "audio/mpeg")})
    assert response.status_code == 200, response.text
    return response.json()


def _mp3_seconds(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        assert container.format.name == "mp3"
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate


def test_the_reply_is_spoken_by_azure(azure_settings, recordings, deepgram_server, openai_server,
                                      azure_tts_server) -> None:
    openai_server.script(Rule(user="appointment", reply=Reply(text=REPLY)))
    body = _upload(azure_settings(), recordings.bytes("mp3"))
    assert (body["ok"], body["transcript"], body["reply"]) == (True, deepgram_server.transcript, REPLY)

    (request,) = azure_tts_server.synth_requests()
    assert (request.status, request.text) == (200, REPLY)
    # GOCARE_TTS_VOICE is an OpenAI voice by default ("alloy"): Azure gets its default voice instead
    assert (request.voice, request.language) == ("en-US-JennyNeural", "en-US")
    assert request.output_format == "raw-24khz-16bit-mono-pcm" and request.key == azure_tts_server.api_key
    assert deepgram_server.speaks == []  # no fallback was needed

    # the MP3 the app gets is Azure's audio: as long as espeak-ng's rendering of the reply that it sent
    azure_seconds = len(speech_pcm(REPLY, rate=24000)) / 2 / 24000
    assert body["speech_format"] == "mp3"
    assert _mp3_seconds(base64.b64decode(body["speech_audio"])) == pytest.approx(azure_seconds, abs=0.15)


def test_xml_special_characters_survive_to_azure(azure_settings, recordings, openai_server,
                                                 azure_tts_server) -> None:
    # an LLM reply is free text: unescaped in SSML, "&" or "<" makes Azure answer 400 and the reply silent
    reply = "Tom & Jerry <3 say: take 2 < 3 tablets & rest."
    openai_server.script(Rule(user="appointment", reply=Reply(text=reply)))
    body = _upload(azure_settings(), recordings.bytes("mp3"))
    assert body["reply"] == reply
    assert azure_tts_server.spoken() == [reply]
    assert [r.status for r in azure_tts_server.synth_requests()] == [200]
    assert _mp3_seconds(base64.b64decode(body["speech_audio"])) > 1.0


def test_azure_down_falls_back_to_the_next_provider(azure_settings, recordings, openai_server, azure_tts_server,
                                                    speech_server) -> None:
    openai_server.script(Rule(user="appointment", reply=Reply(text=REPLY)))
    azure_tts_server.fail_status = 500
    settings = azure_settings(tts_api_key=speech_server.api_key, tts_base_url=speech_server.base_url)
    body = _upload(settings, recordings.bytes("mp3"))
    assert azure_tts_server.synth_requests() and azure_tts_server.spoken() == []  # tried first, failed
    assert [s["input"] for s in speech_server.speech_requests()] == [REPLY]
    assert _mp3_seconds(base64.b64decode(body["speech_audio"])) > 1.0


def test_a_wrong_azure_key_is_not_spoken_with(azure_settings, recordings, openai_server, azure_tts_server,
                                              deepgram_server) -> None:
    openai_server.script(Rule(user="appointment", reply=Reply(text=REPLY)))
    body = _upload(azure_settings(azure_speech_key="a-wrong-key"), recordings.bytes("mp3"))
    # refused, then refused again to livekit's FallbackAdapter probing whether Azure has recovered
    assert {r.status for r in azure_tts_server.synth_requests()} == {401}
    # the LLM's own URL has no speech endpoint; Deepgram, configured for STT, speaks last
    assert [s.text for s in deepgram_server.speaks] == [REPLY]
    assert body["speech_audio"]
