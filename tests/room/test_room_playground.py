"""The browser playground (``GET /playground``) in headless Chromium against the real LiveKit server, the real
worker and the scripted providers: a person's call, click by click. The page gets its token from the token
service, the livekit-client SDK file from another origin with the pinned integrity hash, and its microphone
from a WAV file (harness.browser). Each test leaves a screenshot of the page in the test log folder
(``playground-<test>.png``), and fails if the browser reported a Content-Security-Policy violation or an
uncaught error.

The scripted speech-to-text cuts utterances by energy and writes what the test scripted, so the fake
microphone's recording (the registered number, spoken by espeak-ng) stands for whatever the step needs.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from calls import GREETING_JOHN, WELCOME_BACK, script_number_check
from conftest import JWT_SECRET, Providers, TokenService, start_token_service
from harness.processes import free_port
from harness.browser import (
    PlaygroundPage,
    expect,
    SdkServer,
    browser_required,
    chromium_args,
    locate_chromium,
    locate_sdk,
    microphone_wav,
    unavailable_reason,
)
from scripted.deepgram_server import DEFAULT_TRANSCRIPT
from scripted.openai_server import Reply, Rule

from gocare_voice.conversation.agents import CLICK_TO_TALK_INTRO
from gocare_voice.token_service.playground.page import load_pin

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(240)]

NUMBER_SPOKEN = "nine eight seven six five four three two one zero"
NUMBER_WRITTEN = "98765 43210"
NO_WORKER_AGENT = "playground-no-worker"
UPLOAD_REPLY = "Your appointment is tomorrow at nine in the morning."

OpenPage = Callable[..., Awaitable[PlaygroundPage]]


@pytest.fixture(scope="session")
def playground_sdk() -> Iterator[str]:
    """The pinned SDK file from the npm package, served from its own origin like a CDN."""
    reason = unavailable_reason()
    if reason:
        if browser_required():
            pytest.fail(f"GOCARE_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    sdk = locate_sdk()
    assert sdk is not None
    with SdkServer(sdk) as server:
        yield server.url


@pytest.fixture(scope="module")
def playground_service(livekit, providers: Providers, room_logs: Path, playground_sdk: str,
                       users_db: str) -> Iterator[TokenService]:
    """``gocare token-server`` (no caller authentication) serving the page; the pinned hash is checked; it
    reads the call records the session's worker writes (the same database)."""
    service = start_token_service(
        name="token-service-playground", livekit=livekit, logs=room_logs, providers=providers,
        extra={"GOCARE_PLAYGROUND": "on", "GOCARE_PLAYGROUND_SDK_URL": playground_sdk,
               "GOCARE_PLAYGROUND_SDK_SRI": load_pin().integrity, "GOCARE_DATABASE_URL": users_db},
    )
    yield service
    service.process.stop()


@pytest.fixture(scope="module")
def jwt_playground_service(livekit, providers: Providers, room_logs: Path, playground_sdk: str) -> Iterator[TokenService]:
    """The page in ``jwt`` mode, dispatching an agent name no worker serves (as when no worker runs)."""
    service = start_token_service(
        name="token-service-playground-jwt", livekit=livekit, logs=room_logs, providers=providers,
        extra={"GOCARE_PLAYGROUND": "on", "GOCARE_PLAYGROUND_SDK_URL": playground_sdk,
               "GOCARE_PLAYGROUND_SDK_SRI": load_pin().integrity, "GOCARE_AUTH_MODE": "jwt",
               "GOCARE_AUTH_JWT_SECRET": JWT_SECRET, "GOCARE_AGENT_NAME": NO_WORKER_AGENT},
    )
    yield service
    service.process.stop()


@pytest.fixture(scope="module")
def unreachable_livekit_service(livekit, room_logs: Path, playground_sdk: str) -> Iterator[TokenService]:
    """Tokens that name a LiveKit URL nothing listens on (a wrong GOCARE_LIVEKIT_CLIENT_URL)."""
    service = start_token_service(
        name="token-service-playground-unreachable", livekit=livekit, logs=room_logs,
        extra={"GOCARE_PLAYGROUND": "on", "GOCARE_PLAYGROUND_SDK_URL": playground_sdk,
               "GOCARE_LIVEKIT_CLIENT_URL": f"ws://127.0.0.1:{free_port()}"},
    )
    yield service
    service.process.stop()


