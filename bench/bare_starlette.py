"""The framework's ceiling for bench_token.py: a bare Starlette route that reads the body and returns a fixed
JSON answer, under the same uvicorn (httptools, uvloop) as the token service. Not part of the package.

    python -m uvicorn --app-dir bench bare_starlette:app --port 8090 --no-access-log
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ANSWER = b'{"token":"x","serverUrl":"ws://localhost:7880","roomName":"bench-room","participantName":"John Doe"}'


async def get_token(request: Request) -> Response:
    await request.body()
    return Response(ANSWER, media_type="application/json")


async def health(_request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


app = Starlette(routes=[Route("/getToken", get_token, methods=["POST"]), Route("/health", health)])
