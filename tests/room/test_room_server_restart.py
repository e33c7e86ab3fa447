"""Faults that stop LiveKit processes: the LiveKit server restarted under a worker, and a worker stopped with
SIGTERM while it holds a call. They get a server, a token service and workers of this module's own (the
session's are shared by the other room tests), so this module needs nothing of the session's set and may run
beside the others on another xdist worker."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from calls import GREETING_JOHN, join_as_john, say_number, script_number_check
from conftest import Providers, TokenService, start_token_service, start_worker
from harness.livekit_server import LiveKitServer, start_server
from harness.plugin import PLAN

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def own_server(request: pytest.FixtureRequest, room_logs: Path) -> Iterator[LiveKitServer]:
    plan = request.config.stash[PLAN]
    if plan.external_url:
        pytest.skip("restarts a server of its own; GOCARE_TEST_LIVEKIT_URL points at someone else's")
    server = start_server(plan.binary, log_dir=room_logs / "faults", network=plan.network)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def own_token_service(own_server: LiveKitServer, providers: Providers, room_logs: Path) -> Iterator[TokenService]:
    service = start_token_service(name="token-service", livekit=own_server, logs=room_logs / "faults",
                                  providers=providers, extra={"GOCARE_AGENT_NAME": "multi-assistant-faults"})
    yield service
    service.process.stop()


def own_worker(own_server: LiveKitServer, providers: Providers, users_db: str, room_logs: Path, name: str, **extra: str):
    return start_worker(name=name, livekit=own_server, providers=providers, users_db=users_db, logs=room_logs / "faults",
                        extra={"GOCARE_AGENT_NAME": "multi-assistant-faults", **extra})


async def test_livekit_server_restarted_the_worker_reregisters_and_the_next_call_works(
    request, own_server, own_token_service, providers, users_db, room_logs, scripted, room_name
):
    plan = request.config.stash[PLAN]
    running = own_worker(own_server, providers, users_db, room_logs, "worker-restart",
                         GOCARE_LIVEKIT_CONNECT_RETRIES="20")
    try:
        app = await join_as_john(own_token_service.url, room_name)
        await app.wait_packet("welcome", timeout=30)
        mark = running.process.mark()
        own_server.stop()
        await asyncio.sleep(2)
        restarted = start_server(plan.binary, log_dir=room_logs / "faults", network=plan.network, ports=own_server.ports)
        own_server.process = restarted.process
        await app.leave()
        running.process.wait_for_log(r"registered worker", timeout=90, since=mark)
        assert running.process.process.poll() is None  # the same worker process, not a restart
        again = await join_as_john(own_token_service.url, room_name + "-after")
        try:
            assert (await again.wait_packet("welcome", timeout=30))["message"] == GREETING_JOHN
        finally:
            await again.leave()
    finally:
        running.process.stop()


async def test_worker_stopped_with_sigterm_finishes_its_calls_takes_no_new_ones_and_exits_0(
    own_server, own_token_service, providers, users_db, room_logs, scripted, room_name
):
    running = own_worker(own_server, providers, users_db, room_logs, "worker-drain", GOCARE_WORKER_DRAIN_TIMEOUT="60")
    try:
        script_number_check(scripted, "98765 43210")
        app = await join_as_john(own_token_service.url, room_name)
        await app.wait_agent_says(r"^Welcome John", timeout=30)
        running.process.process.send_signal(signal.SIGTERM)
        running.process.wait_for_log(r"draining worker", timeout=10)
        # a new call is not taken by a draining worker
        late = await join_as_john(own_token_service.url, room_name + "-late")
        await asyncio.sleep(6)
        assert late.agent_identity is None
        await late.leave()
        # the call in progress goes on: the number check still works
        said_at = await say_number(app, scripted, spoken="nine eight seven six five four three two one zero",
                                   written="98765 43210")
        await app.wait_agent_says(r"you're verified", since=said_at, timeout=40)
        assert running.process.process.poll() is None
        left_at = time.monotonic()
        await app.leave()
        code = await asyncio.to_thread(running.process.process.wait, 45)
        assert code == 0
        assert time.monotonic() - left_at < 45
    finally:
        running.process.stop()
