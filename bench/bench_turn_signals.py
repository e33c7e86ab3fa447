"""What each end-of-turn signal says about the turn-taking corpus, offline: no rooms, the corpus audio straight in.

For every half sentence of bench/turn_corpus.py (the words before the pause, each in the voice the corpus gives it)
and every complete question, at the moment livekit-agents asks (0.2 s of silence after the words):

- ``livekit``: livekit-agents 1.8's local end-of-turn model (``livekit.local_inference.EOT``, the
  ``turn-detector-v1-mini`` our worker runs): the last 1.2 s of 16 kHz audio in, P(turn ended) out, "finished" at
  livekit's English threshold (0.36). It hears the audio only: no words, no chat context;
- ``smart turn`` (with ``--smart-turn``): pipecat's Smart Turn v3.2 (the ONNX file in the ``pipecat-ai`` wheel, its
  own Whisper log-mel features), the last 8 s in, "finished" above 0.5. Not a dependency of ours: install the wheel
  somewhere apart (``pip install --no-deps --target DIR pipecat-ai loguru wait_for2``) and put DIR on PYTHONPATH;
- ``words``: our decision (src/gocare_voice/conversation/turn_decision.py) on the part's transcript.

Prints, per shape, how many halves each signal calls finished (a wrong "finished" is an early reply whenever the
caller pauses longer than the short wait) and how many questions (a wrong "not finished" costs the long wait), and
each model's CPU time per prediction (one thread). Run: ``python bench/bench_turn_signals.py [--smart-turn]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from turn_corpus import RATE, Trial, pause_trials, question_trials, render  # noqa: E402

from gocare_voice.conversation.turn_decision import TurnPolicy, Verdict, decide  # noqa: E402

MODEL_RATE = 16000
SILENCE_AFTER = 0.2
"""livekit-agents asks its model once the VAD has counted 0.2 s of silence (``MIN_SILENCE_DURATION_MS``)."""
LIVEKIT_THRESHOLD = 0.36
"""livekit-agents' ``unlikely_threshold`` for English with the local model (``inference/eot/languages.py``)."""
SMART_TURN_THRESHOLD = 0.5
POLICY = TurnPolicy(min_delay=0.3, max_delay=1.2, unfinished_pause=2.0, number_pause=2.5)


