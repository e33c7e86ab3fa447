"""``GET /calls`` and ``GET /calls/{call_id}``: the call records, for the app and the operator.

Who sees what (docs/call-records.md):

- ``Authorization: Bearer <GOCARE_OPERATOR_TOKEN>`` (compared in constant time): every call, optionally
  one user's (``?user=``). Without that setting there is no operator access at all.
- ``GOCARE_AUTH_MODE=jwt``: the caller's own calls, those whose participant identity is the token's ``sub``
  (the identity the token service bound the LiveKit token to); another user's call is a 404, like a
  missing one, so ids cannot be probed.
- ``GOCARE_AUTH_MODE=none`` (development only; refused in production): the calls of the ``identity`` the
  request names, which is as open as that mode's tokens (anyone may get a token for any identity).

The store is read in a thread; a database without call tables yet reads as no calls.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
import logging
import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from gocare_voice.records.model import MAX_SINCE_DAYS, SINCE_PATTERN
from gocare_voice.settings import AuthMode, Settings
from gocare_voice.token_service.deps import Services, charge_rate_limit, require_caller
from gocare_voice.token_service.errors import ApiError
from gocare_voice.token_service.responses import json_response
from gocare_voice.token_service.validation import NAME_PATTERN, check_name

log = logging.getLogger("gocare.token_service.calls")

MAX_PAGE = 200
_NAME: dict[str, Any] = {"pattern": NAME_PATTERN}
"""Documented for the schema; enforced by ``check_name`` (Python's regex reads the pattern, pydantic's cannot)."""
CALL_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
WHERE_PATTERN = r"^[a-z][a-z0-9_]{0,39}=[^\x00-\x1f]{1,200}$"
MAX_WHERE = 10
WhereItem = Annotated[str, Field(min_length=3, max_length=241, pattern=WHERE_PATTERN)]
WhereParam = Annotated[list[WhereItem] | None, Query(
    max_length=MAX_WHERE,
    openapi_examples={"follow-up": {"summary": "calls someone must follow up, urgent ones",
                                    "value": ["follow_up_needed=true", "urgency=urgent"]}},
    description="Analysis filters, FIELD=VALUE, repeatable (all must hold); only analysed calls match. Boolean: "
                "true/false; choice: one of its values; number: equal; text: contains, case-insensitive. The "
                "fields are the analysis plan's (listed in this operation's description).")]


def _where_description(settings: Settings) -> str:
    from gocare_voice.records.plan import configured_plan

    plan = configured_plan(settings.call_analysis_plan)
    fields = ", ".join(f"{f.name} ({'|'.join(f.choices) if f.type == 'choice' else f.type})" for f in plan.fields)
    return ("Every call for the operator, the caller's own otherwise (docs/call-records.md). ``where`` filters "
            f"on the end-of-call analysis; the fields of this service's plan ({plan.name}): {fields}.")


class TurnOut(BaseModel):
    role: str = Field(description="user | assistant")
    text: str = Field(description="What was said, phone numbers masked")
    at: str | None
    source: str = Field(description="voice (the live call) | upload (a recorded message)")


class AlertOut(BaseModel):
    field: str
    value: str | bool | float | None


class AnalysisOut(BaseModel):
    status: str = Field(description="done | failed (error says why)")
    plan: str = Field(description="The analysis plan's name")
    values: dict[str, str | bool | float | None] = Field(
        description="One value per field of the plan (text, boolean, number or one of its choices)")
    success: bool | None = Field(description="Whether the call met the plan's success criteria (null without any)")
    alerts: list[AlertOut] = Field(description="The plan's alert values this call has (each sent as call.alert)")
    error: str | None
    attempts: int
    analysed_at: str | None


class CallOut(BaseModel):
    call_id: str
    room: str | None
    participant_identity: str | None
    user_id: str | None
    verified_user_id: str | None
    verified: bool
    status: str = Field(description="in_progress | ended | crashed")
    started_at: str | None
    ended_at: str | None
    duration_seconds: float | None
    end_reason: str | None = Field(description="user_left | verification_failed | agent_unavailable | "
                                   "worker_drained | error | job_crashed")
    modes: list[str]
    commands: dict[str, int]
    voice_uploads: int
    verification: list[str]
    level: str = Field(description="metadata | transcript (GOCARE_CALL_RECORDS when the call was made)")
    agent_name: str | None
    summary: str | None
    resumed_from: str | None
    webhook_status: str | None
    analysis: AnalysisOut | None = Field(description="The end-of-call analysis; null when the call was not analysed")


class CallDetail(CallOut):
    turns: list[TurnOut]


class CallPage(BaseModel):
    calls: list[CallOut] = Field(description="Newest first, without transcripts (GET /calls/{call_id} has them)")
    total: int
    limit: int
    offset: int
    next_offset: int | None = Field(description="The offset of the next page; null on the last one")


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("jwt mode: no or an invalid bearer token; a wrong operator token"),
    403: _error("none mode: no identity named; an operator filter without the operator token"),
    422: _error("a parameter out of range or malformed (since, limit, identity, where)"),
    429: _error("rate limited"),
    503: _error("the signing keys or the rate-limit storage cannot be reached"),
}


class CallsReader:
    """The token service's read-only store, opened on first use and again while there is none yet."""

    def __init__(self, *, settings: Settings) -> None:
        self.settings = settings
        self._store: Any = None
        self._lock = threading.Lock()  # requests read from worker threads: one of them (re)opens it

    def store(self) -> Any:
        from gocare_voice.records.store import CallStore

        with self._lock:
            if self._store is None or not self._store.available:
                if self._store is not None:
                    self._store.close()
                self._store = CallStore.from_settings(self.settings, writable=False)
            return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _bearer(request: Request) -> str | None:
    scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class Viewer:
    """Who asks: the operator (``identity`` None: every call) or one identity."""

    def __init__(self, *, identity: str | None) -> None:
        self.identity = identity

    @property
    def operator(self) -> bool:
        return self.identity is None


