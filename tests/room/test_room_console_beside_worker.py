"""Issue 19.2 with a real worker: ``gocare worker start`` registered with a real LiveKit server holds
GOCARE_WORKER_PORT; a text console started with the same setting reaches its prompt beside it, and a second
``worker start`` on that port says so in one line and exits 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import Providers, RunningWorker
from test_worker_console import Terminal

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(240)]

GOCARE = Path(sys.executable).with_name("gocare")


def _port(worker: RunningWorker) -> int:
    port = urlsplit(worker.http_url).port
    assert port is not None
    return port


def test_a_text_console_beside_a_running_worker_reaches_its_prompt(
    worker: RunningWorker, providers: Providers, tmp_path: Path
) -> None:
    port = _port(worker)
    assert httpx.get(worker.http_url + "/", timeout=5).status_code == 200  # the worker holds the port
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "TERM": "xterm", "COLUMNS": "120",
           "LLM_API_KEY": "sk-test", "LLM_BASE_URL": providers.llm.base_url, "GOCARE_WORKER_PORT": str(port),
           "GOCARE_DATABASE_URL": f"sqlite:///{tmp_path / 'users.db'}"}
    term = Terminal([str(GOCARE), "--env-file", os.devnull, "worker", "console", "--text"], env)
    try:
        assert term.wait_for("Type to talk", 120), "no prompt:\n" + term.text[-3000:]
        assert term.wait_for("Welcome. Please say your registered mobile number.", 60), term.text[-3000:]
        assert httpx.get(worker.http_url + "/", timeout=5).status_code == 200  # and the worker still serves it
    finally:
        code = term.stop()
    assert "address already in use" not in term.text and "Traceback" not in term.text, term.text[-3000:]
    assert code in (0, 130), term.text[-2000:]


def test_a_second_worker_on_the_running_workers_port_exits_1_in_one_line(
    worker: RunningWorker, tmp_path: Path
) -> None:
    port = _port(worker)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOCARE_", "LLM_", "DEEPGRAM_"))}
    env.update(GOCARE_WORKER_PORT=str(port), DEEPGRAM_API_KEY="dg-test", LLM_API_KEY="sk-test", HOME=str(tmp_path))
    proc = subprocess.run([str(GOCARE), "--env-file", os.devnull, "worker", "start"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: port {port} is already in use (GOCARE_WORKER_PORT)"), line
    assert httpx.get(worker.http_url + "/", timeout=5).status_code == 200
