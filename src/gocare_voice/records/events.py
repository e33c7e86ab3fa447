"""What a call publishes as it goes, for whoever listens (the recorder today). Pure.

The worker publishes from ``AgentSession`` events (conversation items, handoffs, close) and from the seams
the commands and uploads already pass through; nothing here knows LiveKit, and a listener that raises is
logged, never allowed to reach the session's event dispatch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from .model import utcnow

logger = logging.getLogger("gocare.records")


@dataclass(frozen=True, slots=True)
class TurnAdded:
    role: str
    text: str
    at: datetime = field(default_factory=utcnow)
    source: str = "voice"


@dataclass(frozen=True, slots=True)
class ModeEntered:
    mode: str


@dataclass(frozen=True, slots=True)
class CommandReceived:
    name: str
    ok: bool


@dataclass(frozen=True, slots=True)
class VoiceUploadReceived:
    transcript: str
    reply: str | None
    at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class VerificationChecked:
    outcome: str
    user_id: str | None
    """The verified user's id when ``outcome`` is ``verified``."""


@dataclass(frozen=True, slots=True)
class SessionClosed:
    close_reason: str | None
    user_left: bool = False


CallEvent = TurnAdded | ModeEntered | CommandReceived | VoiceUploadReceived | VerificationChecked | SessionClosed
Listener = Callable[[CallEvent], None]


class CallEvents:
    """A synchronous, in-process publish/subscribe for one call."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def publish(self, event: CallEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("call event listener failed on %s", type(event).__name__)
