"""Has the caller finished their turn? The words decide what the sound alone cannot.

livekit-agents 1.8's local end-of-turn model (``inference.TurnDetector``, ``v1-mini``, in the
``livekit-local-inference`` wheel) is an *audio* model: it hears the last 1.2 s of the caller's voice, never the
words, and compares its probability with a per-language threshold (0.36 for English). Measured on the
turn-taking corpus's synthetic voices (docs/configuration.md, "Turn taking"), it calls most half sentences *and*
most complete questions unfinished, and some half sentences ("I would like to cancel my", "could you help me
with") finished: the agent then answers half a sentence after ``GOCARE_ENDPOINTING_MIN_DELAY``, and waits the
long ``GOCARE_ENDPOINTING_MAX_DELAY`` after a finished question. The words of the turn settle both cases:

- a turn whose last word leaves the sentence open (a preposition, an article, a possessive, a conjunction, a
  filler: "I am looking for", "when does the", "can you check my", "my daughter and", "I wanted um") is not
  finished, whatever the sound says: ``WAIT_LONGEST`` (``GOCARE_TURN_UNFINISHED_PAUSE``);
- one ending in an infinitive ("I wanted to ask"), a subject pronoun ("and then I") or a copula after a noun ("my
  number is") probably goes on: ``WAIT_MORE`` (the long wait, never the short one);
- a question (it opens with a question word or an inverted auxiliary: "when is", "can I") that ends in a
  content word ("when is my next appointment") is finished: ``END_NOW`` (the short wait, whatever the sound
  says). A question ending in a preposition is treated as any turn ending in one ("could you help me with"):
  the rare finished one ("who is it for") pays the longest wait;
- anything else (a statement ending in a content word: "I need my prescription", which may go on "and ...")
  leaves it to the end-of-turn model: ``MODEL`` (the session's short or long wait, as livekit decides);
- during the number check the phone parser's state comes first (``conversation/number_turn.py``): a complete
  number ends the turn now, digits that are not a number yet wait ``GOCARE_NUMBER_MAX_PAUSE``.

Punctuation is ignored on purpose: Deepgram punctuates each final it closes, the half of a sentence too ("I
wanted to."), so a full stop or a question mark says nothing about the caller. The STT's own endpointing is not a
signal either: the livekit Deepgram plugin asks for 25 ms endpointing, so ``speech_final`` is true at every
pause, mid-sentence ones included, and ``UtteranceEnd`` comes no sooner than 1 s after the last word (Deepgram's
minimum), later than the pauses this has to judge.

Pure: no LiveKit, no I/O. ``decide`` takes the turn's final transcripts so far and returns the verdict, why, and
the endpointing delays (``min_delay``, ``max_delay``) the worker gives the session until the next transcript
(``worker/turn_taking.py``). What it logs about a turn is ``Decision.describe()``: word classes and counts, never
the words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    END_NOW = "end_now"
    """Finished: the short wait (``min_delay``), whatever the end-of-turn model says."""
    MODEL = "model"
    """The words do not tell: the end-of-turn model chooses between the short and the long wait."""
    WAIT_MORE = "wait_more"
    """Probably goes on: the long wait (``max_delay``), even when the model calls it finished."""
    WAIT_LONGEST = "wait_longest"
    """Not finished: the caller's longest pause (the unfinished pause, or the number pause)."""


class WordClass(StrEnum):
    """What the last word of a turn is, as far as ending a sentence goes. Logged instead of the word."""

    PREPOSITION = "preposition"
    ARTICLE = "article"
    POSSESSIVE = "possessive"
    CONJUNCTION = "conjunction"
    FILLER = "filler"
    INFINITIVE = "infinitive"
    """A verb right after "to" with nothing after it ("I wanted to ask")."""
    SUBJECT = "subject"
    """A subject pronoun ("and then I"): the verb is still to come."""
    COPULA = "copula"
    """"is", "are", "was", "were" after a noun ("my number is", "the problem is"): what it is is still to come.
    After a pronoun ("yes, it is", "they are") a sentence may end, and it is ``CONTENT``."""
    CONTENT = "content"
    """Anything else: a noun, a verb with its object, an adjective... a sentence may end here."""
    NONE = "none"
    """No words (an empty transcript)."""


