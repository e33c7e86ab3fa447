"""Mobile-number verification against a directory of 100,000 registered users on SQLite.

What the agent does on every attempt, timed per call: ``UserDirectory.verify(user_id, e164)`` (the number
must be that user's own), the lookup without a user id (the number identifies the user), a miss (someone
else's number), and ``averify`` (the same query through ``asyncio.to_thread``, as the agent calls it). Also
the speech -> E.164 normalisation that precedes each check. Target: p99 <= 2 ms for ``verify``.

    python bench/bench_verify.py                 # 100,000 users, 5,000 checks per case
    python bench/bench_verify.py --users 20000 --checks 2000 --db /tmp/users.db

The database is a temporary SQLite file unless --db is given (WAL mode, as the application opens it).
Prints a Markdown table; exit code 1 when the verify p99 misses the target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gocare_voice.conversation.directory import UserDirectory
from gocare_voice.conversation.phone import parse_phone_number

TARGET_P99_MS = 2.0


def make_numbers(count: int, rng: random.Random) -> list[str]:
    """Distinct valid Indian mobile numbers (+91 followed by 10 digits starting 9/8/7)."""
    numbers: set[str] = set()
    while len(numbers) < count:
        numbers.add(f"+91{rng.choice('987')}{rng.randrange(10**9):09d}")
    return sorted(numbers)


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def time_calls(call: Callable[[int], object], checks: int, *, warmup: int = 200) -> list[float]:
    for i in range(warmup):
        call(i)
    samples = []
    for i in range(checks):
        start = time.perf_counter_ns()
        call(i)
        samples.append((time.perf_counter_ns() - start) / 1e6)
    samples.sort()
    return samples


async def time_async_calls(call: Callable[[int], object], checks: int, *, warmup: int = 200) -> list[float]:
    for i in range(warmup):
        await call(i)  # type: ignore[misc]  # both callables are awaited the same way
    samples = []
    for i in range(checks):
        start = time.perf_counter_ns()
        await call(i)  # type: ignore[misc]  # both callables are awaited the same way
        samples.append((time.perf_counter_ns() - start) / 1e6)
    samples.sort()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--checks", type=int, default=5_000)
    parser.add_argument("--db", type=Path, default=None, help="SQLite file to use (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="gocare-bench-")
        db_path = Path(tmp.name) / "users.db"
    else:
        db_path = args.db
        if db_path.exists():
            sys.exit(f"{db_path} exists; give a new file")

    numbers = make_numbers(args.users, rng)
    users = [(f"user-{i:06d}", f"User {i}", number) for i, number in enumerate(numbers)]
    directory = UserDirectory(url=f"sqlite:///{db_path}", region="IN")
    started = time.perf_counter()
    directory.add_many(users)
    load_seconds = time.perf_counter() - started
    assert directory.count() == args.users

    picks = [users[rng.randrange(args.users)] for _ in range(args.checks + 200)]
    others = [users[rng.randrange(args.users)] for _ in range(args.checks + 200)]

    def own(i: int) -> object:
        uid, _, phone = picks[i]
        found = directory.verify(uid, phone)
        assert found is not None
        return found

    def by_number(i: int) -> object:
        found = directory.verify(None, picks[i][2])
        assert found is not None
        return found

    def someone_elses(i: int) -> object:
        uid, other = picks[i][0], others[i][2]
        found = directory.verify(uid, other)
        assert found is None or found.user_id == uid
        return found

    def normalise(i: int) -> object:
        digits = picks[i][2][3:]
        spoken = " ".join(("zero one two three four five six seven eight nine".split())[int(d)] for d in digits)
        return parse_phone_number(spoken, region="IN").e164

    async def averify(i: int) -> object:
        uid, _, phone = picks[i]
        return await directory.averify(uid, phone)

    results = {
        "verify(user_id, number) - hit": time_calls(own, args.checks),
        "verify(None, number) - lookup": time_calls(by_number, args.checks),
        "verify(user_id, other's number) - miss": time_calls(someone_elses, args.checks),
        "averify (asyncio.to_thread)": asyncio.run(time_async_calls(averify, args.checks)),
        "spoken words -> E.164 (phone.py)": time_calls(normalise, args.checks),
    }
    directory.close()
    db_size = db_path.stat().st_size
    if tmp is not None:
        tmp.cleanup()

    print(f"# Number verification: {args.users:,} users on SQLite, {args.checks:,} checks per case\n")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), "
          f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
    print(f"load: {args.users:,} users in {load_seconds:.2f} s; database file {db_size / 1e6:.1f} MB\n")
    print("| case | p50 (ms) | p99 (ms) | max (ms) | mean (ms) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, samples in results.items():
        print(f"| {name} | {percentile(samples, 0.50):.3f} | {percentile(samples, 0.99):.3f} | "
              f"{samples[-1]:.3f} | {statistics.fmean(samples):.3f} |")
    p99 = percentile(results["verify(user_id, number) - hit"], 0.99)
    verdict = "meets" if p99 <= TARGET_P99_MS else "MISSES"
    print(f"\nverify p99 {p99:.3f} ms {verdict} the target of {TARGET_P99_MS} ms")
    return 0 if p99 <= TARGET_P99_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
