"""Decode uploads and encode replies in worker processes, not threads of the web server.

Why processes: PyAV releases the GIL only inside each FFmpeg call, and an Opus recording is 50 calls per
second of audio, so decoding in threads is GIL-bound. Measured on 2 cores (bench/bench_upload_concurrency.py),
20 concurrent 30 s uploads spent up to 9 s waiting in ``asyncio.to_thread`` decodes that take 0.1 s alone:
the threads, the event loop and the reply encodes fought over one GIL. Worker processes decode in parallel
on every core and leave the server's GIL to the event loop.

Why it is also safer: the decoders run on untrusted files. A decoder crash (a segfault on a crafted file, an
out-of-memory kill) ends a worker process, not the token service that every call start depends on. The pool
is rebuilt and the upload is retried once; a file that breaks the decoder twice is refused as corrupt.

Why a wall-clock limit on every job: a decoder that loops or waits (a crafted file, an FFmpeg bug) would
hold a worker forever, and a handful of such uploads would starve every legitimate one. A job still running
after ``timeout`` seconds gets its pool's processes killed (SIGKILL: a stuck C loop ignores anything
gentler), the pool is rebuilt, and the upload is refused with a sentence; other jobs that were running in
the killed pool are retried once on the new one, like after a crash.

Workers start with ``spawn`` (never ``fork`` a process that runs threads and an event loop) and import only
``gocare_voice.audio.decode`` and PyAV; like any ``spawn`` user, a program that starts the pool from a script
needs the ``if __name__ == "__main__":`` guard (the ``gocare`` entry points have it). Workers are recycled
after ``max_tasks_per_child`` jobs so FFmpeg's heap cannot grow without bound, and exit on their own within
a second when the server process disappears, however it ended.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from collections.abc import Callable
from typing import Any, TypeVar

from gocare_voice.audio.decode import (
    STT_SAMPLE_RATE,
    AudioError,
    CorruptAudioError,
    DecodedAudio,
    decode_audio,
    encode_speech,
)

log = logging.getLogger("gocare.audio")

T = TypeVar("T")

DECODER_CRASHED = (
    "The recording could not be decoded: it crashed the audio decoder. Please record and send it again."
)
ENCODER_CRASHED = "The reply audio could not be produced: the audio encoder crashed."
DEFAULT_TIMEOUT = 20.0
"""Seconds a decode or encode may take: a 5-minute upload decodes in well under a second (docs/benchmarks.md)."""


class DecodeTimeoutError(AudioError):
    """The job outlived its wall-clock limit and its worker was killed."""

    status = 422
    code = "decode_timeout"


def default_processes() -> int:
    """One worker per core, at most 4: decoding is ~0.5 % of an upload's wall time, more buys nothing."""
    return max(1, min(4, os.cpu_count() or 1))


def _warm_up() -> int:
    return os.getpid()


def _worker_init(parent_pid: int) -> None:
    """Exit when the server is gone. A server killed by a signal (uvicorn re-raises SIGTERM after its
    graceful shutdown, so no atexit handler runs; or the OOM killer's SIGKILL) would otherwise leave its
    workers running forever, re-parented to init."""

    def watch() -> None:
        import time

        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    # Ctrl+C in a terminal reaches the whole process group: the server shuts the pool down, a worker
    # interrupted in the middle of waiting for work only prints a KeyboardInterrupt traceback
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def kill_pool_processes(pool: ProcessPoolExecutor) -> None:
    """Kill every process of ``pool`` now. Python 3.14 has ``ProcessPoolExecutor.kill_workers()``; before
    it, the processes are only reachable through the private ``_processes`` (a test pins it)."""
    kill_workers = getattr(pool, "kill_workers", None)
    if kill_workers is not None:
        kill_workers()
        return
    for process in list((pool._processes or {}).values()):  # noqa: SLF001 - no public way; pinned by tests/test_livekit_private.py
        process.kill()


class AudioWorkers:
    """A lazily started process pool for ``decode_audio`` and ``encode_speech``; safe to share between
    requests and event loops; ``close()`` at shutdown."""

    def __init__(
        self, *, processes: int | None = None, max_tasks_per_child: int = 500, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._processes = processes or default_processes()
        self.timeout = timeout
        self._max_tasks_per_child = max_tasks_per_child
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def processes(self) -> int:
        return self._processes

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self._processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    max_tasks_per_child=self._max_tasks_per_child,
                    initializer=_worker_init,
                    initargs=(os.getpid(),),
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor, *, kill: bool = False) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        if kill:
            # the executor has no "kill this job": end its processes; the executor then marks itself
            # broken and fails its other jobs with BrokenProcessPool, which _run retries on a new pool
            kill_pool_processes(pool)
        pool.shutdown(wait=False, cancel_futures=True)

    async def start(self) -> None:
        """Start the workers now (app start-up) instead of on the first upload (~0.5 s of imports)."""
        pool = self._executor()
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(pool, _warm_up) for _ in range(self._processes)))

    async def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``func(*args, **kwargs)`` in a worker; ``func`` must be a module-level (picklable) function.
        A worker that dies twice is reported as a recording that crashed the decoder; one that runs past
        ``self.timeout`` is killed and reported as ``DecodeTimeoutError``."""
        return await self._run(func, args, kwargs, crashed=DECODER_CRASHED)

    async def _run(
        self, func: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], *, crashed: str,
        timeout: float | None = None,
    ) -> T:
        import functools

        limit = timeout or self.timeout
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            pool = self._executor()
            job = loop.run_in_executor(pool, functools.partial(func, *args, **kwargs))
            try:
                return await asyncio.wait_for(job, limit)
            except asyncio.TimeoutError:
                self._discard(pool, kill=True)
                log.warning("audio worker killed: %s ran past %g s", func.__name__, limit)
                raise DecodeTimeoutError(
                    f"The recording could not be decoded within {limit:g} s, so it was stopped; the file "
                    "is probably damaged. Please record and send it again."
                ) from None
            except BrokenProcessPool:
                # a worker died (decoder crash, OOM kill): every job in flight fails with it; rebuild and
                # retry once, so only a file that kills the decoder again is refused
                self._discard(pool)
                log.warning("audio worker process died during %s (attempt %d)", func.__name__, attempt)
        raise CorruptAudioError(crashed)

    async def decode(
        self, data: bytes, *, max_seconds: float, sample_rate: int = STT_SAMPLE_RATE, timeout: float | None = None
    ) -> DecodedAudio:
        """``decode_audio`` in a worker process; raises the same ``AudioError`` subclasses, and
        ``DecodeTimeoutError`` after ``timeout`` seconds (default ``self.timeout``)."""
        return await self._run(
            decode_audio, (data,), {"max_seconds": max_seconds, "sample_rate": sample_rate},
            crashed=DECODER_CRASHED, timeout=timeout,
        )

    async def encode(self, pcm: bytes, *, sample_rate: int, num_channels: int = 1) -> bytes:
        """``encode_speech`` in a worker process; our own TTS output, so a crash is not the user's file."""
        return await self._run(
            encode_speech, (pcm,), {"sample_rate": sample_rate, "num_channels": num_channels}, crashed=ENCODER_CRASHED
        )

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


_shared: AudioWorkers | None = None
_shared_lock = threading.Lock()


def shared_audio_workers() -> AudioWorkers:
    """The process-wide pool. One per process, not one per app: worker processes are a machine resource
    (one per core), and tests that build many apps must not start many pools. Closed at interpreter exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            import atexit

            _shared = AudioWorkers()
            atexit.register(_shared.close)
        return _shared
