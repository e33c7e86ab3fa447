"""Per-caller rate limit on the ``limits`` library: one budget per key, in this process or shared in Redis.

Strategy: sliding window counter. Like the token bucket it replaced, it lets a caller send at most ``limit``
requests in a burst and then settles to about ``limit`` per period (the previous window's hits weigh less as
the window slides, so one comes free every ``period / limit`` seconds, which is also what ``Retry-After``
says then); a fixed window would let a caller send twice the limit across a boundary. In Redis it is two
counters per key and one script call per request, where a moving window keeps a list of ``limit`` timestamps
per key. It is an approximation (it assumes the previous window's hits were spread evenly), which is fine
for a limit meant to stop floods and token guessing.

Storage: ``memory://`` uses the library's synchronous in-memory storage (no I/O: nothing to await, and about
4 us a request cheaper than its asyncio twin); every other URL uses the asyncio storage, so a slow Redis never
blocks the event loop. A storage that fails (down, timing out) does not fail the request: ``fail_mode`` open
lets it through (a warning at most once a minute), closed refuses it with 503; for ``RETRY_DOWN_AFTER``
seconds after a failure the storage is not asked again, so a Redis that hangs costs one timeout per second,
not one per request.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from gocare_voice.settings import RateLimitFailMode

if TYPE_CHECKING:
    from limits import RateLimitItem

    from gocare_voice.settings import Settings

log = logging.getLogger("gocare.token_service.rate_limit")

STORAGE_TIMEOUT = 0.5
"""Seconds to connect to, and to wait for an answer from, a shared storage."""
RETRY_DOWN_AFTER = 1.0
WARN_EVERY = 60.0


class Outcome(Enum):
    allowed = "allowed"
    limited = "limited"
    unavailable = "unavailable"
    """The storage could not answer and ``fail_mode`` is closed."""


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    retry_after: int = 0
    """Whole seconds for ``Retry-After`` (at least 1) when not allowed."""


ALLOWED = Verdict(Outcome.allowed)


def redacted_url(url: str) -> str:
    """The storage URL for a log line: a password in it becomes ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    user = f"{parts.username}:***@" if parts.username else ":***@"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, f"{user}{host}{port}", parts.path, "", ""))


def retry_after_seconds(reset_at: float, now: float) -> int:
    return max(1, math.ceil(reset_at - now))


class RateLimiter:
    """``await charge(key)`` for every request; built by ``from_settings`` (None when the limit is off)."""

    def __init__(self, *, item: RateLimitItem, storage_url: str, fail_mode: RateLimitFailMode,
                 clock: Any = time.monotonic) -> None:
        from limits import storage, strategies
        from limits.aio import strategies as aio_strategies

        self._item = item
        self.storage_url = storage_url
        self._fail_mode = fail_mode
        self._clock = clock
        self._down_until = 0.0
        self._last_warning = -math.inf
        self._memory = storage_url.startswith("memory://")
        if self._memory:
            self._sync = strategies.SlidingWindowCounterRateLimiter(storage.storage_from_string(storage_url))
        else:
            from limits.aio.storage import Storage as AsyncStorage

            made = storage.storage_from_string(
                f"async+{storage_url}", implementation="redispy", wrap_exceptions=True,
                socket_timeout=STORAGE_TIMEOUT, socket_connect_timeout=STORAGE_TIMEOUT,
            )
            assert isinstance(made, AsyncStorage)  # an ``async+`` URL always gives one
            self._async_storage = made
            self._async = aio_strategies.SlidingWindowCounterRateLimiter(self._async_storage)

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter | None:
        rate = settings.rate
        if rate is None:
            return None
        from limits import RateLimitItemPerSecond

        count, period = rate
        return cls(item=RateLimitItemPerSecond(count, int(period)), storage_url=settings.rate_limit_storage,
                   fail_mode=settings.rate_limit_fail_mode)

    async def charge(self, key: str) -> Verdict:
        """One request for ``key``."""
        if self._memory:
            if self._sync.hit(self._item, key):
                return ALLOWED
            stats = self._sync.get_window_stats(self._item, key)
            return Verdict(Outcome.limited, retry_after_seconds(stats.reset_time, time.time()))
        if self._down_until and self._clock() < self._down_until:
            return self._storage_failed(None)
        try:
            if await self._async.hit(self._item, key):
                self._down_until = 0.0
                return ALLOWED
            stats = await self._async.get_window_stats(self._item, key)
        except Exception as error:  # noqa: BLE001 - StorageError, or whatever else the client raises
            return self._storage_failed(error)
        self._down_until = 0.0
        return Verdict(Outcome.limited, retry_after_seconds(stats.reset_time, time.time()))

    def _storage_failed(self, error: Exception | None) -> Verdict:
        now = self._clock()
        if error is not None:
            self._down_until = now + RETRY_DOWN_AFTER
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            cause = error.__cause__ or error if error is not None else None
            why = f" ({type(cause).__name__}: {str(cause)[:200]})" if cause is not None else ""
            action = ("requests are let through without a limit (GOCARE_RATE_LIMIT_FAIL_MODE=open)"
                      if self._fail_mode is RateLimitFailMode.open
                      else "requests are refused with 503 (GOCARE_RATE_LIMIT_FAIL_MODE=closed)")
            log.warning("rate-limit storage %s is not answering%s: %s; this warning repeats at most once a minute",
                        redacted_url(self.storage_url), why, action)
        if self._fail_mode is RateLimitFailMode.open:
            return ALLOWED
        return Verdict(Outcome.unavailable, math.ceil(RETRY_DOWN_AFTER) + 1)

    async def check_storage(self) -> str | None:
        """At start: None when the storage answers, else the one line to log."""
        if self._memory:
            return None
        try:
            ok = await self._async_storage.check()
        except Exception as error:  # noqa: BLE001
            ok, problem = False, f"{type(error).__name__}: {str(error)[:200]}"
        else:
            problem = "no answer to PING"
        if ok:
            return None
        action = ("requests are let through without a limit until it answers (GOCARE_RATE_LIMIT_FAIL_MODE=open)"
                  if self._fail_mode is RateLimitFailMode.open
                  else "requests are refused with 503 until it answers (GOCARE_RATE_LIMIT_FAIL_MODE=closed)")
        return f"GOCARE_RATE_LIMIT_STORAGE={redacted_url(self.storage_url)} cannot be reached ({problem}); {action}"
