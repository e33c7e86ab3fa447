"""The scripted Deepgram's live API (``GET /v1/listen`` upgraded to a websocket), driven by the real
``livekit-plugins-deepgram`` ``SpeechStream`` and by a bare websocket: real espeak-ng speech in, scripted
transcripts out, and what arrived recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import numpy as np
import pytest
from livekit import rtc
from livekit.agents import APIConnectOptions, APIStatusError
from livekit.agents.stt import SpeechEvent, SpeechEventType
from livekit.plugins import deepgram

from scripted import audio_tools
from scripted.deepgram_server import ScriptedDeepgramServer

SPOKEN = "Hello, I need to move my appointment to Friday morning."
FRAME_SECONDS = 0.01
SPEEDUP = 4  # push audio this many times faster than real time (the server's clock is the audio)

needs_espeak = pytest.mark.skipif(audio_tools.ESPEAK is None, reason="live speech needs espeak-ng")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _stt(server: ScriptedDeepgramServer, http: aiohttp.ClientSession, *, api_key: str | None = None) -> deepgram.STT:
    return deepgram.STT(api_key=api_key or server.api_key, base_url=server.listen_url, model="nova-3",
                        language="en-US", http_session=http)


def _frames(pcm: bytes, rate: int) -> list[rtc.AudioFrame]:
    """10 ms mono frames, the last one padded with silence."""
    size = int(rate * FRAME_SECONDS) * 2
    chunks = [pcm[i : i + size] for i in range(0, len(pcm), size)]
    return [rtc.AudioFrame(c.ljust(size, b"\0"), rate, 1, size // 2) for c in chunks]


async def _push(stream: deepgram.stt.SpeechStream, pcm: bytes, rate: int) -> None:
    for frame in _frames(pcm, rate):
        stream.push_frame(frame)
        await asyncio.sleep(FRAME_SECONDS / SPEEDUP)


def _silence(seconds: float, rate: int) -> bytes:
    return b"\0\0" * int(seconds * rate)


def _loud_seconds(pcm: bytes, rate: int, threshold: float) -> float:
    """How long the speech is from its first to its last loud 10 ms block (espeak-ng pads both ends)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    n = rate // 100
    blocks = samples[: len(samples) // n * n].reshape(-1, n)
    loud = np.flatnonzero(np.sqrt((blocks**2).mean(axis=1)) >= threshold)
    return float((loud[-1] + 1 - loud[0]) * n / rate)


async def _collect(stream: deepgram.stt.SpeechStream, into: list[SpeechEvent]) -> None:
    async for event in stream:
        into.append(event)


async def _until(events: list[SpeechEvent], done: Callable[[list[SpeechEvent]], bool], collector: asyncio.Task[None],
                 timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not done(events):
            if collector.done():  # the stream failed or ended first: show why
                collector.result()
                pytest.fail(f"the stream ended before the event awaited: {_types(events)}")
            await asyncio.sleep(0.01)


async def _end(stream: deepgram.stt.SpeechStream, server: ScriptedDeepgramServer,
               collector: asyncio.Task[None]) -> None:
    """End the input (the plugin sends Finalize, then CloseStream) and wait for the server to close the socket.

    Then close the stream: the plugin's own iterator ends only at its keepalive task's next 5 s tick."""
    stream.end_input()
    async with asyncio.timeout(3):
        while any(c.closed_at is None for c in server.live_connections()):
            await asyncio.sleep(0.01)
    await stream.aclose()
    await asyncio.wait_for(collector, 1)
    if collector.exception():
        raise collector.exception()


def _types(events: list[SpeechEvent]) -> list[SpeechEventType]:
    return [e.type for e in events if e.type != SpeechEventType.RECOGNITION_USAGE]


@needs_espeak
@pytest.mark.parametrize("rate", [16000, 48000])
async def test_an_utterance_ended_by_silence_is_transcribed_as_scripted(deepgram_server, http, rate: int) -> None:
    deepgram_server.script_live(SPOKEN)
    speech = audio_tools.speech_pcm(SPOKEN, rate=rate)
    stream = _stt(deepgram_server, http).stream()
    events: list[SpeechEvent] = []
    collector = asyncio.create_task(_collect(stream, events))
    try:
        await _push(stream, speech + _silence(1.0, rate), rate)
        await _until(events, lambda got: SpeechEventType.END_OF_SPEECH in _types(got), collector)
        await _end(stream, deepgram_server, collector)  # the Finalize is answered with an empty final: no event
    finally:
        await stream.aclose()

    assert _types(events) == [SpeechEventType.START_OF_SPEECH, SpeechEventType.INTERIM_TRANSCRIPT,
                              SpeechEventType.FINAL_TRANSCRIPT, SpeechEventType.END_OF_SPEECH]
    interim, final = (next(e for e in events if e.type == kind)
                      for kind in (SpeechEventType.INTERIM_TRANSCRIPT, SpeechEventType.FINAL_TRANSCRIPT))
    assert interim.alternatives[0].text == "Hello,"  # once, 0.3 s into the speech: the first scripted word
    assert final.alternatives[0].text == SPOKEN
    assert [str(w) for w in final.alternatives[0].words or []] == SPOKEN.split()

    (utterance,) = await asyncio.to_thread(deepgram_server.wait_for_utterances, 1, 2.0)
    assert utterance.sample_rate == 16000  # the plugin resamples to its own rate (16 kHz) whatever it is given
    assert utterance.channels == 1
    assert utterance.ended_by == "silence"
    assert utterance.transcript == SPOKEN
    assert utterance.duration == pytest.approx(_loud_seconds(speech, rate, deepgram_server.silence_rms), abs=0.3)
    assert utterance.rms > 10 * deepgram_server.silence_rms
    assert utterance.authorization == f"Token {deepgram_server.api_key}"
    assert {k: utterance.query[k] for k in ("encoding", "sample_rate", "channels", "model", "language")} == {
        "encoding": "linear16", "sample_rate": "16000", "channels": "1", "model": "nova-3", "language": "en-US"}

    (connection,) = deepgram_server.live_connections()
    assert connection.status == 101 and connection.closed_at is not None
    assert connection.audio_seconds == pytest.approx(len(speech) / 2 / rate + 1.0, abs=0.1)


@needs_espeak
async def test_flush_mid_speech_finalizes_the_utterance(deepgram_server, http) -> None:
    deepgram_server.script_live(SPOKEN)
    speech = audio_tools.speech_pcm(SPOKEN, rate=16000)
    stream = _stt(deepgram_server, http).stream()
    events: list[SpeechEvent] = []
    collector = asyncio.create_task(_collect(stream, events))
    try:
        await _push(stream, speech[: len(speech) // 2 // 2 * 2], 16000)  # stop in the middle of a sentence
        stream.flush()  # the plugin sends {"type": "Finalize"}
        await _until(events, lambda got: SpeechEventType.FINAL_TRANSCRIPT in _types(got), collector)
        await _end(stream, deepgram_server, collector)
    finally:
        await stream.aclose()

    final = next(e for e in events if e.type == SpeechEventType.FINAL_TRANSCRIPT)
    assert final.alternatives[0].text == SPOKEN
    # speech_final is false after a Finalize, so the plugin does not end the speech on it
    assert SpeechEventType.END_OF_SPEECH not in _types(events)
    (utterance,) = deepgram_server.live_utterances()
    assert utterance.ended_by == "finalize"
    assert utterance.duration < _loud_seconds(speech, 16000, deepgram_server.silence_rms) * 0.7


async def test_a_wrong_key_fails_the_stream_with_401(deepgram_server, http) -> None:
    stt = _stt(deepgram_server, http, api_key="wrong-key")
    errors: list[Any] = []
    stt.on("error", errors.append)
    stream = stt.stream(conn_options=APIConnectOptions(max_retry=0, timeout=2.0))
    stream.push_frame(_frames(_silence(0.1, 16000), 16000)[0])
    try:
        with pytest.raises(APIStatusError) as raised:
            async with asyncio.timeout(5):
                async for _event in stream:
                    pass
    finally:
        await stream.aclose()

    assert raised.value.status_code == 401 and not raised.value.retryable
    assert [(e.recoverable, type(e.error)) for e in errors] == [(False, APIStatusError)]
    (connection,) = deepgram_server.live_connections()
    assert (connection.status, connection.authorization) == (401, "Token wrong-key")
    assert deepgram_server.live_utterances() == []


async def test_a_handshake_without_linear16_and_sample_rate_is_refused(deepgram_server, http) -> None:
    headers = {"Authorization": f"Token {deepgram_server.api_key}"}
    for query in ("encoding=linear16", "sample_rate=16000", "encoding=opus&sample_rate=16000"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
            await http.ws_connect(f"{deepgram_server.listen_url}?{query}", headers=headers)
        assert raised.value.status == 400
    assert [c.status for c in deepgram_server.live_connections()] == [400, 400, 400]


@needs_espeak
async def test_a_pause_shorter_than_utterance_end_ms_brings_two_finals_and_no_utterance_end(deepgram_server,
                                                                                           http) -> None:
    """Deepgram's timing, which a turn decision may read: a 0.7 s pause ends the first part with ``speech_final``
    (the scripted endpointing, 0.5 s), but ``UtteranceEnd`` (``utterance_end_ms``=1000) only follows a gap of a
    second after the last word: after the whole sentence, not in the pause."""
    deepgram_server.script_live("I wanted to ask", "about my appointment.")
    rate = 16000
    speech = (audio_tools.speech_pcm("I wanted to ask", rate=rate) + _silence(0.7, rate)
              + audio_tools.speech_pcm("about my appointment", rate=rate) + _silence(1.5, rate))
    url = (f"{deepgram_server.listen_url}?encoding=linear16&sample_rate={rate}&vad_events=false"
           "&interim_results=true&utterance_end_ms=1000&model=nova-3")
    async with http.ws_connect(url, headers={"Authorization": f"Token {deepgram_server.api_key}"}) as ws:
        chunk = 1600 * 2
        for i in range(0, len(speech), chunk):
            await ws.send_bytes(speech[i : i + chunk])
        messages = []
        while not messages or messages[-1]["type"] != "UtteranceEnd":
            messages.append(await ws.receive_json(timeout=2))
        with pytest.raises(asyncio.TimeoutError):
            messages.append(await ws.receive_json(timeout=0.3))
    kinds = [(m["type"], m.get("is_final"), m.get("speech_final"),
              m["channel"]["alternatives"][0]["transcript"] if m["type"] == "Results" else None) for m in messages]
    assert kinds == [("Results", False, False, "I"), ("Results", True, True, "I wanted to ask"),
                     ("Results", False, False, "about"), ("Results", True, True, "about my appointment."),
                     ("UtteranceEnd", None, None, None)], kinds
    words = messages[3]["channel"]["alternatives"][0]["words"]
    assert messages[4]["last_word_end"] == words[-1]["end"]


@needs_espeak
async def test_wire_messages_are_shaped_as_deepgram_live(deepgram_server, http) -> None:
    """The exact messages, read off a bare websocket: what the plugin parses, and the fields it ignores."""
    deepgram_server.script_live("Hello there.", "Second one.")
    # espeak's own quiet tail trimmed: the silences below are exactly as long as they say
    speech = audio_tools.trim_silence(audio_tools.speech_pcm("Hello there", rate=16000), rate=16000)
    url = (f"{deepgram_server.listen_url}?encoding=linear16&sample_rate=16000&vad_events=true"
           "&interim_results=false&utterance_end_ms=1000&model=nova-3")
    async with http.ws_connect(url, headers={"Authorization": f"Token {deepgram_server.api_key}"}) as ws:
        assert ws._response.headers["dg-request-id"]

        async def receive() -> dict[str, Any]:
            return await ws.receive_json(timeout=2)

        chunk = 1600 * 2  # 50 ms, as the plugin sends
        audio = speech + _silence(0.8, 16000)
        for i in range(0, len(audio), chunk):
            await ws.send_bytes(audio[i : i + chunk])
        started, final = await receive(), await receive()
        # UtteranceEnd needs utterance_end_ms (1 s) of audio after the last word: 0.8 s of silence is not enough
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive_json(timeout=0.5)
        await ws.send_bytes(_silence(0.4, 16000))
        utterance_end = await receive()
        assert started["type"] == "SpeechStarted" and started["channel"] == [0]
        assert 0 <= started["timestamp"] < 0.3
        assert {k: final[k] for k in ("type", "channel_index", "is_final", "speech_final", "from_finalize")} == {
            "type": "Results", "channel_index": [0, 1], "is_final": True, "speech_final": True,
            "from_finalize": False}
        assert final["start"] == 0 and final["duration"] > len(speech) / 2 / 16000
        (alternative,) = final["channel"]["alternatives"]
        assert alternative["transcript"] == "Hello there." and alternative["confidence"] == 0.98
        assert [(w["word"], w["punctuated_word"]) for w in alternative["words"]] == [("hello", "Hello"),
                                                                                     ("there", "there.")]
        assert alternative["words"][0]["start"] == started["timestamp"]
        assert set(final["metadata"]) == {"request_id", "model_info", "model_uuid"}
        assert utterance_end == {"type": "UtteranceEnd", "channel": [0, 1],
                                 "last_word_end": alternative["words"][-1]["end"]}

        await ws.send_str('{"type": "KeepAlive"}')
        await ws.send_str('{"type": "Finalize"}')  # nothing said since the last final
        empty = await receive()
        assert (empty["is_final"], empty["speech_final"], empty["from_finalize"]) == (True, False, True)
        assert empty["channel"]["alternatives"][0]["transcript"] == ""

        await ws.send_bytes(speech)  # speech still going on when the client finalizes
        await ws.send_str('{"type": "Finalize"}')
        assert (await receive())["type"] == "SpeechStarted"
        cut = await receive()
        assert (cut["is_final"], cut["speech_final"], cut["from_finalize"]) == (True, False, True)
        assert cut["channel"]["alternatives"][0]["transcript"] == "Second one."
        assert cut["start"] == pytest.approx(final["start"] + final["duration"] + empty["duration"], abs=0.002)
        await ws.send_bytes(_silence(1.1, 16000))  # the gap after the last word that UtteranceEnd waits for
        assert (await receive())["type"] == "UtteranceEnd"

        await ws.send_str('{"type": "CloseStream"}')
        metadata = await receive()
        assert metadata["type"] == "Metadata" and metadata["request_id"] == final["metadata"]["request_id"]
        assert (await ws.receive(timeout=2)).type == aiohttp.WSMsgType.CLOSE

    assert [u.ended_by for u in deepgram_server.live_utterances()] == ["silence", "finalize"]
    deepgram_server.reset()
    assert deepgram_server.live_utterances() == deepgram_server.live_connections() == []
