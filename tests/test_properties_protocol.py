"""Issue 9, finding 6: property tests of the app <-> agent protocol parser (data packets and RPC), bounded.

Whatever the app (or anyone in the room) sends: the parser never raises, answers one of its three types, and
an error message never echoes digits from the input (a phone number put in a command name stays out of the
logs and the RPC answer)."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from gocare_voice.protocol import (
    COMMANDS,
    TOPIC,
    Command,
    CommandError,
    VoiceUpload,
    parse_data_packet,
    parse_message,
    parse_rpc,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "command", "agent", "mode", "requestId", "request_id", "transcript", "reply", "x"])
        | st.text(max_size=5), inner, max_size=5),
    max_leaves=12,
)
messages = st.one_of(
    json_values.map(lambda v: json.dumps(v)),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.text(max_size=200),
    st.builds(lambda c, extra: json.dumps({"type": "command", "command": c, **extra}),
              st.sampled_from(sorted(COMMANDS)) | st.text(max_size=12), st.dictionaries(st.text(max_size=5), json_values, max_size=3)),
    st.integers(1, 2000).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(1, 2000).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
)


def _no_echoed_digits(error: CommandError) -> None:
    assert not re.search(r"\d{6}", error.message), error.message


@settings(max_examples=500, deadline=None)
@given(raw=messages)
def test_parse_message_never_raises(raw) -> None:
    parsed = parse_message(raw)
    assert isinstance(parsed, (Command, VoiceUpload, CommandError))
    if isinstance(parsed, CommandError):
        _no_echoed_digits(parsed)
        assert parsed.answer()["ok"] is False


@settings(max_examples=300, deadline=None)
@given(method=st.one_of(st.sampled_from(sorted(COMMANDS)), st.text(max_size=20), st.none(), st.integers()),
       payload=st.one_of(st.none(), messages))
def test_parse_rpc_never_raises(method, payload) -> None:
    parsed = parse_rpc(method, payload)
    assert isinstance(parsed, (Command, CommandError))
    if isinstance(parsed, CommandError):
        _no_echoed_digits(parsed)
    else:
        assert parsed.name in COMMANDS


@settings(max_examples=200, deadline=None)
@given(raw=messages, topic=st.one_of(st.none(), st.just(TOPIC), st.text(max_size=10)))
def test_only_our_topic_is_parsed(raw, topic) -> None:
    parsed = parse_data_packet(raw, topic=topic)
    assert (parsed is None) == (topic != TOPIC)


def test_phone_number_in_a_command_name_is_not_echoed() -> None:
    for parsed in (parse_message('{"type": "command", "command": "9876543210"}'), parse_rpc("9876543210", None)):
        assert isinstance(parsed, CommandError) and "9876543210" not in parsed.message