@pytest.fixture
async def open_page(request: pytest.FixtureRequest, room_logs: Path, tmp_path: Path) -> AsyncIterator[OpenPage]:
    """``await open_page(url, says=...)``: a fresh Chromium whose microphone says ``says`` each time the page
    opens it, on ``url``. The page's last state is saved as ``playground-<test>.png``."""
    from playwright.async_api import async_playwright

    pages: list[PlaygroundPage] = []
    async with async_playwright() as playwright:
        async def open_(url: str, *, says: str | None = None, width: int = 1280) -> PlaygroundPage:
            wav = microphone_wav(tmp_path / f"microphone-{len(pages)}.wav", says)
            browser = await playwright.chromium.launch(
                executable_path=locate_chromium(), headless=True, args=chromium_args(wav))
            context = await browser.new_context(viewport={"width": width, "height": 900})
            page = PlaygroundPage(await context.new_page())
            pages.append(page)
            await page.open(url)
            return page

        try:
            yield open_
        finally:
            name = request.node.name.removeprefix("test_")[:60]
            for index, page in enumerate(pages):
                suffix = f"-{index}" if index else ""
                try:
                    await page.screenshot(room_logs / f"playground-{name}{suffix}.png")
                finally:
                    await page.page.context.browser.close()  # type: ignore[union-attr]
    for page in pages:
        assert not page.problems, f"the browser reported: {page.problems[:5]}"


def app_login(sub: str, name: str) -> str:
    """What the app's own sign-in hands it (and a person pastes into the page's bearer field)."""
    return jwt.encode({"sub": sub, "name": name, "exp": int(time.time()) + 600}, JWT_SECRET, algorithm="HS256")


async def join_and_verify(page: PlaygroundPage, scripted: Providers, room: str) -> None:
    """John joins with the microphone off, hears the greeting, turns the microphone on and says his number
    (the fake microphone starts its file afresh), and the page shows the agent's verified welcome."""
    script_number_check(scripted, NUMBER_WRITTEN)
    await page.join(identity="user-42", name="John Doe", room=room)
    await page.expect_text("#transcript", re.escape(GREETING_JOHN), timeout=30)
    scripted.deepgram.script_live(NUMBER_WRITTEN)
    await page.page.click("#mic-toggle")
    await page.expect_text("#transcript", re.escape(WELCOME_BACK), timeout=45)


async def test_playground_joins_and_shows_the_greeting(worker, playground_service, scripted, room_name, open_page):
    page = await open_page(playground_service.url + "/playground", width=390)  # a phone's width
    await page.join(identity="user-42", name="John Doe", room=room_name)
    await page.expect_text("#connection-state", f"connected to {re.escape(room_name)} as user-42")
    await page.expect_text("#transcript", r"Agent\s*" + re.escape(GREETING_JOHN), timeout=30)
    await page.expect_text("#welcome", "Welcome packet: " + re.escape(GREETING_JOHN))
    await page.expect_text("#agent-state", r"agent-\S+: (listening|thinking|speaking)")
    # the protocol pane shows the token call (without the token) and the welcome packet as JSON
    protocol = await page.expect_text("#protocol", r'"type": "welcome"')
    assert '"userName": "John Doe"' in protocol and "POST /api/token" in protocol
    assert "eyJ" not in protocol, "a token is shown on the page"
    # the agent's voice is attached and playing
    assert await page.page.locator("#agent-audio audio").count() >= 1


