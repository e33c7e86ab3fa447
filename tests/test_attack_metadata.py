"""Issue 9, finding 5 (metadata): the token service and the worker read metadata with the same rules, the
nesting the reader follows is bounded, and ``gocare test-metadata`` shows control bytes as escapes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gocare_voice.conversation.identity import read_metadata
from gocare_voice.token_service.errors import ApiError
from gocare_voice.token_service.validation import check_metadata_object, check_room_config

AGENT = "multi-assistant"
VICTIM = '"userId":"victim","userName":"Victim"'

SMUGGLED = [
    '{' + VICTIM + ',"x":NaN}',
    '{' + VICTIM + ',"x":Infinity}',
    '{' + VICTIM + ',"x":-Infinity}',
    '\u00a0{' + VICTIM + '}',  # non-breaking space before: str.strip() removed it, JSON does not allow it
    '{' + VICTIM + '}\u2028',  # trailing line separator
    '{' + VICTIM + ',"x":"\\ud800"}',  # lone surrogate escape
    '{' + VICTIM + ',"x":"\ud800"}',  # lone surrogate character
    '\ufeff{' + VICTIM + '}',  # byte order mark
]


def _dispatch(metadata: str) -> str | None:
    return check_room_config({"agents": [{"agent_name": AGENT, "metadata": metadata}]}, agent_name=AGENT)


@pytest.mark.parametrize("payload", SMUGGLED)
def test_what_the_service_lets_through_holds_no_identity_for_the_worker(payload: str) -> None:
    try:
        passed = _dispatch(payload)
    except ApiError as refused:
        assert refused.status == 422
        return
    assert passed == payload
    assert not read_metadata(passed, source="job.metadata").identity.found


def test_plain_identity_in_dispatch_metadata_is_still_refused() -> None:
    with pytest.raises(ApiError):
        _dispatch('{' + VICTIM + '}')
    with pytest.raises(ApiError):
        _dispatch(' \n{' + VICTIM + '} \t')  # JSON whitespace around it: both sides read it


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["userId", "user", "x", "name"]), inner, max_size=3),
    max_leaves=8,
)
noise = st.sampled_from(["", " ", "\u00a0", "\u2028", "\ufeff", "\t", "\n", "NaN", ",", "\ud800"])


@settings(max_examples=400, deadline=None)
@given(value=json_values, before=noise, after=noise, allow_nan=st.booleans())
def test_service_and_worker_agree_on_every_value(value, before: str, after: str, allow_nan: bool) -> None:
    """Property: a dispatch metadata string the service accepts never gives the worker an identity."""
    try:
        text = before + json.dumps(value, allow_nan=allow_nan, ensure_ascii=False) + after
    except ValueError:
        return
    try:
        passed = _dispatch(text)
    except ApiError:
        return
    if passed is not None:
        assert not read_metadata(passed, source="job.metadata").identity.found, text


@settings(max_examples=200, deadline=None)
@given(value=json_values, before=noise)
def test_participant_metadata_check_and_reader_agree(value, before: str) -> None:
    text = before + json.dumps(value, allow_nan=True)
    try:
        kept = check_metadata_object(text, field="participant_metadata")
    except ApiError:
        return
    assert not read_metadata(json.dumps(kept)).identity.found


@pytest.mark.parametrize("depth", [976, 981, 1020, 5000])
def test_deep_nesting_is_no_recursion_error(depth: int) -> None:
    text = '{"user": ' * depth + '{"userId": "deep"}' + "}" * depth
    assert read_metadata(text).identity.user_id is None  # past MAX_USER_NESTING, or past orjson's depth


def test_shallow_nesting_still_works() -> None:
    assert read_metadata('{"user": {"user": {"userId": "u-1"}}}').identity.user_id == "u-1"


def test_cli_test_metadata_survives_deep_nesting_and_escapes_control_bytes(tmp_path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"user": ' * 980 + '{"userId": "x"}' + "}" * 980)
    run = subprocess.run([sys.executable, "-m", "gocare_voice", "test-metadata", "--file", str(deep)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr[-500:]
    esc = tmp_path / "esc.json"
    esc.write_bytes(b'{"userName": "Eve"}\x1b]0;pwned\x07\x1b[2J')
    run = subprocess.run([sys.executable, "-m", "gocare_voice", "test-metadata", "--file", str(esc)],
                         capture_output=True, timeout=60)
    assert b"\x1b" not in run.stdout and b"\x07" not in run.stdout
    assert b"\\x1b" in run.stdout
