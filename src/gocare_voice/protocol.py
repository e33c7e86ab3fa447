"""App -> agent commands: parsing (pure) and execution against an AgentSession.

The Flutter app steers the agent with JSON data packets on topic ``gocare``
(``{"type": "command", "command": "...", ...}``) or with the same commands as RPC methods on the agent
participant (see docs/protocol.md). Parsing never raises: garbage from the network becomes a typed
``CommandError`` that the worker logs and, over RPC, answers with. Parsing has no LiveKit import so it is
testable on its own; the executor only touches the small part of ``AgentSession`` it needs (duck typed),
so tests drive it with plain objects as well as with a real session.
"""

from __future__ import annotations

import inspect
import json
import re
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from .state import MODES

logger = logging.getLogger("gocare.commands")

TOPIC = "gocare"
MAX_MESSAGE_BYTES = 64 * 1024
MAX_UPLOAD_TEXT_CHARS = 16 * 1024

START_CONVERSATION = "start_conversation"
STOP_CONVERSATION = "stop_conversation"
SWITCH_AGENT = "switch_agent"
START_TURN = "start_turn"
END_TURN = "end_turn"
CANCEL_TURN = "cancel_turn"
COMMANDS = (START_CONVERSATION, STOP_CONVERSATION, SWITCH_AGENT, START_TURN, END_TURN, CANCEL_TURN)
TURN_COMMANDS = (START_TURN, END_TURN, CANCEL_TURN)

CLICK_TO_TALK_TRANSCRIPT_TIMEOUT = 10.0
"""Seconds ``commit_user_turn`` waits for the final transcript of a long push-to-talk turn (``end_turn``)."""

PRE_AUTH_AGENT = "authentication"
"""What ``start_conversation`` reports as the agent before the number is verified: the number check, not a
mode the app could switch to."""

_MODE_ALIASES = {
    "assistant": "assistant",
    "main": "assistant",
    "attorney": "attorney",
    "click_to_talk": "click_to_talk",
    "click-to-talk": "click_to_talk",
    "clicktotalk": "click_to_talk",
    "push_to_talk": "click_to_talk",
    "push-to-talk": "click_to_talk",
}

# Error codes the app can branch on (docs/protocol.md lists them).
E_MALFORMED = "malformed"
E_TOO_LARGE = "too_large"
E_UNKNOWN_TYPE = "unknown_type"
E_UNKNOWN_COMMAND = "unknown_command"
E_INVALID_AGENT = "invalid_agent"
E_NOT_AUTHENTICATED = "not_authenticated"
E_NOT_PUSH_TO_TALK = "not_click_to_talk"
E_STOPPED = "conversation_stopped"
E_NOT_READY = "not_ready"
E_FORBIDDEN = "forbidden"
E_FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    agent: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class VoiceUpload:
    """A recorded upload the token service already answered; the live agent must know it happened."""

    transcript: str
    reply: str | None = None


@dataclass(frozen=True, slots=True)
class CommandError:
    code: str
    message: str
    request_id: str | None = None

    def answer(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": False, "error": self.code, "message": self.message}
        if self.request_id:
            out["requestId"] = self.request_id
        return out


Parsed = Union[Command, VoiceUpload, CommandError]


# --- parsing ---------------------------------------------------------------------------------------


def _decode(raw: Any) -> tuple[Any, CommandError | None]:
    """bytes/str -> JSON value; the error says what was wrong, without echoing the payload."""
    if raw is None:
        return None, CommandError(E_MALFORMED, "empty message")
    if isinstance(raw, (bytes, bytearray, memoryview)):
        data = bytes(raw)
        if len(data) > MAX_MESSAGE_BYTES:
            return None, CommandError(E_TOO_LARGE, f"message too large ({len(data)} bytes)")
        try:
            raw = data.decode("utf-8")
        except UnicodeDecodeError:
            return None, CommandError(E_MALFORMED, "message is not valid UTF-8")
    if isinstance(raw, Mapping):
        return dict(raw), None
    if not isinstance(raw, str):
        return None, CommandError(E_MALFORMED, f"message has unexpected type {type(raw).__name__}")
    if len(raw) > MAX_MESSAGE_BYTES:
        return None, CommandError(E_TOO_LARGE, f"message too large ({len(raw)} characters)")
    text = raw.strip()
    if not text:
        return None, CommandError(E_MALFORMED, "empty message")
    try:
        return json.loads(text), None
    except (ValueError, RecursionError):
        return None, CommandError(E_MALFORMED, "message is not valid JSON")


def _text(value: Any, *, limit: int = 128) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:limit] if value else None


_SHOWABLE = re.compile(r"[A-Za-z_][A-Za-z_-]{0,31}")