async def test_playground_microphone_says_the_number_and_the_page_shows_the_verified_welcome(
    worker, playground_service, scripted, room_name, open_page
):
    page = await open_page(playground_service.url + "/playground", says=NUMBER_SPOKEN)
    levels: list[float] = []

    async def sample_meter() -> None:
        for _ in range(80):
            levels.append(await page.page.eval_on_selector("#level", "meter => meter.value"))
            await asyncio.sleep(0.1)

    script_number_check(scripted, NUMBER_WRITTEN)
    await page.join(identity="user-42", name="John Doe", room=room_name)
    await page.expect_text("#transcript", re.escape(GREETING_JOHN), timeout=30)
    scripted.deepgram.script_live(NUMBER_WRITTEN)
    await page.page.click("#mic-toggle")
    meter = asyncio.create_task(sample_meter())
    await page.expect_text("#mic-toggle", "Microphone on")
    assert await page.page.get_attribute("#mic-toggle", "aria-pressed") == "true"
    await page.expect_text("#transcript", r"You\s*" + re.escape(NUMBER_WRITTEN), timeout=30)
    await page.expect_text("#transcript", r"Agent\s*" + re.escape(WELCOME_BACK), timeout=40)
    await meter
    # the browser's microphone really carried the recording: one utterance about as long as the speech
    utterance = scripted.deepgram.live_utterances()[0]
    assert 2.0 < utterance.duration < 4.5, utterance
    assert max(levels) > 0.1, f"the level meter never moved: {max(levels)}"
    answer = await _start_conversation(page)
    assert '"agent":"assistant"' in answer


async def _start_conversation(page: PlaygroundPage) -> str:
    await page.page.click("#start-conversation")
    return await page.expect_text("#answer", r'start_conversation: \{"ok":true')


async def test_playground_attorney_button_gets_its_answer_and_the_agent_introduces_itself(
    worker, playground_service, scripted, room_name, open_page
):
    page = await open_page(playground_service.url + "/playground", says=NUMBER_SPOKEN)
    await join_and_verify(page, scripted, room_name)
    await page.page.click("button[data-agent='attorney']")
    await page.expect_text("#answer", re.escape('switch_agent: {"ok":true,"command":"switch_agent","agent":"attorney"}'))
    await page.expect_text("#mode", "^attorney$")
    assert await page.page.get_attribute("button[data-agent='attorney']", "aria-pressed") == "true"
    await page.expect_text("#transcript", r"Agent\s*[^\n]*legal assistant", timeout=30)
    await page.expect_text("#protocol", r"RPC switch_agent")
    # typed chat (lk.chat) reaches the attorney, whose answer is spoken and transcribed (after the intro:
    # a message interrupts the agent)
    await page.expect_text("#agent-state", r": listening$", timeout=30)
    scripted.llm.script(Rule(user="rights as a tenant", system="legal information assistant",
                             reply=Reply(text="As a tenant you have the right to a safe home.")))
    await page.page.fill("#chat-text", "What are my rights as a tenant?")
    await page.page.press("#chat-text", "Enter")
    await page.expect_text("#transcript", r"You \(chat\)\s*What are my rights as a tenant\?")
    await page.expect_text("#transcript", r"Agent\s*As a tenant you have the right to a safe home", timeout=40)


