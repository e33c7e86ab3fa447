"""Pure checks of what callers send: names, identities, metadata, room_config. Each failure is an ApiError
with a message a Flutter developer can act on."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any


from gocare_voice.conversation.identity import IDENTITY_KEYS, MetadataJSONError, parse_metadata_json
from gocare_voice.token_service.errors import ApiError
from gocare_voice.token_service.rooms import MAX_ROOM_BYTES

MAX_NAME_CHARS = 128
MAX_ROOM_CHARS = MAX_ROOM_BYTES
"""A room holds a user id (up to ``MAX_NAME_CHARS``), the separator and a label, so it may be longer than
a name: up to LiveKit's limit (``MAX_ROOM_BYTES`` bytes, checked too)."""
MAX_METADATA_BYTES = 4096
MAX_ATTRIBUTES = 32


# Bidirectional overrides/isolates can make a name display as something else; line separators break logs.
_REFUSED_FORMAT_CHARS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")


_CONTROL_CLASS = "\\u0000-\\u001f\\u007f-\\u009f\\ud800-\\udfff" + "".join(
    f"\\u{ord(ch):04x}" for ch in sorted(_REFUSED_FORMAT_CHARS)
)
NAME_PATTERN = f"^[^{_CONTROL_CLASS}]*[^\\s{_CONTROL_CLASS}][^{_CONTROL_CLASS}]*$"
"""``check_name``'s rule as a JSON-schema pattern, for the OpenAPI document: not blank, no control
characters, surrogates, bidi overrides/isolates or line separators."""
OPTIONAL_NAME_PATTERN = f"^[^{_CONTROL_CLASS}]*$"
"""For optional fields: blank means "not given" there, control characters are still refused."""
OPTIONAL_NAME_SCHEMA: dict[str, Any] = {"type": "string", "maxLength": MAX_NAME_CHARS, "pattern": OPTIONAL_NAME_PATTERN}
OPTIONAL_ROOM_SCHEMA: dict[str, Any] = {**OPTIONAL_NAME_SCHEMA, "maxLength": MAX_ROOM_CHARS}


def _has_control(text: str) -> bool:
    """Control characters, surrogates and the bidi/line-separator format characters. Other format
    characters stay allowed: zero-width joiners are part of emoji and of Indic and Arabic names."""
    return any(
        ch in _REFUSED_FORMAT_CHARS or unicodedata.category(ch) in ("Cc", "Cs") for ch in text
    )


def check_name(value: Any, *, field: str, required: bool = True, max_chars: int = MAX_NAME_CHARS) -> str | None:
    """Room names, identities and display names: a string of 1..max characters, not blank, no control
    characters (they break logs, dashboards and the client SDKs' own validation)."""
    if value is None:
        if required:
            raise ApiError(422, "validation_error", f"'{field}' is required")
        return None
    if not isinstance(value, str):
        raise ApiError(422, "validation_error", f"'{field}' must be a string, not {type(value).__name__}")
    if not value.strip():
        if required:
            raise ApiError(422, "validation_error", f"'{field}' must not be empty or blank")
        return None
    if len(value) > max_chars:
        raise ApiError(422, "validation_error", f"'{field}' is {len(value)} characters long; at most {max_chars}")
    if _has_control(value):
        raise ApiError(422, "validation_error", f"'{field}' must not contain control characters")
    return value


def check_room(value: Any, *, field: str, required: bool = True) -> str | None:
    """A room name: ``check_name``'s rule with room for ``<user id>~<label>``, and at most LiveKit's
    ``MAX_ROOM_BYTES`` bytes of UTF-8 (a longer one would be refused only when the app joins)."""
    room = check_name(value, field=field, required=required, max_chars=MAX_ROOM_CHARS)
    if room is not None and len(room.encode("utf-8", "surrogatepass")) > MAX_ROOM_BYTES:
        raise ApiError(422, "validation_error", f"'{field}' is longer than {MAX_ROOM_BYTES} bytes (UTF-8)")
    return room


def _refuse_identity_keys(keys: Any, *, field: str) -> None:
    taken = sorted(str(k) for k in keys if k in IDENTITY_KEYS)
    if taken:
        raise ApiError(
            422, "validation_error",
            f"'{field}' may not set {', '.join(taken)}: the service sets who the user is",
        )


