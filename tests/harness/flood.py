"""Clients that flood one room with data packets and RPCs, in a process of their own.

Why a process apart: 20 ``rtc.Room``s in the test process share its one FFI event queue and asyncio loop with
the client whose answer time the test measures, so a flood there also delays that client's own audio frames:
the measurement then sees the test process, not the worker. Twenty real devices are twenty processes; this
is one process for all twenty, apart from the measuring client.

And why at a lower CPU priority (``nice`` 10): twenty attackers' devices spend their own CPU, not the server's.
On one machine the load generator cannot be elsewhere, so it gets the CPU the system under test leaves (the
worker, livekit-server and the measuring client keep the default priority) instead of taking half of it. It
still sends all it can: on an idle core at full speed, ~50 RPCs a second here.

The test side, ``FloodClients``: ``start`` runs ``python -m harness.flood`` and returns once every client is in
the room and flooding; ``measuring`` and ``measured`` mark the window the test measures in (the counts of that
window come back too, so a test can check the flood was on while it measured); ``finish`` returns the counts.
The flood goes on until "measured" came and at least ``minimum`` packets and ``minimum`` RPCs went out,
``max_seconds`` at most.

The child prints one JSON line when every client joined and one with the counts at the end; anything else it
has to say (a traceback, say) goes to the stderr it shares with the test process, which pytest captures and
shows with the test's failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HARNESS_PARENT = Path(__file__).resolve().parents[1]
"""``tests/``: where ``harness`` is importable from."""
NICENESS = 10
"""Added to the flooding process's nice value: see the module's docstring."""


@dataclass(frozen=True)
class FloodCounts:
    packets: int
    rpc: int
    """RPCs answered "forbidden" (the expected answer)."""
    rpc_errors: int
    """RPCs that timed out or failed at LiveKit (an ``rtc.RpcError``)."""
    wrong_answers: list[str] = field(default_factory=list)
    """Answers that were not ``{"error": "forbidden", ...}``, as received (at most 5 are kept)."""
    seconds: float = 0.0
    window_packets: int = 0
    """Packets sent between "measuring" and "measured"."""
    window_rpc: int = 0
    """RPCs answered "forbidden" between "measuring" and "measured"."""


class FloodClients:
    """The flooding process, seen from the test."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    async def start(cls, service_url: str, room: str, agent: str, *, clients: int = 20, minimum: int = 100,
                    max_seconds: float = 30, join_timeout: float = 60) -> FloodClients:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HARNESS_PARENT),
                                                                          os.environ.get("PYTHONPATH")]))}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "harness.flood", "--service-url", service_url, "--room", room, "--agent", agent,
            "--clients", str(clients), "--minimum", str(minimum), "--max-seconds", str(max_seconds),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
        flood = cls(process)
        try:
            line = await flood._line(timeout=join_timeout, what=f"{clients} flooding clients to join")
            assert line.get("event") == "flooding", line
        except BaseException:
            await flood.kill()
            raise
        return flood

    async def _line(self, *, timeout: float, what: str) -> dict[str, Any]:
        assert self._process.stdout is not None
        try:
            raw = await asyncio.wait_for(self._process.stdout.readline(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None
        if not raw:
            code = await self._process.wait()
            raise AssertionError(f"the flooding process exited {code} while waiting for {what} (its stderr is "
                                 "in the test's output)")
        return json.loads(raw)

    async def _say(self, word: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(word.encode() + b"\n")
        await self._process.stdin.drain()

    async def measuring(self) -> None:
        """The test starts measuring now."""
        await self._say("measuring")

    async def measured(self) -> None:
        """The test has measured: the flood may end once it sent its minimum."""
        await self._say("measured")

    async def finish(self, *, timeout: float = 60) -> FloodCounts:
        """Wait for the flood to end (after ``measured``) and the process to exit 0."""
        line = await self._line(timeout=timeout, what="the flood to end")
        assert line.pop("event", None) == "done", line
        code = await asyncio.wait_for(self._process.wait(), 15)
        assert code == 0, f"the flooding process exited {code}"
        return FloodCounts(**line)

    async def kill(self) -> None:
        if self._process.returncode is None:
            self._process.kill()
            await self._process.wait()


# --- the child process ---------------------------------------------------------------------------


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _lower_priority() -> None:
    """Add ``NICENESS`` to every thread of this process (Linux's nice value is per thread; the rtc SDK's own
    threads exist by now, and the threads they start later inherit theirs)."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), os.getpriority(os.PRIO_PROCESS, int(tid)) + NICENESS)
        except ProcessLookupError:
            pass  # a thread that ended meanwhile


async def _flood(args: argparse.Namespace) -> FloodCounts:
    from livekit import rtc

    from harness.app_client import AppClient

    flooders = await asyncio.gather(*(
        AppClient.join(args.service_url, microphone=False, subscribe=False, body={
            "room_name": args.room, "participant_identity": f"flood-{i}", "room_config": {}})
        for i in range(args.clients)))
    _lower_priority()  # once joined: the joins are timed (20 s each) and happen before anything is measured
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    measured = asyncio.Event()
    marks: dict[bytes, tuple[int, int]] = {}
    """(packets, RPCs answered "forbidden") when "measuring" and "measured" came."""

    async def until_measured() -> None:
        while line := await stdin.readline():  # b"" only when the test closed our stdin
            marks[line.strip()] = (counts["packets"], counts["rpc"])
            if line.strip() == b"measured":
                break
        measured.set()  # "measured", or the test closed our stdin: nothing is measured any more

    started = time.monotonic()
    stop_at = started + args.max_seconds
    counts: dict[str, Any] = {"packets": 0, "rpc": 0, "rpc_errors": 0, "wrong_answers": []}

    def flooding() -> bool:
        enough = measured.is_set() and counts["packets"] >= args.minimum and counts["rpc"] >= args.minimum
        return not enough and time.monotonic() < stop_at

    async def flood(client: AppClient) -> None:
        while flooding():
            await client.send({"type": "command", "command": "switch_agent", "agent": "attorney"})
            counts["packets"] += 1
            try:
                answer = await client.room.local_participant.perform_rpc(
                    destination_identity=args.agent, method="start_conversation", payload="{}",
                    response_timeout=5)
            except rtc.RpcError:
                counts["rpc_errors"] += 1
                continue
            try:
                forbidden = json.loads(answer).get("error") == "forbidden"
            except (ValueError, AttributeError):
                forbidden = False
            if forbidden:
                counts["rpc"] += 1
            elif len(counts["wrong_answers"]) < 5:
                counts["wrong_answers"].append(answer)

    waiter = asyncio.create_task(until_measured())
    tasks = [asyncio.create_task(flood(c)) for c in flooders]
    _emit("flooding", clients=len(flooders))
    try:
        await asyncio.gather(*tasks)
    finally:
        waiter.cancel()
        await asyncio.gather(*(c.leave() for c in flooders), return_exceptions=True)
    window = (0, 0)
    if b"measuring" in marks and b"measured" in marks:
        (packets_from, rpc_from), (packets_to, rpc_to) = marks[b"measuring"], marks[b"measured"]
        window = (packets_to - packets_from, rpc_to - rpc_from)
    return FloodCounts(**counts, seconds=round(time.monotonic() - started, 2),
                       window_packets=window[0], window_rpc=window[1])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.flood", description=__doc__.splitlines()[0])
    parser.add_argument("--service-url", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--agent", required=True, help="the identity the RPCs go to")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--minimum", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=30)
    counts = asyncio.run(_flood(parser.parse_args()))
    _emit("done", **counts.__dict__)
    sys.stderr.flush()
    # livekit's rtc runtime tears itself down in an atexit hook, which can abort the process (see
    # `gocare test-metadata --connect`): every room is closed and the counts are out, so end here
    os._exit(0)


if __name__ == "__main__":
    main()
