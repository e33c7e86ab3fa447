"""Uploaded recordings -> mono 16-bit PCM for the STT, and PCM -> a file the app can play.

Everything happens in memory with PyAV (FFmpeg's libraries linked into the wheel), so the service needs
no ``ffmpeg`` binary at run time and never writes a user's voice to disk.

Why 16 kHz: the Deepgram plugin's default (``sample_rate=16000``) is what the live worker streams, so the
upload path gives Deepgram the same signal as a live call; speech models gain nothing above 16 kHz, and a
5-minute recording is 9.6 MB of WAV instead of 28.8 MB at 48 kHz, a third of the bytes on the way to the STT.

Why an allow-list of containers and codecs although FFmpeg can decode hundreds: the app records WebM/Opus
(browsers), M4A/AAC (iOS), OGG/Opus or MP3/WAV (Android); every other demuxer and decoder is attack surface
that serves no user. Anything else gets a clear "unsupported" instead of a best-effort guess.

Why the checks beyond "FFmpeg did not raise": FFmpeg is built to play damaged media, so it quietly decodes
the first half of a cut-off WebM or MP3. A half recording would be transcribed as if it were the message, so
a file that decodes to clearly less than its own header announces (or an Ogg stream without its last page,
or a WAV whose data chunk is cut short) is rejected as truncated.

Why the container is chosen from the bytes, never by FFmpeg's probe: FFmpeg's probe picks any of its
demuxers, and some of them reach outside the upload: an SDP file makes it bind UDP sockets on a port the
uploader names (and wait for RTP for seconds), an ``ffconcat`` playlist opens files relative to the
working directory (a local-file oracle), HLS and DASH fetch URLs. So the first bytes are sniffed, the one
demuxer for that container is named explicitly (``format=``), and every nested open a demuxer might try
(external references in MP4, playlists) is refused by an empty protocol whitelist. Bytes that sniff as nothing are not
audio, whatever FFmpeg could make of them. A wall-clock limit per decode lives in ``workers.py``.

The duration limit is enforced while decoding: a 25 MB file at 6 kbit/s is nine hours of audio, so the
decoder stops as soon as the limit is passed instead of decoding everything and measuring afterwards.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import av
import av.error

STT_SAMPLE_RATE = 16000
"""What the Deepgram plugin's live stream uses; see the module docstring."""

SPEECH_FORMAT = "mp3"
SPEECH_MIME = "audio/mpeg"
"""MP3 plays everywhere the app runs (Android MediaPlayer/ExoPlayer, iOS AVPlayer, browsers) and streams
without the index-at-the-end problem M4A has."""

_CODECS = frozenset(
    {
        "opus", "libopus", "aac", "aac_fixed", "mp3", "mp3float", "vorbis", "flac",
        "pcm_s16le", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_f64le", "pcm_u8",
    }
)
ACCEPTED_FORMATS = "WebM/Opus, M4A/AAC, WAV, MP3 or OGG"

_DEMUXERS: dict[str, str] = {
    "wav": "wav", "webm": "matroska", "m4a": "mov", "ogg": "ogg", "flac": "flac", "mp3": "mp3", "aac": "aac",
}
"""Sniffed container -> the only FFmpeg demuxer allowed to read it (see the module docstring)."""

MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 384_000
"""What real recorders write (8 kHz telephony .. 384 kHz studio). A header declaring 2,147,483,647 Hz makes
the resampler allocate gigabytes (``av.error.MemoryError``); it is a crafted file, not a recording."""

# a decoded duration this much shorter than the header announces means the file was cut off
_TRUNCATION_SLACK_SECONDS = 0.1
_TRUNCATION_SLACK_RATIO = 0.01


class AudioError(Exception):
    """A recording we will not transcribe; ``status``/``code``/``message`` go straight into the 4xx answer."""

    status = 422
    code = "bad_audio"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EmptyAudioError(AudioError):
    status = 400
    code = "empty_file"


class NotAudioError(AudioError):
    status = 415
    code = "not_audio"


class UnsupportedCodecError(AudioError):
    status = 415
    code = "unsupported_codec"


class CorruptAudioError(AudioError):
    """Truncated or damaged: the file starts like a recording but cannot be read to its end."""

    status = 422
    code = "corrupt_audio"


class TooLongError(AudioError):
    status = 413
    code = "too_long"


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodedAudio:
    """Mono signed 16-bit little-endian PCM; ``container``/``codec`` say what the upload was."""

    pcm: bytes
    sample_rate: int
    container: str
    codec: str

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2

    @property
    def duration(self) -> float:
        return self.samples / self.sample_rate


