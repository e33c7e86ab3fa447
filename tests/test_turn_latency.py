"""Per-turn latency from livekit-agents' chat message metrics (worker/latency.py): which reply answers which
turn, the stages, the log line (numbers only) and the histogram."""

from __future__ import annotations

import logging

import pytest

from gocare_voice.worker.latency import LOG_FIELD, TurnLatency, TurnLatencyTracker

USER = {"stopped_speaking_at": 100.0, "transcription_delay": 0.52, "end_of_turn_delay": 0.61,
        "on_user_turn_completed_delay": 0.001}
REPLY = {"started_speaking_at": 101.25, "llm_node_ttft": 0.31, "tts_node_ttfb": 0.12, "e2e_latency": 1.25}
"""livekit's own pairing: e2e_latency = started_speaking_at - the answered speech's stopped_speaking_at."""


def test_a_reply_after_a_user_turn_is_one_turn_with_its_stages() -> None:
    turns: list[TurnLatency] = []
    tracker = TurnLatencyTracker(turns.append)
    assert tracker.message("user", USER) is None
    turn = tracker.message("assistant", REPLY)
    assert turns == [turn]
    assert turn is not None and turn.total == pytest.approx(1.25)
    assert turn.stages() == {"transcript": 0.52, "end_of_turn": 0.61, "llm_ttft": 0.31, "tts_ttfb": 0.12,
                             "total": 1.25}
    assert turn.as_dict()["stopped_speaking_at"] == 100.0 and turn.as_dict()["first_audio_at"] == 101.25


def test_the_greeting_an_intro_and_a_reply_to_typed_text_are_not_turns() -> None:
    turns: list[TurnLatency] = []
    tracker = TurnLatencyTracker(turns.append)
    tracker.message("assistant", {"started_speaking_at": 99.0})  # the greeting: nobody spoke before it
    tracker.message("user", USER)
    tracker.message("assistant", REPLY)
    tracker.message("assistant", {"started_speaking_at": 103.0})  # an intro after a mode switch: no e2e_latency
    tracker.message("user", None)  # typed chat
    tracker.message("assistant", {"started_speaking_at": 104.0})
    assert len(turns) == 1


def test_a_spoken_turn_replaced_by_typed_text_lends_its_stages_to_no_reply() -> None:
    """A spoken turn whose reply never played, then typed text: the next reply livekit pairs with speech gets
    no transcript or end-of-turn stage from the stale message."""
    turns: list[TurnLatency] = []
    tracker = TurnLatencyTracker(turns.append)
    tracker.message("user", USER)
    tracker.message("user", None)
    turn = tracker.message("assistant", REPLY)
    assert turn is not None and turn.stages() == {"llm_ttft": 0.31, "tts_ttfb": 0.12, "total": 1.25}


def test_a_user_message_of_another_moment_is_not_this_turns() -> None:
    turns: list[TurnLatency] = []
    tracker = TurnLatencyTracker(turns.append)
    tracker.message("user", {**USER, "stopped_speaking_at": 90.0})
    turn = tracker.message("assistant", REPLY)  # livekit says it answered speech that ended at 100.0
    assert turn is not None and turn.stopped_speaking_at == pytest.approx(100.0)
    assert "transcript" not in turn.stages() and "end_of_turn" not in turn.stages()


def test_bad_numbers_are_skipped() -> None:
    turns: list[TurnLatency] = []
    tracker = TurnLatencyTracker(turns.append)
    tracker.message("user", USER)
    tracker.message("assistant", {"started_speaking_at": True, "e2e_latency": 1.0})  # not a number
    tracker.message("assistant", {"started_speaking_at": 101.0, "e2e_latency": -1.0})
    assert turns == []
    tracker.message("assistant", REPLY)  # the real answer still pairs with the waiting turn
    assert len(turns) == 1


def test_missing_stages_are_left_out_not_zero() -> None:
    turn = TurnLatency(stopped_speaking_at=10.0, first_audio_at=10.9)
    assert turn.stages() == {"total": pytest.approx(0.9)}
    assert turn.describe() == "0.90 s from the end of speech to the first audio ()"


def test_the_log_line_carries_numbers_only(caplog: pytest.LogCaptureFixture) -> None:
    from gocare_voice.worker import latency

    class Session:
        def __init__(self) -> None:
            self.handlers: dict[str, object] = {}

        def on(self, event: str, handler: object) -> None:
            self.handlers[event] = handler

    from livekit.agents import ConversationItemAddedEvent
    from livekit.agents.llm import ChatMessage

    seen: list[TurnLatency] = []
    session = Session()
    latency.attach(session, room="user-42~call", observe=seen.append)  # type: ignore[arg-type]
    handler = session.handlers["conversation_item_added"]
    caplog.set_level(logging.INFO, logger="gocare.worker")
    handler(ConversationItemAddedEvent(item=ChatMessage(role="user", content=["my number is 98765 43210"],
                                                        metrics=USER)))
    handler(ConversationItemAddedEvent(item=ChatMessage(role="assistant", content=["Thank you, John"],
                                                        metrics=REPLY)))
    assert len(seen) == 1
    [record] = [r for r in caplog.records if r.getMessage().startswith("turn latency")]
    assert record.getMessage() == ("turn latency (room=user-42~call): 1.25 s from the end of speech to the first "
                                   "audio (transcript 0.52 s, end of turn 0.61 s, LLM first token 0.31 s, "
                                   "TTS first audio 0.12 s)")
    assert getattr(record, LOG_FIELD)["total"] == 1.25
    assert "98765" not in record.getMessage() and "John" not in str(record.__dict__)


def test_the_histogram_observes_each_known_stage() -> None:
    from prometheus_client import CollectorRegistry

    from gocare_voice.worker.metrics import WorkerMetrics

    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry=registry)
    metrics.turn_latency({"total": 1.25, "end_of_turn": 0.61, "someone's name": 3.0})
    assert registry.get_sample_value("gocare_turn_latency_seconds_sum", {"stage": "total"}) == 1.25
    assert registry.get_sample_value("gocare_turn_latency_seconds_count", {"stage": "end_of_turn"}) == 1
    assert registry.get_sample_value("gocare_turn_latency_seconds_bucket", {"stage": "total", "le": "1.5"}) == 1
    labels = {s.labels.get("stage") for m in registry.collect() for s in m.samples}
    assert "someone's name" not in labels and "other" not in labels
