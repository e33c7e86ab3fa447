"""What every protected endpoint does first: authenticate the caller, then charge its rate limit."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from gocare_voice.settings import Settings
from gocare_voice.token_service.auth import Authenticator, Caller
from gocare_voice.token_service.errors import ApiError
from gocare_voice.token_service.minting import TokenMinter
from gocare_voice.token_service.ratelimit import RateLimiter, retry_after_header


@dataclass(slots=True)
class Services:
    """Built once per app by ``create_app`` and kept on ``app.state.services``."""

    settings: Settings
    minter: TokenMinter
    authenticator: Authenticator
    limiter: RateLimiter | None


def services(request: Request) -> Services:
    return request.app.state.services


async def require_caller(request: Request) -> Caller:
    svc: Services = request.app.state.services
    client = request.client
    caller = await svc.authenticator.authenticate(
        authorization=request.headers.get("authorization"), client_host=client.host if client else None
    )
    if svc.limiter is not None:
        wait = svc.limiter.check(caller.rate_key)
        if wait is not None:
            raise ApiError(
                429, "rate_limited", f"too many requests; retry in {retry_after_header(wait)} s",
                headers={"Retry-After": retry_after_header(wait)},
            )
    return caller


async def read_json_body(request: Request, *, limit: int) -> object:
    """The request body as JSON, refusing bodies over ``limit`` bytes while reading them (a missing or
    lying Content-Length does not get around it)."""
    import orjson

    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", "invalid Content-Length header")
        if int(declared) > limit:
            raise ApiError(413, "payload_too_large", f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"request body larger than {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise ApiError(400, "empty_body", "the request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
