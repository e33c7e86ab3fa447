"""Fire-and-forget coroutines from synchronous room callbacks, without losing their failures.

livekit's ``Room.on(...)`` callbacks are synchronous: awaiting inside them is impossible and a raise
would surface in the FFI event loop far from its cause. So a callback only calls ``TaskScheduler.spawn``,
which keeps a strong reference to the task (asyncio holds weak ones: an unreferenced task can be garbage
collected mid-flight) and logs any exception with the room and participant it belongs to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger("gocare.worker")


class TaskScheduler:
    """Owns the background tasks of one job."""

    def __init__(self, *, room_name: str | None = None, log: logging.Logger | None = None) -> None:
        self.room_name = room_name
        self._log = log or logger
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failures = 0

    def spawn(self, coro: Coroutine[Any, Any, Any], *, what: str, participant: str | None = None) -> asyncio.Task[Any] | None:
        """Schedule ``coro``; never raises (no running loop -> the coroutine is closed and the problem logged)."""
        try:
            task = asyncio.get_running_loop().create_task(coro, name=f"gocare:{what}")
        except RuntimeError as error:
            coro.close()
            self.failures += 1
            self._log.error(
                "could not schedule %s (room=%s participant=%s): %s", what, self.room_name, participant, error,
                extra={"room": self.room_name, "participant": participant},
            )
            return None
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, what=what, participant=participant))
        return task

    def _done(self, task: asyncio.Task[Any], *, what: str, participant: str | None) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        self.failures += 1
        self._log.error(
            "%s failed (room=%s participant=%s): %s: %s", what, self.room_name, participant, type(error).__name__, error,
            exc_info=(type(error), error, error.__traceback__),
            extra={"room": self.room_name, "participant": participant},
        )

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for what is in flight (tests, job shutdown); cancel what outlives ``timeout``."""
        if not self._tasks:
            return
        done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
