"""``POST /voice/upload`` through the real app: real recordings, the real Deepgram and OpenAI plugins talking
HTTP to scripted servers on 127.0.0.1, and the LiveKit server API pointed at dead loopback ports."""

from __future__ import annotations

import base64
import io
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import av
import jwt
import pytest
import uvicorn
from fastapi.testclient import TestClient

from gocare_voice.settings import Settings
from gocare_voice.token_service.app import create_app
from scripted.openai_server import Reply, Rule

REPLY = "Your appointment is tomorrow at nine in the morning."
MIME = {".webm": "audio/webm", ".m4a": "audio/mp4", ".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def settings_for(deepgram_server, speech_server, openai_server):
    """Settings pointing every provider at the scripted servers, LiveKit at a closed port."""
    openai_server.script(Rule(user=r"appointment", reply=Reply(text=REPLY)))

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "deepgram_api_key": deepgram_server.api_key,
            "deepgram_base_url": deepgram_server.url,
            "llm_api_key": "llm-test-key",
            "llm_base_url": openai_server.base_url,
            "tts_api_key": speech_server.api_key,
            "tts_base_url": speech_server.base_url,
            "rate_limit": "off",
            "livekit_url": f"ws://127.0.0.1:{_closed_port()}",
            "notify_timeout": 1.0,
            "stage_timeout": 5.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def client(settings_for) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for())) as test_client:
        yield test_client


def _upload(client: TestClient, data: bytes, *, name: str = "message.m4a", room: str | None = None,
            headers: dict[str, str] | None = None):
    params = {"room": room} if room is not None else None
    suffix = name[name.rfind("."):]
    return client.post(
        "/voice/upload", params=params, headers=headers,
        files={"file": (name, data, MIME.get(suffix, "application/octet-stream"))},
    )


