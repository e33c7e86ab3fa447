"""Spoken and typed numbers -> E.164 (pure functions, no LiveKit)."""

from __future__ import annotations

import pytest

from gocare_voice.conversation.phone import (
    is_e164,
    normalize_phone_number,
    parse_phone_number,
    spoken_to_dial_string,
)
from gocare_voice.redact import mask_phone

JOHN = "+919876543210"


@pytest.mark.parametrize(
    "said",
    [
        "9876543210",
        "98765 43210",
        "98765-43210",
        "98765.43210",
        "(98765) 43210",
        "+91 98765 43210",
        "+91-98765-43210",
        "0091 98765 43210",
        "919876543210",
        "09876543210",
        "nine eight seven six five four three two one zero",
        "Nine, eight, seven, six, five... four three two one oh",
        "my number is nine eight seven six five four three two one o",
        "plus nine one nine eight seven six five four three two one zero",
        "plus nine one 98765 43210",
        "98765 four three two one zero",
        "ninety eight seven six five four three two ten",
        "nine eight seven six five four three two one zero.",
        "\u096f\u096e\u096d\u096c\u096b\u096a\u0969\u0968\u0967\u0966",  # Devanagari digits
        "\uff19\uff18\uff17\uff16\uff15\uff14\uff13\uff12\uff11\uff10",  # fullwidth digits
    ],
)
def test_many_shapes_of_the_same_number(said: str) -> None:
    result = parse_phone_number(said, region="IN")
    assert result.e164 == JOHN, result.reason
    assert result.ok and result.reason is None
    assert result.number_type == "mobile"


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("double five", "55"),
        ("triple two", "222"),
        ("nine double eight seven", "9887"),
        ("treble oh one", "0001"),
        ("double 5 six", "556"),
        ("plus nine one", "+91"),
        ("nine plus one", "91"),  # a plus after the first digit is noise
        ("nine hundred", "900"),
        ("twenty", "20"),
        ("forty two", "42"),
        ("thirteen", "13"),
        ("um my number, is", ""),
    ],
)
def test_spoken_words_to_dial_string(said: str, expected: str) -> None:
    assert spoken_to_dial_string(said) == expected


def test_double_and_triple_in_a_full_number() -> None:
    assert normalize_phone_number("nine eight seven double six triple five four three", region="IN") == "+919876655543"


def test_default_region_decides_numbers_without_country_code() -> None:
    assert normalize_phone_number("(202) 555-0123", region="US") == "+12025550123"
    assert normalize_phone_number("+1 202 555 0123", region="IN") == "+12025550123"
    assert normalize_phone_number("07911 123456", region="GB") == "+447911123456"
    assert normalize_phone_number("plus four four seven nine double one one two three four five six", region="IN") == (
        "+447911123456"
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "no digits heard"),
        ("hello there", "no digits heard"),
        ("one two three", "too few digits"),
        ("9" * 18, "too many digits"),
        ("x" * 1000, "too long"),
        ("98765 4321", "not a valid number"),
        ("+999 1234 5678", "unknown country code"),
        ("1800 123 4567", "not a personal phone number"),
        (None, "no number given"),
        (9876543210, "no number given"),
        (["98765", "43210"], "no number given"),
    ],
)
def test_invalid_input_gives_a_reason_never_an_exception(value: object, reason: str) -> None:
    result = parse_phone_number(value, region="IN")
    assert result.e164 is None and not result.ok
    assert result.reason is not None and reason in result.reason


def test_reason_never_contains_the_digits() -> None:
    result = parse_phone_number("98765 4321", region="IN")
    assert result.reason and "98765" not in result.reason and "4321" not in result.reason


def test_unknown_region_is_a_reason_not_a_crash() -> None:
    assert parse_phone_number("98765 43210", region="ZZ").reason == "unknown default region 'ZZ'"


@pytest.mark.parametrize("garbage", ["\x00\x01\x02", "\udcff\udcfe", "🙂" * 50, "+" * 200, "nine " * 55, "0" * 12])
def test_garbage_never_raises(garbage: str) -> None:
    assert parse_phone_number(garbage, region="IN").e164 is None


def test_is_e164_and_masking() -> None:
    assert is_e164(JOHN) and not is_e164("9876543210") and not is_e164(None) and not is_e164("+0123456")
    assert mask_phone(JOHN) == "+91******3210"
