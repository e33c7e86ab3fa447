"""The token service: LiveKit tokens with the agent dispatch, health, and the voice upload.

``create_app(settings)`` builds everything from the settings passed in; nothing is read from the environment
here. The token endpoints are the hot path a whole app fleet hits on every call start, so they are plain
Starlette routes (no FastAPI dependency solving, about 1.5x the throughput on one core) that parse the body
with orjson and return pre-serialised responses; their contract is still in /docs (``schemas.py``). See
docs/benchmarks.md.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from gocare_voice import __version__
from gocare_voice.check import configuration_facts
from gocare_voice.conversation.identity import display_name, participant_metadata
from gocare_voice.settings import AuthMode, Settings
from gocare_voice.token_service.auth import Authenticator, Caller
from gocare_voice.token_service.deps import (
    Services,
    authorize_room,
    own_room_name,
    read_json_body,
    require_caller,
)
from gocare_voice.token_service.errors import ApiError
from gocare_voice.token_service.minting import TokenMinter, TokenRequest
from gocare_voice.token_service.metrics import RequestMetricsMiddleware, build_metrics
from gocare_voice.token_service.rate_limit import RateLimiter
from gocare_voice.token_service.responses import json_response
from gocare_voice.token_service.schemas import token_paths
from gocare_voice.token_service.validation import (
    MAX_NAME_CHARS,
    check_attributes,
    check_metadata_object,
    check_name,
    check_room,
    check_room_config,
)

log = logging.getLogger("gocare.token_service")


def _identity_for(caller: Caller, requested: str | None) -> str:
    if caller.subject is None:
        return requested or f"user-{secrets.token_hex(6)}"
    if requested is not None and requested != caller.subject:
        raise ApiError(403, "identity_mismatch", "the requested identity is not the authenticated user")
    subject = check_name(caller.subject, field="sub claim")
    assert subject is not None
    return subject


def _name_for(caller: Caller, requested: str | None) -> str | None:
    """The user's real name, or None when nobody said it. The authenticated name claim wins; one that does
    not fit a participant name (too long, control characters) is cut or dropped rather than refusing the
    user a token they cannot fix."""
    if caller.name:
        return display_name(caller.name, limit=MAX_NAME_CHARS)
    return requested


def _require_object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(422, "validation_error", f"the body must be a JSON object, not {type(body).__name__}")
    return body


def _lifespan(services: Services) -> Any:
    """At start: one line when the shared rate-limit storage cannot be reached (the service still starts:
    the fail mode decides what requests get until it answers; see rate_limit.py)."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        if services.limiter is not None:
            problem = await services.limiter.check_storage()
            if problem:
                log.error("%s", problem)
        yield

    return lifespan


