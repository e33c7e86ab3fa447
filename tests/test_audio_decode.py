"""Decoding real uploads (espeak-ng speech, encoded by the ffmpeg binary) with PyAV, and encoding the reply."""

from __future__ import annotations

import io
import os

import av
import numpy as np
import pytest

from gocare_voice.audio import (
    SPEECH_FORMAT,
    STT_SAMPLE_RATE,
    CorruptAudioError,
    EmptyAudioError,
    NotAudioError,
    TooLongError,
    UnsupportedCodecError,
    decode_audio,
    encode_speech,
)
from scripted.recordings import FORMATS

LIMIT = 300.0


def _rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2)))


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_upload_format_decodes_to_16k_mono_speech(recordings, name: str) -> None:
    decoded = decode_audio(recordings.bytes(name), max_seconds=LIMIT)
    assert decoded.sample_rate == STT_SAMPLE_RATE == 16000
    assert len(decoded.pcm) == decoded.samples * 2
    # same length as what espeak-ng said (codec priming/padding is a few tens of ms)
    assert decoded.duration == pytest.approx(recordings.seconds, abs=0.08)
    assert _rms(decoded.pcm) > 1000, "speech, not silence"
    assert decoded.container in ("webm", "m4a", "wav", "mp3", "ogg")


def test_m4a_with_index_at_the_end_is_read_from_memory(recordings) -> None:
    data = recordings.bytes("m4a")
    assert data.find(b"moov") > data.find(b"mdat") > 0, "the fixture must have moov after mdat"
    decoded = decode_audio(data, max_seconds=LIMIT)
    assert decoded.container == "m4a" and decoded.codec == "aac"
    assert decoded.duration == pytest.approx(recordings.seconds, abs=0.08)


def test_decoded_signal_matches_the_source(recordings) -> None:
    """The lossless WAV upload decodes to the source's samples (after resampling to 16 kHz)."""
    reference = decode_audio(recordings.source.read_bytes(), max_seconds=LIMIT)
    from_wav = decode_audio(recordings.bytes("wav"), max_seconds=LIMIT)
    a = np.frombuffer(reference.pcm, dtype="<i2").astype(np.float64)
    b = np.frombuffer(from_wav.pcm, dtype="<i2").astype(np.float64)
    n = min(len(a), len(b))
    correlation = np.corrcoef(a[:n], b[:n])[0, 1]
    assert correlation > 0.99


def test_empty_file() -> None:
    with pytest.raises(EmptyAudioError) as error:
        decode_audio(b"", max_seconds=LIMIT)
    assert error.value.status == 400 and "empty" in error.value.message


@pytest.mark.parametrize(
    "data",
    [
        b"this is a text file, not a recording\n" * 40,
        os.urandom(20000),
        b"%PDF-1.7\n" + os.urandom(4000),
        b"RIF",
    ],
    ids=["text", "random", "pdf", "three-bytes"],
)
def test_not_audio(data: bytes) -> None:
    with pytest.raises(NotAudioError) as error:
        decode_audio(data, max_seconds=LIMIT)
    assert error.value.status == 415 and "WebM" in error.value.message


def test_video_without_audio_is_not_audio(recordings) -> None:
    with pytest.raises(NotAudioError, match="no audio track"):
        decode_audio(recordings.video_only.read_bytes(), max_seconds=LIMIT)


