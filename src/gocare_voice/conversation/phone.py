"""Speech -> mobile number: what the user said (or typed) -> E.164.

Pure functions, no LiveKit import: the agent's verification tool, ``gocare users`` and the directory all
normalise numbers the same way, so a number registered from the shell matches the one spoken to the agent.

Speech-to-text hands us numbers in every shape: "nine eight seven six...", "double five", "triple two",
"oh" for zero, "plus nine one", "98765 43210", "(987) 654-3210", "+91-98765.43210", "0091 ...", mixed words
and digits. We turn that into a dial string first (digits and an optional leading ``+``), then let
``phonenumbers`` decide with the configured default region whether it is a real number.

Nothing here logs; callers that log use :func:`gocare_voice.redact.mask_phone` on the result.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import phonenumbers

MAX_INPUT_CHARS = 300
"""Longer input is not a phone number someone said; refuse it before doing any work on it."""

MIN_DIGITS = 6
MAX_DIGITS = 17
"""E.164 allows 15 digits; with an international prefix (00 / 011) a spoken number can reach 17."""

_UNITS: dict[str, int] = {
    "zero": 0, "oh": 0, "o": 0, "nought": 0, "naught": 0, "nil": 0, "null": 0,
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9,
}
_TEENS: dict[str, int] = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS: dict[str, int] = {
    "twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}
_REPEAT: dict[str, int] = {"double": 2, "triple": 3, "treble": 3, "quadruple": 4}
_PLUS_WORDS = frozenset({"plus"})
NUMBER_WORDS = frozenset({*_UNITS, *_TEENS, *_TENS, *_REPEAT, *_PLUS_WORDS, "hundred", "thousand"})
"""Every word ``spoken_to_dial_string`` reads as part of a number (``redact.mask_digit_runs`` masks them)."""
_TOKEN = re.compile(r"\+|[^\W\d_]+|\d", re.UNICODE)

_VALID_TYPES_LABEL = {
    phonenumbers.PhoneNumberType.MOBILE: "mobile",
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed_line_or_mobile",
    phonenumbers.PhoneNumberType.FIXED_LINE: "fixed_line",
    phonenumbers.PhoneNumberType.VOIP: "voip",
    phonenumbers.PhoneNumberType.PERSONAL_NUMBER: "personal",
    phonenumbers.PhoneNumberType.UAN: "uan",
    phonenumbers.PhoneNumberType.PAGER: "pager",
}
"""Number types a person can plausibly register; toll-free, premium-rate and the like are refused."""


@dataclass(frozen=True, slots=True)
class PhoneParse:
    """The outcome of reading one number: ``e164`` when valid, otherwise ``reason`` says why not.

    ``reason`` never contains the digits heard, so it can be logged and shown to the LLM as is.
    """

    e164: str | None
    reason: str | None = None
    number_type: str | None = None
    digit_count: int = 0

    @property
    def ok(self) -> bool:
        return self.e164 is not None


def _digit_value(char: str) -> int | None:
    """ASCII and other-script decimal digits (Devanagari, Arabic-Indic, fullwidth) are all digits."""
    try:
        return unicodedata.decimal(char)
    except (TypeError, ValueError):
        return None


def spoken_to_dial_string(text: str) -> str:
    """Words, digits and punctuation -> ``"+919876543210"`` / ``"09876543210"`` (digits, optional ``+``).

    Unknown words ("my", "number", "is", "um") are skipped; "double"/"triple" repeat the next digit;
    "ninety eight" is 98, "ten" is 10, "nine hundred" is 900. A ``+`` (or "plus") counts only before the
    first digit.
    """
    tokens = _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())
    out: list[str] = []
    plus = False
    repeat = 1
    i = 0
    n = len(tokens)

    def emit(digits: str) -> None:
        nonlocal repeat
        if not digits:
            return
        out.append(digits[0] * repeat + digits[1:])
        repeat = 1

    while i < n:
        tok = tokens[i]
        i += 1
        if tok == "+" or tok in _PLUS_WORDS:
            if not out:
                plus = True
            continue
        if tok in _REPEAT:
            repeat = _REPEAT[tok]
            continue
        if len(tok) == 1 and (value := _digit_value(tok)) is not None:
            emit(str(value))
            continue
        if tok in _TENS:
            value = _TENS[tok]
            if i < n and tokens[i] in _UNITS and _UNITS[tokens[i]] != 0 and tokens[i] not in ("o", "oh"):
                value += _UNITS[tokens[i]]
                i += 1
            emit(str(value))
            continue
        if tok in _TEENS:
            emit(str(_TEENS[tok]))
            continue
        if tok in _UNITS:
            value = _UNITS[tok]
            # "nine hundred", "two thousand": a multiplier right after a unit
            if i < n and tokens[i] in ("hundred", "thousand") and value != 0:
                zeros = 2 if tokens[i] == "hundred" else 3
                i += 1
                emit(str(value) + "0" * zeros)
                continue
            emit(str(value))
            continue
        if tok == "hundred":
            emit("100")
            continue
        # anything else ("my", "number", "is", "it's", "and") is filler
    return ("+" if plus else "") + "".join(out)


def parse_phone_number(text: object, *, region: str) -> PhoneParse:
    """Read a number said or typed in any of the usual shapes; never raises.

    ``region`` is the default region (``GOCARE_PHONE_REGION``, e.g. ``IN``) for numbers said without a
    country code.
    """
    if not isinstance(text, str):
        return PhoneParse(None, "no number given")
    if len(text) > MAX_INPUT_CHARS:
        return PhoneParse(None, "input too long to be a phone number")
    region = (region or "").strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        return PhoneParse(None, f"unknown default region {region!r}")
    dial = spoken_to_dial_string(text)
    digits = dial.lstrip("+")
    count = len(digits)
    if count == 0:
        return PhoneParse(None, "no digits heard")
    if count < MIN_DIGITS:
        return PhoneParse(None, f"too few digits ({count})", digit_count=count)
    if count > MAX_DIGITS:
        return PhoneParse(None, f"too many digits ({count})", digit_count=count)
    if not dial.startswith("+") and digits.startswith("00"):
        # international prefix said out loud ("double oh nine one ..."); the same in every region we serve
        dial = "+" + digits[2:]
    try:
        number = phonenumbers.parse(dial, region)
    except phonenumbers.NumberParseException as error:
        if error.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            return PhoneParse(None, "unknown country code", digit_count=count)
        return PhoneParse(None, "not a phone number", digit_count=count)
    if not phonenumbers.is_valid_number(number):
        if phonenumbers.region_code_for_country_code(number.country_code or 0) == phonenumbers.UNKNOWN_REGION:
            return PhoneParse(None, "unknown country code", digit_count=count)
        return PhoneParse(None, "not a valid number (wrong length or prefix)", digit_count=count)
    label = _VALID_TYPES_LABEL.get(phonenumbers.number_type(number))
    if label is None:
        return PhoneParse(None, "not a personal phone number (toll-free, premium-rate or similar)", digit_count=count)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return PhoneParse(e164, None, number_type=label, digit_count=count)


def normalize_phone_number(text: object, *, region: str) -> str | None:
    """E.164 or None: the short form for callers that only need the number."""
    return parse_phone_number(text, region=region).e164


def is_e164(value: object) -> bool:
    """Cheap shape check for values that should already be normalised (database rows, test fixtures)."""
    return isinstance(value, str) and re.fullmatch(r"\+[1-9]\d{5,14}", value) is not None
