"""Decode speed of the voice upload, per format, as a multiple of real time (target >= 200x).

A spoken sentence (espeak-ng) looped to 30 s and encoded by the ffmpeg binary into each upload format, then
decoded the way the service does it (``gocare_voice.audio.decode_audio``: PyAV, in memory, resampled to
16 kHz mono s16, with the truncation and duration checks). One process, one thread, all formats side by
side in the same run. Needs espeak-ng and ffmpeg (to make the recordings only).

    .venv/bin/python bench/bench_decode.py [--seconds 30] [--repeat 7]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from gocare_voice.audio import decode_audio
from scripted.recordings import make_recordings, tools_missing

FORMATS = ["webm", "webm_stream", "m4a", "m4a_faststart", "wav", "mp3", "ogg", "ogg_vorbis"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="recording length (default 30)")
    parser.add_argument("--repeat", type=int, default=7, help="decodes per format; the median is reported")
    args = parser.parse_args()
    if not 1 <= args.repeat <= 100 or not 1 <= args.seconds <= 600:
        parser.error("--repeat must be 1..100 and --seconds 1..600")
    reason = tools_missing()
    if reason:
        print(f"cannot make recordings: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        recs = make_recordings(Path(tmp), repeat_to_seconds=args.seconds, formats=FORMATS, stem="bench")
        print(f"# decode speed, {recs.seconds:.1f} s recording, median of {args.repeat}, "
              f"{platform.processor() or platform.machine()} / Python {platform.python_version()}")
        print(f"{'format':<15}{'bytes':>10}{'median ms':>11}{'x realtime':>12}{'best ms':>9}{'best x':>8}"
              f"{'decoded s':>11}")
        worst = float("inf")
        for name in FORMATS:
            data = recs.bytes(name)
            decode_audio(data, max_seconds=600)  # warm-up (codec tables)
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                decoded = decode_audio(data, max_seconds=600)
                times.append(time.perf_counter() - started)
            median = statistics.median(times)
            speed = decoded.duration / median
            worst = min(worst, speed)
            best = min(times)
            print(f"{name:<15}{len(data):>10}{median * 1000:>11.1f}{speed:>11.0f}x{best * 1000:>9.1f}"
                  f"{decoded.duration / best:>7.0f}x{decoded.duration:>11.2f}")
        print(f"slowest format (median): {worst:.0f}x real time (target >= 200x): {'PASS' if worst >= 200 else 'FAIL'}")
        print("(one decode on one core; the machine's other load shows as the gap between median and best)")
        return 0 if worst >= 200 else 1


if __name__ == "__main__":
    raise SystemExit(main())
