"""The job processes' warm-up (worker/job_preload.py) runs in livekit-agents' forkserver, which then forks
every job process: it must be fork-safe (no thread left running), it must load what the first call would
otherwise load on its event loop, and the worker must hand it to livekit-agents."""

from __future__ import annotations

import json
import subprocess
import sys

from gocare_voice.settings import Settings
from gocare_voice.worker.server import JOB_PRELOAD_MODULE, build_server

PROBE = """
import json, os, sys, threading
# what livekit-agents' forkserver imports before our module: the registered plugins (numpy's OpenBLAS starts
# its own native threads, which are fork-aware)
import livekit.agents, livekit.plugins.deepgram, livekit.plugins.openai
native_before = len(os.listdir("/proc/self/task"))
before = set(sys.modules)
import {module} as preload
print(json.dumps({{
    "failed": preload.FAILED,
    "python_threads": threading.active_count(),
    "new_native_threads": len(os.listdir("/proc/self/task")) - native_before,
    "loaded": sorted(m for m in set(sys.modules) - before if m.split(".")[0] in ("gocare_voice", "sqlalchemy", "openai", "anyio", "phonenumbers")),
}}))
"""


def _probe() -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(module=JOB_PRELOAD_MODULE)], capture_output=True,
                          text=True, timeout=120, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_warm_up_loads_what_a_call_would_and_leaves_no_thread_behind_to_fork() -> None:
    result = _probe()
    assert result["failed"] == []
    # a thread started here would not exist in the forked job processes, and a lock it held would stay held
    assert result["python_threads"] == 1 and result["new_native_threads"] == 0, result
    loaded = set(result["loaded"])  # type: ignore[arg-type]  # the probe's JSON: a list of module names
    for module in ("gocare_voice.conversation.agents", "gocare_voice.records.store", "gocare_voice.worker.recording",
                   "sqlalchemy.orm", "openai.resources.chat.completions",
                   "anyio._backends._asyncio"):
        assert module in loaded, module


def test_the_worker_hands_the_warm_up_to_livekit_agents_forkserver() -> None:
    server = build_server(Settings(livekit_url="ws://127.0.0.1:7880"))
    assert server._preload_modules == [JOB_PRELOAD_MODULE]  # AgentServer keeps the option only there
    assert server._mp_ctx_str == "forkserver"  # Linux: the preload is shared, not per process