class NumberSignal(StrEnum):
    """The phone parser's reading of the turn during the number check (``number_turn.NumberTurn.state``)."""

    NOT_ASKED = "not_asked"
    """No number is being waited for (or the number check is off)."""
    NO_NUMBER = "no_number"
    PARTIAL = "partial"
    COMPLETE = "complete"


# Lexicon (English). Only words that leave a sentence open whenever they end it; words that may also end one are
# left out on purpose ("in", "on", "up", "out", "over", "before", "after", "since": "come in", "it's over", "I've
# been here before"; "her": "I called her"; "that"/"this": "I need that"; "so": "I think so"; "well": "I'm not
# well"), since a wrong "unfinished" costs every such turn the longest wait.
PREPOSITIONS = frozenset({
    "about", "for", "with", "to", "of", "from", "into", "onto", "at", "regarding", "concerning", "than", "without",
    "between", "during", "through", "toward", "towards", "against", "among", "upon", "within", "via", "per",
    "like", "unlike", "including", "except", "beside", "besides", "despite", "across", "behind", "near",
})
ARTICLES = frozenset({"the", "a", "an", "every", "each", "another", "either", "neither", "which", "whose"})
POSSESSIVES = frozenset({"my", "your", "our", "their", "its"})
CONJUNCTIONS = frozenset({"and", "or", "but", "because", "cos", "although", "unless", "whether", "nor",
                          "plus", "if", "whereas"})
FILLERS = frozenset({"um", "umm", "uh", "uhh", "uhm", "er", "erm", "hmm", "hm", "mm", "ah"})
SUBJECTS = frozenset({"i", "we", "they", "he", "she", "i'm", "i'd", "i'll", "i've", "we're", "they're", "it's",
                      "there's", "that's", "he's", "she's"})
COPULAS = frozenset({"is", "are", "was", "were"})
PRONOUNS = frozenset({"i", "you", "he", "she", "it", "we", "they", "that", "this", "there", "what", "who",
                      "which", "where", "here", "these", "those"})

NOT_VERBS = frozenset({
    "me", "you", "him", "her", "it", "us", "them", "monday", "tuesday", "wednesday", "thursday", "friday",
    "saturday", "sunday", "today", "tomorrow", "tonight", "noon", "midnight", "january", "february", "march",
    "april", "may", "june", "july", "august", "september", "october", "november", "december", "morning",
    "afternoon", "evening", "night", "work", "school", "bed", "hospital", "church",
})
"""Words after a final "to" that make it a preposition with its object ("change it to Monday", "send it to me"),
not an infinitive still missing its object ("I wanted to ask")."""

QUESTION_WORDS = frozenset({"when", "what", "where", "who", "whom", "which", "why", "how", "whose"})
AUXILIARIES = frozenset({
    "can", "could", "do", "does", "did", "is", "are", "was", "were", "will", "would", "should", "shall", "may",
    "might", "have", "has", "had", "am", "must",
})
OPENERS = FILLERS | frozenset({"so", "okay", "ok", "well", "and", "oh", "hi", "hello", "yes", "yeah", "no",
                               "please", "sorry", "also", "then", "now", "right"})
"""Words a caller puts in front of a sentence ("so, when is ..."): skipped when looking for the question word."""

MIN_QUESTION_WORDS = 3
"""A question of fewer words ("is it", "can you") is not judged finished by its shape."""

_WORD = re.compile(r"[a-z0-9']+")
_ALL_CLASSES: tuple[tuple[frozenset[str], WordClass], ...] = (
    (FILLERS, WordClass.FILLER), (ARTICLES, WordClass.ARTICLE), (POSSESSIVES, WordClass.POSSESSIVE),
    (CONJUNCTIONS, WordClass.CONJUNCTION), (PREPOSITIONS, WordClass.PREPOSITION), (SUBJECTS, WordClass.SUBJECT),
)
_OPEN_CLASSES = frozenset({WordClass.PREPOSITION, WordClass.ARTICLE, WordClass.POSSESSIVE, WordClass.CONJUNCTION,
                           WordClass.FILLER})


