"""Caller authentication (``GOCARE_AUTH_MODE=jwt``) in a real room: the token service binds identity and room
to the signed-in user, and the worker keeps that identity as the user id whatever the app writes later."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from calls import MISMATCH_REPLY, script_number_check
from conftest import JWT_AGENT, JWT_SECRET, Providers, RunningWorker, TokenService, start_token_service, start_worker
from harness.app_client import AppClient

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def jwt_worker(livekit, providers: Providers, users_db: str, room_logs: Path) -> Iterator[RunningWorker]:
    running = start_worker(name="worker-jwt", livekit=livekit, providers=providers, users_db=users_db, logs=room_logs,
                           extra={"GOCARE_AGENT_NAME": JWT_AGENT, "GOCARE_AUTH_MODE": "jwt",
                                  "GOCARE_AUTH_JWT_SECRET": JWT_SECRET})
    yield running
    running.process.stop()


@pytest.fixture(scope="module")
def jwt_token_service(livekit, providers: Providers, room_logs: Path) -> Iterator[TokenService]:
    service = start_token_service(name="token-service-jwt", livekit=livekit, logs=room_logs, providers=providers,
                                  extra={"GOCARE_AGENT_NAME": JWT_AGENT, "GOCARE_AUTH_MODE": "jwt",
                                         "GOCARE_AUTH_JWT_SECRET": JWT_SECRET})
    yield service
    service.process.stop()


def app_login(sub: str, name: str) -> str:
    """What the app's own sign-in hands it: a JWT with the user's id and name."""
    return jwt.encode({"sub": sub, "name": name, "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")


async def test_identity_and_room_are_bound_to_the_signed_in_user(
    jwt_worker, jwt_token_service, scripted, room_name
):
    login = app_login("user-42", "John Doe")
    async with httpx.AsyncClient(timeout=10) as http:
        post = lambda body, bearer=login: http.post(  # noqa: E731 - a one-line helper local to this test
            jwt_token_service.url + "/api/token", json=body, headers={"Authorization": f"Bearer {bearer}"})
        assert (await http.post(jwt_token_service.url + "/api/token", json={})).status_code == 401
        other_identity = await post({"participant_identity": "user-77", "room_config": {}})
        assert other_identity.status_code == 403 and other_identity.json()["error"] == "identity_mismatch"
        # a room is '<user id>~<label>' (rooms.py): user-42's call is not user's, nor user-4's, and a name that
        # is only the id has no owner
        for strangers in ("user-77~care", "user-42", "user-4~2-care", "user~42-care", "user-42-care"):
            other_room = await post({"room_name": strangers, "room_config": {}})
            assert other_room.status_code == 403 and other_room.json()["error"] == "room_not_allowed", strangers
        user = app_login("user", "Eve")
        for johns in ("user-42~care", "user-42"):
            assert (await post({"room_name": johns, "room_config": {}}, bearer=user)).status_code == 403, johns
        tilde = await post({"room_config": {}}, bearer=app_login("user~42", "Mallory"))
        assert tilde.status_code == 403 and tilde.json()["error"] == "user_id_not_supported"
        own = await post({"room_config": {}})  # the service names the room
        assert own.status_code == 201 and own.json()["room_name"].partition("~")[0] == "user-42"

    room = f"user-42~{room_name}"
    script_number_check(scripted, "91234 56789")
    app = await AppClient.join(jwt_token_service.url, body={"room_name": room, "room_config": {}}, bearer=login)
    try:
        welcome = await app.wait_packet("welcome", timeout=20)
        assert welcome["userId"] == "user-42" and welcome["userName"] == "John Doe"
        assert app.identity == "user-42"
        await app.wait_agent_says(r"^Welcome John", timeout=30)
        # the app rewrites its own metadata to pose as Asha: the name may change, the user id may not
        mark = jwt_worker.process.mark()
        await app.set_metadata(json.dumps({"userId": "user-77", "userName": "Asha Rao"}))
        jwt_worker.process.wait_for_log(r"userId in metadata ignored: the user id is the authenticated identity",
                                        timeout=10, since=mark)
        # Asha's registered number does not verify John's call
        scripted.deepgram.script_live("91234 56789")
        said_at = time.monotonic()
        await app.say("nine one two three four five six seven eight nine")
        await app.wait_agent_says(re.escape(MISMATCH_REPLY), since=said_at, timeout=40)
        jwt_worker.process.wait_for_log(r"authentication failed: user_id=user-42 phone=\+91\*+6789", timeout=10, since=mark)
    finally:
        await app.leave()
