"""The app's first seconds in a real room: token, join, the agent, the welcome packet, the spoken greeting."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from livekit import api

from calls import GREETING_ANONYMOUS, GREETING_JOHN
from harness.app_client import AppClient, Joined

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(120)]


async def test_flutter_endpoint_token_join_welcome_and_spoken_greeting(worker, token_service, scripted, room_name):
    # the exact body Flutter's EndpointTokenSource sends
    body = {"room_name": room_name, "participant_identity": "user-42", "participant_name": "John Doe", "room_config": {}}
    started = time.monotonic()
    app = await AppClient.join(token_service.url, body=body)
    try:
        agent = await app.wait_agent(timeout=20)
        assert agent.startswith("agent-"), agent
        welcome = await app.wait_packet("welcome", timeout=20)
        assert welcome == {
            "type": "welcome", "message": "Welcome John! Please say your registered mobile number.",
            "userId": "user-42", "userName": "John Doe",
        }
        await app.wait_agent_speech(since=started, seconds=1.0, timeout=30)
        said = await app.wait_agent_says(r"Welcome John", timeout=30)
        assert said.text.strip() == "Welcome John! Please say your registered mobile number."
        spoken = [r["input"] for r in scripted.speech.speech_requests()]
        assert "Welcome John! Please say your registered mobile number." in spoken
    finally:
        await app.leave()


async def test_name_set_with_set_metadata_right_after_joining_is_used_for_the_greeting(
    worker, token_service, scripted, room_name
):
    # the seed's Flutter flow: a token without a name, then setMetadata once connected
    body = {"room_name": room_name, "participant_identity": "user-42", "room_config": {}}
    app = await AppClient.join(token_service.url, body=body, microphone=False)
    try:
        await app.set_metadata(json.dumps({"userId": "user-42", "userName": "John Doe"}))
        welcome = await app.wait_packet("welcome", timeout=20)
        assert welcome["message"] == GREETING_JOHN and welcome["userName"] == "John Doe"
        said = await app.wait_agent_says(r"^Welcome", timeout=30)
        assert said.text.strip() == GREETING_JOHN
    finally:
        await app.leave()


async def test_name_set_after_the_greeting_updates_the_agent_without_greeting_twice(
    worker, token_service, scripted, room_name
):
    body = {"room_name": room_name, "participant_identity": "user-42", "room_config": {}}
    app = await AppClient.join(token_service.url, body=body)
    try:
        welcome = await app.wait_packet("welcome", timeout=20)
        assert welcome == {"type": "welcome", "message": GREETING_ANONYMOUS, "userId": "user-42", "userName": None}
        greeted = await app.wait_agent_says(r"^Welcome\.", timeout=30)
        mark = worker.process.mark()
        await app.set_metadata(json.dumps({"userId": "user-42", "userName": "John Doe"}))
        worker.process.wait_for_log(r"identity extracted \(metadata changed\): user_id=user-42 named=True", timeout=10, since=mark)
        await asyncio.sleep(3)
        assert [t.text for t in app.agent_transcripts(since=greeted.at + 0.01)] == []
        assert [r["input"] for r in scripted.speech.speech_requests()].count(GREETING_ANONYMOUS) == 1
        # what the agent knows now: the next LLM request carries the name in its instructions
        scripted.deepgram.script_live("I forgot my number")
        said_at = time.monotonic()
        await app.say("I forgot my number")
        await app.wait_for(lambda: [r for r in scripted.llm.chat_requests() if "forgot my number" in r.last_user_text],
                           timeout=30, what="the user's turn at the LLM")
        request = next(r for r in scripted.llm.chat_requests() if "forgot my number" in r.last_user_text)
        assert "The caller says they are John." in request.system_text
        assert said_at > 0
    finally:
        await app.leave()


async def test_legacy_get_token_joins_the_same_way(worker, token_service, scripted, room_name):
    app = await AppClient.join(token_service.url, endpoint="/getToken",
                               body={"room": room_name, "identity": "user-42", "name": "John Doe"})
    try:
        assert app.joined.response["roomName"] == room_name and app.joined.response["participantName"] == "John Doe"
        welcome = await app.wait_packet("welcome", timeout=20)
        assert welcome["message"] == GREETING_JOHN and welcome["userId"] == "user-42"
    finally:
        await app.leave()


async def test_malformed_metadata_in_the_token_or_set_later_never_ends_the_session(
    worker, token_service, livekit, scripted, room_name
):
    # our token service refuses it in words...
    async with httpx.AsyncClient(timeout=10) as http:
        refused = await http.post(token_service.url + "/api/token", json={
            "room_name": room_name, "participant_identity": "user-42", "participant_metadata": "{not json"})
    assert refused.status_code == 422 and refused.json()["error"] == "validation_error"
    # ...but another backend (or `gocare token`) can mint one: the worker must live with it
    token = (
        api.AccessToken(livekit.api_key, livekit.api_secret).with_identity("user-42").with_metadata("{not json")
        .with_grants(api.VideoGrants(room_join=True, room=room_name, can_update_own_metadata=True))
        .with_room_config(api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name="multi-assistant")]))
        .to_jwt()
    )
    mark = worker.process.mark()
    app = AppClient(Joined(url=livekit.url, token=token, response={}))
    await app.connect()
    try:
        welcome = await app.wait_packet("welcome", timeout=20)
        assert welcome["message"] == GREETING_ANONYMOUS
        worker.process.wait_for_log(r"participant.metadata: metadata is not valid JSON", timeout=10, since=mark)
        for broken in ("[1, 2, 3]", "\"just a string\"", "x" * 60_000, json.dumps({"userName": 42}), "{"):
            await app.set_metadata(broken)
        worker.process.wait_for_log(r"participant.metadata: metadata JSON is a list", timeout=10, since=mark)
        worker.process.wait_for_log(r"participant.metadata: metadata JSON is a str", timeout=10, since=mark)
        await asyncio.sleep(1)
        assert (await app.rpc("start_conversation"))["ok"] is True
        assert f"session closed (room={room_name}" not in worker.process.log_since(mark)
        # this call's lines only: the shared worker may still be ending an earlier test's call meanwhile, and
        # livekit-agents logs a traceback of its own when that room's transport closes under it
        ours = [line for line in worker.process.log_since(mark).splitlines() if room_name in line]
        tracebacks = [line for line in ours if "Traceback" in line]
        assert ours and not tracebacks, tracebacks
    finally:
        await app.leave()