def create_app(settings: Settings) -> FastAPI:
    metrics = build_metrics(settings.metrics)
    services = Services(
        settings=settings,
        minter=TokenMinter.from_settings(settings),
        authenticator=Authenticator(settings=settings),
        limiter=RateLimiter.from_settings(settings),
        metrics=metrics,
    )
    app = FastAPI(
        title="gocare-voice token service",
        version=__version__,
        description="LiveKit tokens for the GoCare app (with the agent dispatch), voice upload, health.",
        lifespan=_lifespan(services),
    )
    app.state.services = services
    # the URL the app connects to, which may differ from the one this service and the worker use
    # (a phone on the LAN, an emulator, a public URL in front of an internal one)
    server_url = settings.client_livekit_url
    body_limit = settings.max_body_bytes
    minter = services.minter

    for line in settings.start_warnings():
        log.warning("%s", line)
    if settings.auth_mode is AuthMode.none:
        log.warning("caller authentication is OFF (GOCARE_AUTH_MODE=none): anyone can get a token; "
                    "use GOCARE_AUTH_MODE=jwt in production")

    if settings.metrics:
        app.add_middleware(RequestMetricsMiddleware, metrics=metrics, routes=lambda: app.routes)
    if settings.origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> Response:
        return json_response(error.status, error.body(), error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return json_response(error.status_code, {"error": code, "detail": str(error.detail)}, getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}" for e in error.errors()
        )
        return json_response(422, {"error": "validation_error", "detail": problems or "invalid request"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> Response:
        log.error("unexpected error on %s %s: %s", request.method, request.url.path, error.__class__.__name__,
                  exc_info=error)
        return json_response(500, {"error": "internal_error", "detail": "unexpected server error; it has been logged"})

    async def get_token(request: Request) -> Response:
        """Body ``{room, identity, name}`` -> ``{token, serverUrl, roomName, participantName}``."""
        caller = await require_caller(request)
        body = _require_object(await read_json_body(request, limit=body_limit))
        requested = check_name(body.get("identity"), field="identity", required=caller.subject is None)
        identity = _identity_for(caller, requested)
        # no room: the service picks one the caller owns (a blank one is still a mistake worth a 422)
        requested_room = body.get("room")
        room = authorize_room(caller, check_room(requested_room, field="room") or "") if (
            requested_room is not None) else own_room_name(caller)
        name = _name_for(caller, check_name(body.get("name"), field="name", required=False))
        token = minter.mint(TokenRequest(
            room=room, identity=identity, name=name or identity,
            metadata=participant_metadata(user_id=identity, user_name=name),
        ))
        metrics.token_minted("/getToken")
        return json_response(200, {"token": token, "serverUrl": server_url, "roomName": room,
                                    "participantName": name or identity})

    async def standard_token(request: Request) -> Response:
        """What the client SDKs' ``TokenSource.endpoint`` call: snake_case body, all fields optional ->
        ``201 {server_url, participant_token, room_name, participant_name}``."""
        caller = await require_caller(request)
        body = _require_object(await read_json_body(request, limit=body_limit))
        dispatch_metadata = check_room_config(body.get("room_config"), agent_name=settings.agent_name)
        identity = _identity_for(
            caller, check_name(body.get("participant_identity"), field="participant_identity", required=False)
        )
        requested_room = check_room(body.get("room_name"), field="room_name", required=False)
        room = authorize_room(caller, requested_room) if requested_room else own_room_name(caller)
        name = _name_for(caller, check_name(body.get("participant_name"), field="participant_name", required=False))
        extra = check_metadata_object(body.get("participant_metadata"), field="participant_metadata")
        attributes = check_attributes(body.get("participant_attributes"))
        token = minter.mint(TokenRequest(
            room=room, identity=identity, name=name or identity,
            metadata=participant_metadata(user_id=identity, user_name=name, extra=extra),
            attributes=attributes, dispatch_metadata=dispatch_metadata,
        ))
        metrics.token_minted("/api/token")
        return json_response(
            201,
            {"server_url": server_url, "participant_token": token, "room_name": room, "participant_name": name or identity},
        )

    app.router.routes.extend([
        Route("/getToken", get_token, methods=["POST"]),
        Route("/api/token", standard_token, methods=["POST"]),
    ])
    _document_token_routes(app)

    @app.get("/health", tags=["health"], summary="What is configured")
    async def health() -> Response:
        return json_response(200, {
            "status": "ok",
            "version": __version__,
            "environment": settings.env.value,
            "agent_name": settings.agent_name,
            "auth_mode": settings.auth_mode.value,
            # what a browser client connects to (the same URL the token responses carry)
            "livekit_url": server_url,
            **configuration_facts(settings),
        })

    if settings.metrics and settings.metrics_port is None:
        from gocare_voice.token_service.metrics import CONTENT_TYPE, exposition

        from fastapi.responses import PlainTextResponse

        @app.get("/metrics", tags=["health"], summary="Prometheus metrics (GOCARE_METRICS)",
                 response_class=PlainTextResponse,
                 responses={200: {"description": "Prometheus text format 0.0.4 (docs/token-service.md)"}})
        async def metrics_endpoint() -> Response:
            return Response(exposition(metrics), media_type=CONTENT_TYPE)

    # imported here, not at module level: it pulls in PyAV and the livekit plugins
    from gocare_voice.token_service.voice import build_voice_router

    app.include_router(build_voice_router(settings, metrics))

    from gocare_voice.token_service.calls import build_calls_router

    app.include_router(build_calls_router(settings))

    from gocare_voice.token_service.playground import build_playground_router

    playground = build_playground_router(settings)
    if playground is not None:
        app.include_router(playground)
    return app


def _document_token_routes(app: FastAPI) -> None:
    """Starlette routes are invisible to FastAPI's schema generator: merge their description in."""
    paths, components = token_paths(identity_required=app.state.services.settings.auth_mode is AuthMode.none)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema["paths"] = {**paths, **schema.get("paths", {})}
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
