"""``gocare token-server`` as a subprocess on a free loopback port, in an environment cleaned of every gocare,
LiveKit and Prometheus setting of the test run, for tests that need the real CLI and real HTTP."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.processes import ManagedProcess, free_port

_CLEANED = ("GOCARE_", "LIVEKIT_", "FORWARDED_", "PROMETHEUS_")


@dataclass
class TokenServer:
    process: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_token_server(name: str, logs: Path, *, env: dict[str, str], options: Sequence[str] = ()) -> TokenServer:
    """Started with ``--env-file /dev/null`` and ``env`` on top of the cleaned environment; returns once
    ``/health`` answers (the process is stopped if it never does)."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_CLEANED) and k not in ("PORT", "LOG_LEVEL")}
    process = ManagedProcess(
        name, [sys.executable, "-m", "gocare_voice", "--env-file", os.devnull, "token-server", "--port", str(port),
               *options], log_path=logs / f"{name}.log", env={**clean, "PYTHONUNBUFFERED": "1", **env}, cwd=logs,
    )
    server = TokenServer(process=process, port=port)
    try:
        process.wait_http(server.url + "/health", timeout=60)
    except Exception:
        process.stop()
        raise
    return server
