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
transcripts, answers the turn's state); its state is one signal of the turn decision (``turn_decision.py``:
``END_NOW`` for a complete number, ``WAIT_LONGEST`` with the number pause for a partial one), which
``worker/turn_taking.py`` wires to a session.
"""

from __future__ import annotations

from .phone import parse_phone_number

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
