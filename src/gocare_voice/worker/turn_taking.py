"""Wires the turn decision (``conversation/turn_decision.py``) into a running ``AgentSession``.

livekit-agents 1.8 decides the end of a user turn in ``AudioRecognition``: once the caller is silent and a final
transcript is in, it asks the end-of-turn model and waits ``min_delay`` (the model says finished) or ``max_delay``
(it says not finished), both read from the session's endpointing options when that wait starts. So each final
transcript of a turn is read here, the decision made, and the session's endpointing delays set to the verdict's
(``AgentSession.update_options``, public API) before livekit starts its wait: the ``user_input_transcribed``
event is emitted synchronously from the same STT event that then starts the wait. When the turn is committed
(livekit adds the user's message), the session's own delays are put back and one line is logged: the verdict, the
signals that made it, the delays applied, how long after the last transcript the turn ended, and the verdicts of
the turn's earlier parts (the pauses the agent waited through). The line names word classes and counts, never
the caller's words or digits.

The end-of-turn model is not wrapped or replaced: in the ``model`` verdict it still chooses between the two
delays, and its probability stays in livekit's own debug log ("eot prediction").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gocare_voice.conversation.number_turn import COMPLETE, PARTIAL, NumberTurn
from gocare_voice.conversation.turn_decision import Decision, Delays, NumberSignal, TurnPolicy, decide
from gocare_voice.settings import Settings

if TYPE_CHECKING:
    from livekit.agents import AgentSession

logger = logging.getLogger("gocare.turns")

_NUMBER_SIGNALS = {COMPLETE: NumberSignal.COMPLETE, PARTIAL: NumberSignal.PARTIAL}


class TurnTaking:
    """One session's current turn: its final transcripts, its number state, the verdicts so far. Pure apart from
    ``apply`` (the session's delays) and the log; ``attach`` connects it to livekit's events."""

    def __init__(self, *, policy: TurnPolicy, region: str, waiting_for_number: Callable[[], bool],
                 apply: Callable[[Delays], None], room: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._number = NumberTurn(region=region)
        self._waiting_for_number = waiting_for_number
        self._apply = apply
        self._room = room
        self._clock = clock
        self._transcripts: list[str] = []
        self._decisions: list[Decision] = []
        self._last_heard: float | None = None
        self._current: Delays | None = None  # the session's own until the first transcript: always set then

    @property
    def decisions(self) -> list[Decision]:
        """This turn's decisions so far, one per final transcript."""
        return list(self._decisions)

    def heard(self, transcript: str) -> Decision:
        """One more final transcript of the current turn: decide, and give the session the verdict's delays."""
        if transcript.strip():
            self._transcripts.append(transcript.strip())
        self._number.heard(transcript)
        number = (_NUMBER_SIGNALS.get(self._number.state, NumberSignal.NO_NUMBER) if self._waiting_for_number()
                  else NumberSignal.NOT_ASKED)
        decision = decide(self._transcripts, self.policy, number)
        self._decisions.append(decision)
        self._last_heard = self._clock()
        self._set(decision.delays)
        logger.debug("turn part %d (room=%s): %s", len(self._decisions), self._room, decision.describe())
        return decision

    def committed(self) -> Decision | None:
        """livekit committed the turn: log why it ended when it did, put the session's delays back, start empty."""
        if not self._decisions:  # a typed message, or a turn committed before any final transcript
            self._number.committed()
            return None
        final = self._decisions[-1]
        after = self._clock() - self._last_heard if self._last_heard is not None else 0.0
        earlier = ",".join(d.verdict.value for d in self._decisions[:-1]) or "-"
        logger.info("turn ended (room=%s): %s parts=%d earlier=%s ended_after_last_transcript=%.2fs",
                    self._room, final.describe(), len(self._decisions), earlier, after)
        self._transcripts.clear()
        self._decisions.clear()
        self._last_heard = None
        self._number.committed()
        self._set(self.policy.delays(decide([], self.policy).verdict))
        return final

    def _set(self, delays: Delays) -> None:
        if delays != self._current:
            self._current = delays
            self._apply(delays)


def attach(session: AgentSession[Any], *, policy: TurnPolicy, region: str, waiting_for_number: Callable[[], bool],
           room: str | None = None) -> TurnTaking:
    """Decide each turn of ``session`` (module docstring), through public livekit-agents API only
    (``user_input_transcribed``, ``conversation_item_added``, ``AgentSession.update_options``)."""
    from livekit.agents import ConversationItemAddedEvent, UserInputTranscribedEvent
    from livekit.agents.llm import ChatMessage

    def _apply(delays: Delays) -> None:
        session.update_options(endpointing_opts={"min_delay": delays.min_delay, "max_delay": delays.max_delay})

    turns = TurnTaking(policy=policy, region=region, waiting_for_number=waiting_for_number, apply=_apply, room=room)

    def _on_transcript(ev: UserInputTranscribedEvent) -> None:
        if ev.is_final:
            turns.heard(ev.transcript)

    def _on_item(ev: ConversationItemAddedEvent) -> None:
        if isinstance(ev.item, ChatMessage) and ev.item.role == "user":
            turns.committed()

    session.on("user_input_transcribed", _on_transcript)
    session.on("conversation_item_added", _on_item)
    return turns


def policy_from(settings: Settings) -> TurnPolicy:
    """The policy of ``settings``: the grammar only for an English STT (its lexicon is English)."""
    return TurnPolicy(
        min_delay=settings.endpointing_min_delay, max_delay=settings.endpointing_max_delay,
        unfinished_pause=settings.turn_unfinished_pause, number_pause=settings.number_max_pause,
        grammar=settings.turn_grammar and settings.stt_language.lower().startswith("en"),
    )
