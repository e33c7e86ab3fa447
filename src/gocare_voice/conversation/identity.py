"""Who is on the other end: metadata -> identity -> greeting.

Pure functions with no LiveKit import: the worker, ``gocare test-metadata`` and the token service all use
these, so what the CLI prints is exactly what the agent will do. Malformed input of any kind means
"no identity" plus a reason, never an exception.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gocare_voice.protocol import welcome_packet

MAX_METADATA_CHARS = 64 * 1024
MAX_FIELD_CHARS = 128

ID_KEYS = ("userId", "user_id", "userid", "uid", "id")
NAME_KEYS = ("userName", "user_name", "username", "name", "fullName", "full_name", "displayName")
IDENTITY_KEYS = frozenset((*ID_KEYS, *NAME_KEYS, "user"))
"""Every key the worker reads an identity from; the token service lets no caller set them."""

MAX_USER_NESTING = 4
"""How deep ``{"user": {"user": ...}}`` is followed. Unbounded, ~980 levels raised RecursionError out of the
reader (a traceback in ``gocare test-metadata``, an exception escaping the worker's join handler)."""

_JSON_WHITESPACE = " \t\n\r"


class MetadataJSONError(ValueError):
    """Not a JSON text by RFC 8259 (what orjson accepts)."""


def parse_metadata_json(text: str | bytes) -> Any:
    """The one JSON reader for metadata, used by the token service when it checks what a caller sends and
    by the worker when it reads it. Two readers used to disagree: the service checked with orjson and let
    what orjson refused pass as free text, the worker read it with ``json.loads`` after ``str.strip()``,
    which accepts ``NaN``/``Infinity``, lone surrogates, and strips a non-breaking space or a trailing
    U+2028 first, so such a value smuggled an identity past the check. Now both sides read RFC 8259 JSON
    (only its own whitespace around it) or nothing."""
    import orjson

    if isinstance(text, str):
        text = text.strip(_JSON_WHITESPACE)
    else:
        text = bytes(text).strip(_JSON_WHITESPACE.encode())
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise MetadataJSONError(str(error)) from None


SAMPLE_METADATA = '{"userId": "user-123", "userName": "John Doe"}'


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str | None = None
    user_name: str | None = None
    source: str | None = None

    @property
    def found(self) -> bool:
        return bool(self.user_id or self.user_name)

    @property
    def first_name(self) -> str | None:
        return first_name(self.user_name)


@dataclass(frozen=True, slots=True)
class MetadataReading:
    """What one metadata value yielded; ``problem`` says why nothing came out of a non-empty value."""

    identity: Identity
    problem: str | None = None


def display_name(value: Any, *, limit: int = MAX_FIELD_CHARS) -> str | None:
    """A name or id as the worker and the token service keep it: ``clean_text``, cut at ``limit``; an
    integer counts as text (``"userId": 42``), anything else (bool, float, object, blank) is no value.
    The directory uses ``clean_text`` too, but refuses an over-long name instead of cutting it."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        value = str(value) if isinstance(value, int) else None
        if value is None:
            return None
    if not isinstance(value, str):
        return None
    text = clean_text(value)
    return text[:limit] if text else None


def participant_metadata(*, user_id: str, user_name: str | None, extra: Mapping[str, Any] | None = None) -> str:
    """The participant metadata a token carries and the worker reads: ``userId`` and, when known,
    ``userName`` always win over ``extra`` (what a caller sent), so nobody poses as someone else through
    metadata. No name -> no ``userName``: the agent waits briefly for the app's ``setMetadata``, then greets
    without a name, instead of greeting the user by their identity ("Welcome user-42!")."""
    import orjson

    metadata = {**(extra or {}), "userId": user_id}
    if user_name:
        metadata["userName"] = user_name
    return orjson.dumps(metadata).decode()


def clean_text(value: str) -> str:
    """One line of display text: whitespace of any kind (newline, tab, no-break space) separates words;
    other control and format characters go, except the zero-width joiners that are part of emoji and of
    Indic and Arabic names. The one home of display-name cleaning (metadata, directory, token claims)."""
    kept = []
    for ch in value:
        if ch.isspace():
            kept.append(" ")
        elif unicodedata.category(ch)[0] != "C" or ch in "\u200c\u200d":
            kept.append(ch)
    return " ".join("".join(kept).split())


def _pick(data: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        if key in data:
            found = display_name(data[key])
            if found:
                return found
    return None


def identity_from_mapping(data: Mapping[str, Any], *, source: str, _depth: int = 0) -> Identity:
    user = data.get("user")
    if isinstance(user, Mapping) and _depth < MAX_USER_NESTING:
        nested = identity_from_mapping(user, source=source, _depth=_depth + 1)
        if nested.found:
            return nested
    return Identity(user_id=_pick(data, ID_KEYS), user_name=_pick(data, NAME_KEYS), source=source)


def read_metadata(raw: str | bytes | Mapping[str, Any] | None, *, source: str = "metadata") -> MetadataReading:
    """Parse one metadata value (participant metadata, dispatch metadata, a CLI argument)."""
    if raw is None:
        return MetadataReading(Identity())
    if isinstance(raw, Mapping):
        return MetadataReading(identity_from_mapping(raw, source=source))
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return MetadataReading(Identity(), "metadata is not valid UTF-8")
    if not isinstance(raw, str):
        return MetadataReading(Identity(), f"metadata has unexpected type {type(raw).__name__}")
    text = raw.strip(_JSON_WHITESPACE)
    if not text:
        return MetadataReading(Identity())
    if len(text) > MAX_METADATA_CHARS:
        return MetadataReading(Identity(), f"metadata too large ({len(text)} characters)")
    try:
        data = parse_metadata_json(text)
    except MetadataJSONError:
        return MetadataReading(Identity(), "metadata is not valid JSON")
    if not isinstance(data, dict):
        return MetadataReading(Identity(), f"metadata JSON is a {type(data).__name__}, not an object")
    identity = identity_from_mapping(data, source=source)
    if not identity.found:
        return MetadataReading(identity, "metadata has no userId or userName")
    return MetadataReading(identity)


def merge_identities(*identities: Identity) -> Identity:
    """First non-empty value wins for each field, in the order given (most trusted first)."""
    user_id = next((i.user_id for i in identities if i.user_id), None)
    user_name = next((i.user_name for i in identities if i.user_name), None)
    source = next((i.source for i in identities if i.user_id or i.user_name), None)
    return Identity(user_id=user_id, user_name=user_name, source=source)


def identity_from_participant(
    *, metadata: Any = None, attributes: Mapping[str, Any] | None = None, job_metadata: Any = None
) -> tuple[Identity, list[str]]:
    """Everything the worker knows about a participant -> one identity, plus the problems seen.

    Order of trust: the participant's own metadata (written into the token by our token service or set by
    the app), then its attributes, then the dispatch metadata.
    """
    problems: list[str] = []
    readings = [read_metadata(metadata, source="participant.metadata")]
    attrs: Mapping[str, Any] = attributes if isinstance(attributes, Mapping) else {}
    readings.append(MetadataReading(identity_from_mapping(attrs, source="participant.attributes")))
    readings.append(read_metadata(job_metadata, source="job.metadata"))
    for reading, label in zip(readings, ("participant.metadata", "participant.attributes", "job.metadata"), strict=True):
        if reading.problem:
            problems.append(f"{label}: {reading.problem}")
    return merge_identities(*(r.identity for r in readings)), problems


# Honorifics said before a name; the greeting uses the first word after them ("Dr. Alice Brown" -> Alice).
_TITLES = frozenset(
    "mr mrs ms miss mx dr prof professor sir dame madam mme mlle rev fr shri sri smt kumari mister doctor "
    "hon capt lt col sgt herr frau".split()
)


def _is_word(token: str) -> bool:
    """A token with at least one letter (an emoji, "-" or "#1" is not a name)."""
    return any(unicodedata.category(ch).startswith("L") for ch in token)


def first_name(full_name: str | None) -> str | None:
    """The word to greet with: the first word with a letter in it that is not a title; surrounding
    punctuation is dropped ("(Bob)" -> "Bob"), inner punctuation kept ("O'Neil", "Jean-Luc")."""
    if not full_name:
        return None
    for token in clean_text(full_name).split(" "):
        # punctuation, emoji and other symbols at the edges go: "(Bob)", "😀Bob", "Dr." -> "Dr"
        word = token
        while word and not unicodedata.category(word[0]).startswith(("L", "N", "M")):
            word = word[1:]
        while word and not unicodedata.category(word[-1]).startswith(("L", "N", "M")):
            word = word[:-1]
        if not _is_word(word) or word.lower() in _TITLES:
            continue
        return word
    return None


def greeting_text(identity: Identity | None) -> str:
    name = identity.first_name if identity else None
    if name:
        return f"Welcome {name}! Please say your registered mobile number."
    return "Welcome. Please say your registered mobile number."


def welcome_payload(identity: Identity) -> dict[str, Any]:
    """The welcome data packet the agent sends on topic ``gocare`` (see docs/protocol.md)."""
    return welcome_packet(message=greeting_text(identity), user_id=identity.user_id, user_name=identity.user_name)