def check_metadata_object(value: Any, *, field: str) -> dict[str, Any]:
    """Participant metadata is a JSON object (as a string, LiveKit's wire shape, or already an object).
    Keys the worker reads an identity from are dropped: the service writes ``userId``/``userName`` itself."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        if len(value.encode("utf-8", "surrogatepass")) > MAX_METADATA_BYTES:
            raise ApiError(422, "validation_error", f"'{field}' is larger than {MAX_METADATA_BYTES} bytes")
        try:
            value = parse_metadata_json(value)
        except MetadataJSONError:
            raise ApiError(422, "validation_error", f"'{field}' must be a JSON object encoded as a string") from None
    if not isinstance(value, dict):
        raise ApiError(422, "validation_error", f"'{field}' must be a JSON object")
    return {k: v for k, v in value.items() if k not in IDENTITY_KEYS}


def check_attributes(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ApiError(422, "validation_error", "'participant_attributes' must be an object of strings")
    if len(value) > MAX_ATTRIBUTES:
        raise ApiError(422, "validation_error", f"'participant_attributes' has more than {MAX_ATTRIBUTES} keys")
    _refuse_identity_keys(value, field="participant_attributes")
    for key, item in value.items():
        check_name(key, field="participant_attributes key")
        if not isinstance(item, str) or len(item) > MAX_METADATA_BYTES:
            raise ApiError(
                422, "validation_error", f"'participant_attributes.{key}' must be a string of at most "
                f"{MAX_METADATA_BYTES} characters"
            )
    return value or None


_AGENT_NAME_KEYS = ("agent_name", "agentName")


def check_room_config(value: Any, *, agent_name: str) -> str | None:
    """Client-sent ``room_config`` is never forwarded: the service decides the agent dispatch. Accepted:
    nothing, ``{}`` (Flutter always sends it), or ``{"agents": [{"agent_name": <ours>, "metadata": "..."}]}``.
    Returns the dispatch metadata the caller asked for, if any."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ApiError(422, "room_config_refused", "'room_config' must be an object")
    unknown = sorted(set(value) - {"agents"})
    if unknown:
        raise ApiError(
            422, "room_config_refused",
            f"room_config may only request the agent dispatch; refused fields: {', '.join(unknown)}",
        )
    agents = value.get("agents")
    if agents is None or agents == []:
        return None
    if not isinstance(agents, list) or len(agents) != 1 or not isinstance(agents[0], Mapping):
        raise ApiError(422, "room_config_refused", "room_config.agents must hold exactly one dispatch object")
    dispatch = agents[0]
    extra = sorted(set(dispatch) - {*_AGENT_NAME_KEYS, "metadata"})
    if extra:
        raise ApiError(422, "room_config_refused", f"room_config.agents[0] refused fields: {', '.join(extra)}")
    for key in _AGENT_NAME_KEYS:
        if key in dispatch and not isinstance(dispatch[key], str):
            raise ApiError(422, "room_config_refused", f"room_config.agents[0].{key} must be a string")
    names = {dispatch[k] for k in _AGENT_NAME_KEYS if k in dispatch}
    if len(names) > 1:
        raise ApiError(422, "room_config_refused", "room_config.agents[0] names two different agents")
    requested = names.pop() if names else agent_name
    if requested != agent_name:
        raise ApiError(
            422, "room_config_refused", f"this service dispatches agent '{agent_name}', not {requested!r}"
        )
    metadata = dispatch.get("metadata")
    if metadata is None or metadata == "":
        return None
    if not isinstance(metadata, str) or len(metadata) > MAX_METADATA_BYTES:
        raise ApiError(
            422, "room_config_refused", f"room_config.agents[0].metadata must be a string of at most "
            f"{MAX_METADATA_BYTES} characters"
        )
    try:
        parsed = parse_metadata_json(metadata)  # the worker's own reader: what it cannot read holds no identity
    except MetadataJSONError:
        return metadata  # free text for the agent: the worker reads no identity from it either
    if isinstance(parsed, dict):
        _refuse_identity_keys(parsed, field="room_config.agents[0].metadata")
    return metadata
