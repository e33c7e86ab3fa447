"""``gocare worker console --text`` end to end: a real terminal (pty), no LiveKit server, no audio device,
the LLM being the scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

import os
import re
import select
import signal
import sys
import termios
import time
from pathlib import Path

import pytest

from scripted.openai_server import Reply, Rule, ScriptedOpenAIServer

pty = pytest.importorskip("pty")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal:
    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become the gocare command
            os.execve(argv[0], argv, env)
        self.raw = b""

    @property
    def text(self) -> str:
        return _ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def wait_for(self, needle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text:
                return True
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.raw += os.read(self.fd, 65536)
                except OSError:
                    break
        return needle in self.text

    def reading_keys(self) -> bool:
        """The program is waiting for a key: the terminal is out of canonical mode (the master side reads the
        pty's one set of termios flags)."""
        return not termios.tcgetattr(self.fd)[3] & termios.ICANON

    def type(self, line: str, *, timeout: float = 60) -> None:
        """Type ``line`` and Enter, once the program reads keys. livekit-agents' console sets its terminal mode
        with ``TCSAFLUSH`` for every key it reads (``cli/readchar.py``), which throws away whatever was typed
        while the terminal was still in canonical mode: a line typed between the prompt being drawn and its
        first read, or while the previous answer is printed, would be lost, as it is for a person typing ahead."""
        deadline = time.monotonic() + timeout
        while not self.reading_keys():
            if time.monotonic() > deadline:
                raise AssertionError(f"the console did not wait for a key within {timeout} s:\n" + self.text[-3000:])
            self.wait_for("\x00never", 0.05)
        os.write(self.fd, line.encode() + b"\r")

    def stop(self) -> int:
        try:
            os.kill(self.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            self.wait_for("\x00never", 0.2)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        return -9


def test_console_text_talks_to_the_agents(tmp_path: Path, openai_server: ScriptedOpenAIServer) -> None:
    """The greeting is shown; DEEPGRAM_API_KEY set (pointing nowhere) builds no STT in text mode; Ctrl+C
    ends the console without the never-awaited warning."""
    openai_server.script(Rule(user="hello", reply=Reply(text="Hello from the scripted model")))
    gocare = Path(sys.executable).with_name("gocare")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "TERM": "xterm", "COLUMNS": "120",
           "LLM_API_KEY": "sk-test", "LLM_BASE_URL": openai_server.base_url,
           # a Deepgram that would refuse every connection: text mode must never open one
           "DEEPGRAM_API_KEY": "dg-test", "GOCARE_DEEPGRAM_BASE_URL": "http://127.0.0.1:9",
           "GOCARE_DATABASE_URL": f"sqlite:///{tmp_path / 'users.db'}"}
    term = Terminal([str(gocare), "--env-file", os.devnull, "worker", "console", "--text"], env)
    try:
        # generous limits: a loaded CI machine starts livekit-agents' job process slowly
        assert term.wait_for("Type to talk", 120), "console prompt never shown:\n" + term.text[-3000:]
        assert term.wait_for("Welcome. Please say your registered mobile number.", 60), (
            "the greeting is not shown:\n" + term.text[-3000:]
        )
        term.type("hello")
        assert term.wait_for("Hello from the scripted model", 60), "no reply:\n" + term.text[-3000:]
    finally:
        code = term.stop()
    [request] = openai_server.chat_requests()
    assert "mobile number" in request.system_text  # the AuthenticationAgent answered
    assert "Traceback" not in term.text
    # no STT was built, so none tried to connect and failed (plugin registration lines name it harmlessly)
    assert not [line for line in term.text.lower().splitlines()
                if "deepgram" in line and ("error" in line or "warn" in line or "connect" in line)]
    assert "never awaited" not in term.text
    assert code in (0, 130), term.text[-2000:]


def test_console_metadata_option_greets_by_name(tmp_path: Path, openai_server: ScriptedOpenAIServer) -> None:
    gocare = Path(sys.executable).with_name("gocare")
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "TERM": "xterm", "COLUMNS": "120",
           "LLM_API_KEY": "sk-test", "LLM_BASE_URL": openai_server.base_url,
           "GOCARE_DATABASE_URL": f"sqlite:///{tmp_path / 'users.db'}"}
    metadata = '{"userId": "user-123", "userName": "Dr. Alice Brown"}'
    term = Terminal([str(gocare), "--env-file", os.devnull, "worker", "console", "--text", "--metadata", metadata],
                    env)
    try:
        assert term.wait_for("Welcome Alice! Please say your registered mobile number.", 120), term.text[-3000:]
    finally:
        term.stop()
    assert "Traceback" not in term.text
