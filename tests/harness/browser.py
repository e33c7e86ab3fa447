"""A real browser for the playground tests: Debian's ``chromium`` driven by Playwright, headless, with a fake
microphone that plays a WAV file.

- The browser is Debian's (``/usr/bin/chromium``, or ``GOCARE_TEST_CHROMIUM``), never Playwright's own
  download (which cannot be fetched here). It is a child of the test process, so it runs inside the room
  harness's network namespace like everything else.
- The livekit-client SDK file comes from the npm package ``scripts/playground-sdk --install`` puts in the
  cache (or ``GOCARE_TEST_PLAYGROUND_SDK``), served by ``SdkServer`` from another origin on 127.0.0.1, as a
  CDN would: the page loads it with the pinned integrity hash, so the hash is checked by a real browser.
- Chromium's fake microphone (``--use-file-for-fake-audio-capture``) plays the file from its start each time
  the page opens the microphone afresh (no other capture open), and loops it. ``microphone_wav`` writes
  speech after a short silence and before a long one, so one opening says one thing once.
- Missing pieces skip the tests with one line; ``GOCARE_REQUIRE_BROWSER=1`` (.ci/run) makes that a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

from scripted.audio_tools import speech_pcm

if TYPE_CHECKING:
    from playwright.async_api import ConsoleMessage, Page

REPO = Path(__file__).resolve().parents[2]
MIC_RATE = 48000


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def browser_required() -> bool:
    return _flag("GOCARE_REQUIRE_BROWSER")


def locate_chromium() -> str | None:
    for candidate in (os.environ.get("GOCARE_TEST_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def locate_sdk() -> Path | None:
    chosen = os.environ.get("GOCARE_TEST_PLAYGROUND_SDK")
    if chosen:
        return Path(chosen) if Path(chosen).is_file() else None
    found = subprocess.run([str(REPO / "scripts" / "playground-sdk"), "--path"], capture_output=True, text=True,
                           timeout=30)
    path = Path(found.stdout.strip()) if found.returncode == 0 else None
    return path if path and path.is_file() else None


def unavailable_reason() -> str | None:
    """Why the playground tests cannot run here (one line), or None."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playground test needs Playwright (pip install -e '.[test]')"
    if locate_chromium() is None:
        return "playground test needs Debian's chromium (apt-get install -y chromium; .ci/run does it)"
    if locate_sdk() is None:
        return "playground test needs the livekit-client SDK file (scripts/playground-sdk --install; .ci/run does it)"
    return None


def microphone_wav(path: Path, text: str | None, *, lead: float = 1.0, tail: float = 45.0) -> Path:
    """``lead`` seconds of silence, ``text`` spoken by espeak-ng, ``tail`` seconds of silence: 48 kHz mono
    16-bit, what Chromium's fake capture device reads. The tail outlasts a test, so the loop never replays.
    ``text=None``: a silent microphone."""
    pcm = speech_pcm(text, rate=MIC_RATE) if text else b""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(MIC_RATE)
        out.writeframes(bytes(int(lead * MIC_RATE) * 2) + pcm + bytes(int(tail * MIC_RATE) * 2))
    return path


def chromium_args(microphone: Path) -> list[str]:
    """The microphone is granted (fake permission prompt). Without that grant Chromium also limits WebRTC to
    the interface of the default route, and the test's namespace has no route: no call could connect."""
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
        "--autoplay-policy=no-user-gesture-required",
    ]


class SdkServer:
    """One file over HTTP on 127.0.0.1, with the CORS header a CDN sends (``<script crossorigin>`` with an
    integrity hash needs it)."""

    def __init__(self, file: Path) -> None:
        body = file.read_bytes()
        name = "/" + file.name

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != name:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/javascript; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="sdk-server", daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}{name}"

    def __enter__(self) -> SdkServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def expect(locator):  # type: ignore[no-untyped-def]
    """Playwright's ``expect``, imported when a page is driven (Playwright may be missing: then the tests
    skip before this runs)."""
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(locator)


class PlaygroundPage:
    """One open playground tab: join like a person would (the form), wait for what the page shows, and
    remember what the browser complained about (Content-Security-Policy violations, uncaught errors)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        page.on("console", self._on_console)

    def _on_console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "integrity" in message.text:
            self.problems.append(f"console {message.type}: {message.text}")

    async def open(self, url: str) -> None:
        await self.page.goto(url)
        await self.page.wait_for_selector("body[data-ready='true']", timeout=15_000)

    async def join(self, *, identity: str | None = None, name: str | None = None, room: str | None = None,
                   bearer: str | None = None, microphone: bool = False) -> None:
        for selector, value in (("#identity", identity), ("#name", name), ("#room", room), ("#bearer", bearer)):
            if value is not None:
                await self.page.fill(selector, value)
        await self.page.set_checked("#mic-on-join", microphone)
        await self.page.click("#join")

    async def expect_text(self, selector: str, pattern: str, *, timeout: float = 20) -> str:
        """Wait until the element's text matches ``pattern`` (a regex); return the text. Fails with what the
        page showed instead."""
        locator = self.page.locator(selector)
        try:
            await expect(locator).to_contain_text(re.compile(pattern), timeout=timeout * 1000)
        except AssertionError as error:
            raise AssertionError(f"{selector} never matched {pattern!r} within {timeout:.0f} s; the page shows: "
                                 f"{await self.describe()}") from error
        return await locator.inner_text()

    async def describe(self) -> str:
        parts = []
        for selector in ("#connection-state", "#agent-state", "#mode", "#error", "#welcome", "#answer",
                         "#transcript", "#record-status"):
            text = await self.page.locator(selector).inner_text()
            parts.append(f"{selector}={' '.join(text.split())[:400]!r}")
        return "; ".join(parts)

    async def screenshot(self, path: Path) -> Path:
        # a click or hover may have scrolled the window: the page's sticky header belongs at the top
        await self.page.evaluate("window.scrollTo(0, 0)")
        await self.page.screenshot(path=str(path), full_page=True)
        return path
