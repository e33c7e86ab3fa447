"""Issues 9.2 and 19.1: in jwt mode no two users ever share a room, whatever their ids look like.

The attacks: ``sub=user`` asked for ``user-42-care`` (9.2: the rule was "starts with ``<sub>-``") and then for
``user-42`` (19.1: the owner was "everything before the last ``-``", so ``user-42`` was ``user``'s room) on
``/getToken``, ``/api/token`` and ``/voice/upload?room=``. The rule now (``rooms.py``): a user's rooms are
``<user id>~<label>``, the owner is everything before the first ``~``, and an id containing ``~`` owns none.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from livekit import api

from scripted.loopback import serve

from gocare_voice.settings import Settings
from gocare_voice.token_service.app import create_app
from gocare_voice.token_service.rooms import SEPARATOR, can_own_rooms, may_use, own_room_name, room_for, room_owner

SECRET = "a-test-secret-of-at-least-32-bytes!!"
ALLOWED = {"/getToken": 200, "/api/token": 201, "/voice/upload": 422}  # 422: allowed, but no file was sent
REFUSED = {"/getToken": 403, "/api/token": 403, "/voice/upload": 403}


def login(sub: str) -> dict[str, str]:
    token = jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def jwt_app():  # type: ignore[no-untyped-def]
    return create_app(Settings(auth_mode="jwt", auth_jwt_secret=SECRET, rate_limit="off"))


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(jwt_app()) as c:
        yield c


@pytest.fixture(scope="module", params=["testclient", "uvicorn"])
def http(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """The app in-process (TestClient) and under a real uvicorn on 127.0.0.1."""
    if request.param == "testclient":
        with TestClient(jwt_app()) as c:
            yield c
    else:
        with serve(jwt_app()) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            yield c


def answers(http: httpx.Client, sub: str, room: str) -> dict[str, int]:
    """What ``sub`` gets for ``room`` on the three routes that take one; tokens are checked as LiveKit would."""
    headers = login(sub)
    legacy = http.post("/getToken", json={"room": room}, headers=headers)
    standard = http.post("/api/token", json={"room_name": room, "room_config": {}}, headers=headers)
    # no file: the room is checked first, so 403 (not allowed) vs 422 (allowed, file missing)
    upload = http.post("/voice/upload", params={"room": room}, headers=headers, files={"other": ("x", b"x")})
    for response, field in ((legacy, "token"), (standard, "participant_token")):
        if response.status_code < 300:
            claims = api.TokenVerifier("devkey", "secret").verify(response.json()[field])
            assert claims.video.room == room and claims.video.room_join and claims.identity == sub
        else:
            assert response.json()["error"] in ("room_not_allowed", "user_id_not_supported"), response.text
    if upload.status_code == 422:
        assert upload.json()["error"] == "missing_file"
    return {"/getToken": legacy.status_code, "/api/token": standard.status_code, "/voice/upload": upload.status_code}


# --- the pairs of the reports, on both token routes and the upload, in-process and over real HTTP ---------

@pytest.mark.parametrize(("one", "other"), [("user", "user-42"), ("u1", "u12")])
def test_ids_that_are_prefixes_of_each_other_share_no_room(http: httpx.Client, one: str, other: str) -> None:
    for owner, stranger in ((one, other), (other, one)):
        room = room_for(owner, "care")
        assert answers(http, owner, room) == ALLOWED, room
        assert answers(http, stranger, room) == REFUSED, room
    # a name that is just an id (``user-42``) or an id and a dash (``user-42``'s old ``user-`` room) has no owner
    for room in (other, one, f"{one}-42", f"{other}-care", f"{one}{SEPARATOR}"):
        assert answers(http, one, room) == REFUSED, room
        assert answers(http, other, room) == REFUSED, room


def test_the_reported_attack(http: httpx.Client) -> None:
    """19.1: ``user`` got tokens for ``user-42`` and could upload into it."""
    assert answers(http, "user", "user-42") == REFUSED
    answer = http.post("/getToken", json={"room": "user-42"}, headers=login("user")).json()
    assert answer["error"] == "room_not_allowed" and "'user~<label>'" in answer["detail"]
    assert answers(http, "user-42", "user-42~care") == ALLOWED
    assert answers(http, "user", "user-42~care") == REFUSED


def test_an_id_containing_the_separator_owns_no_room(http: httpx.Client) -> None:
    """``user~42`` could otherwise claim ``user``'s rooms (or the reverse): it gets a 403 that says why on
    every route that needs a room, including the room the service would pick; an upload without a room
    needs none."""
    for room in ("user~42~care", "user~42", "user~care"):
        assert answers(http, "user~42", room) == REFUSED, room
    for path, body in (("/getToken", {}), ("/api/token", {"room_config": {}})):
        refused = http.post(path, json=body, headers=login("user~42"))
        assert refused.status_code == 403 and refused.json()["error"] == "user_id_not_supported", refused.text
        assert "'~'" in refused.json()["detail"]
    no_room = http.post("/voice/upload", headers=login("user~42"), files={"other": ("x", b"x")})
    assert no_room.status_code == 422 and no_room.json()["error"] == "missing_file"
    # and the name ``user~42`` is the room of ``user`` (label ``42``), nobody else's
    assert answers(http, "user", "user~42") == ALLOWED
    assert answers(http, "user~", "user~42") == REFUSED


def test_the_service_picks_an_own_room_when_none_is_sent(client: TestClient) -> None:
    for sub in ("user-42", "a-b-", "u1", "auth0|65f0c1", "urn:user:7", "Ünïcødé"):
        legacy = client.post("/getToken", json={}, headers=login(sub)).json()["roomName"]
        standard = client.post("/api/token", json={}, headers=login(sub)).json()["room_name"]
        assert room_owner(legacy) == room_owner(standard) == sub and legacy != standard
        assert answers(client, sub, legacy) == ALLOWED


def test_every_valid_sub_gets_a_valid_room_or_a_clear_4xx(client: TestClient) -> None:
    """The longest sub the service accepts (128 characters) still fits a room the app can send back."""
    longest = "u" * 128
    room = client.post("/api/token", json={}, headers=login(longest)).json()["room_name"]
    assert room_owner(room) == longest and answers(client, longest, room) == ALLOWED
    # 128 characters of 4 bytes each: over LiveKit's 256-byte room name, said in words
    wide = client.post("/api/token", json={}, headers=login("\U0001f600" * 128))
    assert wide.status_code == 422 and "too long to name a room" in wide.json()["detail"]
    too_long = client.post("/getToken", json={}, headers=login("u" * 129))
    assert too_long.status_code == 422 and "sub claim" in too_long.json()["detail"]
    blank_label = client.post("/getToken", json={"room": "u1~"}, headers=login("u1"))
    assert blank_label.status_code == 403


# --- the rule as a function: disjoint by construction --------------------------------------------------

# ids as they come from real sign-ins and from attackers: the separator, the old separator, prefixes
_ALPHABET = st.sampled_from("ab1-_.|:/@~ é\u200d")
_ids = st.text(_ALPHABET, min_size=1, max_size=8) | st.text(min_size=1, max_size=12)


@st.composite
def id_pairs(draw: st.DrawFn) -> tuple[str, str]:
    """Two distinct ids; half of the time one is the other plus a tail (``u1``/``u12``, ``user``/``user-42``,
    ``user``/``user~42``)."""
    first = draw(_ids)
    second = first + draw(st.text(_ALPHABET, min_size=1, max_size=4)) if draw(st.booleans()) else draw(_ids)
    pair = (first, second) if draw(st.booleans()) else (second, first)
    if pair[0] == pair[1]:
        pair = (pair[0], pair[1] + "x")
    return pair


def _rooms_around(a: str, b: str, label: str) -> list[str]:
    """Names an attacker would try: each id with the separator, the old ``-``, the label, the other id."""
    return [a + SEPARATOR + label, b + SEPARATOR + label, a + "-" + label, a, b, a + SEPARATOR + b,
            b + SEPARATOR + a, a + b, a + SEPARATOR + SEPARATOR + label, a + SEPARATOR]


@settings(max_examples=1000, deadline=None)
@given(pair=id_pairs(), label=st.text(min_size=1, max_size=8))
def test_no_room_is_usable_by_two_distinct_ids(pair: tuple[str, str], label: str) -> None:
    a, b = pair
    assert a != b
    for room in _rooms_around(a, b, label):
        assert not (may_use(a, room) and may_use(b, room)), (a, b, room)
    if can_own_rooms(a):
        mine = room_for(a, label)
        assert may_use(a, mine) and not may_use(b, mine)
        assert may_use(a, own_room_name(a)) and not may_use(b, own_room_name(a))
    else:
        assert SEPARATOR in a and not any(may_use(a, room) for room in _rooms_around(a, b, label))


@settings(max_examples=500, deadline=None)
@given(room=st.text(max_size=30))
def test_every_name_has_at_most_one_owner(room: str) -> None:
    owner = room_owner(room)
    if owner is not None:
        assert can_own_rooms(owner) and room == room_for(owner, room[len(owner) + len(SEPARATOR):])
    else:
        assert SEPARATOR not in room or room.startswith(SEPARATOR) or room.endswith(SEPARATOR)


# --- and the routes use exactly that rule --------------------------------------------------------------

_subs = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S")), min_size=1, max_size=10)


@st.composite
def sub_pairs(draw: st.DrawFn) -> tuple[str, str]:
    first = draw(_subs | st.text(_ALPHABET.filter(lambda c: not c.isspace() and c != "\u200d"), min_size=1,
                                  max_size=6))
    tail = draw(st.text(st.sampled_from("-~1_2"), min_size=1, max_size=3))
    second = first + tail if draw(st.booleans()) else draw(_subs)
    return (first, second) if first != second else (first, second + "x")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pair=sub_pairs(), label=st.text(st.characters(codec="utf-8", categories=("L", "N")), min_size=1, max_size=6))
def test_the_three_routes_answer_what_the_rule_says(client: TestClient, pair: tuple[str, str], label: str) -> None:
    a, b = pair
    for room in _rooms_around(a, b, label)[:6]:
        got = {sub: answers(client, sub, room) for sub in (a, b)}
        for sub in (a, b):
            assert got[sub] == (ALLOWED if may_use(sub, room) else REFUSED), (sub, room, got)
        assert not (got[a] == ALLOWED and got[b] == ALLOWED), (a, b, room)