async def test_playground_hold_to_talk_produces_a_reply(worker, playground_service, scripted, room_name, open_page):
    page = await open_page(playground_service.url + "/playground", says=NUMBER_SPOKEN)
    await join_and_verify(page, scripted, room_name)
    scripted.llm.script(
        Rule(user="repairs", system="push-to-talk", reply=Reply(text="Ask your landlord in writing to make the repairs.")),
    )
    await page.page.click("button[data-agent='click_to_talk']")
    await page.expect_text("#mode", "^click_to_talk$")
    # a press interrupts the agent (start_turn): let it finish explaining first, as a person would (the
    # transcript follows the speech, so the whole sentence is there when it was said)
    await page.expect_text("#transcript", re.escape(CLICK_TO_TALK_INTRO), timeout=40)
    await page.expect_text("#agent-state", r": listening$", timeout=30)
    # in push-to-talk the microphone is closed until the button is held
    await page.expect_text("#mic-toggle", "Microphone off")
    heard_before = len(scripted.deepgram.live_utterances())
    scripted.deepgram.script_live("The heating is broken. Who pays for repairs?")
    button = page.page.locator("#ptt")
    await button.hover()
    await page.page.mouse.down()
    await page.expect_text("#answer", re.escape('start_turn: {"ok":true,"command":"start_turn","turn":"open"}'))
    # held until the speech-to-text heard the whole utterance (the microphone file starts afresh on press)
    await asyncio.to_thread(scripted.deepgram.wait_for_utterances, heard_before + 1, 20)
    await page.page.mouse.up()
    await page.expect_text("#answer", re.escape('end_turn: {"ok":true,"command":"end_turn","turn":"committed"}'))
    await page.expect_text("#transcript", r"Agent\s*[^\n]*make the repairs", timeout=40)
    await page.expect_text("#mic-toggle", "Microphone off")
    # by keyboard: Space held on the focused button opens a turn, Esc cancels it (no end_turn on release)
    await page.expect_text("#agent-state", r": listening$", timeout=30)
    await button.focus()
    await page.page.keyboard.down(" ")
    await page.expect_text("#answer", re.escape('start_turn: {"ok":true,"command":"start_turn","turn":"open"}'))
    await page.page.keyboard.press("Escape")
    await page.expect_text("#answer", re.escape('cancel_turn: {"ok":true,"command":"cancel_turn","turn":"cancelled"}'))
    await page.page.keyboard.up(" ")
    await asyncio.sleep(1)
    assert "end_turn" not in (await page.page.inner_text("#answer"))
    await page.expect_text("#mic-toggle", "Microphone off")


async def test_playground_recorded_message_uploads_and_the_agent_is_notified(
    worker, playground_service, scripted, room_name, open_page
):
    page = await open_page(playground_service.url + "/playground",
                           says="Hello, I would like to check the status of my appointment for tomorrow morning.")
    scripted.llm.script(Rule(user="status of my appointment", reply=Reply(text=UPLOAD_REPLY)))
    await page.join(identity="user-42", name="John Doe", room=room_name)
    await page.expect_text("#transcript", re.escape(GREETING_JOHN), timeout=30)
    await page.page.click("#record")
    await page.expect_text("#record-status", "recording")
    await asyncio.sleep(7.5)  # 1 s of silence, about 5 s of speech, then some quiet
    await page.page.click("#record")
    await page.expect_text("#upload-notified", "^true$", timeout=60)
    assert await page.page.inner_text("#upload-transcript") == DEFAULT_TRANSCRIPT
    assert await page.page.inner_text("#upload-reply") == UPLOAD_REPLY
    # what reached the speech-to-text was the browser's recording, decoded by the service: the speech in it
    heard = scripted.deepgram.listen_requests()[-1]
    assert heard.duration is not None and 5.0 < heard.duration < 10.0, heard
    assert heard.rms > scripted.deepgram.silence_rms, heard
    # the spoken reply is loaded into the page's player
    assert (await page.page.get_attribute("#upload-audio", "src") or "").startswith("blob:")
    await page.expect_text("#protocol", r'"agent_notified": true')


async def test_playground_refused_token_shows_the_services_message(jwt_playground_service, scripted, open_page):
    async with httpx.AsyncClient(timeout=10) as http:
        refused = await http.post(jwt_playground_service.url + "/api/token", json={"room_config": {}})
    assert refused.status_code == 401
    expected = refused.json()
    page = await open_page(jwt_playground_service.url + "/playground")
    assert await page.page.is_visible("#bearer") and not await page.page.is_visible("#identity")
    await page.join(name="John Doe")
    shown = await page.expect_text(
        "#error", re.escape(f"The token request was refused (401 {expected['error']}): {expected['detail']}"))
    assert expected["detail"] in shown
    assert await page.page.inner_text("#connection-state") == "disconnected"


async def test_playground_without_a_worker_says_no_agent_joined(jwt_playground_service, scripted, open_page):
    page = await open_page(jwt_playground_service.url + "/playground?agent_timeout=3")
    await page.join(bearer=app_login("user-42", "John Doe"))
    await page.expect_text("#connection-state", r"connected to user-42~\S+ as user-42")  # the room the service picked
    started = time.monotonic()
    shown = await page.expect_text("#error", r"No agent joined within 3 s", timeout=15)
    assert time.monotonic() - started < 10
    assert f"GOCARE_AGENT_NAME={NO_WORKER_AGENT}" in shown and "gocare worker" in shown
    await page.expect_text("#agent-state", "no agent")


