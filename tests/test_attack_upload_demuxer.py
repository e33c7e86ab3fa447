"""Issue 9, finding 1: uploaded bytes must not choose FFmpeg's demuxer.

The crafted files are built here. Everything they could reach is on loopback (the SDP names 127.0.0.1), and
every decode is bounded in time by the assertions and the pool's own wall-clock limit.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from gocare_voice.audio import (
    AudioWorkers,
    DecodeTimeoutError,
    NotAudioError,
    UnsupportedCodecError,
    decode_audio,
)
from gocare_voice.settings import Settings
from gocare_voice.token_service.app import create_app


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sdp_file(port: int) -> bytes:
    """An SDP session: FFmpeg's probe picks the 'sdp' demuxer, which binds UDP on ``port`` and waits ~10 s
    for RTP (with ``c=IN IP4 0.0.0.0`` on every interface; here only loopback)."""
    data = (
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()
    assert 100 <= len(data) <= 120  # the 110-byte file of the report
    return data


def ffconcat(path: str) -> bytes:
    return f"ffconcat version 1.0\nfile '{path}'\n".encode()


def wav(*, rate: int, seconds: float = 0.2) -> bytes:
    """A PCM WAV whose header declares ``rate`` Hz (the data is silence)."""
    samples = max(1, int(min(rate, 16000) * seconds))
    data = b"\x00\x00" * samples
    fmt = struct.pack("<HHIIHH", 1, 1, rate, (rate * 2) & 0xFFFFFFFF, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_sdp_upload_opens_no_socket_and_is_refused_at_once() -> None:
    port = _free_udp_port()
    started = time.monotonic()
    with pytest.raises(NotAudioError):
        decode_audio(sdp_file(port), max_seconds=10)
    assert time.monotonic() - started < 1.0  # FFmpeg's sdp demuxer waited ~10 s for RTP
    # nothing was bound on the named port: we can still take it
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_ffconcat_playlist_is_no_local_file_oracle(recordings, tmp_path, monkeypatch) -> None:
    """A playlist naming an existing recording and one naming a missing file get the same answer."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exists.wav").write_bytes(recordings.bytes("wav"))
    answers = []
    for name in ("exists.wav", str(tmp_path / "exists.wav"), "missing.wav", "/etc/passwd"):
        with pytest.raises(NotAudioError) as refused:
            decode_audio(ffconcat(name), max_seconds=10)
        answers.append((refused.value.code, refused.value.message))
    assert len(set(answers)) == 1


def test_nested_opens_are_refused_even_by_a_demuxer_that_makes_them(recordings, tmp_path, monkeypatch) -> None:
    """Defence in depth: should a demuxer that opens other inputs ever be selected, the options every
    upload is opened with refuse its nested opens (here FFmpeg's concat demuxer, which reads files)."""
    import io

    import av

    from gocare_voice.audio.decode import OPEN_OPTIONS

    monkeypatch.chdir(tmp_path)
    (tmp_path / "exists.wav").write_bytes(recordings.bytes("wav"))
    playlist = ffconcat("exists.wav")
    with av.open(io.BytesIO(playlist), format="concat", options={"safe": "0"}) as opened:
        assert opened.streams.audio, "without the options the playlist reads the local file"
    with pytest.raises(av.error.FFmpegError):
        av.open(io.BytesIO(playlist), format="concat", options={"safe": "0", **OPEN_OPTIONS})


def test_absurd_sample_rate_is_a_4xx_not_a_memory_error() -> None:
    with pytest.raises(UnsupportedCodecError, match="2147483647 Hz"):
        decode_audio(wav(rate=2_147_483_647), max_seconds=10)
    with pytest.raises(UnsupportedCodecError):
        decode_audio(wav(rate=1), max_seconds=10)
    assert decode_audio(wav(rate=8000), max_seconds=10).duration == pytest.approx(0.2, abs=0.01)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(rate_limit="off"))) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("name", "make", "status", "code"),
    [
        ("session.sdp", lambda: sdp_file(_free_udp_port()), 415, "not_audio"),
        ("list.ffconcat", lambda: ffconcat("/etc/hostname"), 415, "not_audio"),
        ("huge-rate.wav", lambda: wav(rate=2_147_483_647), 415, "unsupported_codec"),
    ],
)
def test_crafted_uploads_get_a_4xx_in_words(client: TestClient, name, make, status, code) -> None:
    started = time.monotonic()
    response = client.post("/voice/upload", files={"file": (name, make(), "audio/wav")})
    assert time.monotonic() - started < 5.0
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and "Send WebM/Opus" in body["detail"]


async def test_a_stuck_decoder_is_killed_and_the_pool_refilled(recordings) -> None:
    """A job past the wall-clock limit is stopped (its process killed), answered in words, and an innocent
    upload queued behind it on the same single worker is retried on the new pool and succeeds."""
    workers = AudioWorkers(processes=1, timeout=1.5)
    try:
        await workers.start()
        old = set((workers._pool._processes or {}).keys())  # which processes were killed
        started = time.monotonic()
        stuck = asyncio.ensure_future(workers.call(time.sleep, 60))
        await asyncio.sleep(0.2)
        innocent = asyncio.ensure_future(workers.decode(recordings.bytes("ogg"), max_seconds=300, timeout=10))
        with pytest.raises(DecodeTimeoutError) as stopped:
            await stuck
        assert time.monotonic() - started < 5.0
        assert "could not be decoded within 1.5 s" in stopped.value.message and stopped.value.status == 422
        decoded = await asyncio.wait_for(innocent, 30)
        assert decoded.duration == pytest.approx(recordings.seconds, abs=0.08)
        new = set((workers._pool._processes or {}).keys())
        assert new and not (new & old)
        import psutil

        assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in old)
    finally:
        workers.close()