def sniff_container(data: bytes) -> str | None:
    """The container the first bytes announce, or None; tells "cut-off recording" from "not a recording"
    when FFmpeg refuses to open a file at all."""
    head = data[:12]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG audio frame sync (MP3) or ADTS (AAC)
        return "aac" if head[1] & 0x06 == 0 else "mp3"
    return None


_REFUSED_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (8, b"AIFF", "aiff"), (8, b"AIFC", "aiff"), (0, b"caff", "caf"), (0, b"#!AMR", "amr"),
)
"""Containers people do send that we do not read: named in the answer instead of "not audio"."""


def _refused_container(data: bytes) -> str | None:
    return next((name for at, magic, name in _REFUSED_MAGIC if data[at : at + len(magic)] == magic), None)


def _ogg_is_complete(data: bytes) -> bool:
    """True when the last Ogg page is whole and carries the end-of-stream flag (RFC 3533 requires it on
    the last page), i.e. the file was not cut off. FFmpeg's Ogg demuxer silently stops at a cut."""
    pos = data.rfind(b"OggS")
    if pos < 0 or len(data) - pos < 27:
        return False
    header_type = data[pos + 5]
    segments = data[pos + 26]
    if len(data) - pos < 27 + segments:
        return False
    body = sum(data[pos + 27 : pos + 27 + segments])
    return bool(header_type & 0x04) and pos + 27 + segments + body <= len(data)


def _wav_is_complete(data: bytes) -> bool:
    """True unless the ``data`` chunk declares more bytes than the file holds. Writers that stream (size
    0 or 0xFFFFFFFF, "unknown") are accepted: FFmpeg then reads to the end of the file."""
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        if chunk_id == b"data":
            if size in (0, 0xFFFFFFFF):
                return True
            return pos + 8 + size <= len(data) + 1  # +1: an odd-sized chunk may omit its pad byte
        pos += 8 + size + (size & 1)
    return False


OPEN_OPTIONS = {"protocol_whitelist": "none"}
"""No URL protocol at all (there is none named "none"): the upload itself is read through PyAV's file
object, which needs no protocol, and any nested open a demuxer attempts (MP4 external references, a
playlist's entries) is refused by FFmpeg. Demuxers that open nested inputs copy the whitelist to them.
Not PyAV's ``io_open`` hook: FFmpeg's concat demuxer opens its entries without it (tested)."""


def _open(data: bytes, kind: str) -> av.container.InputContainer:
    try:
        return av.open(
            io.BytesIO(data), mode="r", format=_DEMUXERS[kind], options=dict(OPEN_OPTIONS),
            metadata_errors="ignore",
        )
    except (av.error.FFmpegError, OSError, MemoryError) as error:
        # av.error.MemoryError (an absurd header) is both
        raise CorruptAudioError(
            f"The file starts like a recording ({kind.upper()}) but cannot be read; it is probably "
            "truncated (an incomplete upload) or damaged. Please record and send it again."
        ) from error


def decode_audio(data: bytes, *, max_seconds: float, sample_rate: int = STT_SAMPLE_RATE) -> DecodedAudio:
    """Decode a whole upload to mono s16 PCM at ``sample_rate``; raise an ``AudioError`` subclass with a
    message for the user when the file is empty, not audio, unsupported, truncated/corrupt or too long.

    Blocking (FFmpeg work): async code calls it through ``AudioWorkers.decode`` (a worker process)."""
    if not data:
        raise EmptyAudioError("The uploaded file is empty (0 bytes). Please record your message again.")
    kind = sniff_container(data)
    if kind is None and (refused := _refused_container(data)) is not None:
        raise UnsupportedCodecError(
            f"Recordings in the '{refused}' format are not supported. Send {ACCEPTED_FORMATS}."
        )
    if kind is None:
        raise NotAudioError(f"This file is not an audio recording we can read. Send {ACCEPTED_FORMATS}.")
    container = _open(data, kind)
    try:
        return _decode(container, data, kind=kind, max_seconds=max_seconds, sample_rate=sample_rate)
    finally:
        container.close()


