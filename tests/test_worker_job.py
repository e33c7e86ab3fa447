"""The job entrypoint end to end in its console shape (no room): a plain JobContext stand-in, a real
AgentSession with the LLM built from settings and talking to the scripted OpenAI-compatible server, the
real agents and a real SQLite directory. Checks the wiring: greeting, commands, a conversation turn."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gocare_voice.conversation import commands as cmd
from gocare_voice.settings import Settings
from gocare_voice.worker import entrypoint
from scripted.openai_server import Reply, Rule, ScriptedOpenAIServer


class Job:
    def __init__(self, metadata: str) -> None:
        self.metadata = metadata


class Proc:
    def __init__(self) -> None:
        self.userdata: dict[str, Any] = {}


class ConsoleCtx:
    """What run_job uses of a JobContext in console mode."""

    def __init__(self, *, metadata: str = "") -> None:
        self.job = Job(metadata)
        self.proc = Proc()
        self.room = type("MockRoom", (), {"name": "console"})()
        self.log_context_fields: dict[str, Any] = {}
        self.shutdown_callbacks: list[Any] = []
        self.shutdown_reasons: list[str] = []
        self.connected = False

    def shutdown(self, reason: str = "") -> None:
        self.shutdown_reasons.append(reason)

    def is_fake_job(self) -> bool:
        return True

    async def connect(self) -> None:
        self.connected = True

    def add_shutdown_callback(self, callback: Any) -> None:
        self.shutdown_callbacks.append(callback)


async def test_run_job_console_greets_with_the_dispatch_name_and_answers(tmp_path: Path,
                                                                          openai_server: ScriptedOpenAIServer) -> None:
    from livekit.agents import AgentSession

    from gocare_voice.conversation.agents import AuthenticationAgent

    openai_server.script(Rule(user="hello", reply=Reply(text="Hello John, what is your registered mobile number?")))
    settings = Settings(llm_api_key="sk-test", llm_base_url=openai_server.base_url,
                        database_url=f"sqlite:///{tmp_path / 'users.db'}")
    ctx = ConsoleCtx(metadata='{"userId": "user-123", "userName": "John Doe"}')

    session = await entrypoint.run_job(ctx, settings=settings, console_text=True)
    assert isinstance(session, AgentSession)
    try:
        assert ctx.connected
        state = session.userdata
        assert (state.user_id, state.user_name, state.greeted) == ("user-123", "John Doe", True)
        assert isinstance(session.current_agent, AuthenticationAgent)
        assert session.stt is None  # console --text without DEEPGRAM_API_KEY: typed input needs no STT
        said: list[str | None] = []
        for _ in range(300):
            said = [m.text_content for m in session.history.messages() if m.role == "assistant"]
            if said:
                break
            await asyncio.sleep(0.01)
        assert said[0] == "Welcome John! Please say your registered mobile number."

        result = await session.run(user_input="hello")
        result.expect.contains_message(role="assistant")
        [request] = openai_server.chat_requests()
        assert "John" in request.system_text  # the name reached the instructions

        # the app's commands work against this session (here straight through the executor)
        executor = cmd.CommandExecutor(session=session, state=state)
        refused = await executor.execute(cmd.Command("switch_agent", agent="attorney"))
        assert refused["error"] == cmd.E_NOT_AUTHENTICATED
        for callback in ctx.shutdown_callbacks:
            await callback()
        assert ctx.shutdown_reasons == []
        session.shutdown(drain=False)  # what the agent does after too many wrong numbers
        for _ in range(300):
            if ctx.shutdown_reasons:
                break
            await asyncio.sleep(0.01)
        assert len(ctx.shutdown_reasons) == 1 and "agent session closed" in ctx.shutdown_reasons[0]
    finally:
        await session.aclose()
        directory = ctx.proc.userdata.get(entrypoint.DIRECTORY_KEY)
        if directory is not None:
            directory.close()
        await asyncio.sleep(0)
