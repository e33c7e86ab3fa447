"""Issue 9, finding 5 (phone numbers in logs): whatever the phone parser reads as a number is masked, in
every shape it accepts, at DEBUG too; livekit's ``failed to synthesize speech ... for text:`` loses the
text, provider error bodies and key-like strings never reach a log line."""

from __future__ import annotations

import io
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gocare_voice.conversation.phone import parse_phone_number
from gocare_voice.redact import PiiLogFilter, mask_digit_runs, scrub_provider_text

REPORTED = [
    "9876543211.", "98765.43210", "98,765,43,210", "98765/43210", "9.8.7.6.5.4.3.2.1.0",
    "98765\u200b43210", "ninety eight seventy six fifty four thirty two eleven",
    "nine eight seven six five four three two one one", "+91 98765 43210", "(987) 654-3210 ext",
    "९८७६५४३२११",  # Devanagari digits
]


@pytest.mark.parametrize("shape", REPORTED)
def test_every_reported_shape_is_masked(shape: str) -> None:
    assert parse_phone_number(shape, region="IN").ok or parse_phone_number(shape, region="US").ok
    masked = mask_digit_runs(f"user said: {shape} ok")
    assert not parse_phone_number(masked, region="IN").ok and not parse_phone_number(masked, region="US").ok
    assert "43210" not in masked and "3211" not in masked


WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty", 6: "sixty", 7: "seventy", 8: "eighty", 9: "ninety"}
SEPARATORS = ["", " ", ".", ",", "/", "-", "\u200b", ". ", ", ", " - ", "(", ")", "\u00a0"]


@st.composite
def spoken_numbers(draw: st.DrawFn) -> str:
    """An Indian mobile number written or said in the shapes people and STT produce."""
    digits = str(draw(st.sampled_from("6789"))) + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=9,
                                                                        max_size=9)))
    parts: list[str] = []
    i = 0
    while i < len(digits):
        style = draw(st.sampled_from(["digit", "word", "tens", "group"]))
        if style == "tens" and i + 1 < len(digits) and digits[i] in "23456789" and digits[i + 1] != "0":
            parts.append(f"{TENS[int(digits[i])]} {WORDS[int(digits[i + 1])]}")
            i += 2
        elif style == "group":
            size = draw(st.integers(1, 5))
            parts.append(digits[i:i + size])
            i += size
        elif style == "word":
            parts.append(WORDS[int(digits[i])])
            i += 1
        else:
            parts.append(digits[i])
            i += 1
    text = ""
    for part in parts:
        separator = draw(st.sampled_from(SEPARATORS))
        if text and (not separator.strip() or separator in "\u200b") and (part[0].isalpha() or text[-1].isalpha()):
            separator = " "  # words need a separator the tokenizer sees
        text += (separator if text else "") + part
    prefix = draw(st.sampled_from(["", "+91 ", "+91-", "0"]))
    return prefix + text


@settings(max_examples=400, deadline=None)
@given(number=spoken_numbers(), before=st.sampled_from(["", "my number is ", "it's: "]),
       after=st.sampled_from(["", ".", " thanks", "!"]))
def test_whatever_the_parser_reads_as_a_number_is_masked(number: str, before: str, after: str) -> None:
    text = before + number + after
    if not parse_phone_number(number, region="IN").ok:
        return
    masked = mask_digit_runs(text)
    assert not parse_phone_number(masked, region="IN").ok, (text, masked)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_masking_never_raises_and_never_adds_digits(text: str) -> None:
    masked = mask_digit_runs(text)
    assert sum(ch.isdecimal() for ch in masked) <= sum(ch.isdecimal() for ch in text)


def _through_filter(name: str, level: int, msg: str, *args: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PiiLogFilter())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.DEBUG)  # not ``logger.level = ...``: only setLevel clears the isEnabledFor cache
    try:
        logger.log(level, msg, *args)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    return stream.getvalue()


def test_debug_lines_with_dotted_numbers_are_masked() -> None:
    out = _through_filter("livekit.agents", logging.DEBUG, "received user transcript %s", "98765.43210")
    assert "98765" not in out and "43210" not in out


def test_failed_speech_synthesis_loses_the_reply_text() -> None:
    from livekit.agents import APIError, APIStatusError

    reply = APIError("no audio frames were pushed for text: Welcome John, your number 98765 43210 is verified")
    out = _through_filter("livekit.agents", logging.WARNING, "failed to synthesize speech: %s, retrying in %ss",
                          reply, 2.0)
    assert "Welcome John" not in out and "for text: <text omitted>, retrying in 2.0s" in out
    echoed = APIStatusError("Incorrect API key", status_code=401,
                            body={"error": "bad key sk-proj-AbCdEf0123456789ghIJKL0123456789"})
    out = _through_filter("livekit.plugins.openai", logging.WARNING, "failed to synthesize speech: %s", echoed)
    assert "AbCdEf0123456789" not in out and "status_code=401" in out


def test_key_like_strings_are_redacted() -> None:
    assert "0123456789abcdef" not in scrub_provider_text("invalid key 0123456789abcdef0123456789abcdef01234567")
    assert scrub_provider_text("listening on 127.0.0.1:8081") == "listening on 127.0.0.1:8081"


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=320), spoken_numbers()), region=st.sampled_from(["IN", "US", "GB", "xx"]))
def test_the_parser_never_raises_and_its_reason_holds_no_digits(text: str, region: str) -> None:
    parsed = parse_phone_number(text, region=region)
    assert parsed.ok == (parsed.reason is None)
    if parsed.reason is not None:
        assert not any(ch.isdecimal() for ch in parsed.reason.replace(f"({parsed.digit_count})", ""))
