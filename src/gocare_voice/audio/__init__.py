"""Audio in and out of the voice-upload path: PyAV decode to PCM for the STT, encode of the spoken reply."""

from __future__ import annotations

from .decode import (
    ACCEPTED_FORMATS,
    SPEECH_FORMAT,
    SPEECH_MIME,
    STT_SAMPLE_RATE,
    AudioError,
    CorruptAudioError,
    DecodedAudio,
    EmptyAudioError,
    NotAudioError,
    TooLongError,
    UnsupportedCodecError,
    decode_audio,
    encode_speech,
)
from .workers import AudioWorkers, DecodeTimeoutError, shared_audio_workers

__all__ = [
    "ACCEPTED_FORMATS",
    "SPEECH_FORMAT",
    "SPEECH_MIME",
    "STT_SAMPLE_RATE",
    "AudioError",
    "AudioWorkers",
    "CorruptAudioError",
    "DecodeTimeoutError",
    "DecodedAudio",
    "EmptyAudioError",
    "NotAudioError",
    "TooLongError",
    "UnsupportedCodecError",
    "decode_audio",
    "encode_speech",
    "shared_audio_workers",
]