def _mp3_seconds(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        assert container.format.name == "mp3"
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate


# --- the happy path, every format -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["webm", "webm_stream", "m4a", "m4a_faststart", "wav", "mp3", "ogg", "ogg_vorbis"])
def test_upload_each_format(client, recordings, deepgram_server, speech_server, openai_server, name) -> None:
    path = recordings.files[name]
    response = _upload(client, path.read_bytes(), name=path.name)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True
    assert body["transcript"] == deepgram_server.transcript
    assert body["reply"] == REPLY
    assert body["speech_format"] == "mp3"
    assert body["agent_notified"] is False and body["room"] is None
    assert response.headers["cache-control"] == "no-store"

    # Deepgram received the decoded recording: a 16 kHz mono 16-bit WAV as long as what was spoken
    (listen,) = deepgram_server.listen_requests()
    assert listen.problem is None
    assert (listen.sample_rate, listen.channels, listen.sample_width) == (16000, 1, 2)
    assert listen.content_type == "audio/wav"
    assert listen.duration == pytest.approx(recordings.seconds, abs=0.08)
    assert listen.rms > 1000
    assert listen.query["model"] == "nova-3" and listen.query["language"] == "en-US"

    # the LLM got the worker's assistant instructions and the transcript
    (chat,) = openai_server.chat_requests()
    assert "You are GoCare" in chat.system_text
    assert chat.last_user_text == deepgram_server.transcript

    # the reply was spoken by the configured TTS and comes back as playable MP3
    (speech,) = speech_server.speech_requests()
    assert speech["input"] == REPLY and speech["_authorization"] == f"Bearer {speech_server.api_key}"
    assert _mp3_seconds(base64.b64decode(body["speech_audio"])) > 1.0


def test_caller_name_reaches_the_instructions(settings_for, recordings, openai_server) -> None:
    secret = "a-test-secret-of-at-least-32-bytes!!"
    app = create_app(settings_for(auth_mode="jwt", auth_jwt_secret=secret))
    token = jwt.encode({"sub": "user-7", "name": "John Doe", "exp": int(time.time()) + 600}, secret, "HS256")
    with TestClient(app) as client:
        anonymous = _upload(client, recordings.bytes("mp3"), name="a.mp3")
        assert anonymous.status_code == 401
        strangers_room = _upload(client, recordings.bytes("mp3"), name="a.mp3", room="user-8~call",
                                 headers={"Authorization": f"Bearer {token}"})
        assert strangers_room.status_code == 403 and strangers_room.json()["error"] == "room_not_allowed"
        assert openai_server.chat_requests() == []  # refused before any provider was called
        response = _upload(client, recordings.bytes("mp3"), name="a.mp3",
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    (chat,) = openai_server.chat_requests()
    assert "The user's name is John." in chat.system_text
    # what is true of an upload: the app signed the sender in; no number check happened
    assert "authenticated by the app" in chat.system_text and "is verified" not in chat.system_text


def test_open_mode_instructions_claim_nothing_about_the_sender(client, recordings, openai_server) -> None:
    assert _upload(client, recordings.bytes("mp3"), name="a.mp3").status_code == 200
    (chat,) = openai_server.chat_requests()
    assert "Nothing is known about who sent this message" in chat.system_text
    assert "verified" not in chat.system_text and "authenticated by the app" not in chat.system_text


def test_a_speech_server_without_request_ids_logs_no_warning(client, recordings, speech_server, caplog) -> None:
    speech_server.request_ids = False
    with caplog.at_level("DEBUG"):
        assert _upload(client, recordings.bytes("mp3"), name="a.mp3").status_code == 200
    assert speech_server.speech_requests()
    assert not [r for r in caplog.records if "no request_id provided" in r.getMessage()]


@pytest.mark.parametrize(("size", "text"), [
    (26214400, "25 MB"), (20480, "20 KB"), (20000, "19.5 KB"), (1536 * 1024, "1.5 MB"), (1000, "1000 bytes"),
])
def test_sizes_in_human_units(size: int, text: str) -> None:
    from gocare_voice.token_service.voice import human_size

    assert human_size(size) == text


def test_deepgram_tts_provider(settings_for, recordings, deepgram_server, speech_server) -> None:
    with TestClient(create_app(settings_for(tts_provider="deepgram"))) as client:
        response = _upload(client, recordings.bytes("ogg"), name="a.ogg")
    assert response.status_code == 200, response.text
    assert [s.text for s in deepgram_server.speaks] == [REPLY]
    assert speech_server.speech_requests() == []
    assert _mp3_seconds(base64.b64decode(response.json()["speech_audio"])) > 1.0


def test_tts_falls_back_to_deepgram_when_openai_speech_fails(client, recordings, deepgram_server, speech_server):
    speech_server.fail_status = 500
    response = _upload(client, recordings.bytes("webm"), name="a.webm")
    assert response.status_code == 200, response.text
    assert speech_server.speech_requests(), "the primary TTS was tried first"
    assert [s.text for s in deepgram_server.speaks] == [REPLY]


# --- bad input: a clear 4xx, nothing sent to any provider ---------------------------------------------


def _assert_refused(response, status: int, error: str, deepgram_server, *, detail: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert isinstance(body["detail"], str) and len(body["detail"]) > 10
    if detail:
        assert detail in body["detail"]
    assert deepgram_server.listen_requests() == [], "a refused upload must not reach the STT"


def test_empty_file(client, deepgram_server) -> None:
    _assert_refused(_upload(client, b""), 400, "empty_file", deepgram_server)


def test_not_audio(client, deepgram_server) -> None:
    _assert_refused(_upload(client, b"just some text\n" * 100, name="notes.m4a"), 415, "not_audio", deepgram_server)


def test_video_without_sound(client, recordings, deepgram_server) -> None:
    _assert_refused(_upload(client, recordings.video_only.read_bytes(), name="v.mp4"), 415, "not_audio",
                    deepgram_server, detail="no audio track")


@pytest.mark.parametrize("name", ["m4a", "webm", "ogg", "mp3", "wav"])
def test_truncated(client, recordings, deepgram_server, name) -> None:
    data = recordings.bytes(name)
    _assert_refused(_upload(client, data[: len(data) // 2], name=recordings.files[name].name), 422,
                    "corrupt_audio", deepgram_server)


def test_corrupt(client, recordings, deepgram_server) -> None:
    data = bytearray(recordings.bytes("mp3"))
    data[len(data) // 3 : len(data) // 3 + 3000] = bytes(range(256)) * 11 + bytes(184)
    _assert_refused(_upload(client, bytes(data), name="a.mp3"), 422, "corrupt_audio", deepgram_server)


def test_unsupported_codec(client, recordings, deepgram_server) -> None:
    _assert_refused(_upload(client, recordings.unsupported_codec.read_bytes(), name="a.wav"), 415,
                    "unsupported_codec", deepgram_server, detail="gsm_ms")


def test_too_long(settings_for, recordings, deepgram_server) -> None:
    with TestClient(create_app(settings_for(upload_max_seconds=2))) as client:
        for name in ("m4a", "webm_stream"):  # by the header, and while decoding (no duration announced)
            _assert_refused(_upload(client, recordings.bytes(name), name=recordings.files[name].name), 413,
                            "too_long", deepgram_server, detail="limit")


def test_too_big(settings_for, recordings, deepgram_server) -> None:
    data = recordings.bytes("wav")
    with TestClient(create_app(settings_for(upload_max_bytes=len(data) - 1000))) as client:
        response = _upload(client, data, name="a.wav")
        _assert_refused(response, 413, "too_large", deepgram_server, detail="KB")
        assert re.search(r"limit of \d+(\.\d)? KB\.", response.json()["detail"]), response.json()["detail"]
        # a small file passes under the same limit
        assert _upload(client, recordings.bytes("mp3"), name="a.mp3").status_code == 200


def test_no_speech(client, recordings, deepgram_server, openai_server) -> None:
    response = _upload(client, recordings.silence.read_bytes(), name="quiet.m4a", room="room-1")
    assert response.status_code == 422, response.text
    body = response.json()
    assert (body["error"], body["stage"], body["ok"]) == ("no_speech", "stt", False)
    assert body["transcript"] == "" and body["reply"] is None and body["agent_notified"] is False
    (listen,) = deepgram_server.listen_requests()
    assert listen.rms < 60 and listen.duration == pytest.approx(3.0, abs=0.05)
    assert openai_server.chat_requests() == []


def test_request_shape_errors(client, recordings, deepgram_server) -> None:
    data = recordings.bytes("mp3")
    missing = client.post("/voice/upload", files={"audio": ("a.mp3", data, "audio/mpeg")})
    _assert_refused(missing, 422, "missing_file", deepgram_server, detail="'file'")
    raw = client.post("/voice/upload", content=data, headers={"Content-Type": "audio/mpeg"})
    _assert_refused(raw, 415, "unsupported_media_type", deepgram_server)
    broken = client.post("/voice/upload", content=b"--xyz\r\nnonsense",
                         headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert broken.status_code == 400 and broken.json()["error"] in ("bad_multipart", "incomplete_upload")
    two = client.post("/voice/upload", files=[("file", ("a.mp3", data, "audio/mpeg")),
                                              ("file", ("b.mp3", data, "audio/mpeg"))])
    _assert_refused(two, 422, "too_many_files", deepgram_server)


@pytest.mark.parametrize("room", ["x" * 257, "\u00e9" * 129, "bad\nroom", "tab\there"])
def test_invalid_room(client, recordings, deepgram_server, room) -> None:
    _assert_refused(_upload(client, recordings.bytes("mp3"), name="a.mp3", room=room), 422, "validation_error",
                    deepgram_server, detail="room")


# --- a provider failing at each stage: 502/504 naming the stage, earlier results kept ---------------


def _failed(response, status: int, stage: str, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["ok"], body["stage"], body["error"]) == (False, stage, error)
    assert body["speech_audio"] is None and body["speech_format"] is None
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def test_stt_server_error(client, recordings, deepgram_server, openai_server) -> None:
    deepgram_server.fail_status = 500
    body = _failed(_upload(client, recordings.bytes("m4a")), 502, "stt", "stt_failed")
    assert body["transcript"] is None and body["reply"] is None
    assert "speech-to-text" in body["detail"]
    assert openai_server.chat_requests() == []


def test_stt_timeout(settings_for, recordings, deepgram_server) -> None:
    deepgram_server.delay = 1.6
    with TestClient(create_app(settings_for(stage_timeout=0.8))) as client:
        started = time.perf_counter()
        body = _failed(_upload(client, recordings.bytes("m4a")), 504, "stt", "stt_timeout")
        assert time.perf_counter() - started < 2.5
    assert body["transcript"] is None and "0.8 s" in body["detail"]


def test_llm_server_error_keeps_transcript(client, recordings, deepgram_server, openai_server, speech_server):
    openai_server.rules.clear()
    openai_server.script(Rule(reply=Reply(status=500, error="model overloaded")))
    body = _failed(_upload(client, recordings.bytes("ogg"), name="a.ogg", room="room-1"), 502, "llm", "llm_failed")
    assert body["transcript"] == deepgram_server.transcript
    assert body["reply"] is None and body["agent_notified"] is False and body["room"] == "room-1"
    assert "HTTP 500" in body["detail"]
    assert speech_server.speech_requests() == []


def test_llm_timeout_keeps_transcript(settings_for, recordings, deepgram_server, openai_server) -> None:
    openai_server.rules.clear()
    openai_server.script(Rule(reply=Reply(text=REPLY, delay=1.6)))
    with TestClient(create_app(settings_for(stage_timeout=0.8))) as client:
        body = _failed(_upload(client, recordings.bytes("webm"), name="a.webm"), 504, "llm", "llm_timeout")
    assert body["transcript"] == deepgram_server.transcript and body["reply"] is None


def test_tts_down_keeps_transcript_and_reply(client, recordings, deepgram_server, speech_server) -> None:
    speech_server.fail_status = 503
    deepgram_server.speak_fail_status = 500  # the fallback TTS is down too
    body = _failed(_upload(client, recordings.bytes("wav"), name="a.wav"), 502, "tts", "tts_failed")
    assert body["transcript"] == deepgram_server.transcript
    assert body["reply"] == REPLY
    assert speech_server.speech_requests() and deepgram_server.speaks


def test_tts_timeout_keeps_transcript_and_reply(settings_for, recordings, deepgram_server, speech_server) -> None:
    speech_server.delay = 1.6
    deepgram_server.speak_delay = 1.6
    with TestClient(create_app(settings_for(stage_timeout=0.8))) as client:
        body = _failed(_upload(client, recordings.bytes("mp3"), name="a.mp3"), 504, "tts", "tts_timeout")
    assert (body["transcript"], body["reply"]) == (deepgram_server.transcript, REPLY)


def test_reply_encode_failure_keeps_transcript_and_reply(settings_for, recordings, deepgram_server,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The MP3 encode of the spoken reply runs in the tts stage: when it fails (here: the encoder worker
    crashed twice) the answer is a 502 naming that stage, with transcript and reply kept, not a 500."""
    import gocare_voice.voice_upload.pipeline as pipeline_module
    from gocare_voice.audio import AudioWorkers, CorruptAudioError
    from gocare_voice.audio.workers import ENCODER_CRASHED

    real = pipeline_module.shared_audio_workers()

    class EncoderCrashes(AudioWorkers):
        async def start(self) -> None:
            await real.start()

        async def decode(self, data: bytes, **kwargs: Any):  # type: ignore[no-untyped-def]  # stands in for AudioWorkers.decode
            return await real.decode(data, **kwargs)

        async def encode(self, pcm: bytes, **kwargs: Any) -> bytes:
            raise CorruptAudioError(ENCODER_CRASHED)

    monkeypatch.setattr(pipeline_module, "shared_audio_workers", lambda: EncoderCrashes(processes=1))
    with TestClient(create_app(settings_for())) as client:
        body = _failed(_upload(client, recordings.bytes("m4a")), 502, "tts", "tts_failed")
    assert (body["transcript"], body["reply"]) == (deepgram_server.transcript, REPLY)
    assert "reply audio could not be produced" in body["detail"]


def test_llm_not_configured(settings_for, recordings, deepgram_server, caplog) -> None:
    """The detail is a sentence for the app's user (no server setting names); the operator's log names them."""
    with caplog.at_level("ERROR", logger="gocare.voice_upload"):
        with TestClient(create_app(settings_for(llm_api_key=None))) as client:
            body = _failed(_upload(client, recordings.bytes("mp3"), name="a.mp3"), 503, "llm", "llm_not_configured")
    assert body["transcript"] == deepgram_server.transcript
    assert "LLM_API_KEY" not in body["detail"] and "_" not in body["detail"]
    assert body["detail"] == "Voice messages are not available right now: the language model is not set up on the server."
    assert any("LLM_API_KEY" in r.getMessage() for r in caplog.records)


def test_stt_not_configured_is_answered_without_loading_livekit_agents(recordings, tmp_path) -> None:
    """The token service with no Deepgram key (``gocare token-server`` with no configuration at all): an upload
    is answered 503 ``stt_not_configured`` in words, and the service never imported livekit-agents or a plugin
    (the first stage cannot run, so nothing past it is built). In a process of its own: this test process
    has imported livekit-agents long ago."""
    import json
    import subprocess
    import sys

    recording = tmp_path / "a.mp3"
    recording.write_bytes(recordings.bytes("mp3"))
    script = (
        "import json, sys\n"
        "from fastapi.testclient import TestClient\n"
        "from gocare_voice.settings import Settings\n"
        "from gocare_voice.token_service.app import create_app\n"
        "with TestClient(create_app(Settings(_env_file=None))) as client:\n"
        f"    with open({str(recording)!r}, 'rb') as f:\n"
        "        answer = client.post('/voice/upload', files={'file': ('a.mp3', f, 'audio/mpeg')})\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('livekit.agents', 'livekit.plugins')))\n"
        "print(json.dumps({'status': answer.status_code, 'body': answer.json(), 'loaded': loaded}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEEPGRAM_", "LLM_", "GOCARE_", "LIVEKIT_"))}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == 503 and result["body"]["error"] == "stt_not_configured", result
    assert result["body"]["detail"] == (
        "Voice messages are not available right now: the speech-to-text service is not set up on the server.")
    assert result["loaded"] == []


class _HideAzurePlugin:
    """A deployment without the ``[azure]`` extra, in this process: the import system finds no
    ``livekit.plugins.azure`` (the test extra installs it, so the test cannot rely on it being absent)."""

    name = "livekit.plugins.azure"

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname == self.name or fullname.startswith(self.name + "."):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def test_azure_tts_without_its_plugin_is_reported_not_crashed(settings_for, recordings, deepgram_server,
                                                              caplog, monkeypatch) -> None:
    import importlib.util
    import sys

    for module in [m for m in sys.modules if m == _HideAzurePlugin.name or m.startswith(_HideAzurePlugin.name + ".")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(sys, "meta_path", [_HideAzurePlugin(), *sys.meta_path])
    with pytest.raises(ModuleNotFoundError):
        importlib.util.find_spec(_HideAzurePlugin.name)
    settings = settings_for(tts_provider="azure", azure_speech_key="az-key", azure_speech_region="westeurope")
    with TestClient(create_app(settings)) as client:
        body = _failed(_upload(client, recordings.bytes("mp3"), name="a.mp3"), 503, "tts", "tts_not_configured")
    # the user gets a sentence; the operator's log names the extra to install
    assert body["detail"] == "Voice messages are not available right now: the text-to-speech service is not set up on the server."
    assert any("gocare-voice[azure]" in r.getMessage() for r in caplog.records)
    assert (body["transcript"], body["reply"]) == (deepgram_server.transcript, REPLY)


# --- telling the room's agent --------------------------------------------------------------------------


def test_notify_with_livekit_unreachable_is_a_false_not_a_failure(client, recordings) -> None:
    started = time.perf_counter()
    response = _upload(client, recordings.bytes("m4a"), room="room-42")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True and body["room"] == "room-42" and body["agent_notified"] is False
    assert time.perf_counter() - started < 5


def test_notify_with_livekit_hanging_costs_a_bounded_wait(settings_for, recordings) -> None:
    """A server that accepts the connection and never answers: the upload waits notify_timeout, no more."""
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(16)
        port = black_hole.getsockname()[1]
        settings = settings_for(livekit_url=f"ws://127.0.0.1:{port}", notify_timeout=0.7)
        with TestClient(create_app(settings)) as client:
            baseline_started = time.perf_counter()
            assert _upload(client, recordings.bytes("mp3"), name="a.mp3").status_code == 200
            baseline = time.perf_counter() - baseline_started
            started = time.perf_counter()
            response = _upload(client, recordings.bytes("mp3"), name="a.mp3", room="room-1")
            elapsed = time.perf_counter() - started
    assert response.status_code == 200 and response.json()["agent_notified"] is False
    # notify runs alongside TTS and is cut at 0.7 s
    assert elapsed < baseline + 0.7 + 1.0


# --- streaming size limit against a real server ---------------------------------------------------------


@pytest.fixture
def live_server(settings_for) -> Iterator[tuple[int, Settings]]:
    settings = settings_for(upload_max_bytes=2 * 1024 * 1024)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield port, settings
    server.should_exit = True
    thread.join(10)


def _read_status(sock: socket.socket) -> int:
    sock.settimeout(5)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def test_declared_oversize_is_refused_before_the_body(live_server, deepgram_server) -> None:
    port, _ = live_server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /voice/upload HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=zz\r\n"
            b"Content-Length: 1073741824\r\n\r\n"
        )
        assert _read_status(sock) == 413  # answered with no body sent at all
    assert deepgram_server.listen_requests() == []


def test_chunked_oversize_is_cut_off_while_reading(live_server, deepgram_server) -> None:
    """No Content-Length: the server counts as it reads and answers 413 long before a 1 GB body ends."""
    import select

    port, settings = live_server
    sent = 0
    cap = 1024 * 1024 * 1024
    piece = b"\0" * (256 * 1024)
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /voice/upload HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=zz\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        head = b'--zz\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        sock.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")
        sock.settimeout(5)
        while sent < cap:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        status = _read_status(sock)
    assert status == 413
    # the server stopped at its 2 MB limit; what else got out is what the loopback socket buffers hold
    assert sent < settings.upload_max_bytes + 16 * 1024 * 1024
    assert deepgram_server.listen_requests() == []


def test_notify_packet_is_what_the_worker_parses() -> None:
    """The contract with the worker: the packet we send is a VoiceUpload on the worker's side."""
    from gocare_voice.protocol import TOPIC, VoiceUpload, encode, parse_data_packet, voice_upload_packet

    def notify_payload(*, transcript: str, reply: str | None) -> bytes:
        return encode(voice_upload_packet(transcript=transcript, reply=reply))

    parsed = parse_data_packet(notify_payload(transcript="check my appointment", reply="It is at nine."), topic=TOPIC)
    assert isinstance(parsed, VoiceUpload)
    assert (parsed.transcript, parsed.reply) == ("check my appointment", "It is at nine.")
    without_reply = parse_data_packet(notify_payload(transcript="check my appointment", reply=None), topic=TOPIC)
    assert isinstance(without_reply, VoiceUpload) and without_reply.reply is None
