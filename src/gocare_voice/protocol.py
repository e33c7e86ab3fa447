"""The app <-> agent protocol: the one home of the contract the Flutter app codes against.

Topic, message types, command names, agent modes and their aliases, error codes; parsing of what arrives
(data packets and RPC payloads) and building of what the agent and the token service send (welcome,
command_result, voice_upload, agent_unavailable). Pure: no LiveKit import, so the worker, the upload
notifier, the probe, the CLI and the docs' tables (``tests/test_protocol_docs.py`` checks
docs/protocol.md against this module) all read the same names.

Parsing never raises: garbage from the network becomes a typed ``CommandError`` that the worker logs and,
over RPC, answers with. Executing commands against a session lives apart, in
``conversation/executor.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

TOPIC = "gocare"
"""The data-packet topic of every GoCare message (``lk.*`` topics belong to the LiveKit SDKs)."""
MAX_MESSAGE_BYTES = 64 * 1024
MAX_UPLOAD_TEXT_CHARS = 16 * 1024

# --- message types -----------------------------------------------------------------------------------
# app -> agent
COMMAND = "command"
# token service (server API) -> agent
VOICE_UPLOAD = "voice_upload"
# agent / worker -> app
WELCOME = "welcome"
COMMAND_RESULT = "command_result"
AGENT_UNAVAILABLE = "agent_unavailable"
INCOMING_TYPES = (COMMAND, VOICE_UPLOAD)
OUTGOING_TYPES = (WELCOME, COMMAND_RESULT, AGENT_UNAVAILABLE)

# --- commands ----------------------------------------------------------------------------------------
START_CONVERSATION = "start_conversation"
STOP_CONVERSATION = "stop_conversation"
SWITCH_AGENT = "switch_agent"
START_TURN = "start_turn"
END_TURN = "end_turn"
CANCEL_TURN = "cancel_turn"
COMMANDS = (START_CONVERSATION, STOP_CONVERSATION, SWITCH_AGENT, START_TURN, END_TURN, CANCEL_TURN)
TURN_COMMANDS = (START_TURN, END_TURN, CANCEL_TURN)

# --- agent modes -------------------------------------------------------------------------------------
Mode = Literal["assistant", "attorney", "click_to_talk"]
MODE_ALIASES: dict[Mode, tuple[str, ...]] = {
    "assistant": ("main",),
    "attorney": (),
    "click_to_talk": ("click-to-talk", "clicktotalk", "push_to_talk", "push-to-talk"),
}
"""The one table of the modes the app can ``switch_agent`` to, each with the other spellings accepted
for it. ``Mode`` must name the same modes (a test checks it), and ``conversation/agents.py`` has an agent
class for each (checked when it is imported)."""
MODES: tuple[Mode, ...] = tuple(MODE_ALIASES)
_MODE_BY_NAME: dict[str, Mode] = {
    name: mode for mode, aliases in MODE_ALIASES.items() for name in (mode, *aliases)
}
DEFAULT_MODE: Mode = "assistant"
PUSH_TO_TALK_MODE: Mode = "click_to_talk"
PRE_AUTH_AGENT = "authentication"
"""What ``start_conversation`` reports as the agent before the number is verified: the number check, not a
mode the app could switch to."""

# --- error codes the app can branch on ---------------------------------------------------------------
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
ERROR_CODES = (
    E_MALFORMED, E_TOO_LARGE, E_UNKNOWN_TYPE, E_UNKNOWN_COMMAND, E_INVALID_AGENT, E_NOT_AUTHENTICATED,
    E_NOT_PUSH_TO_TALK, E_STOPPED, E_NOT_READY, E_FORBIDDEN, E_FAILED,
)

UNAVAILABLE_MESSAGE = "The assistant stopped unexpectedly and cannot rejoin right now. Please call again later."

TOPIC = "gocare"
MAX_MESSAGE_BYTES = 64 * 1024
MAX_UPLOAD_TEXT_CHARS = 16 * 1024

@dataclass(frozen=True, slots=True)
class Command:
    name: str
    agent: Mode | None = None
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


def shown(value: Any) -> str:
    """How an unknown name appears in an error/log: echoed when it looks like an identifier, otherwise only
    its type and size (it could be anything the app put there, a phone number included)."""
    if isinstance(value, str) and _SHOWABLE.fullmatch(value):
        return repr(value)
    if isinstance(value, str):
        return f"<{len(value)} characters>"
    return f"<{type(value).__name__}>"


def normalize_mode(value: Any) -> Mode | None:
    """``"attorney"``, ``"click-to-talk"``, ``"Assistant"`` -> the canonical mode, or None."""
    if not isinstance(value, str):
        return None
    return _MODE_BY_NAME.get(value.strip().lower())


def _command_from(data: Mapping[str, Any], *, name: Any, request_id: str | None) -> Command | CommandError:
    command = _text(name, limit=64)
    if command is None:
        return CommandError(E_MALFORMED, "missing 'command'", request_id)
    command = command.lower()
    if command not in COMMANDS:
        return CommandError(E_UNKNOWN_COMMAND, f"unknown command {shown(command)}", request_id)
    if command == SWITCH_AGENT:
        raw_agent = data.get("agent", data.get("mode"))
        agent = normalize_mode(raw_agent)
        if agent is None:
            return CommandError(
                E_INVALID_AGENT, f"'agent' must be one of {', '.join(MODES)} (got {shown(raw_agent)})", request_id
            )
        return Command(command, agent=agent, request_id=request_id)
    return Command(command, request_id=request_id)


def _json_object(raw: Any, *, what: str) -> tuple[dict[str, Any], str | None] | CommandError:
    """A JSON object and its ``requestId``, or the error saying why ``raw`` is not one."""
    data, error = _decode(raw)
    if error is not None:
        return error
    if not isinstance(data, dict):
        return CommandError(E_MALFORMED, f"{what} JSON is a {type(data).__name__}, not an object")
    return data, _text(data.get("requestId") or data.get("request_id"), limit=64)


def parse_message(raw: Any) -> Parsed:
    """One JSON message from the app (a data packet on topic ``gocare``): a command, a voice upload
    notice, or a typed error. Never raises."""
    read = _json_object(raw, what="message")
    if isinstance(read, CommandError):
        return read
    data, request_id = read
    kind = _text(data.get("type"), limit=32)
    if kind is None and "command" in data:
        kind = COMMAND
    if kind == COMMAND:
        return _command_from(data, name=data.get("command"), request_id=request_id)
    if kind == VOICE_UPLOAD:
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
    return CommandError(E_UNKNOWN_TYPE, f"unknown message type {shown(kind)}", request_id)


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
        return CommandError(E_UNKNOWN_COMMAND, f"unknown command {shown(method)}")
    empty = payload is None or (isinstance(payload, (str, bytes)) and not payload.strip())
    read = _json_object({} if empty else payload, what="payload")
    if isinstance(read, CommandError):
        return read
    data, request_id = read
    inner = data.get("command")
    if inner is not None and (not isinstance(inner, str) or inner.strip().lower() != name.lower()):
        return CommandError(E_MALFORMED, f"payload command does not match method {shown(name)}", request_id)
    return _command_from(data, name=name, request_id=request_id)


# --- what the agent and the token service send --------------------------------------------------------


def welcome_packet(*, message: str, user_id: str | None, user_name: str | None) -> dict[str, Any]:
    """Agent -> app, once per participant after the spoken greeting (docs/protocol.md section 2)."""
    return {"type": WELCOME, "message": message, "userId": user_id, "userName": user_name}


def command_result_packet(answer: Mapping[str, Any]) -> dict[str, Any]:
    """Agent -> app: the answer to a command sent as a data packet (the same answer RPC callers get)."""
    return {"type": COMMAND_RESULT, **answer}


def voice_upload_packet(*, transcript: str, reply: str | None) -> dict[str, Any]:
    """Token service -> agent: what was said in a recorded upload; ``reply`` is None when the LLM failed."""
    return {"type": VOICE_UPLOAD, "transcript": transcript, "reply": reply}


def agent_unavailable_packet(message: str = UNAVAILABLE_MESSAGE) -> dict[str, Any]:
    """Worker -> app: the agent died and may not come back (its re-dispatch budget is spent)."""
    return {"type": AGENT_UNAVAILABLE, "message": message}


def encode(packet: Mapping[str, Any]) -> bytes:
    """The bytes of a packet on topic ``gocare`` (UTF-8 JSON)."""
    return json.dumps(packet, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def parse_agent_packet(raw: Any, *, topic: str | None) -> dict[str, Any] | None:
    """What the app side reads (the probe, the tests' app): a JSON object on topic ``gocare``, else None."""
    if topic != TOPIC:
        return None
    data, error = _decode(raw)
    if error is not None or not isinstance(data, dict):
        return None
    return data
