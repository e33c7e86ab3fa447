"""Real audio for the scripted providers and the tests: speech from ``espeak-ng``, encoded with PyAV.

Independent of gocare_voice's own audio code on purpose: the scripted servers check what our code produced,
so they must not share its implementation.
"""

from __future__ import annotations

import functools
import io
import math
import shutil
import struct
import subprocess

import av
import numpy as np

ESPEAK = shutil.which("espeak-ng")
FFMPEG = shutil.which("ffmpeg")

MIME_TYPES = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "aac": "audio/aac",
    "opus": "audio/ogg",
    "flac": "audio/flac",
}


ESPEAK_WPM = 175
"""espeak-ng's own speaking rate, in words per minute."""


@functools.lru_cache(maxsize=64)
def speech_pcm(text: str, *, rate: int = 24000, words_per_minute: int | None = None, voice: str | None = None) -> bytes:
    """``text`` spoken by espeak-ng as mono s16le PCM at ``rate``, at ``words_per_minute`` (espeak-ng's own
    175 by default), in espeak-ng's ``voice`` ("en-gb+m3"; its default voice when None); a 440 Hz tone of a
    similar length when espeak-ng is missing (the scripted speech server must still answer with real audio)."""
    if ESPEAK:
        speed = ["-s", str(words_per_minute)] if words_per_minute else []
        speed += ["-v", voice] if voice else []
        wav = subprocess.run([ESPEAK, *speed, "--stdout", text], check=True, capture_output=True, timeout=30).stdout
        return resample_wav(wav, rate=rate)
    seconds = max(0.5, 0.07 * len(text) * ESPEAK_WPM / (words_per_minute or ESPEAK_WPM))
    samples = int(seconds * rate)
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(samples)
    )


def resample_wav(data: bytes, *, rate: int) -> bytes:
    """Any file PyAV reads -> mono s16le PCM at ``rate``."""
    out: list[bytes] = []
    with av.open(io.BytesIO(data)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        for frame in container.decode(audio=0):
            for piece in resampler.resample(frame):
                out.append(bytes(piece.planes[0])[: piece.samples * 2])
        for piece in resampler.resample(None):
            out.append(bytes(piece.planes[0])[: piece.samples * 2])
    return b"".join(out)


def encode(pcm: bytes, *, rate: int, fmt: str) -> bytes:
    """Mono s16le PCM -> the bytes OpenAI's ``/v1/audio/speech`` answers for ``response_format=fmt``."""
    if fmt == "pcm":
        return pcm
    container_format, codec = {
        "mp3": ("mp3", "libmp3lame"),
        "wav": ("wav", "pcm_s16le"),
        "aac": ("adts", "aac"),
        "opus": ("ogg", "libopus"),
        "flac": ("flac", "flac"),
    }[fmt]
    out_rate = 48000 if codec == "libopus" else rate
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=out_rate, layout="mono")
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
        frame.planes[0].update(pcm[: (len(pcm) // 2) * 2])
        frame.sample_rate = rate
        frame.pts = None
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=out_rate)
        frame_size = stream.codec_context.frame_size or 1024
        fifo = av.AudioFifo()
        for piece in resampler.resample(frame) + resampler.resample(None):
            fifo.write(piece)
        while fifo.samples:
            chunk = fifo.read(min(frame_size, fifo.samples))
            chunk.pts = None
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def rms_s16(pcm: bytes) -> float:
    """Root mean square of s16le samples (0..32768): tells speech from silence."""
    samples = np.frombuffer(pcm[: (len(pcm) // 2) * 2], dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


def trim_silence(pcm: bytes, *, rate: int, threshold: float = 60.0, window: float = 0.01) -> bytes:
    """``pcm`` without the quiet lead-in and tail espeak-ng puts around speech (windows whose RMS is below
    ``threshold``), so silence a test inserts between phrases is exactly as long as it says."""
    step = max(2, int(rate * window) * 2)
    loud = [i for i in range(0, len(pcm), step) if rms_s16(pcm[i:i + step]) >= threshold]
    return pcm[loud[0]: loud[-1] + step] if loud else b""


def crash_process(*_args: object, **_kwargs: object) -> None:
    """Ends the calling process at once, as a decoder or encoder crash would (a picklable stand-in that a
    test puts in place of an audio worker function)."""
    import os

    os._exit(70)
