"""The worker's Prometheus metrics after real calls: livekit-agents' own endpoint
(``GOCARE_WORKER_METRICS_PORT``) carries our counters, counted in the job processes, summed across them.

A worker of this module's own (metrics on, a 1 s reconnect grace so a call ends soon after the app leaves),
beside the session's worker; each test scrapes before and after its call and checks every counter moved by
exactly what the call did (a failing LLM: what the scripted provider saw), and that nothing personal reached
a label.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from calls import GREETING_JOHN, MISMATCH_REPLY, join_as_john, say_number, script_number_check, verified_call
from conftest import Providers, RunningWorker, TokenService, start_token_service, start_worker
from harness.app_client import AppClient
from harness.livekit_server import LiveKitServer
from harness.processes import free_port
from harness.prometheus import Samples, samples
from scripted.openai_server import Reply, Rule

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(240)]

AGENT = "multi-assistant-metrics"


@dataclass
class MeteredWorker:
    worker: RunningWorker
    metrics_url: str

    def scrape(self) -> tuple[str, Samples]:
        text = httpx.get(self.metrics_url, timeout=10).text
        return text, samples(text)


@pytest.fixture(scope="module")
def metered(livekit: LiveKitServer, providers: Providers, users_db: str, room_logs: Path) -> Iterator[MeteredWorker]:
    port = free_port()
    running = start_worker(name="worker-metrics", livekit=livekit, providers=providers, users_db=users_db,
                           logs=room_logs, extra={"GOCARE_AGENT_NAME": AGENT, "GOCARE_WORKER_METRICS_PORT": str(port),
                                                  "GOCARE_RECONNECT_GRACE": "1"})
    yield MeteredWorker(worker=running, metrics_url=f"http://127.0.0.1:{port}/metrics")
    running.process.stop()


@pytest.fixture(scope="module")
def metered_tokens(livekit: LiveKitServer, providers: Providers, room_logs: Path) -> Iterator[TokenService]:
    service = start_token_service(name="token-service-metrics", livekit=livekit, logs=room_logs, providers=providers,
                                  extra={"GOCARE_AGENT_NAME": AGENT})
    yield service
    service.process.stop()


def ours(samples: Samples) -> Samples:
    return {key: value for key, value in samples.items() if key[0].startswith("gocare_")}


TURN_LATENCY = "gocare_turn_latency_seconds"


def moved(before: Samples, after: Samples, *, latency: bool = False) -> dict[str, float]:
    """Every gocare_ sample that changed, as ``name{label=value,...}`` -> the difference; the turn latency
    histogram (whose buckets depend on timing) only with ``latency=True``."""
    changes: dict[str, float] = {}
    for key in set(ours(before)) | set(ours(after)):
        if key[0].startswith(TURN_LATENCY) and not latency:
            continue
        delta = after.get(key, 0.0) - before.get(key, 0.0)
        if delta:
            name, labels = key
            changes[name + "{" + ",".join(f"{k}={v}" for k, v in labels) + "}"] = delta
    return changes


ONE_CALL = {"gocare_calls_started_total{}": 1, "gocare_calls_ended_total{reason=user_left}": 1}
"""What a call the user hung up on adds."""


async def moved_by_the_call(metered: MeteredWorker, before: Samples, room: str) -> tuple[str, dict[str, float]]:
    """After the app left: the job ends after the reconnect grace, so scrape until the ended counter moved
    (30 s at most); the scrape's text (checked for personal data) and what moved since ``before``."""
    deadline = time.monotonic() + 30
    was = sum(v for (name, _), v in ours(before).items() if name == "gocare_calls_ended_total")
    while True:
        text, scraped = await asyncio.to_thread(metered.scrape)
        ended = sum(v for (name, _), v in ours(scraped).items() if name == "gocare_calls_ended_total")
        if ended > was or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert_nothing_personal(text, room)
    return text, moved(before, scraped, latency=True)


def answered_turns(changes: dict[str, float]) -> dict[str, float]:
    """How many answered turns the latency histogram counted, per stage; ``changes`` without the histogram."""
    counts = {key: changes.pop(key) for key in list(changes) if key.startswith(TURN_LATENCY + "_count")}
    for key in [key for key in changes if key.startswith(TURN_LATENCY)]:
        del changes[key]
    return counts


async def verified_with_the_assistant(metered: MeteredWorker, tokens: TokenService, room: str,
                                      scripted: Providers) -> AppClient:
    """A verified call, once the welcome is done and the assistant took over (the handoff comes after the
    welcome's speech: a switch or a scrape before it would miss the assistant)."""
    mark = metered.worker.process.mark()
    app = await verified_call(tokens.url, room, scripted)
    try:
        await asyncio.to_thread(metered.worker.process.wait_for_log, r"agent entered: main_agent", timeout=20,
                                since=mark)
    except BaseException:
        await app.leave()
        raise
    return app


