"""The turn-taking corpus of bench/bench_turn_taking.py: what the caller says, how, and what the STT writes.

Three kinds of trial, each one turn of a call:

- ``pause``: (112) a sentence whose first half is plainly unfinished ("I wanted to ask about" ... "my appointment"),
  said with one pause of ``gap`` seconds at the cut. ``shape`` names the last word before the pause (``to``,
  ``about``, ``and``, ``the``, ``because``, ``my``, ``for``, ``with``, ``um``) or ``list`` (a list in progress). An
  agent that answers in the pause has answered half a sentence.
- ``question``: (50) a complete question, no pause: the reply latency after a finished turn.
- ``number``: the registered number said in groups with pauses, during the number check (the first turn of every
  call; a call's other turns come after the caller is verified).

The caller's voices are espeak-ng's (voices and variants at several speeds) and flite's (Debian's ``flite``;
diphone and unit-selection voices whose prosody is closer to a person's). A sentence is synthesized whole, so the
words before a pause keep the rising, unfinished melody of a sentence that goes on (espeak-ng: an SSML ``<break>``
at the cut; flite: a comma, where it puts a short phrase break), and the silence at the cut is then set to exactly
``gap`` seconds. The STT stand-in (the scripted Deepgram) is scripted with each part's exact words
(``transcripts``), so the agent sees precisely what was said: nothing here can be a misrecognition.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 48000
"""The app's microphone rate (tests/harness/app_client.py)."""

SILENCE_RMS = 60.0
"""Below this a 10 ms window is silence: the scripted Deepgram's own threshold (``silence_rms``)."""

STT_SPLIT = 0.3
"""Seconds of silence after which the benchmark's scripted Deepgram ends an utterance. Every gap of the corpus is
longer, so each part reaches the agent as a final transcript of its own, as real Deepgram (asked by the plugin for
25 ms endpointing) sends one at such a pause; each part's own silences must stay well under it."""


@dataclass(frozen=True)
class Voice:
    name: str
    engine: str  # "espeak" | "flite"
    voice: str
    speed: float  # espeak: words per minute; flite: duration_stretch (> 1 is slower)


VOICES: tuple[Voice, ...] = (
    Voice("espeak-us", "espeak", "en-us", 175),
    Voice("espeak-us-f3-slow", "espeak", "en-us+f3", 150),
    Voice("espeak-gb-m3-fast", "espeak", "en-gb+m3", 200),
    Voice("espeak-rp-f2", "espeak", "en-gb-x-rp+f2", 165),
    Voice("espeak-scot-m7", "espeak", "en-gb-scotland+m7", 180),
    Voice("flite-slt", "flite", "slt", 1.0),
    Voice("flite-slt-slow", "flite", "slt", 1.2),
    Voice("flite-awb", "flite", "awb", 1.0),
    Voice("flite-rms-fast", "flite", "rms", 0.9),
    Voice("flite-kal16", "flite", "kal16", 1.0),
)

PAUSE_SENTENCES: tuple[tuple[str, str, str], ...] = (
    # (shape, the unfinished first half, the rest)
    ("to", "I wanted to", "ask about my appointment"),
    ("to", "I would like to", "speak with my doctor"),
    ("to", "can you tell me how to", "reset my password"),
    ("about", "I wanted to ask about", "my appointment"),
    ("about", "I have a question about", "my last bill"),
    ("about", "I am worried about", "my blood test results"),
    ("and", "I need my prescription and", "a new appointment"),
    ("and", "can you check my records and", "send them to my doctor"),
    ("and", "my daughter and", "I both need a checkup"),
    ("the", "when does the", "clinic open tomorrow"),
    ("the", "I lost the", "letter you sent me"),
    ("the", "can I change the", "time of my visit"),
    ("because", "I am calling because", "my appointment was cancelled"),
    ("because", "I could not come yesterday because", "my car broke down"),
    ("because", "I need a new time because", "I am travelling next week"),
    ("my", "I would like to cancel my", "appointment on Friday"),
    ("my", "can you check my", "prescription status"),
    ("my", "I think I forgot my", "password for the app"),
    ("for", "I am looking for", "a doctor near my home"),
    ("for", "I need a referral for", "a heart specialist"),
    ("for", "is there a free slot for", "next Tuesday morning"),
    ("with", "could you help me with", "my insurance form"),
    ("with", "I need some help with", "my medication"),
    ("um", "I wanted um", "to book a visit"),
    ("um", "can you um", "check my booking"),
    ("um", "so the thing is um", "my tablets ran out"),
    ("list", "I take aspirin metformin and", "vitamin D every day"),
    ("list", "I have a cough a fever and", "a sore throat"),
)

GAPS: tuple[float, ...] = (0.4, 0.6, 0.8, 1.0)

