from __future__ import annotations

import logging

import pytest

from gocare_voice.redact import PiiLogFilter, install_pii_log_filter, mask_digit_runs, mask_phone


def test_mask_phone_keeps_country_code_and_last_four() -> None:
    assert mask_phone("+919876543210") == "+91******3210"
    assert mask_phone("9876543210") == "******3210"
    assert mask_phone(None) == "<none>" and mask_phone("12") == "**"


@pytest.mark.parametrize(("text", "expected"), [
    ("my number is 98765 43210", "my number is ********10"),
    ("call +91-98765-43210 please", "call +**********10 please"),
    ("it's (987) 654 3210", "it's (********10"),
    ("9876543210", "********10"),
])
def test_mask_digit_runs(text: str, expected: str) -> None:
    assert mask_digit_runs(text) == expected


@pytest.mark.parametrize("text", [
    "room 42 at 10:30, 3 attempts",
    "listening on 127.0.0.1:8099",
    "agent v1.8.9 started",
    "job AJ_1234567890 in room gocare-1a2b3c4d5e6f",
])
def test_addresses_versions_and_ids_are_left_alone(text: str) -> None:
    assert mask_digit_runs(text) == text


def test_a_bare_long_number_is_masked_even_when_it_is_not_a_phone() -> None:
    """The price of masking transcripts: in livekit's lines any 6+ digit number counts as a possible phone."""
    assert mask_digit_runs("took 1234567 us") == "took *****67 us"


def test_our_own_and_uvicorn_lines_are_not_rewritten() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "GET /health" 200',
                               ("127.0.0.1:55896",), None)
    assert PiiLogFilter().filter(record) and record.getMessage() == '127.0.0.1:55896 - "GET /health" 200'


def test_spoken_number_words_are_masked() -> None:
    text = "my number is nine eight seven six five double four three two one, thanks"
    assert mask_digit_runs(text) == "my number is <number words>, thanks"
    assert mask_digit_runs("one or two things") == "one or two things"


def test_transcript_logs_are_masked_on_every_handler() -> None:
    """livekit-agents logs final transcripts with an ``lk.pii.user_transcript`` extra field; plugins (child
    loggers) put them in messages, sometimes through %s arguments."""
    import io

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s %(lk.pii.user_transcript)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        install_pii_log_filter()
        install_pii_log_filter()  # idempotent
        assert sum(isinstance(f, PiiLogFilter) for f in handler.filters) == 1
        extra = {"lk.pii.user_transcript": "it is 98765 43210"}
        logging.getLogger("livekit.agents").debug("received user transcript", extra=extra)
        logging.getLogger("livekit.plugins.deepgram").debug("transcript %s", "9876543210", extra=extra)
        logging.getLogger("livekit.plugins.deepgram").debug(
            "transcript nine eight seven six five four three two one zero", extra=extra)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    out = stream.getvalue()
    assert out.count("********10") == 4 and "<number words>" in out
    assert "98765" not in out and "9876543210" not in out and "nine eight seven" not in out
