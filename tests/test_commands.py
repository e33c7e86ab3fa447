"""App -> agent commands: parsing of every kind of garbage, and the executor against plain session
objects and against a real AgentSession (scripted OpenAI-compatible LLM, PART A's agents)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gocare_voice import protocol as cmd
from gocare_voice.conversation.executor import CommandExecutor
from gocare_voice.conversation.state import SessionState

# --- parsing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", cmd.COMMANDS)
def test_every_command_parses_from_a_data_packet(name: str) -> None:
    extra = {"agent": "attorney"} if name == cmd.SWITCH_AGENT else {}
    parsed = cmd.parse_data_packet(json.dumps({"type": "command", "command": name, **extra}).encode(), topic="gocare")
    assert isinstance(parsed, cmd.Command)
    assert parsed.name == name
    assert parsed.agent == ("attorney" if extra else None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("assistant", "assistant"), ("attorney", "attorney"), ("click_to_talk", "click_to_talk"),
     ("Click-To-Talk", "click_to_talk"), (" push_to_talk ", "click_to_talk"), ("main", "assistant")],
)
def test_switch_agent_accepts_agent_and_mode_alias(value: str, expected: str) -> None:
    for key in ("agent", "mode"):
        parsed = cmd.parse_message({"type": "command", "command": "switch_agent", key: value})
        assert parsed == cmd.Command("switch_agent", agent=expected)


@pytest.mark.parametrize("agent", [None, "", "lawyer", 3, ["attorney"], {"x": 1}, "a" * 10_000])
def test_switch_agent_with_a_bad_agent_is_a_typed_error(agent: Any) -> None:
    message: dict[str, Any] = {"type": "command", "command": "switch_agent"}
    if agent is not None:
        message["agent"] = agent
    parsed = cmd.parse_message(message)
    assert isinstance(parsed, cmd.CommandError)
    assert parsed.code == cmd.E_INVALID_AGENT
    assert len(parsed.message) < 200  # never echoes a huge value back


GARBAGE: list[tuple[Any, str]] = [
    (b"", cmd.E_MALFORMED),
    (b"   ", cmd.E_MALFORMED),
    (None, cmd.E_MALFORMED),
    (b"null", cmd.E_MALFORMED),
    (b"[]", cmd.E_MALFORMED),
    (b'["command", "stop_conversation"]', cmd.E_MALFORMED),
    (b"42", cmd.E_MALFORMED),
    (b"-1.5e308", cmd.E_MALFORMED),
    (b'"stop_conversation"', cmd.E_MALFORMED),
    (b"true", cmd.E_MALFORMED),
    (b"{not json", cmd.E_MALFORMED),
    (b"\xff\xfe\x00garbage", cmd.E_MALFORMED),
    (b'{"command": "stop_conversation"\xc3\x28}', cmd.E_MALFORMED),
    (b"[" * 100_000, cmd.E_TOO_LARGE),
    (b"[" * 5_000 + b"]" * 5_000, cmd.E_MALFORMED),  # deep nesting: no RecursionError escapes
    (json.dumps({"type": "command", "command": "x" * (cmd.MAX_MESSAGE_BYTES + 1)}).encode(), cmd.E_TOO_LARGE),
    (b"{}", cmd.E_MALFORMED),
    (b'{"type": "command"}', cmd.E_MALFORMED),
    (b'{"type": "command", "command": 7}', cmd.E_MALFORMED),
    (b'{"type": "command", "command": null}', cmd.E_MALFORMED),
    (b'{"type": "command", "command": "self_destruct"}', cmd.E_UNKNOWN_COMMAND),
    (b'{"type": "welcome", "message": "echo"}', cmd.E_UNKNOWN_TYPE),
    (b'{"type": 5}', cmd.E_MALFORMED),
    (b'{"type": "voice_upload"}', cmd.E_MALFORMED),
    (b'{"type": "voice_upload", "transcript": 12}', cmd.E_MALFORMED),
    (b'{"type": "voice_upload", "transcript": "   "}', cmd.E_MALFORMED),
    (12345, cmd.E_MALFORMED),
    (object(), cmd.E_MALFORMED),
]


@pytest.mark.parametrize(("raw", "code"), GARBAGE)
def test_garbage_is_a_typed_error_never_an_exception(raw: Any, code: str) -> None:
    parsed = cmd.parse_data_packet(raw, topic="gocare")
    assert isinstance(parsed, cmd.CommandError), parsed
    assert parsed.code == code
    answer = parsed.answer()
    assert answer["ok"] is False and answer["error"] == code
    json.dumps(answer)


def test_packets_on_other_topics_are_not_ours() -> None:
    payload = b'{"type": "command", "command": "stop_conversation"}'
    for topic in (None, "", "lk.chat", "lk.transcription", "GOCARE"):
        assert cmd.parse_data_packet(payload, topic=topic) is None


def test_type_defaults_to_command_when_a_command_is_given() -> None:
    assert cmd.parse_message('{"command": "start_turn"}') == cmd.Command("start_turn")


def test_request_id_is_carried_into_the_answer() -> None:
    parsed = cmd.parse_message({"type": "command", "command": "nope", "requestId": "r-1"})
    assert isinstance(parsed, cmd.CommandError)
    assert parsed.answer()["requestId"] == "r-1"


def test_voice_upload_packet() -> None:
    parsed = cmd.parse_message({"type": "voice_upload", "transcript": " my knee hurts ", "reply": "Sorry to hear."})
    assert parsed == cmd.VoiceUpload(transcript="my knee hurts", reply="Sorry to hear.")
    no_reply = cmd.parse_message({"type": "voice_upload", "transcript": "hi", "reply": 3})
    assert no_reply == cmd.VoiceUpload(transcript="hi", reply=None)
    long = cmd.parse_message({"type": "voice_upload", "transcript": "x" * 50_000})
    assert isinstance(long, cmd.VoiceUpload) and len(long.transcript) == cmd.MAX_UPLOAD_TEXT_CHARS


@pytest.mark.parametrize(
    ("method", "payload", "expected"),
    [
        ("stop_conversation", "", cmd.Command("stop_conversation")),
        ("stop_conversation", None, cmd.Command("stop_conversation")),
        ("stop_conversation", "{}", cmd.Command("stop_conversation")),
        ("switch_agent", '{"agent": "attorney"}', cmd.Command("switch_agent", agent="attorney")),
        ("switch_agent", '{"mode": "click_to_talk", "requestId": "7"}',
         cmd.Command("switch_agent", agent="click_to_talk", request_id="7")),
        ("end_turn", '{"type": "command", "command": "end_turn"}', cmd.Command("end_turn")),
    ],
)
def test_rpc_parsing(method: str, payload: Any, expected: cmd.Command) -> None:
    assert cmd.parse_rpc(method, payload) == expected


@pytest.mark.parametrize(
    ("method", "payload", "code"),
    [
        ("reboot", "{}", cmd.E_UNKNOWN_COMMAND),
        (None, "{}", cmd.E_UNKNOWN_COMMAND),
        ("switch_agent", "{}", cmd.E_INVALID_AGENT),
        ("switch_agent", "attorney", cmd.E_MALFORMED),
        ("stop_conversation", "[1, 2]", cmd.E_MALFORMED),
        ("stop_conversation", "null", cmd.E_MALFORMED),
        ("stop_conversation", '{"command": "start_conversation"}', cmd.E_MALFORMED),
        ("stop_conversation", b"\xff\xff", cmd.E_MALFORMED),
    ],
)
def test_rpc_errors(method: Any, payload: Any, code: str) -> None:
    parsed = cmd.parse_rpc(method, payload)
    assert isinstance(parsed, cmd.CommandError)
    assert parsed.code == code


# --- executor on plain objects ------------------------------------------------------------------------


class Audio:
    def __init__(self) -> None:
        self.audio_enabled = True
        self.history: list[bool] = []

    def set_audio_enabled(self, enabled: bool) -> None:
        self.audio_enabled = enabled
        self.history.append(enabled)


class PlainSession:
    """The part of AgentSession the executor uses, recording the calls."""

    def __init__(self) -> None:
        self.input = Audio()
        self.output = Audio()
        self.calls: list[str] = []
        self.commit_kwargs: dict[str, Any] = {}

    def interrupt(self, *, force: bool = False) -> asyncio.Future[None]:
        self.calls.append(f"interrupt(force={force})")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def clear_user_turn(self) -> None:
        self.calls.append("clear_user_turn")

    def commit_user_turn(self, **kwargs: Any) -> asyncio.Future[str]:
        self.calls.append("commit_user_turn")
        self.commit_kwargs = kwargs
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        fut.set_result("the transcript")
        return fut


def make_executor(*, mode: str = "assistant", authenticated: bool = True,
                  switch: Callable[[str], Any] | None = None) -> tuple[CommandExecutor, PlainSession, SessionState]:
    session = PlainSession()
    state = SessionState(user_id="u1", user_name="John Doe", authenticated=authenticated, mode=mode)  # type: ignore[arg-type]  # mode is one of MODES in every caller
    return CommandExecutor(session=session, state=state, switch_mode=switch), session, state


async def test_stop_then_start_conversation() -> None:
    executor, session, state = make_executor()
    answer = await executor.execute(cmd.Command("stop_conversation"))
    assert answer == {"ok": True, "command": "stop_conversation", "listening": False}
    assert session.calls[:2] == ["interrupt(force=True)", "clear_user_turn"]
    assert session.input.audio_enabled is False and session.output.audio_enabled is False
    assert state.conversation_active is False

    answer = await executor.execute(cmd.Command("start_conversation"))
    assert answer["ok"] is True and answer["listening"] is True
    assert session.input.audio_enabled is True and session.output.audio_enabled is True
    assert state.conversation_active is True


async def test_start_conversation_in_click_to_talk_keeps_the_microphone_closed() -> None:
    executor, session, _ = make_executor(mode="click_to_talk")
    await executor.execute(cmd.Command("stop_conversation"))
    await executor.execute(cmd.Command("start_conversation"))
    assert session.output.audio_enabled is True
    assert session.input.audio_enabled is False


async def test_switch_refused_before_authentication_without_calling_switch() -> None:
    called: list[str] = []
    executor, _, _ = make_executor(authenticated=False, switch=called.append)
    answer = await executor.execute(cmd.Command("switch_agent", agent="attorney", request_id="r9"))
    assert answer["ok"] is False
    assert answer["error"] == cmd.E_NOT_AUTHENTICATED
    assert answer["requestId"] == "r9"
    assert called == []


async def test_switch_after_authentication_calls_switch_mode() -> None:
    called: list[str] = []

    async def switch(mode: str) -> object:
        called.append(mode)
        return object()

    executor, session, _ = make_executor(switch=switch)
    answer = await executor.execute(cmd.Command("switch_agent", agent="click_to_talk"))
    assert answer == {"ok": True, "command": "switch_agent", "agent": "click_to_talk"}
    assert called == ["click_to_talk"]
    assert session.input.audio_enabled is False  # push-to-talk: closed until start_turn


async def test_switch_refusal_raised_by_switch_mode_is_mapped() -> None:
    class Refused(Exception):
        code = "not_authenticated"

    def switch(mode: str) -> object:
        raise Refused("needs verification")

    executor, _, _ = make_executor(switch=switch)
    answer = await executor.execute(cmd.Command("switch_agent", agent="attorney"))
    assert answer["ok"] is False and answer["error"] == cmd.E_NOT_AUTHENTICATED


async def test_switch_failure_is_an_answer_not_an_exception() -> None:
    def switch(mode: str) -> object:
        raise RuntimeError("boom")

    executor, _, _ = make_executor(switch=switch)
    answer = await executor.execute(cmd.Command("switch_agent", agent="attorney"))
    assert answer["ok"] is False and answer["error"] == cmd.E_FAILED


async def test_switch_without_a_switcher_is_not_ready() -> None:
    executor, _, _ = make_executor(switch=None)
    answer = await executor.execute(cmd.Command("switch_agent", agent="attorney"))
    assert answer["error"] == cmd.E_NOT_READY


@pytest.mark.parametrize("name", cmd.TURN_COMMANDS)
async def test_turn_commands_only_in_click_to_talk(name: str) -> None:
    executor, session, _ = make_executor(mode="attorney")
    answer = await executor.execute(cmd.Command(name))
    assert answer["ok"] is False and answer["error"] == cmd.E_NOT_PUSH_TO_TALK
    assert session.calls == []


async def test_push_to_talk_turns() -> None:
    executor, session, _ = make_executor(mode="click_to_talk")
    assert (await executor.execute(cmd.Command("start_turn")))["turn"] == "open"
    assert session.calls == ["interrupt(force=True)", "clear_user_turn"]
    assert session.input.audio_enabled is True and executor.turn_open

    assert (await executor.execute(cmd.Command("end_turn")))["turn"] == "committed"
    assert session.calls[-1] == "commit_user_turn"
    assert session.commit_kwargs["transcript_timeout"] >= 5.0  # long push-to-talk input
    assert session.input.audio_enabled is False and not executor.turn_open

    await executor.execute(cmd.Command("start_turn"))
    assert (await executor.execute(cmd.Command("cancel_turn")))["turn"] == "cancelled"
    assert session.calls[-1] == "clear_user_turn"
    assert session.input.audio_enabled is False


async def test_end_turn_waits_the_configured_transcript_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    from gocare_voice.conversation import executor as executor_module

    monkeypatch.setattr(executor_module, "CLICK_TO_TALK_TRANSCRIPT_TIMEOUT", 17.5)
    executor, session, _ = make_executor(mode="click_to_talk")
    await executor.execute(cmd.Command("start_turn"))
    await executor.execute(cmd.Command("end_turn"))
    assert session.commit_kwargs["transcript_timeout"] == 17.5


async def test_start_conversation_before_verification_reports_the_number_check() -> None:
    executor, _, state = make_executor(authenticated=False)
    answer = await executor.execute(cmd.Command("start_conversation"))
    assert answer == {"ok": True, "command": "start_conversation", "listening": True, "agent": "authentication"}
    state.authenticated = True
    answer = await executor.execute(cmd.Command("start_conversation"))
    assert answer["agent"] == "assistant"


async def test_turns_refused_while_stopped() -> None:
    executor, _, _ = make_executor(mode="click_to_talk")
    await executor.execute(cmd.Command("stop_conversation"))
    answer = await executor.execute(cmd.Command("start_turn"))
    assert answer["error"] == cmd.E_STOPPED


async def test_session_errors_become_answers() -> None:
    executor, session, _ = make_executor(mode="click_to_talk")

    def broken(**_: Any) -> None:
        raise RuntimeError("AgentSession isn't running")

    session.commit_user_turn = broken  # type: ignore[method-assign]  # a failing session method, on purpose
    answer = await executor.execute(cmd.Command("end_turn"))
    assert answer["ok"] is False and answer["error"] == cmd.E_FAILED


async def test_stop_before_the_session_runs_still_answers() -> None:
    executor, session, _ = make_executor()

    def not_running(**_: Any) -> None:
        raise RuntimeError("AgentSession isn't running")

    session.interrupt = not_running  # type: ignore[method-assign]  # a failing session method, on purpose
    answer = await executor.execute(cmd.Command("stop_conversation"))
    assert answer["ok"] is True
    assert session.output.audio_enabled is False


async def test_errors_pass_through_execute() -> None:
    executor, _, _ = make_executor()
    answer = await executor.execute(cmd.CommandError(cmd.E_MALFORMED, "bad"))
    assert answer == {"ok": False, "error": "malformed", "message": "bad"}


# --- a real AgentSession ---------------------------------------------------------------------------


@pytest.fixture
async def real_parts(tmp_path: Path, openai_base_url: str) -> Any:
    from livekit.agents import AgentSession
    from livekit.plugins import openai

    from gocare_voice.conversation.directory import UserDirectory
    from gocare_voice.settings import Settings

    settings = Settings(phone_region="IN")
    directory = UserDirectory(url=f"sqlite:///{tmp_path / 'users.db'}", region="IN")
    state = SessionState(user_id="user-john", user_name="John Doe")
    session = AgentSession(llm=openai.LLM(model="gpt-4o-mini", base_url=openai_base_url, api_key="test"), userdata=state)
    yield settings, directory, state, session
    directory.close()


async def test_real_session_switch_refused_then_allowed(real_parts: Any) -> None:
    from gocare_voice.conversation.agents import AttorneyAgent, AuthenticationAgent, build_entry_agent, switch_mode

    settings, directory, state, session = real_parts
    async with session:
        await session.start(build_entry_agent(state=state, settings=settings, directory=directory, greet_on_enter=False))
        executor = CommandExecutor(
            session=session, state=state,
            switch_mode=lambda mode: switch_mode(session, mode, settings=settings, directory=directory, state=state),
        )
        refused = await executor.execute(cmd.parse_rpc("switch_agent", '{"agent": "attorney"}'))  # type: ignore[arg-type]  # a parse result goes straight to the executor
        assert refused["error"] == cmd.E_NOT_AUTHENTICATED
        assert isinstance(session.current_agent, AuthenticationAgent)

        state.authenticated = True
        answer = await executor.execute(cmd.Command("switch_agent", agent="attorney"))
        assert answer["ok"] is True
        for _ in range(200):
            if isinstance(session.current_agent, AttorneyAgent):
                break
            await asyncio.sleep(0.01)
        assert isinstance(session.current_agent, AttorneyAgent)
        assert state.mode == "attorney"

        stopped = await executor.execute(cmd.Command("stop_conversation"))
        assert stopped["ok"] is True
        assert session.output.audio_enabled is False and session.input.audio_enabled is False


async def test_real_session_voice_upload_reaches_the_chat_context(real_parts: Any) -> None:
    from gocare_voice.conversation.agents import build_entry_agent

    settings, directory, state, session = real_parts
    async with session:
        await session.start(build_entry_agent(state=state, settings=settings, directory=directory, greet_on_enter=False))
        executor = CommandExecutor(session=session, state=state)
        upload = cmd.parse_message({"type": "voice_upload", "transcript": "I booked a doctor for Monday",
                                    "reply": "Noted, Monday it is."})
        assert isinstance(upload, cmd.VoiceUpload)
        answer = await executor.add_voice_upload(upload)
        assert answer["ok"] is True
        texts = [(m.role, m.text_content) for m in session.current_agent.chat_ctx.messages()]
        assert ("user", "I booked a doctor for Monday") in texts
        assert ("assistant", "Noted, Monday it is.") in texts
