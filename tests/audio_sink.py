"""An ``AudioOutput`` that keeps what an ``AgentSession`` speaks, for sessions run without a room.

livekit-agents synthesizes speech only when the session has an audio output (a room's track, the console's
speaker); without one, ``session.say`` is text only and the TTS is never called. This sink stands in for
the room's track: it records every frame and reports each segment as played at once.
"""

from __future__ import annotations

import asyncio

from livekit import rtc
from livekit.agents.voice import io


class RecordingAudioOutput(io.AudioOutput):
    def __init__(self) -> None:
        super().__init__(label="recording", capabilities=io.AudioOutputCapabilities(pause=False))
        self.segments: list[list[rtc.AudioFrame]] = []
        self._current: list[rtc.AudioFrame] | None = None
        self.finished = asyncio.Event()

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if self._current is None:
            self._current = []
            self.segments.append(self._current)
        self._current.append(frame)

    def flush(self) -> None:
        super().flush()
        if self._current is None:
            return
        seconds = sum(f.samples_per_channel / f.sample_rate for f in self._current)
        self._current = None
        self.on_playback_finished(playback_position=seconds, interrupted=False)
        self.finished.set()

    def clear_buffer(self) -> None:
        if self._current is not None:
            self.flush()

    def pcm(self, index: int = 0) -> bytes:
        return b"".join(bytes(f.data) for f in self.segments[index])

    def seconds(self, index: int = 0) -> float:
        return sum(f.samples_per_channel / f.sample_rate for f in self.segments[index])
