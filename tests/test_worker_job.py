"""The job entrypoint end to end in its console shape (no room): a plain JobContext stand-in, a real
AgentSession with the LLM built from settings and talking to the scripted OpenAI-compatible server, the
real agents and a real SQLite directory. Checks the wiring: greeting, commands, a conversation turn."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gocare_voice import protocol as cmd
from gocare_voice.conversation.executor import CommandExecutor
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
        executor = CommandExecutor(session=session, state=state)
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


# --- the room path, with plain objects standing in for the room ------------------------------------------


class Participant:
    def __init__(self, *, identity: str, metadata: str = "", sid: str = "PA_1") -> None:
        self.identity = identity
        self.metadata = metadata
        self.attributes: dict[str, str] = {}
        self.sid = sid


class Rpc:
    def __init__(self, method: str, *, caller_identity: str, payload: str = "") -> None:
        self.method = method
        self.payload = payload
        self.caller_identity = caller_identity


class LocalParticipant:
    def __init__(self, steps: list[str]) -> None:
        self.steps = steps
        self.rpc: dict[str, Any] = {}
        self.published: list[dict[str, Any]] = []

    def register_rpc_method(self, name: str, handler: Any) -> None:
        self.rpc[name] = handler
        self.steps.append(f"rpc {name}")

    async def publish_data(self, payload: Any, *, reliable: bool = True, destination_identities: Any = (),
                           topic: str = "") -> None:
        import json

        self.published.append({"payload": json.loads(payload), "reliable": reliable,
                               "to": list(destination_identities), "topic": topic})


class PlainRoom:
    def __init__(self, steps: list[str]) -> None:
        self.name = "room-7"
        self.local_participant = LocalParticipant(steps)
        self.listeners: dict[str, list[Any]] = {}
        self.steps = steps

    def on(self, event: str, callback: Any) -> Any:
        self.listeners.setdefault(event, []).append(callback)
        self.steps.append(f"on {event}")
        return callback

    def emit(self, event: str, *args: Any) -> None:
        for callback in self.listeners.get(event, []):
            callback(*args)


class RoomCtx(ConsoleCtx):
    """What run_job uses of a JobContext in a room: the same as the console shape, plus a user to wait for."""

    def __init__(self, *, user: Participant, metadata: str = "") -> None:
        super().__init__(metadata=metadata)
        self.steps: list[str] = []
        self.room = PlainRoom(self.steps)
        self.user = user
        self.answer_while_waiting: dict[str, Any] | None = None

    def is_fake_job(self) -> bool:
        return False

    async def connect(self) -> None:
        await super().connect()
        self.steps.append("connect")

    async def wait_for_participant(self) -> Participant:
        import json

        self.steps.append("wait_for_participant")
        # the app calls as soon as the agent appears: the RPC methods exist already and answer not_ready
        handler = self.room.local_participant.rpc["start_conversation"]
        self.answer_while_waiting = json.loads(
            await handler(Rpc("start_conversation", caller_identity=self.user.identity))
        )
        return self.user


async def test_run_job_in_a_room_wires_everything_once(tmp_path: Path, openai_server: ScriptedOpenAIServer) -> None:
    """attach -> register_rpc -> wait_for_participant -> link_user -> session -> executor -> greeting ->
    welcome, in one run of the real run_job (only livekit's RoomIO is left out: it needs a real rtc.Room)."""
    import json

    from gocare_voice.conversation.agents import AuthenticationAgent
    from gocare_voice.conversation.directory import UserDirectory

    secret = "a-test-secret-of-at-least-32-bytes!!"
    settings = Settings(
        llm_api_key="sk-test", llm_base_url=openai_server.base_url, database_url=f"sqlite:///{tmp_path / 'users.db'}",
        deepgram_api_key="dg-test", deepgram_base_url="http://127.0.0.1:9", tts_api_key="tts-test",
        tts_base_url="http://127.0.0.1:9/v1", auth_mode="jwt", auth_jwt_secret=secret,
    )
    with UserDirectory.from_settings(settings) as users:
        users.add(user_id="sub-42", name="John Doe", phone="+919876543210")
    # the app claims another user id in its own metadata; with JWT auth the identity (the token's sub) wins
    user = Participant(identity="sub-42", metadata='{"userId": "user-999", "userName": "John Doe"}')
    ctx = RoomCtx(user=user, metadata='{"userId": "dispatch-user"}')

    session = await entrypoint.run_job(ctx, settings=settings, metadata_grace=0.5, use_room_io=False)
    try:
        steps = ctx.steps
        assert steps[0] == "connect"
        attached = {s for s in steps[: steps.index("wait_for_participant")] if s.startswith("on ")}
        assert attached >= {"on participant_metadata_changed", "on participant_attributes_changed",
                            "on data_received", "on participant_disconnected", "on participant_connected"}
        registered = [s for s in steps[: steps.index("wait_for_participant")] if s.startswith("rpc ")]
        assert sorted(registered) == sorted(f"rpc {c}" for c in cmd.COMMANDS)  # before the wait, once each
        assert len([s for s in steps if s.startswith("rpc ")]) == len(cmd.COMMANDS)
        assert steps.count("wait_for_participant") == 1
        assert ctx.answer_while_waiting is not None and ctx.answer_while_waiting["error"] == cmd.E_NOT_READY

        state = session.userdata
        assert (state.user_id, state.user_name, state.participant_identity) == ("sub-42", "John Doe", "sub-42")
        assert isinstance(session.current_agent, AuthenticationAgent) and state.greeted
        said: list[str | None] = []
        for _ in range(300):
            said = [m.text_content for m in session.history.messages() if m.role == "assistant"]
            if said:
                break
            await asyncio.sleep(0.01)
        assert said == ["Welcome John! Please say your registered mobile number."]

        [welcome] = ctx.room.local_participant.published
        assert welcome == {
            "payload": {"type": "welcome", "message": "Welcome John! Please say your registered mobile number.",
                        "userId": "sub-42", "userName": "John Doe"},
            "reliable": True, "to": ["sub-42"], "topic": "gocare",
        }

        # the executor took over: the same RPC method now runs the command against the session
        handler = ctx.room.local_participant.rpc["start_conversation"]
        answer = json.loads(await handler(Rpc("start_conversation", caller_identity="sub-42")))
        assert answer == {"ok": True, "command": "start_conversation", "listening": True, "agent": "authentication"}
        refused = json.loads(await ctx.room.local_participant.rpc["switch_agent"](
            Rpc("switch_agent", caller_identity="sub-42", payload='{"agent": "attorney"}')))
        assert refused["error"] == cmd.E_NOT_AUTHENTICATED

        # the user reconnects (new sid): one more welcome, through the room's event
        ctx.room.emit("participant_connected", Participant(identity="sub-42", metadata=user.metadata, sid="PA_2"))
        for _ in range(300):
            if len(ctx.room.local_participant.published) == 2:
                break
            await asyncio.sleep(0.01)
        assert [p["payload"]["type"] for p in ctx.room.local_participant.published] == ["welcome", "welcome"]
        assert ctx.log_context_fields == {"room": "room-7", "participant": "sub-42"}
    finally:
        for callback in ctx.shutdown_callbacks:
            await callback()
        await session.aclose()
        directory = ctx.proc.userdata.get(entrypoint.DIRECTORY_KEY)
        if directory is not None:
            directory.close()
        await asyncio.sleep(0)
