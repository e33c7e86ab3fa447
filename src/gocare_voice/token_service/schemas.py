"""Request and response shapes of the token endpoints, for the OpenAPI document.

The handlers themselves parse with orjson and check fields with ``validation.py`` (cheaper on the hot path
than model validation); these models describe the same contract for /docs and for the tests that check
responses against it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class LegacyTokenRequest(BaseModel):
    room: str | None = Field(
        None, min_length=1, max_length=128, examples=["user-42-care"],
        description="Without it the service picks a fresh room. In jwt mode only '<sub>-<suffix>' with a "
        "suffix free of '-' (403 room_not_allowed otherwise).",
    )
    identity: str | None = Field(None, min_length=1, max_length=128, examples=["user-42"],
                                 description="Required when caller authentication is off; else the caller's sub.")
    name: str | None = Field(None, max_length=128, examples=["John Doe"])


class LegacyTokenResponse(BaseModel):
    token: str
    serverUrl: str  # noqa: N815 - the app's existing field names
    roomName: str  # noqa: N815
    participantName: str  # noqa: N815


class StandardTokenRequest(BaseModel):
    room_name: str | None = Field(None, max_length=128)
    participant_identity: str | None = Field(None, max_length=128)
    participant_name: str | None = Field(None, max_length=128)
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


def token_paths() -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) describing POST /getToken and POST /api/token."""
    models = (LegacyTokenRequest, LegacyTokenResponse, StandardTokenRequest, StandardTokenResponse, ErrorResponse)
    components = {m.__name__: m.model_json_schema(ref_template="#/components/schemas/{model}") for m in models}

    def op(summary: str, request: str, response: str, status: str, description: str) -> dict[str, Any]:
        return {"post": {
            "tags": ["tokens"], "summary": summary, "description": description,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{request}"}}}},
            "responses": {status: {"description": "a LiveKit token", "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{response}"}}}},
                **_error_responses(400, 401, 403, 413, 422, 429)},
        }}

    paths = {
        "/getToken": op("Token for the GoCare app (legacy shape)", "LegacyTokenRequest", "LegacyTokenResponse",
                        "200", "Body {room, identity, name} -> {token, serverUrl, roomName, participantName}."),
        "/api/token": op("LiveKit standard token endpoint", "StandardTokenRequest", "StandardTokenResponse", "201",
                         "What the client SDKs' TokenSource.endpoint call; all fields optional."),
    }
    return paths, components
