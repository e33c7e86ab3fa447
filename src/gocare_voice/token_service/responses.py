"""JSON responses of the service: orjson-serialised, never cached (tokens and transcripts are personal)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """``headers`` are added to ``NO_STORE`` (e.g. ``Retry-After``, ``WWW-Authenticate``, ``Allow``)."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json",
                    headers={**NO_STORE, **headers} if headers else NO_STORE)
