"""The number check by voice, in a real room: real speech in, the scripted STT hears it, the agent decides."""

from __future__ import annotations

import re

import pytest

from calls import GREETING_JOHN, MISMATCH_REPLY, WELCOME_BACK, join_as_john, say_number, script_number_check, verified_call
from harness.app_client import loud_seconds
from scripted.audio_tools import speech_pcm

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(180)]

SPOKEN = "nine eight seven six five four three two one zero"


async def test_registered_number_by_voice_verifies_and_welcomes(worker, token_service, scripted, room_name):
    app = await verified_call(token_service.url, room_name, scripted)
    try:
        # what the STT received is the user's real audio: 16 kHz (the plugin's rate), as long as the speech
        [heard] = scripted.deepgram.wait_for_utterances(1, timeout=5)
        assert heard.sample_rate == 16000 and heard.channels == 1
        spoken = loud_seconds(speech_pcm(SPOKEN, rate=16000), 16000)
        assert abs(heard.duration - spoken) < 0.5, (heard.duration, spoken)
        assert heard.authorization == "Token dg-room-tests"
        # the directory said yes for John's record, logged with the number masked; the welcome was spoken
        worker.process.wait_for_log(r"authenticated: user_id=user-42 phone=\+91\*+3210", timeout=5)
        assert WELCOME_BACK in " ".join(r["input"] for r in scripted.speech.speech_requests())
        assert app.agent_audio.speech_seconds_since(0) > 2.0
    finally:
        await app.leave()


async def test_wrong_numbers_get_the_neutral_answer_then_goodbye_and_the_agent_leaves(
    worker, token_service, scripted, room_name
):
    wrong = ("12345 67890", "one two three four five six seven eight nine zero")
    script_number_check(scripted, wrong[0])
    app = await join_as_john(token_service.url, room_name)
    try:
        await app.wait_agent_says(re.escape(GREETING_JOHN), timeout=30)
        said_at = await say_number(app, scripted, spoken=wrong[1], written=wrong[0])
        answer = await app.wait_agent_says(re.escape(MISMATCH_REPLY), since=said_at, timeout=40)
        assert "12345" not in answer.text and "67890" not in answer.text
        # the agent did not reveal whose number it might be: the tool told the LLM only that it did not match
        tool_outputs = [r.last_tool_output for r in scripted.llm.chat_requests() if r.last_role == "tool"]
        assert tool_outputs and all("John" not in out and "98765" not in out for out in tool_outputs)

        said_at = await say_number(app, scripted, spoken=wrong[1], written=wrong[0])
        await app.wait_agent_says(re.escape(MISMATCH_REPLY), since=said_at, timeout=40)
        said_at = await say_number(app, scripted, spoken=wrong[1], written=wrong[0])
        goodbye = await app.wait_agent_says(r"couldn't verify your mobile number.*Goodbye", since=said_at, timeout=40)
        assert "Goodbye" in goodbye.text
        await app.wait_agent_left(timeout=30)
        assert app.agent_left_at is not None and app.agent_left_at >= goodbye.at - 1.0
    finally:
        await app.leave()
