"""Per-caller rate limit: a token bucket per key, in memory (one process).

Why a bucket and not a fixed window: a window lets a caller send twice the limit across a boundary; a bucket
allows a short burst of at most ``limit`` and then the steady rate. Memory stays bounded: when the table
grows past ``max_keys``, buckets that have refilled completely (idle callers) are dropped first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self, *, limit: int, period: float, max_keys: int = 50_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit <= 0 or period <= 0:
            raise ValueError("limit and period must be positive")
        self._capacity = float(limit)
        self._rate = limit / period
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str) -> float | None:
        """Take one token for ``key``: ``None`` when allowed, else the seconds to wait (for Retry-After)."""
        now = self._clock()
        tokens, last = self._buckets.get(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - last) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self._rate
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            self._prune(now)
        self._buckets[key] = (tokens - 1.0, now)
        return None

    def _prune(self, now: float) -> None:
        full = [k for k, (t, last) in self._buckets.items() if t + (now - last) * self._rate >= self._capacity]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self._max_keys:  # everyone is active: forget the oldest half
            for k, _ in sorted(self._buckets.items(), key=lambda kv: kv[1][1])[: len(self._buckets) // 2]:
                del self._buckets[k]


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
