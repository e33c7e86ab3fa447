"""``gocare test-metadata --connect`` (worker/probe.py): its token, its event collection and its failure
paths (unreachable server, a server that never answers, refused credentials) without a LiveKit server."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass
from typing import Any

import pytest
from livekit import api, rtc

from gocare_voice.settings import Settings
from gocare_voice.worker.probe import ProbeError, ProbeResult, ProbeWaiter, build_probe_token, new_probe_names, probe_room


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_probe_token_is_what_the_app_gets() -> None:
    settings = Settings(agent_name="multi-assistant")
    metadata = '{"userId": "user-123", "userName": "John Doe"}'
    token = build_probe_token(settings, room="probe-room", identity="gocare-probe-1", metadata=metadata)
    claims = api.TokenVerifier("devkey", "secret").verify(token)
    assert claims.identity == "gocare-probe-1"
    assert claims.metadata == metadata
    assert claims.video is not None
    assert claims.video.room == "probe-room" and claims.video.room_join
    assert claims.video.can_update_own_metadata and claims.video.can_publish_data
    assert [a.agent_name for a in claims.room_config.agents] == ["multi-assistant"]


def test_probe_names() -> None:
    room, identity = new_probe_names(None)
    assert room.startswith("gocare-probe-") and identity.startswith("gocare-probe-")
    assert new_probe_names("mine")[0] == "mine"
    assert new_probe_names(None)[1] != identity


@dataclass
class Who:
    identity: str
    kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD


@dataclass
class Packet:
    data: Any
    topic: Any = "gocare"
    participant: Any = None


async def test_waiter_takes_the_agent_and_its_welcome_ignoring_the_rest() -> None:
    waiter = ProbeWaiter(started=time.perf_counter())
    waiter.on_participant(Who("someone-else"))
    for garbage in (Packet(b"\xff"), Packet(b"[1]"), Packet(b'{"type": "welcome"}', topic="lk.chat"), Packet(None),
                    Packet(b'{"type": "command_result", "ok": true}')):
        waiter.on_data(garbage)
    assert not waiter.agent.done() and not waiter.welcome.done()
    assert waiter.other_packets == [{"type": "command_result", "ok": True}]

    agent = Who("agent-AJ_1", kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
    welcome = {"type": "welcome", "message": "Welcome John! Please say your registered mobile number.",
               "userId": "user-123", "userName": "John Doe"}
    waiter.on_data(Packet(json.dumps(welcome).encode(), participant=agent))
    assert waiter.welcome.result()[0] == welcome
    assert waiter.agent.result()[0] == "agent-AJ_1"  # the sender of the welcome is the agent
    waiter.on_participant(Who("agent-2", kind=rtc.ParticipantKind.PARTICIPANT_KIND_AGENT))
    assert waiter.agent.result()[0] == "agent-AJ_1"


def test_result_description() -> None:
    result = ProbeResult(room="r", identity="p", agent_identity="agent-1",
                         welcome={"message": "Welcome John!", "userId": "u", "userName": "John"},
                         connect_seconds=0.12, agent_seconds=0.5, welcome_seconds=0.61)
    text = result.describe()
    assert result.ok
    assert "agent-1 after 500 ms" in text and "welcome         after 610 ms" in text and "Welcome John!" in text
    assert not ProbeResult(room="r", identity="p").ok


async def test_unreachable_server_is_a_clear_error() -> None:
    settings = Settings(livekit_url=f"ws://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    with pytest.raises(ProbeError) as error:
        await probe_room(settings, metadata="{}", room=None, timeout=5.0)
    assert error.value.kind == "unreachable"
    assert str(error.value).startswith("cannot reach LiveKit at ws://127.0.0.1:")
    assert time.monotonic() - started < 5


async def test_timeout_against_a_server_that_never_answers() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        settings = Settings(livekit_url=f"ws://127.0.0.1:{silent.getsockname()[1]}")
        started = time.monotonic()
        with pytest.raises(ProbeError) as error:
            await probe_room(settings, metadata="{}", room="r1", timeout=1.0)
    assert error.value.kind == "unreachable"
    assert "no answer within 1s" in str(error.value)
    assert time.monotonic() - started < 4


async def test_cli_connect_flag_reports_one_line(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "GOCARE_"))}
    env["LIVEKIT_URL"] = f"ws://127.0.0.1:{closed_port()}"
    env["COLUMNS"] = "300"
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gocare_voice", "test-metadata", '{"userName": "John"}', "--connect",
                         "--timeout", "3"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 1
    assert "Welcome John!" in proc.stdout  # the local reading is still shown
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: cannot reach LiveKit at ws://127.0.0.1:")