def _decode(
    container: av.container.InputContainer, data: bytes, *, kind: str, max_seconds: float, sample_rate: int
) -> DecodedAudio:
    audio_streams = list(container.streams.audio)
    if not audio_streams:
        raise NotAudioError("The file holds no audio track. Please record your message again.")
    stream = audio_streams[0]
    codec_context = stream.codec_context
    codec = codec_context.name if codec_context is not None else None
    if codec is None or codec not in _CODECS:
        what = f"the '{codec}' codec" if codec else "an audio codec we do not know"
        raise UnsupportedCodecError(
            f"This {kind.upper()} file uses {what}, which is not supported. Send {ACCEPTED_FORMATS} "
            "(Opus, AAC, MP3, Vorbis, FLAC or PCM audio)."
        )
    rate = codec_context.sample_rate if codec_context is not None else 0
    if not MIN_SAMPLE_RATE <= (rate or 0) <= MAX_SAMPLE_RATE:
        raise UnsupportedCodecError(
            f"This {kind.upper()} file declares a sample rate of {rate} Hz; recordings between "
            f"{MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz are accepted. Send {ACCEPTED_FORMATS}."
        )

    declared = _declared_seconds(container, stream)
    if declared is not None and declared > max_seconds + _TRUNCATION_SLACK_SECONDS:
        raise TooLongError(_too_long_message(max_seconds, declared))

    max_samples = int(max_seconds * sample_rate) + int(_TRUNCATION_SLACK_SECONDS * sample_rate)
    resampler: av.AudioResampler | None = None
    setup: tuple[object, ...] | None = None
    chunks: list[bytes] = []
    total = 0

    def take(frames: list[av.AudioFrame]) -> None:
        nonlocal total
        for out in frames:
            chunks.append(bytes(out.planes[0])[: out.samples * 2])
            total += out.samples

    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                # an MP3 may change sample rate or channels between frames (two files glued together, a
                # damaged header), and a resampler only takes the format it was set up for: flush it and
                # set up a new one for the rest
                frame_setup = (frame.format.name, frame.sample_rate, frame.layout.name)
                if frame_setup != setup:
                    if resampler is not None:
                        take(resampler.resample(None))
                    resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
                    setup = frame_setup
                take(resampler.resample(frame))
                if total > max_samples:
                    raise TooLongError(_too_long_message(max_seconds, None))
        if resampler is not None:
            take(resampler.resample(None))
    except AudioError:
        raise
    except Exception as error:  # FFmpegError, or PyAV's ValueError/TypeError on odd frames
        raise CorruptAudioError(
            f"The {kind.upper()} recording is damaged or truncated and cannot be decoded to the end. "
            "Please record and send it again."
        ) from error
    if total > max_samples:
        raise TooLongError(_too_long_message(max_seconds, None))

    decoded_seconds = total / sample_rate
    if (kind == "ogg" and not _ogg_is_complete(data)) or (kind == "wav" and not _wav_is_complete(data)):
        raise CorruptAudioError(
            f"The {kind.upper()} recording is cut off (its last part is missing); the upload was probably "
            "incomplete. Please send it again."
        )
    if declared is not None and declared - decoded_seconds > (
        _TRUNCATION_SLACK_SECONDS + _TRUNCATION_SLACK_RATIO * declared
    ):
        raise CorruptAudioError(
            f"The {kind.upper()} recording is cut off or damaged: only {decoded_seconds:.1f} s of the "
            f"{declared:.1f} s it announces could be decoded. Please send it again."
        )
    if total == 0:
        raise CorruptAudioError(f"The {kind.upper()} file contains no audio samples. Please record again.")
    return DecodedAudio(pcm=b"".join(chunks), sample_rate=sample_rate, container=kind, codec=codec)


def _declared_seconds(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _too_long_message(max_seconds: float, declared: float | None) -> str:
    limit = _human_seconds(max_seconds)
    if declared is not None:
        return f"The recording is {_human_seconds(declared)} long; the limit is {limit}. Please send a shorter message."
    return f"The recording is longer than the limit of {limit}. Please send a shorter message."


def _human_seconds(seconds: float) -> str:
    if seconds >= 60:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def encode_speech(pcm: bytes, *, sample_rate: int, num_channels: int = 1, bitrate: int = 64000) -> bytes:
    """Interleaved s16 PCM (what a livekit TTS ``collect()`` yields) -> an MP3 file (``SPEECH_FORMAT``)."""
    if num_channels not in (1, 2):
        raise ValueError(f"num_channels must be 1 or 2, got {num_channels}")
    layout = "mono" if num_channels == 1 else "stereo"
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp3") as container:
        # LAME quality 7 ("fast, ok"): 40 % less CPU than the default for a synthetic voice at 64 kbit/s
        stream = container.add_stream("libmp3lame", rate=sample_rate, layout=layout, options={"compression_level": "7"})
        stream.bit_rate = bitrate
        frame_samples = 1152 * 4
        bytes_per_frame = frame_samples * 2 * num_channels
        for start in range(0, len(pcm), bytes_per_frame):
            chunk = pcm[start : start + bytes_per_frame]
            samples = len(chunk) // (2 * num_channels)
            if samples == 0:
                break
            frame = av.AudioFrame(format="s16", layout=layout, samples=samples)
            frame.planes[0].update(chunk[: samples * 2 * num_channels])
            frame.sample_rate = sample_rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()
