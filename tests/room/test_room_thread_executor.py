"""``GOCARE_WORKER_JOB_EXECUTOR=thread``: every call a thread of the worker process (bench/bench_capacity.py has
what it saves). A call whose session is torn down in the middle must leave the worker's other calls alone: the
other caller still gets answers, the worker stays registered and takes the next call. (A crash of native code in
one call, which ends the whole process and so every call, is the trade-off docs/operations.md states.)"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator

import pytest
from livekit import api

from calls import GREETING_JOHN, join_as_john, verified_call
from harness.processes import group_members
from conftest import RunningWorker, TokenService, start_token_service, start_worker
from scripted.openai_server import Reply, Rule

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(240)]

AGENT = "multi-assistant-threads"
ANSWER = "Your next appointment is on Monday at nine."


@pytest.fixture(scope="module")
def thread_worker(livekit, providers, users_db, room_logs) -> Iterator[tuple[RunningWorker, TokenService]]:
    worker = start_worker(name="worker-threads", livekit=livekit, providers=providers, users_db=users_db,
                          logs=room_logs, extra={"GOCARE_WORKER_JOB_EXECUTOR": "thread", "GOCARE_AGENT_NAME": AGENT,
                                                 "GOCARE_WORKER_IDLE_PROCESSES": "2"})
    service = start_token_service(name="token-service-threads", livekit=livekit, logs=room_logs, providers=providers,
                                  extra={"GOCARE_AGENT_NAME": AGENT, "GOCARE_RATE_LIMIT": "off"})
    yield worker, service
    service.process.stop()
    worker.process.stop()


async def test_one_call_torn_down_in_thread_mode_leaves_the_other_call_answering(thread_worker, livekit, scripted,
                                                                                   room_name):
    worker, service = thread_worker
    victim_room, other_room = f"{room_name}-a", f"{room_name}-b"
    victim = await verified_call(service.url, victim_room, scripted)
    other = await verified_call(service.url, other_room, scripted)
    try:
        # both calls are threads of the one worker process: it started no job process (nor forkserver) for them
        members = [pid for pid, fields in group_members(worker.process.pid) if fields[0] != "Z"]
        assert members == [worker.process.pid]
        async with api.LiveKitAPI(livekit.url.replace("ws://", "http://"), livekit.api_key,
                                  livekit.api_secret) as lk:
            torn_at = time.monotonic()
            assert victim.agent_identity is not None
            await lk.room.remove_participant(api.RoomParticipantIdentity(room=victim_room,
                                                                         identity=victim.agent_identity))
        await victim.wait_agent_left(timeout=15)
        assert victim.agent_left_at is not None and victim.agent_left_at >= torn_at

        scripted.llm.script(Rule(user="next appointment", reply=Reply(text=ANSWER)))
        scripted.deepgram.script_live("When is my next appointment?")
        asked_at = time.monotonic()
        await other.say("when is my next appointment")
        await other.wait_agent_says(re.escape(ANSWER), since=asked_at, timeout=40)
        assert other.agent_left_at is None

        # the same worker process (never restarted) still takes a new call
        assert worker.process.process.poll() is None
        os.kill(worker.process.pid, 0)
        third = await join_as_john(service.url, f"{room_name}-c")
        try:
            await third.wait_agent_says(re.escape(GREETING_JOHN), timeout=30)
        finally:
            await third.leave()
    finally:
        await victim.leave()
        await other.leave()
