"""Faults in real rooms: a job process killed, the LiveKit server restarted, the worker stopped, the user's
network changing, a second device, a flood of packets. Each bounded in time, all on the namespace's own
addresses. The tests that stop the server or the worker get a server and workers of their own, in
test_room_server_restart.py (a module apart, so it can run beside these on another xdist worker)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import pytest
from livekit import rtc

from calls import GREETING_JOHN, join_as_john, verified_call
from harness.flood import FloodClients
from harness.processes import ManagedProcess
from scripted.openai_server import Reply, Rule

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(240)]


def find_job_pid(worker: ManagedProcess, room: str) -> int | None:
    """The PID of the latest job process that started a session for ``room`` (from its own log lines)."""
    found = re.findall(r'"message": "session started \(room=%s [^\n]*?"pid": (\d+)' % re.escape(room), worker.log_text())
    return int(found[-1]) if found else None


def job_pid(worker: ManagedProcess, room: str) -> int:
    pid = find_job_pid(worker, room)
    assert pid is not None, f"no job for {room} in the worker log"
    return pid


async def test_job_process_killed_mid_call_the_agent_comes_back_and_greets_again(worker, token_service, scripted, room_name):
    app = await verified_call(token_service.url, room_name, scripted)
    try:
        first_agent = app.agent_identity
        killed_at = time.monotonic()
        os.kill(job_pid(worker.process, room_name), signal.SIGKILL)
        # the dead agent is removed at once (LiveKit alone keeps it ~20 s), a new one is dispatched
        await app.wait_agent_left(timeout=15)
        assert app.agent_left_at is not None and app.agent_left_at - killed_at < 10
        app.follow_next_agent()
        await app.wait_agent(timeout=30)
        assert app.agent_identity != first_agent
        welcome = await app.wait_packet("welcome", since=killed_at, timeout=30)
        assert welcome["message"] == GREETING_JOHN
        await app.wait_agent_says(r"^Welcome John", since=killed_at, timeout=30)
        worker.process.wait_for_log(r"agent dispatched again into room " + re.escape(room_name), timeout=5)
        # what the dead process knew is gone: the number is asked for again, and works again
        assert (await app.rpc("switch_agent", {"agent": "attorney"}))["error"] == "not_authenticated"
    finally:
        await app.leave()


async def test_a_job_that_keeps_dying_is_not_dispatched_forever_the_user_is_told(worker, token_service, scripted, room_name):
    app = await join_as_john(token_service.url, room_name)
    try:
        killed_at, killed_pid = 0.0, None
        for _attempt in range(3):  # GOCARE_WORKER_REDISPATCH_LIMIT=2: two returns, then the user is told
            await app.wait_agent(timeout=30)
            await app.wait_packet("welcome", since=killed_at, timeout=30)
            pid = await app.wait_for(lambda old=killed_pid: (p := find_job_pid(worker.process, room_name)) != old and p,
                                     timeout=10, what="the new job's process")
            killed_at, killed_pid = time.monotonic(), pid
            os.kill(pid, signal.SIGKILL)
            app.agent_left_at = None
            await app.wait_agent_left(timeout=15)
            app.follow_next_agent()
        told = await app.wait_packet("agent_unavailable", timeout=15)
        assert "call again later" in told["message"]
        await asyncio.sleep(3)
        assert app.agent_identity is None
    finally:
        await app.leave()


async def test_network_change_reconnects_and_the_session_goes_on_as_that_user(worker, token_service, scripted, room_name):
    app = await verified_call(token_service.url, room_name, scripted)
    scripted.llm.script(Rule(user="still there", reply=Reply(text="Yes John, I'm still here.")))
    try:
        before = time.monotonic()
        await app.room.simulate_scenario(rtc.SimulateScenarioKind.SIMULATE_FULL_RECONNECT)
        # a reconnect is a new participant (new sid): it gets the welcome packet again
        await app.wait_packet("welcome", since=before, timeout=30)
        said_at = time.monotonic()
        scripted.deepgram.script_live("Are you still there?")
        await app.say("are you still there")
        await app.wait_agent_says(r"still here", since=said_at, timeout=40)
        request = next(r for r in scripted.llm.chat_requests() if "still there" in r.last_user_text)
        assert "You are GoCare, a friendly" in request.system_text  # still verified: the assistant answered
    finally:
        await app.leave()


async def test_a_second_device_with_the_same_identity_takes_over_the_call(worker, token_service, scripted, room_name):
    phone = await verified_call(token_service.url, room_name, scripted)
    scripted.llm.script(Rule(user="tablet", reply=Reply(text="Hello again John, now on your tablet.")))
    tablet = None
    try:
        disconnected = asyncio.Event()
        phone.room.on("disconnected", lambda *_: disconnected.set())
        tablet = await join_as_john(token_service.url, room_name)
        await asyncio.wait_for(disconnected.wait(), 15)  # LiveKit replaced the first device
        await tablet.wait_agent(timeout=10)
        said_at = time.monotonic()
        scripted.deepgram.script_live("I'm on my tablet now.")
        await tablet.say("I am on my tablet now")
        await tablet.wait_agent_says(r"now on your tablet", since=said_at, timeout=40)
        assert (await tablet.rpc("start_conversation"))["agent"] == "assistant"  # still verified
    finally:
        await phone.leave()
        if tablet is not None:
            await tablet.leave()


async def test_twenty_clients_flooding_one_room_leave_the_other_rooms_call_alone(
    worker, token_service, scripted, room_name
):
    scripted.llm.script(Rule(user="how long", reply=Reply(text="About ten minutes.")))
    quiet = await join_as_john(token_service.url, room_name + "-quiet")
    target = await join_as_john(token_service.url, room_name)
    try:
        await quiet.wait_agent_says(r"^Welcome John", timeout=30)
        await target.wait_packet("welcome", timeout=30)

        async def turn_latency() -> float:
            scripted.deepgram.script_live("How long is the wait?")
            await quiet.say("how long is the wait")
            ended = time.monotonic()
            return await quiet.wait_agent_speech(since=ended, seconds=0.3, timeout=30) - ended

        baseline = await turn_latency()
        agent = target.agent_identity
        assert agent is not None
        # the flood goes on until the other room's turn was measured under it and at least 100 packets and 100
        # RPCs went out (a count, not 10 s of sending: on a machine shared with other test processes the
        # clients send slower), 30 s at most. The 20 clients are a process of their own, as 20 devices would
        # be (in this one they would share the FFI queue and the event loop with the client measuring), at a
        # lower CPU priority (attackers' devices spend their own CPU: harness/flood.py)
        flood = await FloodClients.start(token_service.url, room_name, agent, clients=20, minimum=100,
                                         max_seconds=30)
        try:
            await asyncio.sleep(2)
            await flood.measuring()
            during = await turn_latency()
            await flood.measured()
            sent = await flood.finish()
        finally:
            await flood.kill()
        worker_turns = re.findall(r"turn latency \(room=%s\): ([0-9.]+) s" % re.escape(room_name + "-quiet"),
                                  worker.process.log_text())
        print(f"flood: quiet room's turn {baseline:.2f} s before, {during:.2f} s during; worker: {worker_turns}; {sent}")
        # the other room's answer time is unaffected. The worker's own figure (end of speech -> its first audio
        # frame, from its log) is what the flood could slow in our code; the client's also holds the SFU and this
        # test process, which share the 2 cores with the 20 flooding clients and the other test processes: a
        # generous bound there (seen: 2.40 s at the client while the worker measured 0.59 and 0.60 s)
        assert len(worker_turns) == 2, worker_turns
        worker_before, worker_during = (float(t) for t in worker_turns)
        assert worker_during < max(2 * worker_before, worker_before + 1.0), (worker_before, worker_during)
        assert during < max(2 * baseline, baseline + 3.0), (baseline, during, "the worker's own view:", worker_turns)
        assert sent.packets >= 100 and sent.rpc >= 100, sent  # a flood, each RPC answered "forbidden"
        assert not sent.wrong_answers, sent
        assert sent.window_rpc >= 20, sent  # and it was on while the other room's turn was measured
        # and the flooded room's own user is still served
        assert (await target.rpc("start_conversation"))["ok"] is True
        assert f"session closed (room={room_name}" not in worker.process.log_text()
    finally:
        for client in [quiet, target]:
            await client.leave()
