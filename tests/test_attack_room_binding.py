"""Issue 9, finding 2: in jwt mode every room has exactly one owner, whatever the user ids look like.

The attack: ``sub=user`` asked for ``user-42-care`` (user ``user-42``'s call) on ``/getToken``,
``/api/token`` and ``/voice/upload?room=`` and got it, because the rule was "starts with ``<sub>-``".
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import jwt
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from gocare_voice.settings import Settings
from gocare_voice.token_service.app import create_app
from gocare_voice.token_service.rooms import SEPARATOR, own_room_name, room_for, room_owner

SECRET = "a-test-secret-of-at-least-32-bytes!!"

# (attacker, victim): ids that are prefixes of each other, with and without the separator
PAIRS = [("u1", "u12"), ("user", "user-42"), ("a-b", "a"), ("a", "a-b"), ("x-", "x"), ("x", "x-"), ("-", "--")]


def login(sub: str) -> dict[str, str]:
    token = jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(auth_mode="jwt", auth_jwt_secret=SECRET, rate_limit="off"))) as c:
        yield c


def _endpoints(client: TestClient, sub: str, room: str) -> dict[str, int]:
    headers = login(sub)
    return {
        "/getToken": client.post("/getToken", json={"room": room}, headers=headers).status_code,
        "/api/token": client.post("/api/token", json={"room_name": room}, headers=headers).status_code,
        # no file: the room is checked first, so 403 (not allowed) vs 422 (allowed, file missing)
        "/voice/upload": client.post("/voice/upload", params={"room": room}, headers=headers,
                                     files={"other": ("x", b"x")}).status_code,
    }


@pytest.mark.parametrize(("attacker", "victim"), PAIRS)
def test_a_user_never_gets_another_users_room(client: TestClient, attacker: str, victim: str) -> None:
    victims_room = room_for(victim, "care")
    assert _endpoints(client, victim, victims_room) == {"/getToken": 200, "/api/token": 201, "/voice/upload": 422}
    assert _endpoints(client, attacker, victims_room) == {"/getToken": 403, "/api/token": 403, "/voice/upload": 403}


def test_the_reported_attack(client: TestClient) -> None:
    assert _endpoints(client, "user", "user-42-care") == {"/getToken": 403, "/api/token": 403, "/voice/upload": 403}
    answer = client.post("/getToken", json={"room": "user-42-care"}, headers=login("user")).json()
    assert answer["error"] == "room_not_allowed" and "user-<suffix>" in answer["detail"]


def test_the_service_picks_an_own_room_when_none_is_sent(client: TestClient) -> None:
    for sub in ("user-42", "a-b-", "u1"):
        legacy = client.post("/getToken", json={}, headers=login(sub)).json()["roomName"]
        standard = client.post("/api/token", json={}, headers=login(sub)).json()["room_name"]
        assert room_owner(legacy) == room_owner(standard) == sub and legacy != standard


ids = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S")), min_size=1, max_size=20)
suffixes = st.text(st.characters(codec="utf-8", categories=("L", "N")), min_size=1, max_size=10)


@settings(max_examples=300, deadline=None)
@given(a=ids, b=ids, suffix=suffixes)
def test_ownership_is_a_function_of_the_name(a: str, b: str, suffix: str) -> None:
    room = room_for(a, suffix)
    assert room_owner(room) == a
    assert (room_owner(room) == b) == (a == b)
    assert room_owner(own_room_name(a)) == a


@settings(max_examples=300, deadline=None)
@given(room=st.text(max_size=30))
def test_every_name_has_at_most_one_owner(room: str) -> None:
    owner = room_owner(room)
    if owner is not None:
        suffix = room[len(owner) + len(SEPARATOR):]
        assert room == room_for(owner, suffix)
