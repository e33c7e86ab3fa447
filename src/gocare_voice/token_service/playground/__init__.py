"""``GET /playground``: a browser client that speaks exactly the app protocol (docs/protocol.md), for the
people who build the app and deploy the agent (docs/playground.md).

One HTML page, a stylesheet and a JavaScript module from this package (no build step), plus the
``livekit-client`` browser SDK at a pinned version. Served when ``settings.playground_enabled``
(``GOCARE_PLAYGROUND``: in development by default); otherwise the paths do not exist (404).
"""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import Response

from gocare_voice.settings import Settings
from gocare_voice.token_service.errors import ApiError
from gocare_voice.token_service.playground.page import (
    STATIC_FILES,
    content_security_policy,
    load_pin,
    read_static,
    render_page,
    sdk_source,
)

log = logging.getLogger("gocare.token_service")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
    "Cache-Control": "no-cache",
}


def build_playground_router(settings: Settings) -> APIRouter | None:
    """The page's routes, or None when the playground is off. Everything is rendered once, here."""
    if not settings.playground_enabled:
        return None
    pin = load_pin()
    sdk = sdk_source(settings, pin)
    page = render_page(settings, sdk).encode("utf-8")
    page_headers = {
        **SECURITY_HEADERS,
        "Content-Security-Policy": content_security_policy(sdk=sdk, livekit_url=settings.client_livekit_url),
    }
    files = {name: (read_static(name), media_type) for name, media_type in STATIC_FILES.items()}
    source = f"{pin.package} {pin.version} (pinned, with its integrity hash)" if sdk.url == pin.cdn_url else (
        f"GOCARE_PLAYGROUND_SDK_URL ({'with' if sdk.integrity else 'without'} an integrity hash)"
    )
    log.info("playground served at /playground; browser SDK: %s from %s", source, sdk.url)

    router = APIRouter(include_in_schema=False)

    @router.get("/playground")
    async def playground() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=page_headers)

    @router.get("/playground/static/{name}")
    async def static_file(name: str) -> Response:
        found = files.get(name)
        if found is None:
            raise ApiError(404, "not_found", "no such playground file")
        body, media_type = found
        return Response(body, media_type=media_type, headers=SECURITY_HEADERS)

    return router