def _shown(value: Any) -> str:
    """How an unknown name appears in an error/log: echoed when it looks like an identifier, otherwise only
    its type and size (it could be anything the app put there, a phone number included)."""
    if isinstance(value, str) and _SHOWABLE.fullmatch(value):
        return repr(value)
    if isinstance(value, str):
        return f"<{len(value)} characters>"
    return f"<{type(value).__name__}>"


def normalize_mode(value: Any) -> str | None:
    """``"attorney"``, ``"click-to-talk"``, ``"Assistant"`` -> the canonical mode, or None."""
    if not isinstance(value, str):
        return None
    return _MODE_ALIASES.get(value.strip().lower())


def _command_from(data: Mapping[str, Any], *, name: Any, request_id: str | None) -> Command | CommandError:
    command = _text(name, limit=64)
    if command is None:
        return CommandError(E_MALFORMED, "missing 'command'", request_id)
    command = command.lower()
    if command not in COMMANDS:
        return CommandError(E_UNKNOWN_COMMAND, f"unknown command {_shown(command)}", request_id)
    if command == SWITCH_AGENT:
        raw_agent = data.get("agent", data.get("mode"))
        agent = normalize_mode(raw_agent)
        if agent is None:
            return CommandError(
                E_INVALID_AGENT, f"'agent' must be one of {', '.join(MODES)} (got {_shown(raw_agent)})", request_id
            )
        return Command(command, agent=agent, request_id=request_id)
    return Command(command, request_id=request_id)


def parse_message(raw: Any) -> Parsed:
    """One JSON message from the app (a data packet on topic ``gocare``): a command, a voice upload
    notice, or a typed error. Never raises."""
    data, error = _decode(raw)
    if error is not None:
        return error
    if not isinstance(data, dict):
        return CommandError(E_MALFORMED, f"message JSON is a {type(data).__name__}, not an object")
    request_id = _text(data.get("requestId") or data.get("request_id"), limit=64)
    kind = _text(data.get("type"), limit=32)
    if kind is None and "command" in data:
        kind = "command"
    if kind == "command":
        return _command_from(data, name=data.get("command"), request_id=request_id)
    if kind == "voice_upload":
        transcript = data.get("transcript")
        if not isinstance(transcript, str) or not transcript.strip():
            return CommandError(E_MALFORMED, "voice_upload needs a non-empty 'transcript'", request_id)
        reply = data.get("reply")
        return VoiceUpload(
            transcript=transcript.strip()[:MAX_UPLOAD_TEXT_CHARS],
            reply=reply.strip()[:MAX_UPLOAD_TEXT_CHARS] if isinstance(reply, str) and reply.strip() else None,
        )
    if kind is None:
        return CommandError(E_MALFORMED, "missing 'type'", request_id)
    return CommandError(E_UNKNOWN_TYPE, f"unknown message type {_shown(kind)}", request_id)


def parse_data_packet(payload: Any, *, topic: str | None) -> Parsed | None:
    """A data packet as LiveKit delivers it. ``None`` when it is not on our topic (``lk.chat`` and the
    other ``lk.*`` topics belong to livekit-agents' RoomIO)."""
    if topic != TOPIC:
        return None
    return parse_message(payload)


def parse_rpc(method: Any, payload: Any) -> Command | CommandError:
    """An RPC invocation: the method is the command, the payload an optional JSON object with the
    arguments (``{"agent": "attorney"}``) or the full data-packet envelope."""
    name = _text(method, limit=64)
    if name is None or name.lower() not in COMMANDS:
        return CommandError(E_UNKNOWN_COMMAND, f"unknown command {_shown(method)}")
    if payload is None or (isinstance(payload, (str, bytes)) and not payload.strip()):
        data: Any = {}
    else:
        data, error = _decode(payload)
        if error is not None:
            return error
    if not isinstance(data, dict):
        return CommandError(E_MALFORMED, f"payload JSON is a {type(data).__name__}, not an object")
    request_id = _text(data.get("requestId") or data.get("request_id"), limit=64)
    inner = data.get("command")
    if inner is not None and (not isinstance(inner, str) or inner.strip().lower() != name.lower()):
        return CommandError(E_MALFORMED, f"payload command does not match method {_shown(name)}", request_id)
    return _command_from(data, name=name, request_id=request_id)


# --- execution -------------------------------------------------------------------------------------

