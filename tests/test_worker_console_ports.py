"""Issue 19: ``gocare worker console --text`` binds none of the worker's ports, ``start``/``dev`` with the port
taken say so in one line, and the text console ends by itself after the agent's goodbye.

Every console here is the real ``gocare`` command in a pseudo-terminal (``Terminal``), its LLM the scripted
OpenAI-compatible server on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripted.openai_server import Reply, Rule, ScriptedOpenAIServer, ToolCall
from test_worker_console import Terminal
from test_worker_cli import PROVIDER_VARS

from gocare_voice.conversation.agents import GOODBYE_TEXT

PROMPT = "Type to talk"
GREETING = "Welcome. Please say your registered mobile number."
MISMATCH = "That number is not on record, please say it again."
GOCARE = Path(sys.executable).with_name("gocare")


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port something listens on, as a running worker's health server does (all interfaces)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield sock.getsockname()[1]


def console_env(tmp_path: Path, openai_server: ScriptedOpenAIServer, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "TERM": "xterm", "COLUMNS": "120",
            "LLM_API_KEY": "sk-test", "LLM_BASE_URL": openai_server.base_url,
            "GOCARE_DATABASE_URL": f"sqlite:///{tmp_path / 'users.db'}", **extra}


def open_console(env: dict[str, str]) -> Terminal:
    return Terminal([str(GOCARE), "--env-file", os.devnull, "worker", "console", "--text"], env)


def test_a_console_beside_a_worker_holding_the_port_reaches_its_prompt(
    tmp_path: Path, openai_server: ScriptedOpenAIServer, held_port: int
) -> None:
    """GOCARE_WORKER_PORT and GOCARE_WORKER_METRICS_PORT both taken: the console uses neither."""
    with socket.socket() as metrics:
        metrics.bind(("0.0.0.0", 0))
        metrics.listen()
        env = console_env(tmp_path, openai_server, GOCARE_WORKER_PORT=str(held_port),
                          GOCARE_WORKER_METRICS_PORT=str(metrics.getsockname()[1]))
        term = open_console(env)
        try:
            assert term.wait_for(PROMPT, 120), "no prompt:\n" + term.text[-3000:]
            assert term.wait_for(GREETING, 60), term.text[-3000:]
        finally:
            code = term.stop()
    assert "address already in use" not in term.text and "Traceback" not in term.text, term.text[-3000:]
    assert f":{held_port}" not in term.text  # its health server listened elsewhere (a free loopback port)
    assert "HTTP server listening on 127.0.0.1:" in term.text
    assert code in (0, 130), term.text[-2000:]


def test_two_text_consoles_at_once_both_reach_their_prompt(
    tmp_path: Path, openai_server: ScriptedOpenAIServer
) -> None:
    """Both with the default GOCARE_WORKER_PORT (8081), open at the same time."""
    homes = [tmp_path / "one", tmp_path / "two"]
    for home in homes:
        home.mkdir()
    terms = [open_console(console_env(home, openai_server)) for home in homes]
    try:
        for term in terms:
            assert term.wait_for(PROMPT, 150), "no prompt:\n" + term.text[-3000:]
            assert term.wait_for(GREETING, 60), term.text[-3000:]
        assert all(term.wait_for(GREETING, 0) for term in terms)  # the first is still there, at its prompt
    finally:
        codes = [term.stop() for term in terms]
    for term, code in zip(terms, codes, strict=True):
        assert "address already in use" not in term.text and "Traceback" not in term.text, term.text[-3000:]
        assert code in (0, 130), term.text[-2000:]


@pytest.mark.parametrize("command", ["start", "dev"])
def test_start_or_dev_with_the_port_taken_says_so_in_one_line(tmp_path: Path, held_port: int, command: str) -> None:
    """Checked before anything else starts (no LiveKit needed to get this answer)."""
    env = {k: v for k, v in os.environ.items() if k not in PROVIDER_VARS and not k.startswith("GOCARE_")}
    env.update(GOCARE_WORKER_PORT=str(held_port), DEEPGRAM_API_KEY="dg-test", LLM_API_KEY="sk-test",
               HOME=str(tmp_path))
    proc = subprocess.run([str(GOCARE), "--env-file", os.devnull, "worker", command], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout == ""
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: port {held_port} is already in use (GOCARE_WORKER_PORT)"), line
    assert "set GOCARE_WORKER_PORT to a free port" in line


def test_a_port_taken_between_the_check_and_the_bind_is_still_one_line(tmp_path: Path, held_port: int) -> None:
    """The bind itself failing (the race the early check cannot close): livekit-agents' "worker failed"
    traceback is gone, the one line stays (GoCareAgentServer keeps the error instead of raising it on)."""
    script = (
        "import typer\n"
        "from gocare_voice.settings import Settings\n"
        "from gocare_voice.cli import worker as cli_worker\n"
        f"s = Settings(worker_port={held_port}, livekit_connect_retries=0, deepgram_api_key='x', llm_api_key='y')\n"
        "try:\n"
        "    cli_worker._run_livekit_cli(s, 'start', ['--log-level', 'info'])\n"
        "except typer.Exit as done:\n"
        "    raise SystemExit(done.exit_code)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in PROVIDER_VARS and not k.startswith("GOCARE_")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=90)
    assert proc.returncode == 1
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and "worker failed" not in output, output[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the worker could not listen: a port it serves is already in use"), last
    assert f"GOCARE_WORKER_PORT={held_port}" in last


def _wait_exit(term: Terminal, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status = os.waitpid(term.pid, os.WNOHANG)
        if pid:
            term.wait_for("\x00never", 0.3)  # read what it printed last
            return os.waitstatus_to_exitcode(status)
        term.wait_for("\x00never", 0.2)
    return None


def test_the_text_console_ends_by_itself_after_the_goodbye(
    tmp_path: Path, openai_server: ScriptedOpenAIServer
) -> None:
    """Three wrong numbers (the directory is empty): the goodbye is shown, then the console exits 0 on its
    own, as the agent leaves a room; no fourth line needs typing."""
    openai_server.script(
        Rule(user="98765", reply=Reply(tool_calls=[ToolCall("verify_mobile_number", {"mobile_number": "98765 43210"})])),
        Rule(tool_output="did not match", reply=Reply(text=MISMATCH)),
    )
    term = open_console(console_env(tmp_path, openai_server))
    try:
        assert term.wait_for(PROMPT, 120) and term.wait_for(GREETING, 60), term.text[-3000:]
        for attempt in (1, 2):
            term.type("98765 43210")
            deadline = time.monotonic() + 60
            while term.text.count(MISMATCH) < attempt and time.monotonic() < deadline:
                term.wait_for("\x00never", 0.2)
            assert term.text.count(MISMATCH) == attempt, term.text[-3000:]
        term.type("98765 43210")
        assert term.wait_for("Goodbye.", 60), "no goodbye:\n" + term.text[-3000:]
        shown_at = time.monotonic()
        code = _wait_exit(term, 20)
        waited = time.monotonic() - shown_at
    finally:
        if _still_running(term):
            term.stop()
    assert code == 0, f"exit {code} (None: still running 20 s after the goodbye):\n" + term.text[-3000:]
    assert waited < 20
    # the whole goodbye was on screen before the end, and only the three numbers were typed
    flat = " ".join(term.text.split())
    assert " ".join(GOODBYE_TEXT.split()) in flat
    assert len(openai_server.chat_requests()) == 5  # 3 numbers + 2 relayed mismatches; no request after
    assert "Traceback" not in term.text and "never awaited" not in term.text, term.text[-3000:]


def _still_running(term: Terminal) -> bool:
    try:
        pid, _ = os.waitpid(term.pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return pid == 0
