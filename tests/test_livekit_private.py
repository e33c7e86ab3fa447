"""Pins on the private parts of livekit-agents (and of the standard library) that we rely on, each behind one
function (``worker/livekit_private.py``, ``audio.workers.kill_pool_processes``). When an upgrade moves one,
the failure says what broke and where to look, instead of a silent loss (crash recovery that never fires, a
first call that stalls again)."""

from __future__ import annotations

import ssl
import time
from concurrent.futures import ProcessPoolExecutor
from typing import get_args


async def _entrypoint(ctx: object) -> None:  # never called: the server never gets a job
    raise AssertionError("no job expected")


def test_a_running_server_reports_job_process_ends_and_its_connection_failure() -> None:
    """One real ``AgentServer.run()`` against a closed port (no retries, no idle processes): the pool our
    crash recovery listens to exists once the server started, our hook reaches it, and ``run()`` (public)
    raises livekit's terminal connection failure, which GoCareAgentServer keeps for ``gocare worker`` to
    exit 1 on (tests/test_worker_cli.py runs that through the CLI)."""
    import asyncio
    import socket

    from livekit.agents.ipc import proc_pool

    from gocare_voice.worker.agent_server import GoCareAgentServer
    from gocare_voice.worker.livekit_private import on_job_process_closed

    assert "process_closed" in get_args(proc_pool.EventTypes), (
        "livekit-agents' ProcPool no longer emits 'process_closed': crash recovery (worker/recovery.py) "
        "would never fire"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = GoCareAgentServer(ws_url=f"ws://127.0.0.1:{port}", api_key="devkey", api_secret="secret",
                               max_retry=0, port=0, num_idle_processes=0)
    server.rtc_session(_entrypoint, agent_name="gocare-pin-test")
    closed: list[object] = []
    pools: list[object] = []
    on_job_process_closed(server, closed.append)

    def started(*_: object) -> None:
        pool = getattr(server, "_proc_pool", None)
        pools.append(pool)
        if isinstance(pool, proc_pool.ProcPool):
            pool.emit("process_closed", "a job executor")

    server.on("worker_started", started)

    async def run() -> None:
        try:
            await asyncio.wait_for(server.run(), timeout=60)
        except RuntimeError:
            pass
        finally:
            await server.aclose()

    asyncio.run(run())
    assert pools and isinstance(pools[0], proc_pool.ProcPool), (
        "livekit-agents no longer keeps its job process pool in AgentServer._proc_pool: "
        "worker/livekit_private.on_job_process_closed (crash recovery) must find the new way"
    )
    assert closed == ["a job executor"]
    assert server.connection_failed, f"run() ended with {server.run_error!r}, not livekit's connection failure"


def test_the_tls_context_is_built_once_per_process() -> None:
    from livekit.agents.utils import http_context

    from gocare_voice.worker.livekit_private import preload_tls_context

    create = getattr(http_context, "_create_ssl_context", None)
    assert create is not None, (
        "livekit-agents removed utils.http_context._create_ssl_context: prewarm can no longer build the job "
        "session's TLS context ahead of the first call (worker/livekit_private.preload_tls_context)"
    )
    preload_tls_context()
    first, second = create(), create()
    assert isinstance(first, ssl.SSLContext)
    assert first is second, "the TLS context is no longer cached per process: preloading it saves nothing"


def test_pool_processes_can_be_killed() -> None:
    from gocare_voice.audio.workers import kill_pool_processes

    pool = ProcessPoolExecutor(max_workers=1)
    try:
        assert pool.submit(int, "7").result(timeout=60) == 7
        processes = list(pool._processes.values())  # what kill_pool_processes reaches before Python 3.14
        kill_pool_processes(pool)
        for process in processes:
            # the pool's own management thread sees the death too and may reap the process first; a join
            # racing it finds no child (ECHILD) and reports no exit code once, so look again until it is set
            deadline = time.monotonic() + 10
            while process.exitcode is None and time.monotonic() < deadline:
                process.join(timeout=0.1)
            assert process.exitcode is not None and process.exitcode < 0
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def test_the_text_console_waits_for_a_line_in_legacy_prompt() -> None:
    """``end_text_console`` (the console ending after the goodbye) knows the console is back at its prompt by
    finding ``_legacy.prompt`` on the main thread's stack, and ends it with the SIGTERM its handler takes
    as Ctrl+C (tests/test_worker_console_ports.py runs it for real)."""
    import signal

    from livekit.agents.cli import _legacy

    from gocare_voice.worker.livekit_private import text_console_waits_for_input

    prompt = getattr(_legacy, "prompt", None)
    text_mode = getattr(_legacy, "_text_mode", None)
    assert callable(prompt) and callable(text_mode), (
        "livekit-agents moved its text console (cli._legacy.prompt/_text_mode): "
        "worker/livekit_private.text_console_waits_for_input must find the new prompt"
    )
    assert "prompt" in text_mode.__code__.co_names, "the text console no longer waits for a line in prompt()"
    assert signal.SIGTERM in _legacy.HANDLED_SIGNALS, "the console no longer ends on SIGTERM"
    assert text_console_waits_for_input() is False  # this test's main thread is not in a prompt


def test_livekits_default_load_figure_is_still_there_and_a_fraction() -> None:
    """worker/server.py caps livekit-agents' own load (``_DefaultLoadCalc.get_load``) for a worker that never
    refuses a call; if it moved, a busy worker would again be skipped by livekit-server."""
    from livekit.agents import worker

    from gocare_voice.worker.livekit_private import default_worker_load

    assert hasattr(worker, "_DefaultLoadCalc"), "livekit-agents moved _DefaultLoadCalc (worker/livekit_private.py)"
    load = default_worker_load(None)
    assert isinstance(load, float) and 0.0 <= load <= 1.0
