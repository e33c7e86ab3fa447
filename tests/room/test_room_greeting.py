"""The app's first seconds in a real room: token, join, the agent, the welcome packet, the spoken greeting."""

from __future__ import annotations

import time

import pytest

from harness.app_client import AppClient

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
