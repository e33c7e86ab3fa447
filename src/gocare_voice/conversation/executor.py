"""Executing the app's commands against one running AgentSession (parsing is ``gocare_voice.protocol``).

The executor touches only the small part of ``AgentSession`` named by ``SessionControls`` (a
``typing.Protocol``): the real session satisfies it, and so do the tests' plain objects, which exercise
every answer without a LiveKit server.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gocare_voice import protocol as proto
from gocare_voice.protocol import Command, CommandError, Mode, VoiceUpload

from .state import SessionState

logger = logging.getLogger("gocare.commands")

CLICK_TO_TALK_TRANSCRIPT_TIMEOUT = 10.0
"""Seconds ``commit_user_turn`` waits for the final transcript of a long push-to-talk turn (``end_turn``)."""


class AudioSwitch(Protocol):
    def set_audio_enabled(self, enable: bool) -> None: ...


class ChatAgent(Protocol):
    """The current agent, as far as a voice upload needs it."""

    @property
    def chat_ctx(self) -> Any: ...

    def update_chat_ctx(self, chat_ctx: Any) -> Awaitable[None]: ...


class SessionControls(Protocol):
    """The part of ``livekit.agents.AgentSession`` the commands use."""

    @property
    def input(self) -> AudioSwitch: ...

    @property
    def output(self) -> AudioSwitch: ...

    @property
    def current_agent(self) -> Any: ...

    def interrupt(self, *, force: bool = False) -> Any: ...

    def clear_user_turn(self) -> None: ...

    def commit_user_turn(self, *, transcript_timeout: float = ...) -> Any: ...


SwitchMode = Callable[[Mode], Any]
"""``mode -> the new agent`` (sync or async); refuses by raising an error with a ``code``
(``ModeSwitchError``) or by returning False, ``{"ok": False, ...}`` or a reason string."""


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _ignore_outcome(fut: Any) -> None:
    """A future we do not wait for: retrieve its exception so asyncio does not log it as never retrieved."""
    if hasattr(fut, "add_done_callback"):
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())


def _ok(command: Command, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": True, "command": command.name, **extra}
    if command.request_id:
        out["requestId"] = command.request_id
    return out


def _switch_refusal(result: Any) -> str | None:
    """An injected ``switch_mode`` refuses by returning False, ``{"ok": False, ...}`` or a reason string;
    anything else (the new agent) = switched."""
    if result is False:
        return "refused"
    if isinstance(result, Mapping) and result.get("ok") is False:
        return str(result.get("error") or result.get("message") or "refused")
    if isinstance(result, str) and result:
        return result
    return None


@dataclass(kw_only=True)
class CommandExecutor:
    """Applies commands to one AgentSession and its SessionState.

    ``switch_mode`` is injected so the executor does not depend on how agents are built; the worker binds
    it to ``conversation.agents.switch_mode``.
    """

    session: SessionControls
    state: SessionState
    switch_mode: SwitchMode | None = None
    listening: bool = True
    turn_open: bool = False
    log_extra: dict[str, Any] = field(default_factory=dict)

    def _set_listening(self, value: bool) -> None:
        self.listening = value
        self.state.conversation_active = value

    def _set_audio(self, *, input_enabled: bool | None = None, output_enabled: bool | None = None) -> None:
        if input_enabled is not None:
            self.session.input.set_audio_enabled(input_enabled)
        if output_enabled is not None:
            self.session.output.set_audio_enabled(output_enabled)

    def _interrupt(self) -> None:
        try:
            fut = self.session.interrupt(force=True)
        except RuntimeError as error:  # not running yet / already closing: nothing to interrupt
            logger.debug("interrupt skipped: %s", error)
            return
        _ignore_outcome(fut)

    async def execute(self, command: Command | CommandError) -> dict[str, Any]:
        """Run one command; always returns a JSON-able answer, never raises (except cancellation)."""
        if isinstance(command, CommandError):
            return command.answer()
        try:
            return await self._execute(command)
        except Exception as error:  # noqa: BLE001 - the answer carries the failure, the job lives on
            logger.warning(
                "command %s failed: %s: %s", command.name, type(error).__name__, error, extra=self.log_extra
            )
            return CommandError(
                proto.E_FAILED, f"{command.name} failed: {type(error).__name__}", command.request_id
            ).answer()

    async def _execute(self, command: Command) -> dict[str, Any]:
        name = command.name
        if name == proto.START_CONVERSATION:
            self._set_audio(input_enabled=self.state.mode != proto.PUSH_TO_TALK_MODE, output_enabled=True)
            self._set_listening(True)
            # before verification the caller talks to the number check, whatever mode is preset
            agent = self.state.mode if self.state.authenticated else proto.PRE_AUTH_AGENT
            return _ok(command, listening=True, agent=agent)
        if name == proto.STOP_CONVERSATION:
            self._interrupt()
            try:
                self.session.clear_user_turn()
            except RuntimeError:
                pass
            self._set_audio(input_enabled=False, output_enabled=False)
            self._set_listening(False)
            self.turn_open = False
            return _ok(command, listening=False)
        if name == proto.SWITCH_AGENT:
            return await self._switch(command)
        if name in proto.TURN_COMMANDS:
            return self._turn(command)
        return CommandError(proto.E_UNKNOWN_COMMAND, f"unknown command {name!r}", command.request_id).answer()

    async def _switch(self, command: Command) -> dict[str, Any]:
        assert command.agent is not None
        if not self.state.authenticated:
            return CommandError(
                proto.E_NOT_AUTHENTICATED, "switching agents needs the mobile number verified first",
                command.request_id,
            ).answer()
        if self.switch_mode is None:
            return CommandError(
                proto.E_NOT_READY, "the session is not ready to switch agents", command.request_id
            ).answer()
        try:
            result = await _maybe_await(self.switch_mode(command.agent))
        except Exception as error:  # a refusal (ModeSwitchError) or a failure: both answered
            code = getattr(error, "code", None)
            mapped = {"not_authenticated": proto.E_NOT_AUTHENTICATED, "unknown_mode": proto.E_INVALID_AGENT}.get(
                str(code)
            )
            if mapped is None:
                raise
            return CommandError(mapped, str(error), command.request_id).answer()
        refusal = _switch_refusal(result)
        if refusal is not None:
            code = proto.E_NOT_AUTHENTICATED if "auth" in refusal.lower() else proto.E_FAILED
            return CommandError(code, f"switch refused: {refusal}", command.request_id).answer()
        self.turn_open = False
        if self.listening:
            # push-to-talk keeps the microphone closed between turns; the other modes listen all the time
            self._set_audio(input_enabled=command.agent != proto.PUSH_TO_TALK_MODE)
        return _ok(command, agent=command.agent)

    def _turn(self, command: Command) -> dict[str, Any]:
        if self.state.mode != proto.PUSH_TO_TALK_MODE:
            return CommandError(
                proto.E_NOT_PUSH_TO_TALK, f"{command.name} is only accepted in click_to_talk mode",
                command.request_id,
            ).answer()
        if not self.listening:
            return CommandError(
                proto.E_STOPPED, "the conversation is stopped; send start_conversation", command.request_id
            ).answer()
        if command.name == proto.START_TURN:
            self._interrupt()
            self.session.clear_user_turn()
            self._set_audio(input_enabled=True)
            self.turn_open = True
            return _ok(command, turn="open")
        if command.name == proto.END_TURN:
            self._set_audio(input_enabled=False)
            _ignore_outcome(self.session.commit_user_turn(transcript_timeout=CLICK_TO_TALK_TRANSCRIPT_TIMEOUT))
            self.turn_open = False
            return _ok(command, turn="committed")
        self._set_audio(input_enabled=False)
        self.session.clear_user_turn()
        self.turn_open = False
        return _ok(command, turn="cancelled")

    async def add_voice_upload(self, upload: VoiceUpload) -> dict[str, Any]:
        """Append what the user said in a recorded upload (and the reply they already heard) to the live
        agent's chat context, so the next live turn can refer to it."""
        try:
            agent: ChatAgent = self.session.current_agent
            chat_ctx = agent.chat_ctx.copy()
            chat_ctx.add_message(role="user", content=upload.transcript)
            if upload.reply:
                chat_ctx.add_message(role="assistant", content=upload.reply)
            await _maybe_await(agent.update_chat_ctx(chat_ctx))
        except Exception as error:  # noqa: BLE001 - a failed append is answered and logged; the call goes on
            logger.warning(
                "voice upload not added to the chat: %s: %s", type(error).__name__, error, extra=self.log_extra
            )
            return {"ok": False, "error": proto.E_FAILED, "message": "voice upload not added"}
        return {"ok": True, "type": proto.VOICE_UPLOAD, "chars": len(upload.transcript)}