async def viewer_of(request: Request, *, identity: str | None) -> Viewer:
    svc: Services = request.app.state.services
    settings = svc.settings
    token = settings.operator_token.get_secret_value() if settings.operator_token else None
    given = _bearer(request)
    if token is not None and given is not None and hmac.compare_digest(given.encode(), token.encode()):
        await charge_rate_limit(svc, "operator", kind="caller")
        return Viewer(identity=None)
    if settings.auth_mode is AuthMode.jwt:
        caller = await require_caller(request)  # a wrong operator token is just an invalid JWT here: 401
        assert caller.subject is not None
        return Viewer(identity=caller.subject)
    if given is not None and token is not None:
        raise ApiError(401, "unauthorized", "the bearer token is not the operator token",
                       headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    await require_caller(request)  # none mode: charges the client's IP
    identity = check_name(identity, field="identity", required=False)
    if identity is None:
        raise ApiError(403, "identity_required",
                       "name the identity whose calls you want (?identity=...); every call needs the operator token")
    return Viewer(identity=identity)


IdentityParam = Annotated[str | None, Query(
    min_length=1, max_length=128, json_schema_extra=_NAME,
    description="none mode: whose calls (required). jwt mode: ignored (always the caller's own).")]


async def _viewer(request: Request) -> Viewer:
    """A dependency, so it runs before FastAPI validates the query: a caller without a valid token gets a
    401 whatever else is wrong with the request (as on every other protected route)."""
    return await viewer_of(request, identity=request.query_params.get("identity"))


ViewerDep = Annotated[Viewer, Depends(_viewer)]


SINCE_HELP = (f"Only calls since: an ISO date (2026-12-01) or date-time (2026-12-01T08:00:00Z, UTC unless an "
              f"offset is given), or a span back from now (30m, 12h, 7d, 2w; at most {MAX_SINCE_DAYS} days). "
              "Anything else, a date that does not exist or a longer span is a 422.")


def build_calls_router(settings: Settings) -> APIRouter:
    reader = CallsReader(settings=settings)
    where_help = _where_description(settings)

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        reader.close()

    router = APIRouter(tags=["calls"], lifespan=lifespan)

    @router.get("/calls", summary="Call records, newest first (paginated)", response_model=CallPage,
                responses=_ERRORS, description=where_help)
    async def list_calls(
        viewer: ViewerDep,
        identity: IdentityParam = None,
        user: Annotated[str | None, Query(min_length=1, max_length=128, json_schema_extra=_NAME,
                                          description="Operator only: one user's calls")] = None,
        since: Annotated[str | None, Query(max_length=40, pattern=SINCE_PATTERN, description=SINCE_HELP)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        where: WhereParam = None,
    ) -> Response:
        from gocare_voice.records.model import parse_since
        from gocare_voice.records.plan import configured_plan, parse_wheres
        from gocare_voice.records.store import CallQuery

        user = check_name(user, field="user", required=False)
        if user is not None and not viewer.operator:
            raise ApiError(403, "operator_only", "only the operator may list another user's calls (user=)")
        try:
            when = parse_since(since) if since else None
        except ValueError as error:
            raise ApiError(422, "validation_error", f"since: {error}") from None
        try:
            conditions = parse_wheres(configured_plan(settings.call_analysis_plan), where or [])
        except ValueError as error:
            raise ApiError(422, "validation_error", f"where: {error}") from None
        query = CallQuery(identity=viewer.identity, user_id=user, since=when, limit=limit, offset=offset,
                          where=conditions)

        def read() -> tuple[list[Any], int]:
            store = reader.store()
            return store.list(query), store.count(query)

        records, total = await asyncio.to_thread(read)
        following = offset + len(records)
        return json_response(200, {
            "calls": [r.to_dict(turns=False) for r in records], "total": total, "limit": limit, "offset": offset,
            "next_offset": following if following < total else None,
        }, {"Cache-Control": "no-store"})

    @router.get("/calls/{call_id}", summary="One call record with its transcript", response_model=CallDetail,
                responses={**_ERRORS, 404: _error("no such call, or not the caller's")})
    async def get_call(
        viewer: ViewerDep,
        call_id: Annotated[str, Path(pattern=CALL_ID_PATTERN, max_length=64)],
        identity: IdentityParam = None,
    ) -> Response:
        record = await asyncio.to_thread(lambda: reader.store().get(call_id))
        if record is None or (not viewer.operator and record.participant_identity != viewer.identity):
            raise ApiError(404, "not_found", "no such call")
        return json_response(200, record.to_dict(), {"Cache-Control": "no-store"})

    return router
