"""The call's end, and the CLI's probe: what a user and an operator see around a call."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from calls import join_as_john
from harness.processes import group_members

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(180)]


def _group_size(pgid: int) -> int:
    """Live processes in the worker's process group: the worker, its forkserver and its job processes."""
    return sum(1 for _pid, fields in group_members(pgid) if fields[0] != "Z")


async def test_user_leaves_the_job_ends_and_the_worker_is_idle_again(worker, token_service, scripted, room_name):
    def idle() -> bool:
        return worker.active_jobs() == 0

    worker.process.wait_until(idle, timeout=30, what="no job running before the call")
    time.sleep(2)  # the pool refills its warm process after an earlier job
    baseline = _group_size(worker.process.pid)
    app = await join_as_john(token_service.url, room_name)
    try:
        await app.wait_packet("welcome", timeout=20)
        assert worker.active_jobs() == 1
        mark = worker.process.mark()
    finally:
        await app.leave()
    worker.process.wait_until(idle, timeout=30, what="the job ended after the user left")
    worker.process.wait_for_log(r"user disconnected \(room=" + room_name, timeout=10, since=mark)
    worker.process.wait_for_log(r"session closed \(room=" + room_name, timeout=40, since=mark)  # after the reconnect grace
    # no job process left behind: the group shrinks back to what it was (the pool keeps one warm process)
    worker.process.wait_until(lambda: _group_size(worker.process.pid) <= baseline, timeout=30,
                              what=f"worker process group back to {baseline} processes")


KNOWN_STALLS = ("_create_ssl_context", "create_connect_args", "importing anyio")
"""Blocking work the worker used to do on a job's event loop at the start of every call (found in the room
tests' logs): the job's HTTP session building its TLS context, the directory's engine, the first LLM
request's imports. Each stalled the audio loop for 100-250 ms while the greeting played."""


async def test_a_call_does_not_block_the_agents_audio_loop_with_start_up_work(worker, token_service, scripted, room_name):
    mark = worker.process.mark()
    app = await join_as_john(token_service.url, room_name)
    try:
        await app.wait_agent_says(r"^Welcome John", timeout=30)
        scripted.deepgram.script_live("Hello there")
        await app.say("hello there")
        await app.wait_for(lambda: [r for r in scripted.llm.chat_requests() if "Hello there" in r.last_user_text],
                           timeout=30, what="the first LLM request of the call")
        await asyncio.sleep(1)
    finally:
        await app.leave()
    stalls = [line for line in worker.process.log_since(mark).splitlines()
              if "event loop blocked" in line and room_name in line]
    assert not [s for s in stalls if any(k in s for k in KNOWN_STALLS)], stalls


def _probe(livekit, *args: str, agent: str = "multi-assistant") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOCARE_", "LIVEKIT_"))}
    env.update(LIVEKIT_URL=livekit.url, LIVEKIT_API_KEY=livekit.api_key, LIVEKIT_API_SECRET=livekit.api_secret,
               GOCARE_AGENT_NAME=agent)
    return subprocess.run([sys.executable, "-m", "gocare_voice", "test-metadata", *args], capture_output=True,
                          text=True, timeout=90, env=env)


def test_test_metadata_connect_gets_the_welcome_from_the_running_worker(worker, livekit, scripted):
    done = _probe(livekit, json.dumps({"userId": "user-42", "userName": "John Doe"}), "--connect", "--timeout", "40")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "message       Welcome John! Please say your registered mobile number." in done.stdout
    assert "userId        user-42" in done.stdout


def test_test_metadata_connect_without_an_agent_fails_in_one_line(worker, livekit, scripted):
    started = time.monotonic()
    done = _probe(livekit, "--connect", "--timeout", "5", agent="nobody-listens")
    assert done.returncode == 1
    assert time.monotonic() - started < 30
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "no agent 'nobody-listens' joined room" in lines[0] and "gocare worker start" in lines[0]
