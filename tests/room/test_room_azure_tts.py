"""Azure text-to-speech in a real room: ``gocare worker start`` with ``GOCARE_TTS_PROVIDER=azure`` (the seed
deployment's TTS) speaks the greeting the app hears, and the audio comes from the scripted Azure endpoint.
A worker of its own, under its own agent name, so the shared worker's OpenAI speech cannot answer instead."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from calls import GREETING_JOHN
from conftest import AGENT_WORDS_PER_MINUTE, Providers, RunningWorker, TokenService, start_token_service, start_worker
from harness.app_client import AppClient
from scripted.azure_tts_server import ScriptedAzureTTSServer

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(180)]
pytest.importorskip("livekit.plugins.azure")

AZURE_AGENT = "multi-assistant-azure"


@pytest.fixture(scope="module")
def azure() -> Iterator[ScriptedAzureTTSServer]:
    with ScriptedAzureTTSServer(words_per_minute=AGENT_WORDS_PER_MINUTE) as server:
        yield server


@pytest.fixture(scope="module")
def azure_worker(livekit, providers: Providers, users_db: str, room_logs: Path,
                 azure: ScriptedAzureTTSServer) -> Iterator[RunningWorker]:
    running = start_worker(name="worker-azure", livekit=livekit, providers=providers, users_db=users_db,
                           logs=room_logs, extra={
                               "GOCARE_AGENT_NAME": AZURE_AGENT, "GOCARE_TTS_PROVIDER": "azure",
                               "AZURE_SPEECH_KEY": azure.api_key, "AZURE_SPEECH_REGION": azure.region,
                               "GOCARE_AZURE_SPEECH_ENDPOINT": azure.endpoint,
                           })
    yield running
    running.process.stop()


@pytest.fixture(scope="module")
def azure_token_service(livekit, providers: Providers, room_logs: Path) -> Iterator[TokenService]:
    service = start_token_service(name="token-service-azure", livekit=livekit, logs=room_logs, providers=providers,
                                  extra={"GOCARE_AGENT_NAME": AZURE_AGENT})
    yield service
    service.process.stop()


async def test_the_agent_greets_with_azures_voice(azure_worker, azure_token_service, scripted, azure, room_name):
    azure.reset()
    body = {"room_name": room_name, "participant_identity": "user-42", "participant_name": "John Doe",
            "room_config": {}}
    started = time.monotonic()
    app = await AppClient.join(azure_token_service.url, body=body)
    try:
        said = await app.wait_agent_says(r"^Welcome John", timeout=40)
        assert said.text.strip() == GREETING_JOHN
        # the app heard speech, and the only TTS asked for the greeting was Azure
        await app.wait_agent_speech(since=started, seconds=1.0, timeout=30)
        assert GREETING_JOHN in azure.spoken()
        request = next(r for r in azure.synth_requests() if r.text == GREETING_JOHN)
        assert (request.status, request.voice, request.key) == (200, "en-US-JennyNeural", azure.api_key)
        assert scripted.speech.speech_requests() == []
    finally:
        await app.leave()
