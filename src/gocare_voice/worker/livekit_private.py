"""The private parts of livekit-agents 1.8.9 the worker relies on, each behind one small function.

livekit-agents has no public way for these (read in its 1.8.9 source): ``tests/test_livekit_private.py``
pins each one and fails with a sentence naming what moved when an upgrade changes it.

- ``AgentServer._proc_pool`` and its ``"process_closed"`` event: the only place a job process's end is
  seen in the worker's main process (``AgentServer`` emits only ``worker_started`` / ``worker_registered``).
  Crash recovery (``worker/recovery.py``) needs it.
- ``livekit.agents.utils.http_context._create_ssl_context``: builds (and caches per process) the TLS context
  of the job's shared aiohttp session; calling it in ``prewarm`` saves 100-250 ms of stalled audio at the
  start of every call.
- ``livekit.agents.cli._legacy.prompt``, the function livekit-agents' text console (``console --text``) waits
  for the next typed line in, and that console's SIGTERM handler, which ends it as Ctrl+C does: after the
  session ended itself (three wrong numbers) the console must end too, but only once it has printed the
  goodbye, which it does from its main thread after the turn, right before it offers the prompt again.

- ``livekit.agents.worker._DefaultLoadCalc.get_load``: the CPU load livekit-agents reports to the server
  (0-1, a 2.5 s average). ``worker/server.py`` caps it below 1.0 when the worker must never refuse a call.

(The worker's terminal connection failure, once read from ``AgentServer._connection_failed``, now comes
from the public ``AgentServer.run()``, which raises it: ``worker/agent_server.py``.)
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


def on_job_process_closed(server: Any, callback: Callable[[Any], None]) -> None:
    """Call ``callback(job_executor)`` whenever one of ``server``'s job processes ends. The pool exists once
    the server runs, so the listener is added on ``worker_started``."""
    server.on("worker_started", lambda *_: server._proc_pool.on("process_closed", callback))  # noqa: SLF001 - no public way; pinned by tests/test_livekit_private.py


def preload_tls_context() -> None:
    """Build the per-process TLS context of livekit-agents' shared HTTP session now, not in a call."""
    from livekit.agents.utils import http_context

    http_context._create_ssl_context()  # noqa: SLF001 - no public way; pinned by tests/test_livekit_private.py


def text_console_waits_for_input() -> bool:
    """Is the main thread in livekit-agents' text-console prompt (everything of the last turn printed)?"""
    from livekit.agents.cli import _legacy

    prompt = _legacy.prompt.__code__  # a private module (no public way); pinned by tests/test_livekit_private.py
    main = threading.main_thread().ident
    frame = sys._current_frames().get(main) if main is not None else None  # noqa: SLF001 - documented CPython API
    while frame is not None:
        if frame.f_code is prompt:
            return True
        frame = frame.f_back
    return False


def end_text_console(*, timeout: float = 10.0, poll: float = 0.05) -> threading.Thread:
    """End ``console --text`` as Ctrl+C would, once its main thread is back at the prompt (so what the last
    turn said, the goodbye, has been printed). Nothing happens when the prompt does not come back within
    ``timeout`` seconds: the console is already ending (Ctrl+C closed the session). SIGTERM goes to the main
    thread itself (``pthread_kill``): blocked in a read of the terminal, only a signal delivered to it
    interrupts the read; one raised in another thread would wait for the next key press."""

    def wait_then_end() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text_console_waits_for_input():
                main = threading.main_thread().ident
                if main is not None:
                    signal.pthread_kill(main, signal.SIGTERM)
                return
            time.sleep(poll)

    thread = threading.Thread(target=wait_then_end, name="gocare-console-end", daemon=True)
    thread.start()
    return thread


def default_worker_load(server: Any) -> float:
    """livekit-agents' own load figure for ``server`` (what it reports when no ``load_fnc`` is given)."""
    from livekit.agents import worker

    return float(worker._DefaultLoadCalc.get_load(server))  # noqa: SLF001 - no public way; pinned by tests/test_livekit_private.py
