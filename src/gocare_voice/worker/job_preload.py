"""Side-effect module: the job process's one-time warm-up, imported once per process image.

What a job process would otherwise do in its first call, on the event loop (100-500 ms of stalled audio
each, seen in the room tests), or in ``prewarm`` for every job process the worker starts:

- our own heavy imports: SQLAlchemy and the records store, phonenumbers, the agents;
- the openai SDK's chat resources, which it imports lazily on the first request, and every part of anyio,
  which its HTTP stack imports one by one on first use;
- the TLS context of livekit-agents' shared aiohttp session (Deepgram's streaming STT opens it when the
  user's audio starts), which livekit-agents caches per process.

(The first httpx client of a process is livekit-agents' own ``ipc._preload`` step already.)

Where it runs decides how often it costs. ``build_server`` lists this module in livekit-agents'
``preload_modules``: with the ``forkserver`` start method (Linux) it is imported once, in the forkserver,
and every job process inherits the result copy-on-write; ``prewarm`` imports it too, which is a no-op
there and the warm-up itself under ``spawn`` (macOS) or in a process that skipped the forkserver.

Everything here is fork-safe, as livekit-agents' own ``ipc._preload`` is: imports, objects without threads,
no event loop, no open connection. ``tests/test_job_preload.py`` checks that importing it starts no thread.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil

logger = logging.getLogger("gocare.worker")


def _our_modules() -> None:
    import gocare_voice.conversation.agents
    import gocare_voice.conversation.directory
    import gocare_voice.records.store
    import gocare_voice.worker.recording  # noqa: F401 - imported for the side effect: loaded once, not in the first call


def _openai_chat() -> None:
    # the openai SDK imports its chat resources on the first request (~150 ms in the middle of the first turn)
    import openai.resources.chat.completions  # noqa: F401 - imported for the side effect


def _all_of_anyio() -> None:
    """anyio imports its parts lazily, one on each first use by the LLM/TTS clients' HTTP stack (each
    100-120 ms of a stalled call in the room tests' logs, one after another): import them all here."""
    import anyio

    for module in pkgutil.walk_packages(anyio.__path__, "anyio."):
        if module.name.startswith(("anyio.pytest_plugin", "anyio._backends._trio")):
            continue
        try:
            importlib.import_module(module.name)
        except Exception:  # noqa: BLE001 - an optional part (a missing extra) is not ours to load
            continue


def _aiohttp_tls_context() -> None:
    # livekit-agents caches the TLS context of the job's shared aiohttp session per process; built on the
    # event loop it stalls 100-250 ms of audio at the start of every call
    from gocare_voice.worker.livekit_private import preload_tls_context

    preload_tls_context()


STEPS = (
    ("our modules", _our_modules),
    ("the openai chat resources", _openai_chat),
    ("anyio", _all_of_anyio),
    ("the aiohttp TLS context", _aiohttp_tls_context),
)


def warm_up() -> list[str]:
    """Run every step; a step that fails is logged and skipped (its first real use reports a proper error).
    Returns the names of the steps that failed."""
    failed = []
    for name, step in STEPS:
        try:
            step()
        except Exception as error:  # noqa: BLE001 - a warm-up step: say so, keep going
            logger.debug("job warm-up skipped %s: %s: %s", name, type(error).__name__, error)
            failed.append(name)
    return failed


FAILED = warm_up()
