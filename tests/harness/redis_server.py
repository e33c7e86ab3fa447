"""A real ``redis-server`` for the tests that share state across processes (the rate limit, LiveKit's
multi-node routing): started on a free loopback port with no persistence, stopped by its PID.

Locally, a machine without redis-server skips those tests with one line; under ``.ci/run``
(``GOCARE_REQUIRE_REDIS=1``) a missing redis-server is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.processes import ManagedProcess, free_port


@dataclass
class RedisServer:
    process: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        """``host:port``, the form livekit-server's ``redis.address`` takes."""
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.stop(timeout=5)


def locate_redis() -> str | None:
    return os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")


def start_redis(binary: str, log_dir: Path, *, name: str = "redis") -> RedisServer:
    port = free_port()
    argv = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--protected-mode", "yes", "--dir", str(log_dir),
    ]
    process = ManagedProcess(name, argv, log_path=log_dir / f"{name}.log")
    process.wait_for_log(r"Ready to accept connections", timeout=15)
    return RedisServer(process=process, port=port)