async def test_playground_unreachable_livekit_is_said_in_words(unreachable_livekit_service, open_page):
    page = await open_page(unreachable_livekit_service.url + "/playground")
    await page.join(identity="user-42", name="John Doe")
    shown = await page.expect_text("#error", r"Could not connect to LiveKit at ws://127\.0\.0\.1:\d+: ", timeout=40)
    assert "Is the LiveKit server running and reachable from this browser?" in shown
    await page.expect_text("#connection-state", "^disconnected$")
    assert not await page.page.is_disabled("#join")


async def test_playground_shows_the_call_list_and_a_records_transcript(
    worker, playground_service, scripted, room_name, open_page
):
    page = await open_page(playground_service.url + "/playground", says=NUMBER_SPOKEN)
    await join_and_verify(page, scripted, room_name)
    # the record is written as the call goes: this call is listed (in progress) with what was said so far
    await page.page.click("#calls-load")
    await page.expect_text("#calls-status", r"\d+ of \d+ call\(s\)")
    call = page.page.locator("#calls-list button", has_text=room_name)
    await expect(call).to_have_count(1, timeout=10_000)
    assert "verified" in await call.inner_text()
    await call.click()
    turns = await page.expect_text("#call-turns", re.escape(WELCOME_BACK), timeout=10)
    assert "assistant: " + GREETING_JOHN in turns and "user: ********10" in turns
    assert NUMBER_WRITTEN not in turns and "9876543210" not in turns
    # another identity sees none of John's calls
    await page.page.click("#leave")
    await page.page.fill("#identity", "user-nobody")
    await page.page.click("#calls-load")
    await page.expect_text("#calls-status", r"^0 of 0 call\(s\)")


async def test_playground_shows_a_calls_analysis_as_text(playground_service, users_db, open_page):
    """The call view shows the end-of-call analysis (issue 31): the alert in the list, every field in the
    detail, the model's words as text (markup in them stays literal). A record stored as the worker stores it."""
    import uuid

    from gocare_voice.records.model import AnalysisStatus, CallAnalysis, CallRecord, CallStatus, EndReason, Turn, utcnow
    from gocare_voice.records.store import CallStore

    identity = f"user-analysed-{uuid.uuid4().hex[:6]}"
    record = CallRecord(call_id=f"AJ_{uuid.uuid4().hex[:12]}", room=f"{identity}-room", participant_identity=identity,
                        user_id=identity, status=CallStatus.ended, started_at=utcnow(), ended_at=utcnow(),
                        end_reason=EndReason.user_left, updated_at=utcnow())
    record.turns = [Turn(role="user", text="Please call me back about my insulin pump.", at=utcnow())]
    record.analysis = CallAnalysis(status=AnalysisStatus.done, plan="gocare-default", values={
        "reason": "Callback about the <b>insulin pump</b>", "resolved": False, "follow_up_needed": True,
        "urgency": "urgent", "callback_time": None}, success=False, alerts=[{"field": "urgency", "value": "urgent"}],
        attempts=1)
    with CallStore(url=users_db) as store:
        store.create(record)
    page = await open_page(playground_service.url + "/playground")
    await page.page.fill("#identity", identity)
    await page.page.click("#calls-load")
    await page.expect_text("#calls-status", r"^1 of 1 call\(s\)")
    listed = await page.expect_text("#calls-list", r"alert: urgency=urgent")
    assert "analysed" in listed
    await page.page.locator("#calls-list button").click()
    await page.expect_text("#call-analysis-title", r"^Analysis: done \(plan gocare-default\)$")
    shown = await page.expect_text("#call-analysis", r"follow_up_needed")
    assert "Callback about the <b>insulin pump</b>" in shown  # literal, not bold
    assert await page.page.locator("#call-analysis b").count() == 0
    assert "urgency\nurgent" in shown and "callback_time\n—" in shown and "follow_up_needed\nyes" in shown
