"""Real recordings for tests and benchmarks: speech by ``espeak-ng``, encoded by the ``ffmpeg`` binary in
every format the app uploads, the way the phones and browsers produce them.

The service itself never runs ffmpeg (it decodes with PyAV); using the binary here means the files come
from an independent encoder, with its defaults: M4A with the ``moov`` index *after* the audio (ffmpeg's
default without ``-movflags +faststart``, like many iOS recordings), WebM written to a pipe with no duration
and no cues (like a browser's MediaRecorder).
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

SENTENCE = "Hello, I would like to check the status of my appointment for tomorrow morning."

# name -> (ffmpeg output arguments, file suffix)
FORMATS: dict[str, tuple[list[str], str]] = {
    "webm": (["-c:a", "libopus", "-b:a", "32k"], ".webm"),
    "webm_stream": (["-c:a", "libopus", "-b:a", "32k", "-f", "webm"], ".webm"),  # to a pipe: no duration
    "m4a": (["-c:a", "aac", "-b:a", "64k"], ".m4a"),  # moov at the end (ffmpeg default)
    "m4a_faststart": (["-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart"], ".m4a"),
    "wav": (["-c:a", "pcm_s16le", "-ar", "44100"], ".wav"),
    "mp3": (["-c:a", "libmp3lame", "-b:a", "64k"], ".mp3"),
    "ogg": (["-c:a", "libopus", "-b:a", "32k"], ".ogg"),
    "ogg_vorbis": (["-c:a", "libvorbis", "-q:a", "3"], ".ogg"),
}


def tools_missing() -> str | None:
    """Why real recordings cannot be made here, or None."""
    missing = [name for name in ("espeak-ng", "ffmpeg") if shutil.which(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install -y espeak-ng ffmpeg; .ci/run does it)"
    return None


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=120)


def speak(text: str, path: Path, *, repeat_to_seconds: float | None = None) -> float:
    """espeak-ng -> WAV at ``path``; with ``repeat_to_seconds`` the speech is looped to that length.
    Returns the duration in seconds."""
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, timeout=60)
    if repeat_to_seconds:
        _ffmpeg("-stream_loop", "-1", "-i", str(raw), "-t", f"{repeat_to_seconds}", "-c:a", "pcm_s16le", str(path))
        raw.unlink()
    else:
        raw.replace(path)
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def encode(source: Path, name: str, out_dir: Path, *, stem: str = "speech") -> Path:
    args, suffix = FORMATS[name]
    target = out_dir / f"{stem}-{name}{suffix}"
    if name == "webm_stream":
        with target.open("wb") as out:
            subprocess.run(
                ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(source), *args, "pipe:1"],
                check=True, stdout=out, timeout=120,
            )
    else:
        _ffmpeg("-i", str(source), *args, str(target))
    return target


@dataclass(frozen=True)
class RecordingSet:
    """``files[format]`` -> path; ``seconds`` the spoken source's duration; extra special-purpose files."""

    directory: Path
    seconds: float
    source: Path
    files: dict[str, Path]
    silence: Path
    unsupported_codec: Path
    unsupported_container: Path
    video_only: Path

    def bytes(self, name: str) -> bytes:
        return self.files[name].read_bytes()


def make_recordings(out_dir: Path, *, text: str = SENTENCE, repeat_to_seconds: float | None = None,
                    formats: list[str] | None = None, stem: str = "speech") -> RecordingSet:
    out_dir.mkdir(parents=True, exist_ok=True)
    source = out_dir / f"{stem}-source.wav"
    seconds = speak(text, source, repeat_to_seconds=repeat_to_seconds)
    silence = out_dir / f"{stem}-silence.m4a"
    gsm = out_dir / f"{stem}-gsm.wav"  # GSM 06.10 in a WAV: decodable by FFmpeg, outside our allow-list
    aiff = out_dir / f"{stem}.aiff"  # a container the service does not accept
    video = out_dir / f"{stem}-video.mp4"
    extras = [
        ("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "3", "-c:a", "aac", str(silence)),
        ("-i", str(source), "-ar", "8000", "-c:a", "libgsm_ms", str(gsm)),
        ("-i", str(source), "-f", "aiff", str(aiff)),
        ("-f", "lavfi", "-i", "testsrc=size=64x64:rate=5", "-t", "1", "-c:v", "mpeg4", str(video)),
    ]
    names = formats or list(FORMATS)
    # ffmpeg runs are mostly process start-up: a few at a time
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(encode, source, name, out_dir, stem=stem) for name in names}
        extra_futures = [pool.submit(_ffmpeg, *args) for args in extras]
        files = {name: future.result() for name, future in futures.items()}
        for future in extra_futures:
            future.result()
    return RecordingSet(
        directory=out_dir, seconds=seconds, source=source, files=files, silence=silence,
        unsupported_codec=gsm, unsupported_container=aiff, video_only=video,
    )
