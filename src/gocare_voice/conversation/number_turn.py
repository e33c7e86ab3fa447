"""During the number check, the phone parser decides how long the caller's pause may be.

The end-of-turn model reads a bare number ("98765 43210") as an unfinished sentence, so livekit-agents waits
its longest endpointing delay (``max_delay``) before answering. While the agent waits for the number (the
number check is current and the caller is not verified yet), every final transcript of the turn is read by the
phone parser, and the turn's endpointing delays follow what it says:

- a complete, valid number for ``GOCARE_PHONE_REGION`` (10 digits, or a country code and 10): ``max_delay`` becomes
  ``min_delay``, the turn ends at once whatever the model says;
- at least ``MIN_PARTIAL_DIGITS`` digits that are not a number yet ("98765", the first group of "98765 ... 43210"):
  both delays become ``GOCARE_NUMBER_MAX_PAUSE``, longer than the general ``GOCARE_ENDPOINTING_MAX_DELAY`` and
  whatever the model says (it may call "98765" finished, or time out on a busy machine, and livekit then uses
  ``min_delay``), so a caller reading their number in groups is not answered, and charged a failed attempt,
  after the first group;
- anything else: the session's delays.

They are put back when the turn is committed (livekit adds the user's message). ``NumberTurn`` is pure (fed
transcripts, answers the turn's state); ``attach`` wires it to a session through public livekit-agents API only
(``user_input_transcribed``, ``conversation_item_added``, ``AgentSession.update_options``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from .phone import parse_phone_number

if TYPE_CHECKING:
    from livekit.agents import AgentSession

logger = logging.getLogger("gocare.agents")


COMPLETE, PARTIAL, NO_NUMBER = "complete", "partial", "no_number"
MIN_PARTIAL_DIGITS = 3
"""Fewer digits than this are not "a number being said": "one moment" or "oh, I don't know it" get no longer pause."""


class NumberTurn:
    """The current user turn's final transcripts, and what they add up to: ``COMPLETE`` (a valid number),
    ``PARTIAL`` (digits, not a valid number yet) or ``NO_NUMBER``."""

    def __init__(self, *, region: str) -> None:
        self._region = region
        self._heard: list[str] = []
        self.state = NO_NUMBER

    @property
    def complete(self) -> bool:
        return self.state == COMPLETE

    def heard(self, transcript: str) -> bool:
        """One more final transcript of this turn; returns whether the turn now reads as a complete number."""
        if transcript.strip():
            self._heard.append(transcript.strip())
        parsed = parse_phone_number(" ".join(self._heard), region=self._region)
        self.state = COMPLETE if parsed.ok else PARTIAL if parsed.digit_count >= MIN_PARTIAL_DIGITS else NO_NUMBER
        return self.complete

    def committed(self) -> None:
        """The turn ended (livekit added the user's message): the next one starts empty."""
        self._heard.clear()
        self.state = NO_NUMBER


def attach(session: AgentSession[Any], *, region: str, waiting_for_number: Callable[[], bool],
           min_delay: float, max_delay: float, number_max_pause: float) -> NumberTurn:
    """While ``waiting_for_number()``, give each turn of ``session`` the endpointing delays its number state calls
    for (module docstring), and put the session's own back once the turn is committed.

    Through ``AgentSession.update_options``, which sets the session's delays on the running agent: an agent with
    endpointing of its own in ``turn_handling`` would have it replaced during the number check (none has)."""
    from livekit.agents import ConversationItemAddedEvent, UserInputTranscribedEvent
    from livekit.agents.llm import ChatMessage

    turn = NumberTurn(region=region)
    delays = {COMPLETE: (min_delay, min_delay), PARTIAL: (number_max_pause, number_max_pause),
              NO_NUMBER: (min_delay, max_delay)}
    current = delays[NO_NUMBER]

    def _set(wanted: tuple[float, float]) -> None:
        nonlocal current
        if wanted != current:
            current = wanted
            session.update_options(endpointing_opts={"min_delay": wanted[0], "max_delay": wanted[1]})

    def _on_transcript(ev: UserInputTranscribedEvent) -> None:
        if not ev.is_final:
            return
        turn.heard(ev.transcript)
        state = turn.state if waiting_for_number() else NO_NUMBER
        if state == COMPLETE and current != delays[COMPLETE]:
            logger.debug("the turn is a complete number: ending it without the end-of-turn model's wait")
        _set(delays[state])

    def _on_item(ev: ConversationItemAddedEvent) -> None:
        if isinstance(ev.item, ChatMessage) and ev.item.role == "user":
            turn.committed()
            _set(delays[NO_NUMBER])

    session.on("user_input_transcribed", _on_transcript)
    session.on("conversation_item_added", _on_item)
    return turn
