"""How long each answered turn kept the caller waiting, and where the time went.

Read off livekit-agents' own per-turn measurements (``ChatMessage.metrics``), nothing timed by us:

- the user's message carries ``stopped_speaking_at`` (the end of their speech, as the VAD saw it),
  ``transcription_delay`` (that moment -> the final transcript) and ``end_of_turn_delay`` (-> the turn committed);
- the agent's reply carries ``started_speaking_at`` (its first audio frame pushed to the room), ``e2e_latency`` (the
  end of the speech it answered -> that frame; livekit sets it only on a reply to speech), ``llm_node_ttft``
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
    """One ``TurnLatency`` per reply that answered a spoken turn: ``on_turn`` gets it. livekit pairs them itself: a
    reply's ``e2e_latency`` is there only when it answered the user's speech (the welcome after a handoff included,
    a typed message's reply or an intro not); the user's own stages come from the message that ended at that
    moment. Pure (fed each message's role and metrics); ``attach`` wires it to a session."""

    def __init__(self, on_turn: Callable[[TurnLatency], None]) -> None:
        self._on_turn = on_turn
        self._user: Mapping[str, Any] | None = None

    def message(self, role: str, metrics: Mapping[str, Any] | None) -> TurnLatency | None:
        if role == "user":
            # a typed message (no metrics) replaces a spoken one still waiting: its reply is not that turn's
            self._user = metrics if metrics and _number(metrics, "stopped_speaking_at") is not None else None
            return None
        if role != "assistant" or not metrics:
            return None
        started = _number(metrics, "started_speaking_at")
        e2e = _number(metrics, "e2e_latency")
        if started is None or e2e is None or e2e < 0:
            return None  # the greeting, an intro, a reply to typed text, a second reply after a tool call
        stopped = started - e2e
        user, self._user = self._user, None
        if user is not None and abs((_number(user, "stopped_speaking_at") or 0.0) - stopped) > 0.05:
            user = None  # not the message of this turn: its stages would belong to another
        turn = TurnLatency(
            stopped_speaking_at=stopped, first_audio_at=started,
            transcription_delay=_number(user, "transcription_delay") if user else None,
            end_of_turn_delay=_number(user, "end_of_turn_delay") if user else None,
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