QUESTIONS: tuple[str, ...] = (
    "when is my next appointment",
    "what time does the clinic open tomorrow",
    "can I cancel my appointment on Friday",
    "do I need to fast before my blood test",
    "where is the nearest pharmacy",
    "is my prescription ready",
    "can I see a different doctor",
    "how much do I owe for my last visit",
    "what are the visiting hours",
    "can you send me my test results",
    "is the clinic open on Sunday",
    "how long is the waiting time today",
    "can I book a video call with my doctor",
    "what should I bring to my appointment",
    "do you have parking at the hospital",
    "can I change my appointment to Monday",
    "who is my doctor",
    "how do I reset my password",
    "is my insurance accepted",
    "when will my results be ready",
    "can I get a flu shot this week",
    "what is the address of the clinic",
    "do I need a referral for a specialist",
    "can my daughter come with me",
    "how do I renew my prescription",
)

REGISTERED_NUMBER = "98765 43210"
"""John's registered number (tests/room/conftest.py's ``USERS``)."""

NUMBER_GROUPINGS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    # (spoken groups, what the STT writes for each group)
    (("nine eight seven six five", "four three two one zero"), ("98765", "43210")),
    (("nine eight seven", "six five four", "three two one zero"), ("987", "654", "3210")),
    (("nine eight seven six", "five four three", "two one zero"), ("9876", "543", "210")),
)
NUMBER_GAPS: tuple[float, ...] = (0.6, 0.9, 1.2)


@dataclass(frozen=True)
class Trial:
    id: str
    kind: str  # "pause" | "question" | "number"
    shape: str  # pause: the word before the pause; question: "question"; number: "3 groups" etc.
    parts: tuple[str, ...]  # what is said, one string per stretch of speech
    transcripts: tuple[str, ...]  # what the scripted STT writes for each part, in order
    gap: float  # seconds of silence between parts (0 for a question)
    voice: Voice

    @property
    def text(self) -> str:
        return " ".join(self.transcripts)


def _written(parts: tuple[str, ...], *, question: bool) -> tuple[str, ...]:
    """What the STT writes: the first letter capitalised, an end mark on the last part only (real Deepgram
    punctuates a final it closes; the room test scripts the same)."""
    out = list(parts)
    out[0] = out[0][0].upper() + out[0][1:]
    out[-1] = out[-1] + ("?" if question else ".")
    return tuple(out)


def pause_trials() -> list[Trial]:
    """Each sentence at every gap, the voice moving on at each trial so that each sentence meets several voices
    and each voice every gap."""
    trials = []
    for i, (shape, first, rest) in enumerate(PAUSE_SENTENCES):
        for j, gap in enumerate(GAPS):
            voice = VOICES[(i * 3 + j * 7) % len(VOICES)]
            question = first.startswith(("can", "when", "is ", "could"))
            trials.append(Trial(f"p{i:02d}-{int(gap * 1000)}", "pause", shape, (first, rest),
                                _written((first, rest), question=question), gap, voice))
    return trials


def question_trials() -> list[Trial]:
    """Every question in two voices."""
    trials = []
    for i, question in enumerate(QUESTIONS):
        for j in range(2):
            voice = VOICES[(i + j * 5) % len(VOICES)]
            trials.append(Trial(f"q{i:02d}-{j}", "question", "question", (question,),
                                _written((question,), question=True), 0.0, voice))
    return trials


