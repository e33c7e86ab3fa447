"""How long each answered turn kept the caller waiting, and where the time went.

Read off livekit-agents' own per-turn measurements (``ChatMessage.metrics``), nothing timed by us:

- the user's message carries ``stopped_speaking_at`` (the end of their speech, as the VAD saw it),
  ``transcription_delay`` (that moment -> the final transcript) and ``end_of_turn_delay`` (-> the turn committed);
- the agent's reply carries ``started_speaking_at`` (its first audio frame pushed to the room), ``llm_node_ttft``
  (the LLM's first token, counted from the LLM's start: with preemptive generation that start precedes the
  commit) and ``tts_node_ttfb`` (the TTS's first audio, counted from its first text).

The worker logs one INFO line per answered turn, numbers only (no transcript, no identity), with the numbers
also as the ``turn_latency`` field of JSON logs; with metrics on it observes the ``gocare_turn_latency_seconds``
histogram (worker/metrics.py). ``bench/bench_rooms.py`` reads the line to break a turn down by stage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from livekit.agents import AgentSession

logger = logging.getLogger("gocare.worker")

LOG_FIELD = "turn_latency"
"""The log record's ``extra`` key (a field of its own in JSON logs) holding ``TurnLatency.as_dict()``."""


@dataclass(frozen=True)
class TurnLatency:
    """One answered turn. ``*_at`` are epoch seconds (``time.time()`` on the worker's machine)."""

    stopped_speaking_at: float
    first_audio_at: float
    transcription_delay: float | None = None
    end_of_turn_delay: float | None = None
    llm_ttft: float | None = None
    tts_ttfb: float | None = None

    @property
    def total(self) -> float:
        """End of speech -> the agent's first audio frame published (livekit's ``e2e_latency``)."""
        return self.first_audio_at - self.stopped_speaking_at

    def stages(self) -> dict[str, float]:
        """The known stages in seconds: ``transcript`` and ``end_of_turn`` after the end of speech, ``llm_ttft``
        and ``tts_ttfb`` each from its own start, ``total``."""
        values = {"transcript": self.transcription_delay, "end_of_turn": self.end_of_turn_delay,
                  "llm_ttft": self.llm_ttft, "tts_ttfb": self.tts_ttfb, "total": self.total}
        return {name: round(value, 4) for name, value in values.items() if value is not None}

    def as_dict(self) -> dict[str, float]:
        return {"stopped_speaking_at": round(self.stopped_speaking_at, 4),
                "first_audio_at": round(self.first_audio_at, 4), **self.stages()}

    def describe(self) -> str:
        names = {"transcript": "transcript", "end_of_turn": "end of turn", "llm_ttft": "LLM first token",
                 "tts_ttfb": "TTS first audio"}
        parts = [f"{names[name]} {value:.2f} s" for name, value in self.stages().items() if name in names]
        return f"{self.total:.2f} s from the end of speech to the first audio ({', '.join(parts)})"


def _number(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class TurnLatencyTracker:
    """Pairs each user message with the reply that answered it: ``on_turn`` gets one ``TurnLatency`` per reply.
    Pure (fed each message's role and metrics); ``attach`` wires it to a session."""

    def __init__(self, on_turn: Callable[[TurnLatency], None]) -> None:
        self._on_turn = on_turn
        self._user: Mapping[str, Any] | None = None

    def message(self, role: str, metrics: Mapping[str, Any] | None) -> TurnLatency | None:
        if not metrics:
            return None
        if role == "user":
            if _number(metrics, "stopped_speaking_at") is not None:
                self._user = metrics
            return None
        if role != "assistant" or self._user is None:
            return None  # the greeting, or a second reply to the same turn (after a tool call)
        stopped = _number(self._user, "stopped_speaking_at")
        started = _number(metrics, "started_speaking_at")
        if stopped is None or started is None or started < stopped:
            return None
        user, self._user = self._user, None
        turn = TurnLatency(
            stopped_speaking_at=stopped, first_audio_at=started,
            transcription_delay=_number(user, "transcription_delay"),
            end_of_turn_delay=_number(user, "end_of_turn_delay"),
            llm_ttft=_number(metrics, "llm_node_ttft"), tts_ttfb=_number(metrics, "tts_node_ttfb"),
        )
        self._on_turn(turn)
        return turn


def attach(session: AgentSession[Any], *, room: str | None,
           observe: Callable[[TurnLatency], None]) -> TurnLatencyTracker:
    """Log each answered turn of ``session`` and hand it to ``observe`` (the metrics histogram)."""
    from livekit.agents import ConversationItemAddedEvent
    from livekit.agents.llm import ChatMessage

    def _report(turn: TurnLatency) -> None:
        logger.info("turn latency (room=%s): %s", room, turn.describe(), extra={LOG_FIELD: turn.as_dict()})
        observe(turn)

    tracker = TurnLatencyTracker(_report)

    def _on_item(ev: ConversationItemAddedEvent) -> None:
        if isinstance(ev.item, ChatMessage):
            tracker.message(ev.item.role, ev.item.metrics)

    session.on("conversation_item_added", _on_item)
    return tracker