def to_model_rate(pcm48: bytes) -> np.ndarray:
    """48 kHz s16le -> 16 kHz int16, with livekit's own resampler (what the turn detector stream uses)."""
    from livekit import rtc

    resampler = rtc.AudioResampler(input_rate=RATE, output_rate=MODEL_RATE, num_channels=1,
                                   quality=rtc.AudioResamplerQuality.QUICK)
    frames = resampler.push(rtc.AudioFrame(pcm48, RATE, 1, len(pcm48) // 2)) + resampler.flush()
    return np.concatenate([np.frombuffer(bytes(f.data), dtype=np.int16) for f in frames])


def livekit_model() -> Callable[[np.ndarray], float]:
    from livekit.local_inference import EOT, EOT_MAX_SAMPLES

    eot = EOT()

    def predict(pcm: np.ndarray) -> float:
        return float(eot.predict(pcm[-EOT_MAX_SAMPLES:]))

    return predict


def smart_turn_model() -> Callable[[np.ndarray], float]:
    import importlib.resources

    import onnxruntime as ort
    from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features

    path = importlib.resources.files("pipecat.audio.turn.smart_turn.data").joinpath("smart-turn-v3.2-cpu.onnx")
    options = ort.SessionOptions()
    options.inter_op_num_threads = options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options)
    window = 8 * MODEL_RATE

    def predict(pcm: np.ndarray) -> float:
        audio = (pcm.astype(np.float32) / 32768.0)[-window:]
        audio = np.pad(audio, (window - len(audio), 0))
        features = compute_whisper_log_mel_features(audio, do_normalize=True)[None].astype(np.float32)
        return float(session.run(None, {"input_features": features})[0][0].item())

    return predict


def first_part(trial: Trial) -> np.ndarray:
    """The trial's first part (all of a question), then ``SILENCE_AFTER`` of silence, at 16 kHz."""
    rendered = render(trial)
    end = int(rendered.part_ends[0] * RATE) * 2
    speech = to_model_rate(rendered.pcm[:end])
    return np.concatenate([speech, np.zeros(int(MODEL_RATE * SILENCE_AFTER), dtype=np.int16)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smart-turn", action="store_true", help="also pipecat's Smart Turn v3.2 (see above)")
    parser.add_argument("--quick", action="store_true", help="every third half sentence and question")
    args = parser.parse_args()

    seen: set[tuple[str, str]] = set()
    halves: list[Trial] = []
    for trial in pause_trials():  # each half sentence once per voice the corpus gives it
        key = (trial.parts[0], trial.voice.name)
        if key not in seen:
            seen.add(key)
            halves.append(trial)
    questions = question_trials()
    if args.quick:
        halves, questions = halves[::3], questions[::3]

    models: dict[str, tuple[Callable[[np.ndarray], float], float]] = {"livekit": (livekit_model(), LIVEKIT_THRESHOLD)}
    if args.smart_turn:
        models["smart turn"] = (smart_turn_model(), SMART_TURN_THRESHOLD)
    costs: dict[str, list[float]] = defaultdict(list)
    # shape -> signal -> [finished, total]
    table: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    probabilities: dict[tuple[str, str], list[float]] = defaultdict(list)
    for trial in halves + questions:
        audio = first_part(trial)
        shape = "question" if trial.kind == "question" else trial.shape
        for name, (predict, threshold) in models.items():
            started = time.process_time()
            p = predict(audio)
            costs[name].append(time.process_time() - started)
            probabilities[(shape if shape == "question" else "half", name)].append(p)
            cell = table[shape][name]
            cell[0] += p >= threshold
            cell[1] += 1
        verdict = decide([trial.transcripts[0]], POLICY).verdict
        cell = table[shape]["words"]
        cell[0] += verdict is Verdict.END_NOW  # the words call it finished: the short wait whatever the sound
        cell[1] += 1
        cell = table[shape]["words (long wait)"]
        cell[0] += verdict in (Verdict.WAIT_MORE, Verdict.WAIT_LONGEST)
        cell[1] += 1

    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    print(f"# python bench/bench_turn_signals.py {' '.join(sys.argv[1:])}")
    print(f"# {platform.node()}, {os.cpu_count()} CPUs ({model}), load {os.getloadavg()[0]:.1f}; "
          f"{len(halves)} half sentences, {len(questions)} questions; {SILENCE_AFTER} s of silence after the words")
    signals = [*models, "words", "words (long wait)"]
    print("\nCalled finished (model: P >= its threshold; words: verdict end_now), and the words' long waits "
          "(wait_more / wait_longest), by the shape of the half sentence\n")
    print("| shape | " + " | ".join(signals) + " |")
    print("| --- |" + " ---: |" * len(signals))
    half_totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for shape in sorted(table, key=lambda s: (s == "question", s)):
        cells = []
        for signal in signals:
            finished, total = table[shape][signal]
            cells.append(f"{finished}/{total}")
            if shape != "question":
                half_totals[signal][0] += finished
                half_totals[signal][1] += total
        if shape == "question":
            print("| all halves | " + " | ".join(f"{a}/{b}" for a, b in (half_totals[s] for s in signals)) + " |")
        print(f"| {shape} | " + " | ".join(cells) + " |")
    print("\nProbabilities, p10 / p50 / p90\n")
    print("| model | half sentences | complete questions |")
    print("| --- | ---: | ---: |")
    for name in models:
        row = []
        for kind in ("half", "question"):
            values = sorted(probabilities[(kind, name)])
            row.append(" / ".join(f"{values[int(q * (len(values) - 1))]:.2f}" for q in (0.1, 0.5, 0.9)))
        print(f"| {name} | {row[0]} | {row[1]} |")
    print("\nCPU time per prediction (one thread), ms: p50 / p95\n")
    for name, values in costs.items():
        values.sort()
        print(f"- {name}: {statistics.median(values) * 1000:.0f} / {values[int(0.95 * (len(values) - 1))] * 1000:.0f}")


if __name__ == "__main__":
    main()
