"""Turn taking in a real room, with the worker's default (fast) settings: a caller who pauses mid-sentence is
answered once, after the end; a number said in groups is not cut off after the first group; a caller who speaks
over the agent stops it. The scripted STT cuts utterances at 0.5 s of silence, so each pause here reaches the agent
as a final transcript of its own, exactly what the end-of-turn model then has to judge."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from calls import GREETING_JOHN, WELCOME_BACK, join_as_john, script_number_check, verified_call
from harness.app_client import MIC_RATE
from scripted.audio_tools import speech_pcm
from scripted.openai_server import Reply, Rule

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(180)]

PAUSE = 0.6  # seconds of silence inside the sentence (the "600 ms")


def _finals(app, since: float) -> list[str]:
    return [t.text for t in app.agent_transcripts(since=since) if t.final]


async def test_a_pause_mid_sentence_gets_one_reply_after_the_end(worker, token_service, scripted, room_name):
    app = await verified_call(token_service.url, room_name, scripted)
    try:
        await app.wait_agent_listening()  # the welcome played out
        scripted.llm.script(Rule(user="I wanted to ask about my appointment",
                                 reply=Reply(text="Your appointment is on Monday at nine.")))
        scripted.deepgram.script_live("I wanted to ask", "about my appointment.")
        started = time.monotonic()
        first_end, last_end = await app.say_with_pauses("I wanted to ask", "about my appointment", pause=PAUSE)
        answer = await app.wait_agent_says(r"Monday at nine", since=started, timeout=30)
        # the STT did hear two utterances: the pause reached the agent as a turn that could have ended there
        heard = [u.transcript for u in scripted.deepgram.live_utterances()]
        assert heard[-2:] == ["I wanted to ask", "about my appointment."], heard
        # one reply, to the whole sentence, and nothing said in the pause
        replies = _finals(app, started)
        assert replies == ["Your appointment is on Monday at nine."], replies
        assert app.agent_audio.speech_seconds_since(first_end) == pytest.approx(
            app.agent_audio.speech_seconds_since(last_end), abs=0.05)
        assert answer.at > last_end
        used = [r for r in scripted.llm.chat_requests() if r.received_at >= time.time() - 30]
        assert used and used[-1].last_user_text == "I wanted to ask about my appointment.", \
            [r.last_user_text for r in used]
    finally:
        await app.leave()


async def test_a_number_said_in_groups_is_not_cut_off_after_the_first(worker, token_service, scripted, room_name):
    script_number_check(scripted, "98765 43210")
    scripted.llm.script(Rule(user="^98765$", reply=Reply(text="Please go on, I'm listening.")))
    mark = worker.process.mark()
    app = await join_as_john(token_service.url, room_name)
    try:
        await app.wait_agent_says(re.escape(GREETING_JOHN), timeout=30)
        await asyncio.sleep(0.5)
        scripted.deepgram.script_live("98765", "43210")
        started = time.monotonic()
        # 1.5 s between the groups: longer than the pause a sentence gets (GOCARE_ENDPOINTING_MAX_DELAY, 1.2 s);
        # digits that are not a number yet get GOCARE_NUMBER_MAX_PAUSE (2.5 s)
        first_end, last_end = await app.say_with_pauses("nine eight seven six five", "four three two one zero",
                                                        pause=1.5)
        await app.wait_agent_says(re.escape(WELCOME_BACK), since=started, timeout=30)
        heard = [u.transcript for u in scripted.deepgram.live_utterances()]
        assert heard[-2:] == ["98765", "43210"], heard
        # nothing answered the first group: the welcome is the only thing said, and it came after the end
        assert _finals(app, started) == [WELCOME_BACK]
        assert app.agent_audio.speech_seconds_since(first_end) == pytest.approx(
            app.agent_audio.speech_seconds_since(last_end), abs=0.05)
        # one check, of the whole number: no "did not sound like a complete phone number" for the first group
        worker.process.wait_for_log(r"authenticated: user_id=user-42 phone=\+91\*+3210 after 0 failed", timeout=5,
                                    since=mark)
        assert "authentication failed" not in worker.process.log_since(mark)
    finally:
        await app.leave()


async def test_speaking_over_the_agent_stops_its_audio(worker, token_service, scripted, room_name):
    app = await verified_call(token_service.url, room_name, scripted)
    # one long sentence (one TTS request, no pause between sentences that could pass for a stop): ~20 s of speech
    long_answer = "Here is everything about your appointments, " * 8 + "and that is all."
    try:
        await app.wait_agent_listening()  # the welcome played out
        scripted.llm.script(
            Rule(user="tell me everything", reply=Reply(text=long_answer)),
            Rule(user="stop", reply=Reply(text="Okay, stopping.")),
        )
        scripted.deepgram.script_live("Tell me everything.", "Stop, please.")
        asked = time.monotonic()
        await app.say("tell me everything")
        reply_began = await app.wait_agent_speech(since=asked, seconds=1.0, timeout=30)
        await asyncio.sleep(1.0)
        # synthesized before the clock starts: the 2 s bound below is the agent's, not espeak's
        interruption = await asyncio.to_thread(speech_pcm, "stop please, stop", rate=MIC_RATE)
        interrupted_at = time.monotonic()
        assert app.microphone is not None
        await app.microphone.play(interruption)
        await app.wait_agent_says(r"Okay, stopping", since=interrupted_at, timeout=30)
        # the agent's audio since its long answer began, as (start, end) runs of speech
        loud = [t for t, _ in app.agent_audio.loud_since(reply_began)]
        runs: list[list[float]] = []
        for t in loud:
            if runs and t - runs[-1][1] < 0.6:
                runs[-1][1] = t
            else:
                runs.append([t, t])
        timeline = [(round(a - interrupted_at, 2), round(b - interrupted_at, 2)) for a, b in runs]
        # the long answer (about 20 s of speech) stopped within 2 s of the caller speaking over it; what came
        # after is the short reply to "stop"
        answer = runs[0]
        assert answer[1] - interrupted_at < 2.0, timeline
        assert answer[1] - answer[0] < 6.0, timeline
    finally:
        await app.leave()
