"""Shared fixtures. Keep each one small; the scripted servers live in tests/scripted/."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from scripted.openai_server import ScriptedOpenAIServer

# the room harness: the `livekit` marker, the private network namespace, the room-test summary
pytest_plugins = ["harness.plugin"]


@pytest.fixture
def openai_server() -> Iterator[ScriptedOpenAIServer]:
    """A fresh scripted OpenAI-compatible server per test (rules and recorded requests start empty)."""
    with ScriptedOpenAIServer() as server:
        yield server


@pytest.fixture
def openai_base_url(openai_server: ScriptedOpenAIServer) -> str:
    """Its base URL, ``http://127.0.0.1:<port>/v1``, for ``openai.LLM(base_url=...)``."""
    return openai_server.base_url


_SETTING_PREFIXES = ("GOCARE_", "LIVEKIT_", "LLM_", "DEEPGRAM_", "GROQ_", "AZURE_SPEECH_", "OPENAI_")
_SETTING_NAMES = ("ALLOWED_ORIGINS", "PORT", "LOG_LEVEL")


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests see only the settings they pass: a developer's shell or .env must not change results."""

    for name in list(os.environ):
        if name.startswith(_SETTING_PREFIXES) or name in _SETTING_NAMES:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))  # no stray .env or gocare-users.db is picked up


# --- voice upload: real recordings and scripted Deepgram / speech servers ------------------------------


@pytest.fixture(scope="session")
def recordings(tmp_path_factory: pytest.TempPathFactory):  # -> scripted.recordings.RecordingSet
    """Speech by espeak-ng, encoded by ffmpeg into every upload format, made once per test session."""
    from scripted.recordings import make_recordings, tools_missing

    reason = tools_missing()
    if reason:
        pytest.skip(f"real recordings need {reason}")
    return make_recordings(tmp_path_factory.mktemp("recordings"))


@pytest.fixture
def deepgram_server() -> Iterator:  # -> scripted.deepgram_server.ScriptedDeepgramServer
    """A fresh scripted Deepgram (``/v1/listen`` prerecorded, ``/v1/speak``) per test."""
    from scripted.deepgram_server import ScriptedDeepgramServer

    with ScriptedDeepgramServer() as server:
        yield server


@pytest.fixture
def speech_server() -> Iterator:  # -> scripted.speech_server.ScriptedSpeechServer
    """A fresh scripted OpenAI ``/v1/audio/speech`` per test."""
    from scripted.speech_server import ScriptedSpeechServer

    with ScriptedSpeechServer() as server:
        yield server


@pytest.fixture
def azure_tts_server() -> Iterator:  # -> scripted.azure_tts_server.ScriptedAzureTTSServer
    """A fresh scripted Azure text-to-speech endpoint (``/cognitiveservices/v1``) per test."""
    from scripted.azure_tts_server import ScriptedAzureTTSServer

    with ScriptedAzureTTSServer() as server:
        yield server


# --- a real PostgreSQL (the directory and the call records on it) -------------------------------------

PG_URL = os.environ.get("GOCARE_TEST_POSTGRES_URL")  # read at collection: an autouse fixture clears GOCARE_*


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """GOCARE_TEST_POSTGRES_URL when given, else a throwaway server started for the module that asks."""
    if PG_URL:
        yield PG_URL
        return
    from scripted import postgres

    reason = postgres.available()
    if reason:
        pytest.skip(f"PostgreSQL: {reason} (or set GOCARE_TEST_POSTGRES_URL)")
    with postgres.throwaway_postgres() as url:
        yield url


# --- a real Redis (rate limit shared across processes, LiveKit multi-node) ---------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:  # -> harness.redis_server.RedisServer
    """One ``redis-server`` on a free loopback port for the test session; tests flush what they use."""

    from harness.redis_server import locate_redis, start_redis

    binary = locate_redis()
    if binary is None:
        if os.environ.get("GOCARE_REQUIRE_REDIS") == "1":
            pytest.fail("GOCARE_REQUIRE_REDIS=1 but redis-server is not installed (apt-get install redis-server)")
        pytest.skip("needs redis-server (apt-get install redis-server)")
    server = start_redis(binary, tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()
