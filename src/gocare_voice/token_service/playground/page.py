"""What ``GET /playground`` sends: which livekit-client build the page loads, the page's
Content-Security-Policy, and the HTML. Pure functions of the settings and the package's own files.

The page itself holds nothing secret: no token, no key. It asks ``/api/token`` like the Flutter app does (with
the caller's bearer token in ``jwt`` mode, typed into the page), so what it may do is what any app may do.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from importlib import resources
from string import Template
from urllib.parse import urlsplit

from gocare_voice import __version__
from gocare_voice.settings import Settings

PACKAGE = "gocare_voice.token_service.playground"
STATIC_FILES = {
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}
"""Every file under ``/playground/static/``: an allow-list, so no path is ever built from the request."""


@dataclass(frozen=True)
class SdkPin:
    """The livekit-client release the page is written against (``sdk.json``: where its hash came from)."""

    package: str
    version: str
    file: str
    cdn_url: str
    integrity: str


@dataclass(frozen=True)
class SdkSource:
    url: str
    integrity: str | None


def read_text(name: str) -> str:
    return resources.files(PACKAGE).joinpath(name).read_text(encoding="utf-8")


def read_static(name: str) -> bytes:
    return resources.files(PACKAGE).joinpath("static").joinpath(name).read_bytes()


def load_pin() -> SdkPin:
    data = json.loads(read_text("sdk.json"))
    return SdkPin(package=data["package"], version=data["version"], file=data["file"], cdn_url=data["cdn_url"],
                  integrity=data["integrity"])


def sdk_source(settings: Settings, pin: SdkPin) -> SdkSource:
    """The pinned CDN file with its integrity hash, unless ``GOCARE_PLAYGROUND_SDK_URL`` names another
    (then only ``GOCARE_PLAYGROUND_SDK_SRI`` is checked: the pinned hash belongs to the pinned file)."""
    if settings.playground_sdk_url:
        return SdkSource(url=settings.playground_sdk_url, integrity=settings.playground_sdk_sri)
    return SdkSource(url=pin.cdn_url, integrity=pin.integrity)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


LIVEKIT_CLOUD = ".livekit.cloud"


def livekit_origins(url: str) -> list[str]:
    """The browser SDK opens the WebSocket (``ws``/``wss``) and, to explain a failed connection, an HTTP
    request (``/rtc/validate``) on the same host: both schemes are allowed. On LiveKit Cloud it also asks the
    project for its regions and may fail over to another region's host: all of ``*.livekit.cloud``."""
    parts = urlsplit(url)
    secure = parts.scheme in ("wss", "https")
    ws, http = ("wss", "https") if secure else ("ws", "http")
    origins = [f"{ws}://{parts.netloc}", f"{http}://{parts.netloc}"]
    if (parts.hostname or "").endswith(LIVEKIT_CLOUD):
        origins += [f"wss://*{LIVEKIT_CLOUD}", f"https://*{LIVEKIT_CLOUD}"]
    return origins


def content_security_policy(*, sdk: SdkSource, livekit_url: str) -> str:
    """Scripts from this service and the SDK's origin only (no inline script or style anywhere), network
    to this service and the LiveKit server only, media from the microphone, the room and blob: URLs of
    the uploaded reply."""
    directives = {
        "default-src": ["'none'"],
        "script-src": ["'self'", origin(sdk.url)],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "media-src": ["'self'", "blob:"],
        "connect-src": ["'self'", *livekit_origins(livekit_url)],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(dict.fromkeys(values))}" for name, values in directives.items())


def render_page(settings: Settings, sdk: SdkSource) -> str:
    """The HTML with the SDK's ``<script>`` and the few facts the script needs, as ``data-`` attributes
    (inline scripts are not allowed by the page's policy)."""
    integrity = (
        f' integrity="{html.escape(sdk.integrity)}" crossorigin="anonymous"' if sdk.integrity
        else ' crossorigin="anonymous"'
    )
    return Template(read_text("page.html")).substitute(
        sdk_script=f'<script src="{html.escape(sdk.url)}"{integrity} defer></script>',
        auth_mode=html.escape(settings.auth_mode.value),
        agent_name=html.escape(settings.agent_name),
        environment=html.escape(settings.env.value),
        livekit_url=html.escape(settings.client_livekit_url),
        sdk_url=html.escape(sdk.url),
        version=html.escape(__version__),
    )
