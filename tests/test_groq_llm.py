"""Groq, the seed deployment's LLM, end to end through its OpenAI-compatible path: ``GROQ_API_KEY`` alone, and
``LLM_API_KEY`` + ``GROQ_API_KEY`` with Groq as the fallback. ``GOCARE_GROQ_BASE_URL`` points the real openai
plugin at a scripted OpenAI-compatible server on 127.0.0.1 standing in for ``api.groq.com/openai/v1``; the
requests it records show which account (key) and model each turn used."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gocare_voice.conversation.agents import MainAgent, build_entry_agent
from gocare_voice.conversation.directory import UserDirectory
from gocare_voice.providers import GROQ_DEFAULT_MODEL, import_plugins
from gocare_voice.conversation.state import SessionState
from gocare_voice.settings import Settings
from gocare_voice.token_service.app import create_app
from gocare_voice.worker.entrypoint import build_session, session_providers
from scripted.openai_server import Reply, Rule, ScriptedOpenAIServer, ToolCall

GROQ_KEY = "gsk_test-groq-key"
LLM_KEY = "sk-test-primary-key"
REPLY = "Your appointment is tomorrow at nine in the morning."
NUMBER = "+919876543210"


@pytest.fixture
def groq_server() -> Iterator[ScriptedOpenAIServer]:
    """Groq's OpenAI-compatible API, scripted (a second server: the primary LLM is ``openai_server``)."""
    with ScriptedOpenAIServer() as server:
        yield server


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _upload_settings(deepgram_server, speech_server, groq_server, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "deepgram_api_key": deepgram_server.api_key, "deepgram_base_url": deepgram_server.url,
        "groq_api_key": GROQ_KEY, "groq_base_url": groq_server.base_url,
        # no LLM_API_KEY: the speech API needs its own key
        "tts_api_key": speech_server.api_key, "tts_base_url": speech_server.base_url,
        "rate_limit": "off", "livekit_url": f"ws://127.0.0.1:{_closed_port()}",
        "notify_timeout": 1.0, "stage_timeout": 10.0,
    }
    values.update(overrides)
    return Settings(**values)


def _upload(settings: Settings, data: bytes) -> dict[str, Any]:
    with TestClient(create_app(settings)) as client:
        response = client.post("/voice/upload", files={"file": ("message.mp3", data, "audio/mpeg")})
    assert response.status_code == 200, response.text
    return response.json()


def _is_groq(request) -> bool:
    return request.headers.get("Authorization") == f"Bearer {GROQ_KEY}" and request.model == GROQ_DEFAULT_MODEL


# --- the voice upload ----------------------------------------------------------------------------------


def test_upload_with_groq_alone(recordings, deepgram_server, speech_server, groq_server) -> None:
    groq_server.script(Rule(user="appointment", reply=Reply(text=REPLY)))
    body = _upload(_upload_settings(deepgram_server, speech_server, groq_server), recordings.bytes("mp3"))
    assert (body["transcript"], body["reply"]) == (deepgram_server.transcript, REPLY)
    (chat,) = groq_server.chat_requests()
    assert _is_groq(chat) and chat.path == "/v1/chat/completions"
    assert chat.last_user_text == deepgram_server.transcript and "You are GoCare" in chat.system_text
    assert [s["input"] for s in speech_server.speech_requests()] == [REPLY]


def test_upload_falls_back_to_groq_when_the_primary_llm_answers_500(recordings, deepgram_server, speech_server,
                                                                    openai_server, groq_server) -> None:
    openai_server.script(Rule(user="appointment", reply=Reply(status=500, error="primary is down")))
    groq_server.script(Rule(user="appointment", reply=Reply(text=REPLY)))
    settings = _upload_settings(deepgram_server, speech_server, groq_server,
                                llm_api_key=LLM_KEY, llm_base_url=openai_server.base_url)
    body = _upload(settings, recordings.bytes("mp3"))
    assert body["ok"] is True and body["reply"] == REPLY
    primary = openai_server.chat_requests()
    assert primary and all(r.headers.get("Authorization") == f"Bearer {LLM_KEY}" for r in primary)
    assert all(r.model == "gpt-4o-mini" for r in primary)  # tried first, with its own key and model
    answered = [r for r in groq_server.chat_requests() if r.last_role == "user"]
    assert answered and all(_is_groq(r) for r in answered)
    assert answered[0].last_user_text == deepgram_server.transcript  # the same turn, handed over


def test_upload_uses_the_primary_while_it_works(recordings, deepgram_server, speech_server, openai_server,
                                                groq_server) -> None:
    openai_server.script(Rule(user="appointment", reply=Reply(text=REPLY)))
    settings = _upload_settings(deepgram_server, speech_server, groq_server,
                                llm_api_key=LLM_KEY, llm_base_url=openai_server.base_url)
    assert _upload(settings, recordings.bytes("mp3"))["reply"] == REPLY
    assert len(openai_server.chat_requests()) == 1 and groq_server.chat_requests() == []


# --- a worker session ----------------------------------------------------------------------------------


def _session_settings(tmp_path: Path, groq_server: ScriptedOpenAIServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"groq_api_key": GROQ_KEY, "groq_base_url": groq_server.base_url,
                              "phone_region": "IN", "database_url": f"sqlite:///{tmp_path / 'users.db'}"}
    values.update(overrides)
    return Settings(**values)


async def _verify_by_voice(settings: Settings) -> SessionState:
    """A typed session (console --text's providers: the LLM only) where the caller says their number."""
    import_plugins(settings)
    state = SessionState()
    parts = session_providers(settings, text_only=True)
    with UserDirectory.from_settings(settings) as directory:
        directory.add(user_id="user-john", name="John Doe", phone=NUMBER)
        async with build_session(settings, vad=None, state=state, parts=parts) as session:
            await session.start(build_entry_agent(state=state, settings=settings, directory=directory))
            result = await session.run(user_input="my number is 98765 43210")
            result.expect.contains_function_call(name="verify_mobile_number")
            assert state.authenticated and isinstance(session.current_agent, MainAgent)
    return state


def _verify_rules() -> list[Rule]:
    return [
        Rule(user="98765", reply=Reply(tool_calls=[ToolCall("verify_mobile_number",
                                                            {"mobile_number": "98765 43210"})]), times=1),
        Rule(tool_output="", reply=Reply(text="Thank you, John.")),
    ]


async def test_session_with_groq_alone(tmp_path: Path, groq_server) -> None:
    groq_server.script(*_verify_rules())
    state = await _verify_by_voice(_session_settings(tmp_path, groq_server))
    assert state.user_id == "user-john"
    requests = groq_server.chat_requests()
    assert requests and all(_is_groq(r) for r in requests)
    assert "verify_mobile_number" in requests[0].tool_names  # tools go through Groq's path too


async def test_session_falls_back_to_groq_when_the_primary_llm_answers_500(tmp_path: Path, openai_server,
                                                                           groq_server) -> None:
    openai_server.default_reply = Reply(status=500, error="primary is down")
    groq_server.script(*_verify_rules())
    settings = _session_settings(tmp_path, groq_server, llm_api_key=LLM_KEY, llm_base_url=openai_server.base_url)
    await _verify_by_voice(settings)
    assert openai_server.chat_requests(), "the primary was tried first"
    assert all(r.headers.get("Authorization") == f"Bearer {LLM_KEY}" for r in openai_server.chat_requests())
    assert groq_server.chat_requests() and all(_is_groq(r) for r in groq_server.chat_requests())