def number_trial(index: int) -> Trial:
    """The number turn of the ``index``-th call: groupings, gaps and voices in turn."""
    spoken, written = NUMBER_GROUPINGS[index % len(NUMBER_GROUPINGS)]
    gap = NUMBER_GAPS[(index // len(NUMBER_GROUPINGS)) % len(NUMBER_GAPS)]
    voice = VOICES[(index * 7) % len(VOICES)]
    return Trial(f"n{index:02d}", "number", f"{len(spoken)} groups", spoken, written, gap, voice)


def corpus(*, quick: bool = False) -> tuple[list[Trial], list[Trial]]:
    """(pause trials, question trials): 112 and 50. ``quick``: each sentence once (the gap moving on from one
    sentence to the next, so every gap and shape is there), 28 pauses, and ten questions."""
    pauses, questions = pause_trials(), question_trials()
    if quick:
        pauses = [t for k, t in enumerate(pauses) if k % len(GAPS) == (k // len(GAPS)) % len(GAPS)]
        questions = questions[::5]
    return pauses, questions


# --- audio -----------------------------------------------------------------------------------------


def _resample(wav: bytes) -> bytes:
    from scripted.audio_tools import resample_wav

    return resample_wav(wav, rate=RATE)


def _synthesize(text: str, voice: Voice, *, ssml: bool) -> bytes:
    if voice.engine == "espeak":
        espeak = shutil.which("espeak-ng")
        if espeak is None:
            raise RuntimeError("espeak-ng is not installed")
        args = [espeak, "-v", voice.voice, "-s", str(int(voice.speed)), "--stdout"]
        wav = subprocess.run([*args, *(["-m"] if ssml else []), text], check=True, capture_output=True,
                             timeout=30).stdout
        return _resample(wav)
    flite = shutil.which("flite")
    if flite is None:
        raise RuntimeError("flite is not installed (apt-get install flite): the corpus uses its voices")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run([flite, "-voice", voice.voice, "--setf", f"duration_stretch={voice.speed}", "-t", text,
                        "-o", str(out)], check=True, capture_output=True, timeout=30)
        return _resample(out.read_bytes())


def _silences(pcm: bytes, *, window: float = 0.01, shortest: float = 0.04) -> tuple[list[tuple[int, int]], int, int]:
    """(silent runs inside the speech as (start, end) sample indexes, first loud sample, end of last loud
    window)."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    step = int(RATE * window)
    count = len(samples) // step
    rms = np.sqrt(np.mean(samples[: count * step].reshape(count, step) ** 2, axis=1))
    loud = np.flatnonzero(rms >= SILENCE_RMS)
    if loud.size == 0:
        raise RuntimeError("the synthesizer produced no speech")
    first, last = int(loud[0]), int(loud[-1])
    runs, start = [], None
    for k in range(first, last + 1):
        if rms[k] < SILENCE_RMS and start is None:
            start = k
        elif rms[k] >= SILENCE_RMS and start is not None:
            if (k - start) * window >= shortest:
                runs.append((start * step, k * step))
            start = None
    return runs, first * step, (last + 1) * step


@dataclass(frozen=True)
class Rendered:
    pcm: bytes  # 48 kHz mono s16le, from the first loud sample to the last
    part_ends: tuple[float, ...]  # seconds into ``pcm`` where each part's speech ends
    longest_inner_silence: float  # the longest silence inside any part (must stay under STT_SPLIT)


@functools.lru_cache(maxsize=512)
def render(trial: Trial) -> Rendered:
    """The trial's audio: one synthesis of the whole utterance, each cut's silence set to exactly ``gap``."""
    voice, parts = trial.voice, trial.parts
    if len(parts) == 1:
        pcm = _synthesize(parts[0], voice, ssml=False)
        runs, first, end = _silences(pcm)
        inner = max(((b - a) / RATE for a, b in runs), default=0.0)
        speech = pcm[first * 2: end * 2]
        return Rendered(speech, (len(speech) / 2 / RATE,), inner)
    if voice.engine == "espeak":
        text = "<speak>" + ' <break time="1500ms"/> '.join(parts) + "</speak>"
    else:
        text = ", ".join(parts)
    pcm = _synthesize(text, voice, ssml=voice.engine == "espeak")
    runs, first, end = _silences(pcm)
    if voice.engine == "espeak":
        cuts = sorted(sorted(runs, key=lambda r: r[1] - r[0])[-(len(parts) - 1):])
    else:
        cuts = _nearest_cuts(runs, parts, first, voice)
    pieces, ends, position = [], [], 0
    samples_gap = int(round(trial.gap * RATE))
    for k, (start, stop) in enumerate([(first, cuts[0][0]), *[(cuts[i][1], cuts[i + 1][0])
                                                              for i in range(len(cuts) - 1)], (cuts[-1][1], end)]):
        piece = pcm[start * 2: stop * 2]
        if k:
            pieces.append(bytes(samples_gap * 2))
            position += samples_gap
        pieces.append(piece)
        position += len(piece) // 2
        ends.append(position / RATE)
    inner = max(((b - a) / RATE for a, b in runs if (a, b) not in cuts), default=0.0)
    return Rendered(b"".join(pieces), tuple(ends), inner)


def _nearest_cuts(runs: list[tuple[int, int]], parts: tuple[str, ...], first: int,
                  voice: Voice) -> list[tuple[int, int]]:
    """flite's comma breaks are short (~0.1 s), not always the longest silences: each cut is the silence nearest to
    where the same voice, saying the words up to the cut on their own, stops speaking."""
    cuts: list[tuple[int, int]] = []
    for k in range(1, len(parts)):
        prefix = _synthesize(", ".join(parts[:k]), voice, ssml=False)
        _runs, prefix_first, prefix_end = _silences(prefix)
        expected = first + (prefix_end - prefix_first)
        candidates = [r for r in runs if r not in cuts and r[0] > (cuts[-1][0] if cuts else 0)]
        if not candidates:
            raise RuntimeError(f"no pause found between the parts of {parts!r}")
        cuts.append(min(candidates, key=lambda r: abs(r[0] - expected)))
    return cuts
