"""What every protected endpoint does first: authenticate the caller, then charge its rate limit."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.requests import ClientDisconnect

from gocare_voice.settings import Settings
from gocare_voice.token_service.auth import Authenticator, Caller
from gocare_voice.token_service.errors import ApiError
from gocare_voice.token_service.minting import TokenMinter
from gocare_voice.token_service import rooms
from gocare_voice.token_service.metrics import ServiceMetrics
from gocare_voice.token_service.rate_limit import Outcome, RateLimiter
from gocare_voice.token_service.rooms import MAX_ROOM_BYTES, SEPARATOR


@dataclass(slots=True)
class Services:
    """Built once per app by ``create_app`` and kept on ``app.state.services``."""

    settings: Settings
    minter: TokenMinter
    authenticator: Authenticator
    limiter: RateLimiter | None
    metrics: ServiceMetrics


async def _charge(svc: Services, key: str, *, kind: str) -> None:
    """``kind`` (a metrics label): ``caller`` for a request, ``failed_auth`` for a failed authentication."""
    if svc.limiter is None:
        return
    verdict = await svc.limiter.charge(key)
    if verdict.outcome is Outcome.allowed:
        return
    retry = str(verdict.retry_after)
    if verdict.outcome is Outcome.limited:
        svc.metrics.rate_limited(kind)
        raise ApiError(429, "rate_limited", f"too many requests; retry in {retry} s", headers={"Retry-After": retry})
    svc.metrics.rate_limited("storage_unavailable")
    raise ApiError(
        503, "rate_limit_unavailable",
        f"the rate-limit storage cannot be reached and this service is set to refuse requests then "
        f"(GOCARE_RATE_LIMIT_FAIL_MODE=closed); retry in {retry} s", headers={"Retry-After": retry},
    )


async def charge_rate_limit(svc: Services, key: str, *, kind: str) -> None:
    """Charge ``key`` to the rate limit outside ``require_caller`` (the operator's credential on GET /calls)."""
    await _charge(svc, key, kind=kind)


async def require_caller(request: Request) -> Caller:
    """The caller, charged to its own rate limit. A failed authentication of any kind is charged to the
    client's IP, so guessing tokens costs the same as asking for them."""
    svc: Services = request.app.state.services
    client_host = request.client.host if request.client else None
    try:
        caller = await svc.authenticator.authenticate(
            authorization=request.headers.get("authorization"), client_host=client_host
        )
    except ApiError as error:
        # every failure counts (401s, and 503s while the JWKS is down): a caller cannot make the service
        # fetch keys or verify signatures for free
        svc.metrics.auth_failed(error.reason or error.error)
        await _charge(svc, f"ip:{client_host or 'unknown'}", kind="failed_auth")
        raise
    await _charge(svc, caller.rate_key, kind="caller")
    return caller


def _require_room_owner(subject: str) -> None:
    if not rooms.can_own_rooms(subject):
        raise ApiError(
            403, "user_id_not_supported",
            f"this service gives no rooms to user ids that contain '{SEPARATOR}' (it separates the user id "
            "from the rest of a room name); the app's sign-in must issue user ids without it",
        )


def authorize_room(caller: Caller, room: str) -> str:
    """With caller authentication on, a user may only join its own rooms (``rooms.may_use``, the one rule
    for both token routes and the voice upload). Without this any signed-in user could join (and listen
    to) another user's call by guessing its name."""
    subject = caller.subject
    if subject is None:
        return room
    _require_room_owner(subject)
    if rooms.may_use(subject, room):
        return room
    raise ApiError(
        403, "room_not_allowed",
        f"you may only join your own rooms: '{subject}{SEPARATOR}<label>', your user id, '{SEPARATOR}', then "
        "anything (or send no room and the service picks one)",
    )


def own_room_name(caller: Caller) -> str:
    """A fresh room when the caller did not name one (``<sub>~<random>`` in jwt mode)."""
    if caller.subject is not None:
        _require_room_owner(caller.subject)
    room = rooms.own_room_name(caller.subject)
    if len(room.encode("utf-8", "surrogatepass")) > MAX_ROOM_BYTES:
        raise ApiError(
            422, "validation_error",
            f"the user id (sub claim) is too long to name a room: a room name is at most {MAX_ROOM_BYTES} bytes",
        )
    return room


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
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "payload_too_large", f"request body larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # the client went away mid-body: nobody reads the answer, but it must not be a logged 500
        raise ApiError(400, "incomplete_body", "the connection closed before the body was complete") from None
    body = b"".join(chunks)
    if not body.strip():
        raise ApiError(400, "empty_body", "the request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
