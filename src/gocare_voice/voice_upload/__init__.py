"""Voice upload: a recorded message -> transcript -> reply -> spoken reply, and the room's agent told."""

from __future__ import annotations

from gocare_voice.voice_upload.notify import notify_room
from gocare_voice.voice_upload.pipeline import StageFailure, UploadResult, VoiceUploadPipeline

__all__ = ["StageFailure", "UploadResult", "VoiceUploadPipeline", "notify_room"]
