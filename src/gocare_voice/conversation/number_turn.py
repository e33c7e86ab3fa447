"""End the caller's turn as soon as what they said is a complete mobile number.

The end-of-turn model reads a bare number ("98765 43210") as an unfinished sentence, so livekit-agents waits
its longest endpointing delay (``max_delay``, 2.5 s) before answering. While the agent waits for the number
(the number check is current and the caller is not verified yet), every final transcript of the turn is
read by the phone parser; once the turn so far is a valid number for ``GOCARE_PHONE_REGION`` (10 digits, or a
country code and 10), that turn's ``max_delay`` drops to ``min_delay``, and it is restored when the turn is
committed or the next transcript makes it something else. A number said in groups ("98765 ... 43210") is not
cut off after the first group: "98765" is not a number, so the model's long wait still applies to it.

``NumberTurn`` is pure (fed transcripts, answers which ``max_delay`` the turn should have); ``attach`` wires
it to a session through public livekit-agents API only (``user_input_transcribed``,
``conversation_item_added``, ``AgentSession.update_options``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from .phone import parse_phone_number

if TYPE_CHECKING:
    from livekit.agents import AgentSession

logger = logging.getLogger("gocare.agents")


class NumberTurn:
    """The current user turn's final transcripts, and whether they add up to a complete number."""

    def __init__(self, *, region: str) -> None:
        self._region = region
        self._heard: list[str] = []
        self.complete = False

    def heard(self, transcript: str) -> bool:
        """One more final transcript of this turn; returns whether the turn now reads as a complete number."""
        if transcript.strip():
            self._heard.append(transcript.strip())
        self.complete = parse_phone_number(" ".join(self._heard), region=self._region).ok
        return self.complete

    def committed(self) -> None:
        """The turn ended (livekit added the user's message): the next one starts empty."""
        self._heard.clear()
        self.complete = False


def attach(session: AgentSession[Any], *, region: str, waiting_for_number: Callable[[], bool],
           min_delay: float, max_delay: float) -> NumberTurn:
    """Lower ``session``'s ``max_delay`` to ``min_delay`` for a turn that is a complete number while
    ``waiting_for_number()``, and put ``max_delay`` back after it."""
    from livekit.agents import ConversationItemAddedEvent, UserInputTranscribedEvent
    from livekit.agents.llm import ChatMessage

    turn = NumberTurn(region=region)
    lowered = False

    def _set_max_delay(fast: bool) -> None:
        nonlocal lowered
        if fast != lowered:
            lowered = fast
            session.update_options(endpointing_opts={"max_delay": min_delay if fast else max_delay})

    def _on_transcript(ev: UserInputTranscribedEvent) -> None:
        if not ev.is_final:
            return
        complete = turn.heard(ev.transcript) and waiting_for_number()
        if complete and not lowered:
            logger.debug("the turn is a complete number: ending it without the end-of-turn model's wait")
        _set_max_delay(complete)

    def _on_item(ev: ConversationItemAddedEvent) -> None:
        if isinstance(ev.item, ChatMessage) and ev.item.role == "user":
            turn.committed()
            _set_max_delay(False)

    session.on("user_input_transcribed", _on_transcript)
    session.on("conversation_item_added", _on_item)
    return turn
