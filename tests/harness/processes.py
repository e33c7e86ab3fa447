"""Subprocesses of the room harness (livekit-server, ``gocare worker start``, ``gocare token-server``):
started with their output in a log file, waited on by what they print or answer, and stopped by their PID.

Each is started in a session of its own (``start_new_session``) so that stopping it also ends what it
started (the worker's job processes), and nothing else: the signal goes to that process group only.
"""

from __future__ import annotations

import codecs
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx


_handed_out: set[tuple[int, int]] = set()

RESCAN_CHARS = 20_000
"""``wait_for_log`` looks again at this much of what it already searched: a pattern spans a line or a few,
never more."""


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing of this run uses, for a server we start next.

    Chosen below the kernel's ephemeral range (``ip_local_port_range``): a port the kernel hands out
    (``bind(0)``) is one it may also give, a moment later, to an outgoing connection's source port, and then
    the server we meant it for cannot bind it (seen in CI: a worker's health port taken between the pick and
    its bind on 0.0.0.0). Each port is handed out once per run, and checked free on ``host`` and on all
    addresses, since the worker binds 0.0.0.0."""
    high = _ephemeral_low()
    low = max(1024, high - 12000)
    for _ in range(500):
        port = random.randrange(low, high)
        if (port, kind) in _handed_out:
            continue
        try:
            for address in {host, "0.0.0.0"}:
                with socket.socket(socket.AF_INET, kind) as sock:
                    sock.bind((address, port))
        except OSError:
            continue
        _handed_out.add((port, kind))
        return port
    raise RuntimeError(f"no free port between {low} and {high}")


def group_members(pgid: int) -> list[tuple[int, list[str]]]:
    """(pid, the fields of /proc/<pid>/stat after the command name) of every process in group ``pgid``,
    zombies included (field 0 is the state, 'Z' for a zombie; 11 and 12 are user and system ticks)."""
    members: list[tuple[int, list[str]]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                members.append((int(entry), fields))
        except (OSError, ValueError, IndexError):
            continue
    return members


class ProcessFailed(RuntimeError):
    pass


class ManagedProcess:
    """One child process and its log file."""

    def __init__(self, name: str, argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # closed in stop(); a fresh log per process
        self.process = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        )
        self.pid = self.process.pid
        self._text = ""
        self._read_bytes = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._reading = threading.Lock()  # tests also wait on logs from threads (asyncio.to_thread)

    # --- what it said ----------------------------------------------------------------------------
    def log_text(self) -> str:
        """Everything the process logged so far. Read incrementally: waits poll this ten times a second, and
        a worker's DEBUG log grows past a megabyte in a run."""
        with self._reading:
            try:
                with open(self.log_path, "rb") as log:  # written by this object's process only ("wb" above)
                    log.seek(self._read_bytes)
                    fresh = log.read()
            except OSError:
                return self._text
            self._read_bytes += len(fresh)
            self._text += self._decoder.decode(fresh)
            return self._text

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def mark(self) -> int:
        """A position in the log; ``log_since(mark)`` is what was written after it."""
        return len(self.log_text())

    def log_since(self, mark: int) -> str:
        return self.log_text()[mark:]

    def wait_for_log(self, pattern: str, *, timeout: float, since: int = 0) -> re.Match[str]:
        """Block until ``pattern`` (regex) appears in the log after ``since``; fail with the log's tail when
        the process exits or the time runs out."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        searched = since
        while True:
            text = self.log_text()
            # a match lies within a few lines: look again only from shortly before where the last look ended
            found = regex.search(text, max(since, searched - RESCAN_CHARS))
            if found:
                return found
            searched = len(text)
            if self.process.poll() is not None:
                raise ProcessFailed(f"{self.name} exited ({self.process.returncode}) before logging {pattern!r}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise ProcessFailed(f"{self.name} did not log {pattern!r} within {timeout:.0f}s:\n{self.tail()}")
            time.sleep(0.1)

    def wait_until(self, check: Callable[[], bool], *, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.process.poll() is not None:
                raise ProcessFailed(f"{self.name} exited ({self.process.returncode}) before {what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise ProcessFailed(f"{self.name}: {what} not reached within {timeout:.0f}s:\n{self.tail()}")
            time.sleep(0.1)

    def wait_http(self, url: str, *, timeout: float) -> None:
        # one client for all the polls: each new client loads the CA bundle (~40 ms of CPU)
        with httpx.Client(timeout=1.0) as http:
            def answers() -> bool:
                try:
                    return http.get(url).status_code < 500
                except httpx.HTTPError:
                    return False

            self.wait_until(answers, timeout=timeout, what=f"{url} answering")

    def children(self) -> list[int]:
        """PIDs of the processes this one started (direct children), e.g. the worker's job processes."""
        found: list[int] = []
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            try:
                found += [int(p) for p in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
        return found

    # --- stopping --------------------------------------------------------------------------------
    def stop(self, *, timeout: float = 15.0) -> int | None:
        """SIGTERM to the process, as a process manager would (the worker then ends its own job processes);
        SIGKILL to its group after ``timeout``, and to whatever of the group outlived it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.process.wait(timeout=10)
        # job processes may outlive a worker that exited: they are in its group
        self._signal_group(signal.SIGKILL)
        self._log.close()
        return self.process.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.pid, sig)  # the group we created for it (start_new_session): its PID is the group id
        except ProcessLookupError:
            pass
