"""The turn decision (conversation/turn_decision.py) and its wiring's pure part (worker/turn_taking.py): which
verdict the words of a turn get, the delays each verdict means, and what is logged about a turn."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gocare_voice.conversation.turn_decision import (
    ARTICLES,
    CONJUNCTIONS,
    FILLERS,
    POSSESSIVES,
    PREPOSITIONS,
    Delays,
    NumberSignal,
    TurnPolicy,
    Verdict,
    WordClass,
    decide,
    is_question,
    word_class,
    words_of,
)
from gocare_voice.settings import Settings
from gocare_voice.worker.turn_taking import TurnTaking, policy_from

POLICY = TurnPolicy(min_delay=0.3, max_delay=1.2, unfinished_pause=2.0, number_pause=2.5)


# --- the half sentences and complete questions -------------------------------------------------------

@pytest.mark.parametrize(("said", "cls"), [
    ("I am looking for", WordClass.PREPOSITION),
    ("could you help me with", WordClass.PREPOSITION),
    ("I wanted to ask about", WordClass.PREPOSITION),
    ("I wanted to", WordClass.PREPOSITION),
    ("can you tell me how to", WordClass.PREPOSITION),
    ("When does the", WordClass.ARTICLE),
    ("I would like to cancel my", WordClass.POSSESSIVE),
    ("my daughter and", WordClass.CONJUNCTION),
    ("I am calling because", WordClass.CONJUNCTION),
    ("I take aspirin metformin and", WordClass.CONJUNCTION),
    ("I wanted um", WordClass.FILLER),
    ("so the thing is, uh", WordClass.FILLER),
])
def test_a_turn_ending_in_an_open_word_waits_longest(said: str, cls: WordClass) -> None:
    decision = decide([said], POLICY)
    assert decision.last_word is cls
    assert decision.verdict is Verdict.WAIT_LONGEST
    assert decision.delays == Delays(2.0, 2.0)


@pytest.mark.parametrize("said", ["When is my next appointment?", "what time does the clinic open tomorrow",
                                  "Can I cancel my appointment on Friday.", "do I need to fast before my blood test",
                                  "who is my doctor", "So, how do I reset my password", "is my insurance accepted",
                                  "can I change my appointment to Monday", "could you send it to me",
                                  "can I move it to 10"])
def test_a_question_ending_in_a_content_word_ends_now(said: str) -> None:
    decision = decide([said], POLICY)
    assert decision.question and decision.last_word is WordClass.CONTENT
    assert decision.verdict is Verdict.END_NOW
    assert decision.delays == Delays(0.3, 0.3)


@pytest.mark.parametrize(("said", "cls"), [("I wanted to ask", WordClass.INFINITIVE),
                                           ("I would like to speak", WordClass.INFINITIVE),
                                           ("and then I", WordClass.SUBJECT), ("so basically it's", WordClass.SUBJECT),
                                           ("my number is", WordClass.COPULA),
                                           ("the problem with the app was", WordClass.COPULA)])
def test_an_infinitive_or_a_subject_at_the_end_waits_the_long_delay(said: str, cls: WordClass) -> None:
    decision = decide([said], POLICY)
    assert (decision.last_word, decision.verdict, decision.delays) == (cls, Verdict.WAIT_MORE, Delays(1.2, 1.2))


@pytest.mark.parametrize("said", ["I need my prescription", "I lost the letter you sent me", "thank you",
                                  "yes", "is it", "yes it is", "I know where it is", "they are", "yes I do"])
def test_a_statement_or_a_short_question_is_left_to_the_model(said: str) -> None:
    decision = decide([said], POLICY)
    assert decision.verdict is Verdict.MODEL
    assert decision.delays == Delays(0.3, 1.2)


def test_punctuation_says_nothing() -> None:
    """Deepgram closes each final with a mark, half sentences too."""
    for half in ("I am looking for.", "I am looking for?", "I am looking for"):
        assert decide([half], POLICY).verdict is Verdict.WAIT_LONGEST
    assert decide(["when is my next appointment."], POLICY).verdict is Verdict.END_NOW


def test_the_parts_of_a_turn_are_read_together() -> None:
    assert decide(["I wanted to ask about"], POLICY).verdict is Verdict.WAIT_LONGEST
    assert decide(["I wanted to ask about", "my appointment."], POLICY).verdict is Verdict.MODEL
    assert decide(["is there a free slot for", "next Tuesday morning?"], POLICY).verdict is Verdict.END_NOW
    assert decide(["when does the", "clinic open tomorrow"], POLICY).verdict is Verdict.END_NOW


def test_the_number_check_comes_first() -> None:
    assert decide(["98765"], POLICY, NumberSignal.PARTIAL).delays == Delays(2.5, 2.5)
    complete = decide(["98765", "43210"], POLICY, NumberSignal.COMPLETE)
    assert (complete.verdict, complete.delays) == (Verdict.END_NOW, Delays(0.3, 0.3))
    # words, not digits, while the number is asked for: the grammar as in any turn
    assert decide(["my number is um"], POLICY, NumberSignal.NO_NUMBER).verdict is Verdict.WAIT_LONGEST


def test_grammar_off_leaves_every_turn_to_the_model_but_the_number() -> None:
    off = TurnPolicy(min_delay=0.3, max_delay=1.2, unfinished_pause=2.0, number_pause=2.5, grammar=False)
    assert decide(["I am looking for"], off).verdict is Verdict.MODEL
    assert decide(["when is my next appointment"], off).verdict is Verdict.MODEL
    assert decide(["98765"], off, NumberSignal.PARTIAL).verdict is Verdict.WAIT_LONGEST


def test_the_description_names_classes_not_words() -> None:
    text = decide(["I would like to cancel my"], POLICY).describe()
    assert "verdict=wait_longest" in text and "last_word=possessive" in text and "words=6" in text
    assert "delays=2.00/2.00s" in text and "cancel" not in text and "like" not in text


@pytest.mark.parametrize("bad", [dict(min_delay=1.0, max_delay=0.5), dict(unfinished_pause=1.0),
                                 dict(number_pause=1.0), dict(min_delay=-0.1)])
def test_a_policy_with_delays_out_of_order_is_refused(bad: dict[str, float]) -> None:
    values = dict(min_delay=0.3, max_delay=1.2, unfinished_pause=2.0, number_pause=2.5) | bad
    with pytest.raises(ValueError):
        TurnPolicy(**values)


def test_words_and_questions() -> None:
    assert words_of(["I\u2019d like, um,", "TO ask?"]) == ["i'd", "like", "um", "to", "ask"]
    assert is_question(["so", "um", "when", "is", "it"]) and is_question(["can", "i", "come"])
    assert not is_question(["i", "can", "come"]) and not is_question([]) and not is_question(["um", "so"])
    assert word_class([]) is WordClass.NONE


# --- properties -------------------------------------------------------------------------------------------

OPEN_WORDS = sorted(PREPOSITIONS | ARTICLES | POSSESSIVES | CONJUNCTIONS | FILLERS)
text = st.lists(st.sampled_from(["when", "is", "my", "next", "appointment", "I", "need", "a", "doctor", "can", "you",
                                 "help", "to", "ask", "about", "and", "um", "the", "for", "please", "98765", "?",
                                 ",", "."]), max_size=12).map(" ".join)
policies = st.tuples(*[st.floats(0, 3, allow_nan=False)] * 4).map(sorted).map(
    lambda d: TurnPolicy(min_delay=d[0], max_delay=d[1], unfinished_pause=d[2], number_pause=d[3]))
numbers = st.sampled_from(list(NumberSignal))


@given(st.lists(text, max_size=4), st.sampled_from(OPEN_WORDS), policies, st.sampled_from(list(NumberSignal)[:2]))
def test_any_turn_ending_in_an_open_word_waits_longest(parts: list[str], last: str, policy: TurnPolicy,
                                                      number: NumberSignal) -> None:
    decision = decide([*parts, last], policy, number)
    assert decision.verdict is Verdict.WAIT_LONGEST
    assert decision.delays == Delays(policy.unfinished_pause, policy.unfinished_pause)


@given(st.lists(text, max_size=4), policies, numbers)
def test_the_delays_are_ordered_and_come_from_the_policy(parts: list[str], policy: TurnPolicy,
                                                        number: NumberSignal) -> None:
    decision = decide(parts, policy, number)
    allowed = {policy.min_delay, policy.max_delay, policy.unfinished_pause, policy.number_pause}
    assert decision.delays.min_delay <= decision.delays.max_delay
    assert {decision.delays.min_delay, decision.delays.max_delay} <= allowed
    # only a finished turn may end sooner than the model's long wait, and only a "model" turn is the model's
    if decision.verdict is not Verdict.END_NOW and decision.verdict is not Verdict.MODEL:
        assert decision.delays.min_delay >= policy.max_delay
    if decision.verdict is Verdict.MODEL:
        assert decision.delays == Delays(policy.min_delay, policy.max_delay)


@given(st.lists(text, max_size=4), policies)
def test_the_number_signal_overrides_the_words(parts: list[str], policy: TurnPolicy) -> None:
    assert decide(parts, policy, NumberSignal.COMPLETE).verdict is Verdict.END_NOW
    partial = decide(parts, policy, NumberSignal.PARTIAL)
    assert partial.verdict is Verdict.WAIT_LONGEST and partial.delays == Delays(policy.number_pause,
                                                                                 policy.number_pause)


@given(st.lists(text, max_size=4), numbers)
def test_the_description_never_carries_the_words_or_digits(parts: list[str], number: NumberSignal) -> None:
    described = decide([*parts, "appointment 98765"], POLICY, number).describe()
    assert "appointment" not in described and "98765" not in described


# --- the wiring's pure part --------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _turns(waiting: bool = False) -> tuple[TurnTaking, list[Delays], Clock]:
    applied: list[Delays] = []
    clock = Clock()
    return TurnTaking(policy=POLICY, region="IN", waiting_for_number=lambda: waiting, apply=applied.append,
                      room="room-1", clock=clock), applied, clock


def test_each_transcript_sets_the_delays_and_the_commit_puts_them_back(caplog: pytest.LogCaptureFixture) -> None:
    turns, applied, clock = _turns()
    assert turns.heard("I wanted to ask about").verdict is Verdict.WAIT_LONGEST
    assert turns.heard("my appointment on Monday").verdict is Verdict.MODEL
    clock.now += 0.42
    with caplog.at_level(logging.INFO, logger="gocare.turns"):
        final = turns.committed()
    assert final is not None and final.verdict is Verdict.MODEL
    assert applied == [Delays(2.0, 2.0), Delays(0.3, 1.2)]  # unchanged delays are not set again
    line = caplog.messages[-1]
    assert "verdict=model" in line and "parts=2" in line and "earlier=wait_longest" in line
    assert "ended_after_last_transcript=0.42s" in line and "room-1" in line
    assert "appointment" not in line and "Monday" not in line
    assert turns.decisions == []
    assert turns.heard("when is my next appointment").verdict is Verdict.END_NOW
    assert applied[-1] == Delays(0.3, 0.3)
    turns.committed()
    assert applied[-1] == Delays(0.3, 1.2)


def test_the_number_is_read_only_while_it_is_asked_for() -> None:
    turns, applied, _ = _turns(waiting=True)
    assert turns.heard("98765").verdict is Verdict.WAIT_LONGEST and applied[-1] == Delays(2.5, 2.5)
    assert turns.heard("43210").verdict is Verdict.END_NOW and applied[-1] == Delays(0.3, 0.3)
    other, applied_other, _ = _turns(waiting=False)
    assert other.heard("98765").verdict is Verdict.MODEL and applied_other == [Delays(0.3, 1.2)]


def test_a_commit_without_transcripts_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    turns, applied, _ = _turns()
    with caplog.at_level(logging.INFO, logger="gocare.turns"):
        assert turns.committed() is None
    assert caplog.messages == [] and applied == []


def test_the_policy_comes_from_the_settings() -> None:
    settings = Settings(_env_file=None, GOCARE_TURN_UNFINISHED_PAUSE="1.8")  # type: ignore[call-arg]
    policy = policy_from(settings)
    assert (policy.min_delay, policy.max_delay, policy.unfinished_pause, policy.number_pause, policy.grammar) == (
        0.3, 1.2, 1.8, 2.5, True)
    other = Settings(_env_file=None, GOCARE_STT_LANGUAGE="de")  # type: ignore[call-arg]
    assert not policy_from(other).grammar
    off = Settings(_env_file=None, GOCARE_TURN_GRAMMAR="false")  # type: ignore[call-arg]
    assert not policy_from(off).grammar


async def test_attach_sets_a_real_sessions_delays_per_transcript_and_puts_them_back() -> None:
    """The wiring on a real (not started) AgentSession, through the events livekit emits: each final transcript
    sets the session's endpointing delays, interim ones do nothing, the user's message puts the session's own
    back (and ends the turn)."""
    from livekit.agents import AgentSession, ConversationItemAddedEvent, UserInputTranscribedEvent
    from livekit.agents.llm import ChatMessage

    from gocare_voice.worker.turn_taking import attach

    session: AgentSession = AgentSession(turn_handling={"endpointing": {"min_delay": 0.3, "max_delay": 1.2}})
    turns = attach(session, policy=POLICY, region="IN", waiting_for_number=lambda: False, room="r")

    def delays() -> tuple[float, float]:
        return session.options.endpointing["min_delay"], session.options.endpointing["max_delay"]

    session.emit("user_input_transcribed", UserInputTranscribedEvent(transcript="I am looking", is_final=False))
    assert turns.decisions == [] and delays() == (0.3, 1.2)
    session.emit("user_input_transcribed", UserInputTranscribedEvent(transcript="I am looking for", is_final=True))
    assert delays() == (2.0, 2.0)
    session.emit("user_input_transcribed", UserInputTranscribedEvent(transcript="a doctor?", is_final=True))
    assert [d.verdict for d in turns.decisions] == [Verdict.WAIT_LONGEST, Verdict.MODEL] and delays() == (0.3, 1.2)
    session.emit("user_input_transcribed", UserInputTranscribedEvent(transcript="when is it open", is_final=True))
    assert delays() == (0.3, 1.2)  # "I am looking for a doctor when is it open": a statement, the model's
    session.emit("conversation_item_added", ConversationItemAddedEvent(
        item=ChatMessage(role="assistant", content=["Hello."])))
    assert len(turns.decisions) == 3  # the agent's own message ends no user turn
    session.emit("conversation_item_added", ConversationItemAddedEvent(
        item=ChatMessage(role="user", content=["I am looking for a doctor when is it open"])))
    assert turns.decisions == [] and delays() == (0.3, 1.2)
    session.emit("user_input_transcribed", UserInputTranscribedEvent(transcript="when is it open", is_final=True))
    assert delays() == (0.3, 0.3)