SwitchMode = Callable[[str], Any]


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _ok(command: Command, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": True, "command": command.name, **extra}
    if command.request_id:
        out["requestId"] = command.request_id
    return out


def _switch_refusal(result: Any) -> str | None:
    """An injected ``switch_mode`` refuses by raising an error with a ``code`` (``ModeSwitchError``) or by
    returning False, ``{"ok": False, ...}`` or a reason string; anything else (the new agent) = switched."""
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

    ``switch_mode`` is injected (a callable ``mode -> agent/result``, sync or async) so the executor does
    not depend on how agents are built; the worker binds it to ``conversation.agents.switch_mode``.
    """

    session: Any
    state: Any
    switch_mode: SwitchMode | None = None
    listening: bool = True
    turn_open: bool = False
    log_extra: dict[str, Any] = field(default_factory=dict)

    def _mode(self) -> str | None:
        mode = getattr(self.state, "mode", None)
        return getattr(mode, "value", mode)

    def _authenticated(self) -> bool:
        return bool(getattr(self.state, "authenticated", False))

    def _set_listening(self, value: bool) -> None:
        self.listening = value
        if hasattr(self.state, "conversation_active"):
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
        if hasattr(fut, "add_done_callback"):
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())

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
            return CommandError(E_FAILED, f"{command.name} failed: {type(error).__name__}", command.request_id).answer()

    async def _execute(self, command: Command) -> dict[str, Any]:
        name = command.name
        if name == START_CONVERSATION:
            self._set_audio(input_enabled=self._mode() != "click_to_talk", output_enabled=True)
            self._set_listening(True)
            # before verification the caller talks to the number check, whatever mode is preset
            agent = self._mode() if self._authenticated() else PRE_AUTH_AGENT
            return _ok(command, listening=True, agent=agent)
        if name == STOP_CONVERSATION:
            self._interrupt()
            try:
                self.session.clear_user_turn()
            except RuntimeError:
                pass
            self._set_audio(input_enabled=False, output_enabled=False)
            self._set_listening(False)
            self.turn_open = False
            return _ok(command, listening=False)
        if name == SWITCH_AGENT:
            return await self._switch(command)
        if name in TURN_COMMANDS:
            return self._turn(command)
        return CommandError(E_UNKNOWN_COMMAND, f"unknown command {name!r}", command.request_id).answer()

    async def _switch(self, command: Command) -> dict[str, Any]:
        assert command.agent is not None
        if not self._authenticated():
            return CommandError(
                E_NOT_AUTHENTICATED, "switching agents needs the mobile number verified first", command.request_id
            ).answer()
        if self.switch_mode is None:
            return CommandError(E_NOT_READY, "the session is not ready to switch agents", command.request_id).answer()
        try:
            result = await _maybe_await(self.switch_mode(command.agent))
        except Exception as error:  # noqa: BLE001 - a refusal (ModeSwitchError) or a failure: both answered
            code = getattr(error, "code", None)
            mapped = {"not_authenticated": E_NOT_AUTHENTICATED, "unknown_mode": E_INVALID_AGENT}.get(str(code))
            if mapped is None:
                raise
            return CommandError(mapped, str(error), command.request_id).answer()
        refusal = _switch_refusal(result)
        if refusal is not None:
            code = E_NOT_AUTHENTICATED if "auth" in refusal.lower() else E_FAILED
            return CommandError(code, f"switch refused: {refusal}", command.request_id).answer()
        self.turn_open = False
        if self.listening:
            # push-to-talk keeps the microphone closed between turns; the other modes listen all the time
            self._set_audio(input_enabled=command.agent != "click_to_talk")
        return _ok(command, agent=command.agent)

    def _turn(self, command: Command) -> dict[str, Any]:
        if self._mode() != "click_to_talk":
            return CommandError(
                E_NOT_PUSH_TO_TALK, f"{command.name} is only accepted in click_to_talk mode", command.request_id
            ).answer()
        if not self.listening:
            return CommandError(E_STOPPED, "the conversation is stopped; send start_conversation", command.request_id).answer()
        if command.name == START_TURN:
            self._interrupt()
            self.session.clear_user_turn()
            self._set_audio(input_enabled=True)
            self.turn_open = True
            return _ok(command, turn="open")
        if command.name == END_TURN:
            self._set_audio(input_enabled=False)
            fut = self.session.commit_user_turn(transcript_timeout=CLICK_TO_TALK_TRANSCRIPT_TIMEOUT)
            if hasattr(fut, "add_done_callback"):
                fut.add_done_callback(lambda f: f.cancelled() or f.exception())
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
            agent = self.session.current_agent
            chat_ctx = agent.chat_ctx.copy()
            chat_ctx.add_message(role="user", content=upload.transcript)
            if upload.reply:
                chat_ctx.add_message(role="assistant", content=upload.reply)
            await _maybe_await(agent.update_chat_ctx(chat_ctx))
        except Exception as error:  # noqa: BLE001
            logger.warning("voice upload not added to the chat: %s: %s", type(error).__name__, error, extra=self.log_extra)
            return {"ok": False, "error": E_FAILED, "message": "voice upload not added"}
        return {"ok": True, "type": "voice_upload", "chars": len(upload.transcript)}
