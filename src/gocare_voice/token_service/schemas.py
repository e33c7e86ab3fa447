"""Request and response shapes of the token endpoints, for the OpenAPI document.

The handlers themselves parse with orjson and check fields with ``validation.py`` (cheaper on the hot path
than model validation); these models describe the same contract for /docs and for the tests that check
responses against it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from pydantic.config import JsonDict

from gocare_voice.token_service.validation import (
    MAX_ROOM_CHARS,
    NAME_PATTERN,
    OPTIONAL_NAME_PATTERN,
    OPTIONAL_ROOM_SCHEMA,
)


_NAME: JsonDict = {"pattern": NAME_PATTERN}
"""A name that must be given when present: what ``check_name`` enforces (not blank, no control characters)."""
_OPTIONAL: JsonDict = {"pattern": OPTIONAL_NAME_PATTERN}
"""An optional name: blank means not given; control characters are refused all the same."""


class LegacyTokenRequest(BaseModel):
    room: str | None = Field(
        None, min_length=1, max_length=MAX_ROOM_CHARS, examples=["user-42~care"], json_schema_extra=_NAME,
        description="Without it the service picks a fresh room. In jwt mode only '<sub>~<label>', the "
        "caller's user id, '~', then a non-empty label (403 room_not_allowed otherwise).",
    )
    identity: str | None = Field(None, max_length=128, examples=["user-42"], json_schema_extra=_OPTIONAL,
                                 description="Required when caller authentication is off; in jwt mode the "
                                 "caller's sub (another value is 403 identity_mismatch).")
    name: str | None = Field(None, max_length=128, examples=["John Doe"], json_schema_extra=_OPTIONAL)


class LegacyTokenResponse(BaseModel):
    token: str
    serverUrl: str  # noqa: N815 - the app's existing field names
    roomName: str  # noqa: N815 - the app's existing field names
    participantName: str  # noqa: N815 - the app's existing field names


class StandardTokenRequest(BaseModel):
    room_name: str | None = Field(None, max_length=MAX_ROOM_CHARS, json_schema_extra=_OPTIONAL,
                                  description="Without it the service picks a fresh room (see /getToken).")
    participant_identity: str | None = Field(None, max_length=128, json_schema_extra=_OPTIONAL)
    participant_name: str | None = Field(None, max_length=128, json_schema_extra=_OPTIONAL)
    participant_metadata: str | dict[str, Any] | None = Field(
        None, description="A JSON object, encoded as a string (LiveKit's shape) or as an object. Identity keys "
        "(userId, userName, name, user, ...) are set by the service."
    )
    participant_attributes: dict[str, str] | None = None
    room_config: dict[str, Any] | None = Field(
        None, description="Only {} or {'agents': [{'agent_name': <our agent>, 'metadata': ...}]} is accepted."
    )


class StandardTokenResponse(BaseModel):
    server_url: str
    participant_token: str
    room_name: str
    participant_name: str


class ErrorResponse(BaseModel):
    error: str
    detail: str


def _error_responses(*codes: int) -> dict[str, Any]:
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    return {str(code): {"description": "error", **ref} for code in codes}


class VoiceUploadResponse(BaseModel):
    ok: bool
    transcript: str | None
    reply: str | None
    speech_audio: str | None = Field(description="The spoken reply, base64")
    speech_format: str | None
    agent_notified: bool
    room: str | None


def upload_openapi(*, limit_bytes: int) -> dict[str, Any]:
    """``openapi_extra`` of POST /voice/upload: the route reads its body itself (streaming, size-checked),
    so FastAPI cannot see the multipart body or the ``room`` parameter."""
    return {
        "parameters": [{
            "name": "room", "in": "query", "required": False, "schema": OPTIONAL_ROOM_SCHEMA,
            "description": "The room whose agent should hear about the message; in jwt mode one of the caller's "
            "own rooms ('<sub>~<label>').",
        }],
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary",
                                    "description": f"WebM/Opus, M4A/AAC, WAV, MP3 or OGG; at most {limit_bytes} bytes"}},
        }}}},
    }


def token_paths(*, identity_required: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) describing POST /getToken and POST /api/token. ``identity_required``:
    authentication is off, so /getToken needs the ``identity`` the caller would otherwise be."""
    models = (LegacyTokenRequest, LegacyTokenResponse, StandardTokenRequest, StandardTokenResponse, ErrorResponse,
              VoiceUploadResponse)
    components = {m.__name__: m.model_json_schema(ref_template="#/components/schemas/{model}") for m in models}
    if identity_required:
        legacy = components["LegacyTokenRequest"]
        legacy["required"] = ["identity"]
        legacy["properties"]["identity"] = {"type": "string", "minLength": 1, "maxLength": 128,
                                            "pattern": NAME_PATTERN, "description": "The participant identity."}

    def op(summary: str, request: str, response: str, status: str, description: str) -> dict[str, Any]:
        return {"post": {
            "tags": ["tokens"], "summary": summary, "description": description,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{request}"}}}},
            "responses": {status: {"description": "a LiveKit token", "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{response}"}}}},
                **_error_responses(400, 401, 403, 413, 422, 429, 503)},
        }}

    paths = {
        "/getToken": op("Token for the GoCare app (legacy shape)", "LegacyTokenRequest", "LegacyTokenResponse",
                        "200", "Body {room, identity, name} -> {token, serverUrl, roomName, participantName}."),
        "/api/token": op("LiveKit standard token endpoint", "StandardTokenRequest", "StandardTokenResponse", "201",
                         "What the client SDKs' TokenSource.endpoint call; all fields optional."),
    }
    return paths, components