@pytest.mark.parametrize("name", ["webm", "m4a", "m4a_faststart", "wav", "mp3", "ogg", "ogg_vorbis"])
def test_truncated_upload_is_refused(recordings, name: str) -> None:
    data = recordings.bytes(name)
    with pytest.raises(CorruptAudioError) as error:
        decode_audio(data[: len(data) // 2], max_seconds=LIMIT)
    assert error.value.status == 422
    assert "truncated" in error.value.message or "cut off" in error.value.message


def _glued_mp3(recordings, tmp_path) -> bytes:
    """Two MP3s of the same speech at 22.05 and 44.1 kHz, one after the other (no ID3 tag or Xing frame in
    between): the sample rate changes mid-stream, as in a damaged or carelessly concatenated file."""
    from scripted.recordings import _ffmpeg

    parts = []
    for rate in (22050, 44100):
        target = tmp_path / f"part-{rate}.mp3"
        _ffmpeg("-i", str(recordings.source), "-ar", str(rate), "-c:a", "libmp3lame", "-b:a", "64k",
                "-id3v2_version", "0", "-write_xing", "0", str(target))
        parts.append(target.read_bytes())
    return b"".join(parts)


def test_mp3_changing_sample_rate_mid_stream_decodes_to_the_end(recordings, tmp_path) -> None:
    """A resampler set up for the first frames refuses the others (PyAV: ``ValueError: Frame does not match
    AudioResampler setup``), which used to escape as a 500: the decoder sets up a new one instead."""
    data = _glued_mp3(recordings, tmp_path)
    decoded = decode_audio(data, max_seconds=LIMIT)
    assert decoded.sample_rate == STT_SAMPLE_RATE
    assert decoded.duration == pytest.approx(2 * recordings.seconds, abs=0.2)
    half = len(decoded.pcm) // 2 // 2 * 2
    assert _rms(decoded.pcm[:half]) > 500 and _rms(decoded.pcm[half:]) > 500  # both halves are speech


def test_anything_pyav_raises_while_decoding_is_corrupt_audio(recordings, monkeypatch: pytest.MonkeyPatch) -> None:
    import gocare_voice.audio.decode as decode_module

    class Refusing:
        def __init__(self, **_kwargs: object) -> None:
            pass

        def resample(self, frame: object) -> list[object]:
            raise ValueError("Frame does not match AudioResampler setup.")

    monkeypatch.setattr(decode_module.av, "AudioResampler", Refusing)
    with pytest.raises(CorruptAudioError, match="damaged"):
        decode_audio(recordings.bytes("mp3"), max_seconds=LIMIT)


@pytest.mark.parametrize("name", ["webm", "m4a", "mp3", "ogg"])
def test_corrupt_middle_is_refused(recordings, name: str) -> None:
    data = bytearray(recordings.bytes(name))
    rng = np.random.default_rng(7)
    start = len(data) // 3
    data[start : start + 3000] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    with pytest.raises(CorruptAudioError):
        decode_audio(bytes(data), max_seconds=LIMIT)


def test_unsupported_codec(recordings) -> None:
    with pytest.raises(UnsupportedCodecError, match="gsm_ms") as error:
        decode_audio(recordings.unsupported_codec.read_bytes(), max_seconds=LIMIT)
    assert error.value.status == 415


def test_codec_no_decoder_knows(recordings) -> None:
    data = bytearray(recordings.bytes("wav"))
    fmt = data.find(b"fmt ")
    data[fmt + 8 : fmt + 10] = (0x3F01).to_bytes(2, "little")  # a WAVE format tag nobody registered
    with pytest.raises(UnsupportedCodecError, match="do not know"):
        decode_audio(bytes(data), max_seconds=LIMIT)


def test_unsupported_container(recordings) -> None:
    with pytest.raises(UnsupportedCodecError, match="aiff"):
        decode_audio(recordings.unsupported_container.read_bytes(), max_seconds=LIMIT)


def test_too_long_by_header(recordings) -> None:
    with pytest.raises(TooLongError) as error:
        decode_audio(recordings.bytes("m4a"), max_seconds=2.0)
    assert error.value.status == 413 and "limit is 2.0 s" in error.value.message


def test_too_long_enforced_while_decoding(recordings) -> None:
    """A streamed WebM announces no duration: the limit must stop the decoder, not be measured after."""
    data = recordings.bytes("webm_stream")
    with av.open(io.BytesIO(data)) as container:
        assert container.duration is None and container.streams.audio[0].duration is None
    with pytest.raises(TooLongError, match="longer than the limit of 2.0 s"):
        decode_audio(data, max_seconds=2.0)
    # and the same file within the limit decodes completely
    assert decode_audio(data, max_seconds=LIMIT).duration == pytest.approx(recordings.seconds, abs=0.08)


def test_reply_is_encoded_as_playable_mp3(recordings) -> None:
    source = decode_audio(recordings.bytes("wav"), max_seconds=LIMIT, sample_rate=24000)
    mp3 = encode_speech(source.pcm, sample_rate=24000)
    assert SPEECH_FORMAT == "mp3"
    with av.open(io.BytesIO(mp3)) as container:
        assert container.format.name == "mp3"
        stream = container.streams.audio[0]
        assert stream.codec_context.name.startswith("mp3") and stream.rate == 24000
        samples = sum(frame.samples for frame in container.decode(stream))
    assert samples / 24000 == pytest.approx(source.duration, abs=0.1)


@pytest.fixture(scope="module")
def workers():
    from gocare_voice.audio import AudioWorkers

    pool = AudioWorkers(processes=1)
    yield pool
    pool.close()


async def test_worker_process_decodes_like_in_process(recordings, workers) -> None:
    data = recordings.bytes("m4a")
    in_worker = await workers.decode(data, max_seconds=LIMIT)
    assert in_worker == decode_audio(data, max_seconds=LIMIT)
    with pytest.raises(CorruptAudioError):  # typed errors cross the process boundary intact
        await workers.decode(data[: len(data) // 2], max_seconds=LIMIT)
    with pytest.raises(TooLongError):
        await workers.decode(data, max_seconds=1.0)
    mp3 = await workers.encode(in_worker.pcm, sample_rate=16000)
    assert mp3[:3] == b"ID3" or mp3[0] == 0xFF


async def test_a_crashing_worker_fails_one_upload_not_the_service(recordings, workers) -> None:
    """A decoder that kills its process (as a crafted file could) costs that upload a 422, and the pool is
    rebuilt for the next one."""
    with pytest.raises(CorruptAudioError, match="crashed the audio decoder"):
        await workers.call(os._exit, 70)
    decoded = await workers.decode(recordings.bytes("ogg"), max_seconds=LIMIT)
    assert decoded.duration == pytest.approx(recordings.seconds, abs=0.08)


async def test_a_crash_while_encoding_the_reply_does_not_blame_the_recording(
    recordings, workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gocare_voice.audio.workers as audio_workers
    from scripted.audio_tools import crash_process

    monkeypatch.setattr(audio_workers, "encode_speech", crash_process)
    with pytest.raises(CorruptAudioError) as failed:
        await workers.encode(b"\x00\x00" * 1600, sample_rate=16000)
    assert "reply audio could not be produced" in failed.value.message
    assert "recording" not in failed.value.message
    monkeypatch.undo()
    mp3 = await workers.encode(b"\x00\x00" * 16000, sample_rate=16000)  # the pool was rebuilt
    assert mp3[:3] == b"ID3" or mp3[0] == 0xFF


def test_workers_do_not_outlive_a_killed_server(tmp_path) -> None:
    """SIGKILL (OOM killer) or uvicorn's re-raised SIGTERM skip atexit: the workers must still go away."""
    import signal
    import subprocess
    import sys

    import psutil

    script = tmp_path / "server.py"
    script.write_text(
        "import asyncio, os, time\n"
        "from gocare_voice.audio import AudioWorkers\n"
        "async def main():\n"
        "    workers = AudioWorkers(processes=2)\n"
        "    await workers.start()\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n"
    )
    server = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        children = psutil.Process(server.pid).children(recursive=True)
        assert len(children) >= 2
        server.send_signal(signal.SIGKILL)
        server.wait(5)
        _, alive = psutil.wait_procs(children, timeout=5)
        assert alive == [], f"orphaned audio workers: {[p.pid for p in alive]}"
    finally:
        if server.poll() is None:
            server.kill()
