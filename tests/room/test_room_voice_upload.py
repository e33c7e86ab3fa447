"""A recorded voice message sent during a live call: the service answers it and the live agent hears of it."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from calls import verified_call
from scripted.openai_server import Reply, Rule

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(240)]

UPLOAD_REPLY = "Your appointment is tomorrow at nine in the morning."


async def test_voice_upload_during_a_call_is_answered_and_the_agent_knows_it(
    worker, token_service, scripted, room_name, recordings
):
    app = await verified_call(token_service.url, room_name, scripted)
    try:
        scripted.llm.script(
            Rule(user="status of my appointment", reply=Reply(text=UPLOAD_REPLY), times=1),
            Rule(user="what did I just send", reply=Reply(text="You asked about your appointment tomorrow.")),
        )
        mark = worker.process.mark()
        async with httpx.AsyncClient(timeout=60) as http:
            answer = await http.post(
                f"{token_service.url}/voice/upload", params={"room": room_name},
                files={"file": ("message.m4a", recordings.bytes("m4a"), "audio/mp4")},
            )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["ok"] is True and body["agent_notified"] is True and body["room"] == room_name
        assert body["transcript"] == scripted.deepgram.transcript
        assert body["reply"] == UPLOAD_REPLY and len(body["speech_audio"]) > 1000
        worker.process.wait_for_log(r"voice upload received \(room=" + room_name, timeout=10, since=mark)

        # the next live turn: the LLM sees the uploaded message and the reply the user already heard
        scripted.deepgram.script_live("What did I just send you?")
        said_at = time.monotonic()
        await app.say("what did I just send you")
        await app.wait_agent_says(r"asked about your appointment", since=said_at, timeout=40)
        request = next(r for r in scripted.llm.chat_requests() if "what did i just send" in r.last_user_text.lower())
        history = json.dumps(request.messages)
        assert scripted.deepgram.transcript in history and UPLOAD_REPLY in history
    finally:
        await app.leave()


async def test_voice_upload_for_a_room_without_a_call_says_the_agent_was_not_notified(
    worker, token_service, scripted, room_name, recordings
):
    async with httpx.AsyncClient(timeout=60) as http:
        answer = await http.post(
            f"{token_service.url}/voice/upload", params={"room": room_name},
            files={"file": ("message.wav", recordings.bytes("wav"), "audio/wav")},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["ok"] is True and answer.json()["agent_notified"] is False