def words_of(transcripts: list[str] | tuple[str, ...]) -> list[str]:
    """The turn's words, lower case, without punctuation (``I'd`` stays one word)."""
    return _WORD.findall(" ".join(transcripts).lower().replace("\u2019", "'"))


def word_class(words: list[str]) -> WordClass:
    """The class of the turn's last word (``words`` as ``words_of`` returns them)."""
    if not words:
        return WordClass.NONE
    last = words[-1]
    for lexicon, cls in _ALL_CLASSES:
        if last in lexicon:
            return cls
    if len(words) >= 2 and words[-2] == "to" and last not in NOT_VERBS and not last[0].isdigit():
        return WordClass.INFINITIVE
    if last in COPULAS and len(words) >= 2 and words[-2] not in PRONOUNS:
        return WordClass.COPULA
    return WordClass.CONTENT


def is_question(words: list[str]) -> bool:
    """Opens (after fillers and "so", "okay"...) with a question word or an inverted auxiliary ("can I")."""
    for word in words:
        if word in OPENERS:
            continue
        return word in QUESTION_WORDS or word in AUXILIARIES
    return False


@dataclass(frozen=True, slots=True)
class Delays:
    """The endpointing delays the session is given (livekit's ``min_delay`` and ``max_delay``)."""

    min_delay: float
    max_delay: float


@dataclass(frozen=True, slots=True)
class TurnPolicy:
    """The settings the decision turns into delays. ``grammar=False``: the words are not read (only the number
    check's signal counts), as before this module existed."""

    min_delay: float
    max_delay: float
    unfinished_pause: float
    number_pause: float
    grammar: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.min_delay <= self.max_delay <= self.unfinished_pause:
            raise ValueError("delays must satisfy 0 <= min_delay <= max_delay <= unfinished_pause")
        if self.number_pause < self.max_delay:
            raise ValueError("number_pause must not be shorter than max_delay")

    def delays(self, verdict: Verdict, *, number: bool = False) -> Delays:
        if verdict is Verdict.END_NOW:
            return Delays(self.min_delay, self.min_delay)
        if verdict is Verdict.WAIT_MORE:
            return Delays(self.max_delay, self.max_delay)
        if verdict is Verdict.WAIT_LONGEST:
            pause = self.number_pause if number else self.unfinished_pause
            return Delays(pause, pause)
        return Delays(self.min_delay, self.max_delay)


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str
    """Which signal decided, in a few words (no words of the caller's)."""
    delays: Delays
    last_word: WordClass
    question: bool
    words: int
    number: NumberSignal

    def describe(self) -> str:
        """The log line's fields: signals, verdict and delays; word classes and counts, never the words."""
        return (f"verdict={self.verdict.value} reason={self.reason!r} last_word={self.last_word.value} "
                f"question={'yes' if self.question else 'no'} words={self.words} number={self.number.value} "
                f"delays={self.delays.min_delay:.2f}/{self.delays.max_delay:.2f}s")


def decide(transcripts: list[str] | tuple[str, ...], policy: TurnPolicy,
           number: NumberSignal = NumberSignal.NOT_ASKED) -> Decision:
    """The verdict on a turn whose final transcripts so far are ``transcripts`` (module docstring)."""
    words = words_of(transcripts)
    last = word_class(words)
    question = is_question(words)

    def done(verdict: Verdict, reason: str) -> Decision:
        return Decision(verdict, reason, policy.delays(verdict, number=reason.startswith("number")), last,
                        question, len(words), number)

    if number is NumberSignal.COMPLETE:
        return done(Verdict.END_NOW, "number complete")
    if number is NumberSignal.PARTIAL:
        return done(Verdict.WAIT_LONGEST, "number partial")
    if not policy.grammar or last is WordClass.NONE:
        return done(Verdict.MODEL, "words not read" if not policy.grammar else "no words")
    if last in _OPEN_CLASSES:
        return done(Verdict.WAIT_LONGEST, f"ends in a {last.value}")
    if last in (WordClass.INFINITIVE, WordClass.SUBJECT, WordClass.COPULA):
        return done(Verdict.WAIT_MORE, f"ends in a {last.value}")
    if question and len(words) >= MIN_QUESTION_WORDS:
        return done(Verdict.END_NOW, "question ends in a content word")
    return done(Verdict.MODEL, "statement ends in a content word")