def assert_nothing_personal(text: str, room: str) -> None:
    for personal in (room, "user-42", "John", "98765", "43210", "12345"):
        assert personal not in text, f"{personal!r} in the metrics"


async def test_verified_call_attorney_switch_and_bad_commands_are_counted_exactly(
    metered, metered_tokens, scripted, room_name
):
    _, before = await asyncio.to_thread(metered.scrape)
    app = await verified_with_the_assistant(metered, metered_tokens, room_name, scripted)
    try:
        started = time.monotonic()
        assert (await app.rpc("switch_agent", {"agent": "attorney"}))["ok"] is True
        await app.wait_agent_says(r"legal assistant", since=started, timeout=30)
        assert (await app.rpc("switch_agent", {"agent": "attorney"}))["ok"] is True  # already there: no switch
        assert (await app.rpc("switch_agent", {"agent": "pirate"}))["error"] == "invalid_agent"
        assert (await app.rpc("switch_agent", "{not json"))["error"] == "malformed"
        assert (await app.rpc("start_turn"))["error"] == "not_click_to_talk"
    finally:
        await app.leave()
    text, changes = await moved_by_the_call(metered, before, room_name)
    # one answered voice turn (the number -> the welcome); its other stages are there when livekit could time
    # them (it leaves out the transcript and end-of-turn delays when its VAD timing was unreliable)
    counted = answered_turns(changes)
    assert counted[f"{TURN_LATENCY}_count{{stage=total}}"] == 1, counted
    assert all(count == 1 for count in counted.values()), counted
    assert changes == {
        **ONE_CALL,
        "gocare_verifications_total{outcome=verified}": 1,
        # verified -> the personal welcome -> the assistant; the app's switch -> the attorney
        "gocare_agent_handoffs_total{agent=greeting_agent}": 1,
        "gocare_agent_handoffs_total{agent=main_agent}": 1,
        "gocare_agent_handoffs_total{agent=attorney_agent}": 1,
        "gocare_mode_switches_total{mode=attorney}": 1,
        "gocare_command_errors_total{code=invalid_agent}": 1,
        "gocare_command_errors_total{code=malformed}": 1,
        "gocare_command_errors_total{code=not_click_to_talk}": 1,
    }
    # livekit-agents' own metrics come in the same scrape (the worker's main process)
    assert "lk_agents_active_job_count" in text and "lk_agents_worker_load" in text


async def test_a_wrong_number_is_counted_as_a_mismatch(metered, metered_tokens, scripted, room_name):
    _, before = await asyncio.to_thread(metered.scrape)
    script_number_check(scripted, "12345 67890")
    app = await join_as_john(metered_tokens.url, room_name)
    try:
        await app.wait_agent_says(re.escape(GREETING_JOHN), timeout=30)
        said_at = await say_number(app, scripted, spoken="one two three four five six seven eight nine zero",
                                   written="12345 67890")
        await app.wait_agent_says(re.escape(MISMATCH_REPLY), since=said_at, timeout=40)
    finally:
        await app.leave()
    _, changes = await moved_by_the_call(metered, before, room_name)
    assert answered_turns(changes)[f"{TURN_LATENCY}_count{{stage=total}}"] == 1
    assert changes == {**ONE_CALL, "gocare_verifications_total{outcome=mismatch}": 1}


async def test_a_failing_language_model_is_counted_per_attempt(metered, metered_tokens, scripted, room_name):
    app = await verified_with_the_assistant(metered, metered_tokens, room_name, scripted)
    try:
        _, before = await asyncio.to_thread(metered.scrape)
        scripted.llm.script(Rule(user="blood pressure", reply=Reply(status=500, error="scripted outage")))
        said_at = time.monotonic()
        scripted.deepgram.script_live("What was my blood pressure?")
        await app.say("what was my blood pressure")
        await app.wait_agent_says(r"having trouble answering", since=said_at, timeout=60)
        failed = len([r for r in scripted.llm.chat_requests() if "blood pressure" in r.last_user_text])
        _, after = await asyncio.to_thread(metered.scrape)
    finally:
        await app.leave()
    # every failed request is one error; with GOCARE_LLM_RETRIES=1 each reply is two attempts, the second one
    # unrecoverable (what the apology answers)
    assert failed >= 2 and failed % 2 == 0, failed
    assert moved(before, after) == {
        "gocare_provider_errors_total{recoverable=true,stage=llm}": failed // 2,
        "gocare_provider_errors_total{recoverable=false,stage=llm}": failed // 2,
    }
