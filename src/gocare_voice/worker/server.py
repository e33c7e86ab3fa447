"""``build_server(settings)``: the livekit-agents ``AgentServer`` registered as our agent.

Explicit dispatch: the worker registers under ``settings.agent_name`` (``multi-assistant``), so it joins
only rooms whose token or API call dispatches that name, never every room on the server.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from gocare_voice.settings import Settings

if TYPE_CHECKING:
    from gocare_voice.worker.agent_server import GoCareAgentServer


REPORTED_LOAD_CEILING = 0.99
"""livekit-server (v1.13.5, ``pkg/service/agentservice.go`` ``selectWorkerWeightedByLoad``) hands a job only to a
worker whose reported load is below 1.0, whatever the worker's own threshold: a worker that must never refuse a
call (``GOCARE_WORKER_LOAD_THRESHOLD`` >= 1, e.g. ``inf``, and ``worker dev``'s default) with both cores busy would
report 1.0 and the room would silently get no agent ("no worker available to handle job", never retried). So the
worker reports its load capped just below: the server's balancing by load still works, the call is taken, and a
worker with a threshold below 1 is unaffected (it compares the same capped figure, so it still reports itself
full from its threshold on). ``lk_agents_worker_load`` therefore tops out at 0.99."""

JOB_PRELOAD_MODULE = "gocare_voice.worker.job_preload"
"""Handed to livekit-agents' ``preload_modules``: imported once in the forkserver (Linux) and inherited by
every job process, instead of once per job process in ``prewarm``."""


LOOP_BLOCK_WARN_ENV = "LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS"
"""livekit-agents (``telemetry/loop_monitor.py``) reads its event-loop monitor's threshold from this variable, in
the worker process when its CLI starts and in each job process; a job process inherits it from the
forkserver, which inherits it from the worker."""


def use_loop_block_warn(settings: Settings, environ: MutableMapping[str, str] | None = None) -> None:
    """``GOCARE_WORKER_LOOP_BLOCK_WARN_MS`` -> livekit-agents' variable, before its CLI starts the worker (and
    with it the monitor and the forkserver). The monitor's heartbeat and watchdog wake every fifth of the
    threshold (at least 20 ms, at most 50 ms) in every process of the worker, warm job processes included;
    at livekit's 100 ms that was 0.6-1 % of a core per process, the largest cost of an idle warm process
    (bench/bench_capacity.py). 250 ms halves that and still logs every block of a quarter second or more; 0 turns
    it off."""
    target = os.environ if environ is None else environ
    target[LOOP_BLOCK_WARN_ENV] = str(settings.worker_loop_block_warn_ms)


def reported_load_below_full(server: Any) -> float:
    """``load_fnc``: livekit-agents' CPU load, at most ``REPORTED_LOAD_CEILING``."""
    from gocare_voice.worker.livekit_private import default_worker_load

    return min(default_worker_load(server), REPORTED_LOAD_CEILING)


def build_server(
    settings: Settings, *, console: bool = False, console_text: bool = False, console_metadata: str | None = None,
    **server_options: Any,
) -> GoCareAgentServer:
    """Factory, no environment reads: LiveKit URL and credentials come from ``settings``; the number of
    connection retries is ``GOCARE_LIVEKIT_CONNECT_RETRIES``; the HTTP port, warm job processes and load
    threshold are ``GOCARE_WORKER_*``, the metrics endpoint ``GOCARE_WORKER_METRICS_PORT``; extra keyword options go to ``AgentServer``.
    ``console``: ``gocare worker console`` (``console_text`` implies it) serves nobody over HTTP, so its
    health server gets a free loopback port (port 0) instead of ``GOCARE_WORKER_PORT`` and no metrics
    endpoint: a console beside a running worker, or two consoles, must not collide on those ports;
    ``console_text``: ``console --text`` needs no STT/TTS, so the session is built without them;
    ``console_metadata``: the dispatch metadata console mode pretends to have (``--metadata``)."""
    from gocare_voice.providers import import_plugins
    from gocare_voice.worker.agent_server import GoCareAgentServer
    from gocare_voice.worker.entrypoint import GoCareEntrypoint, prewarm

    import_plugins(settings)
    for line in settings.start_warnings():
        logging.getLogger("gocare.worker").warning("%s", line)

    options: dict[str, Any] = {
        "ws_url": settings.livekit_url,
        "api_key": settings.livekit_api_key,
        "api_secret": settings.livekit_api_secret.get_secret_value(),
        "max_retry": settings.livekit_connect_retries,
        "setup_fnc": prewarm,
        # imported once in the forkserver on Linux and shared by every job process (worker/job_preload.py);
        # without it every job process imported the same modules again in its prewarm (measured on two room
        # test modules: 17.7 instead of 19.1 CPU-seconds in the job processes, an idle one 0.2 instead of 0.4)
        "preload_modules": [JOB_PRELOAD_MODULE],
        # livekit-agents spells it WARN and refuses WARNING, the spelling of Python's logging (and ours)
        "log_level": "WARN" if settings.log_level == "WARNING" else settings.log_level,
        "port": settings.worker_port,
    }
    console = console or console_text
    if console:
        # livekit-agents' console runs the same AgentServer.run() as a worker, health server included
        # (worker.py: HttpServer(host, port) unless a simulation); port 0 is its own dev default
        options.update(host="127.0.0.1", port=0)
    if settings.worker_idle_processes is not None:
        options["num_idle_processes"] = settings.worker_idle_processes
    if settings.worker_load_threshold is not None:
        options["load_threshold"] = settings.worker_load_threshold
    options["load_fnc"] = reported_load_below_full
    if settings.worker_job_executor.value == "thread":
        from livekit.agents import JobExecutorType

        # every call a thread of this process: no job process per call (bench/bench_capacity.py measured what it
        # saves), but no isolation either (docs/operations.md, "Job executor")
        options["job_executor_type"] = JobExecutorType.THREAD
    if settings.worker_job_memory_limit_mb:
        options["job_memory_limit_mb"] = settings.worker_job_memory_limit_mb
    if settings.worker_drain_timeout is not None:
        options["drain_timeout"] = settings.worker_drain_timeout
    if settings.worker_metrics_port is not None and not console:
        # livekit-agents' own Prometheus endpoint; it reads PROMETHEUS_MULTIPROC_DIR, where the job processes
        # write our counters too (worker/metrics.py)
        options["prometheus_port"] = settings.worker_metrics_port
    options.update(server_options)
    server = GoCareAgentServer(**options)
    entry = GoCareEntrypoint(settings=settings, console_text=console_text, console_metadata=console_metadata)
    server.rtc_session(entry, agent_name=settings.agent_name)
    if not console:
        from gocare_voice.worker.recovery import CrashRecovery

        CrashRecovery(settings=settings).attach(server)
    return server
