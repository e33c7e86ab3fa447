"""The private parts of livekit-agents 1.8.9 the worker relies on, each behind one small function.

livekit-agents has no public way for these (read in its 1.8.9 source): ``tests/test_livekit_private.py``
pins each one and fails with a sentence naming what moved when an upgrade changes it.

- ``AgentServer._proc_pool`` and its ``"process_closed"`` event: the only place a job process's end is
  seen in the worker's main process (``AgentServer`` emits only ``worker_started`` / ``worker_registered``).
  Crash recovery (``worker/recovery.py``) needs it.
- ``livekit.agents.utils.http_context._create_ssl_context``: builds (and caches per process) the TLS context
  of the job's shared aiohttp session; calling it in ``prewarm`` saves 100-250 ms of stalled audio at the
  start of every call.

(The worker's terminal connection failure, once read from ``AgentServer._connection_failed``, now comes
from the public ``AgentServer.run()``, which raises it: ``worker/agent_server.py``.)
"""

from __future__ import annotations

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
