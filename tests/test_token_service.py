"""The token service through its real ASGI app (TestClient) and once through a real uvicorn on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from livekit import api

from gocare_voice.settings import Settings, load_settings
from gocare_voice.token_service.app import create_app

LK_KEY, LK_SECRET = "APIgocare", "lk-secret-" * 4
APP_SECRET = "app-auth-secret-" * 3


def make_settings(**overrides: object) -> Settings:
    base: dict[str, object] = {"livekit_api_key": LK_KEY, "livekit_api_secret": LK_SECRET, "rate_limit": "off"}
    base.update(overrides)
    return load_settings(env_file=None, **base)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(make_settings())) as c:
        yield c


def verify(token: str) -> api.Claims:
    return api.TokenVerifier(LK_KEY, LK_SECRET).verify(token)


# --- legacy /getToken ------------------------------------------------------------------------------

def test_get_token_legacy_shape_and_claims(client: TestClient) -> None:
    r = client.post("/getToken", json={"room": "care-room", "identity": "u-42", "name": "John Doe"})
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"token", "serverUrl", "roomName", "participantName"}
    assert body["serverUrl"] == "ws://localhost:7880"
    assert body["roomName"] == "care-room" and body["participantName"] == "John Doe"
    claims = verify(body["token"])
    assert claims.identity == "u-42" and claims.name == "John Doe"
    assert json.loads(claims.metadata) == {"userId": "u-42", "userName": "John Doe"}
    assert claims.video.room == "care-room" and claims.video.room_join
    assert claims.video.can_publish and claims.video.can_subscribe and claims.video.can_publish_data
    assert claims.video.can_update_own_metadata is True
    assert claims.room_config.agents[0].agent_name == "multi-assistant"
    raw = jwt.decode(body["token"], options={"verify_signature": False})
    assert raw["exp"] - raw["nbf"] == 900


def test_without_a_name_the_participant_shows_its_identity_but_the_agent_gets_no_name(client: TestClient) -> None:
    # the agent must not greet "Welcome u-1!"; it waits for setMetadata or greets without a name
    body = client.post("/getToken", json={"room": "r", "identity": "u-1"}).json()
    assert body["participantName"] == "u-1"
    claims = verify(body["token"])
    assert claims.name == "u-1"
    assert json.loads(claims.metadata) == {"userId": "u-1"}
    body = client.post("/api/token", json={"room_name": "r", "participant_identity": "u-2"}).json()
    assert body["participant_name"] == "u-2" and json.loads(verify(body["participant_token"]).metadata) == {"userId": "u-2"}


def test_agent_name_and_ttl_come_from_settings() -> None:
    with TestClient(create_app(make_settings(agent_name="other-agent", token_ttl="5m"))) as c:
        token = c.post("/getToken", json={"room": "r", "identity": "i"}).json()["token"]
    raw = jwt.decode(token, options={"verify_signature": False})
    assert verify(token).room_config.agents[0].agent_name == "other-agent"
    assert raw["exp"] - raw["nbf"] == 300


# --- standard /api/token -----------------------------------------------------------------------------

def test_standard_endpoint_as_flutter_endpoint_token_source_sends_it(client: TestClient) -> None:
    """Byte for byte what livekit_client's EndpointTokenSource posts (TokenSourceRequest.toJson)."""
    flutter_body = (
        '{"room_name":"gocare-room","participant_name":"Asha Rao","participant_identity":"asha-1",'
        '"participant_metadata":"{\\"plan\\":\\"gold\\"}","participant_attributes":{"app":"gocare"},'
        '"room_config":{}}'
    )
    r = client.post("/api/token", content=flutter_body, headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["server_url"] == "ws://localhost:7880"
    assert body["room_name"] == "gocare-room" and body["participant_name"] == "Asha Rao"
    claims = verify(body["participant_token"])
    assert claims.identity == "asha-1" and claims.video.room == "gocare-room"
    assert json.loads(claims.metadata) == {"plan": "gold", "userId": "asha-1", "userName": "Asha Rao"}
    assert claims.attributes == {"app": "gocare"}
    assert claims.video.can_update_own_metadata is True
    assert claims.room_config.agents[0].agent_name == "multi-assistant"


def test_standard_endpoint_all_optional(client: TestClient) -> None:
    r = client.post("/api/token", json={})
    assert r.status_code == 201
    body = r.json()
    claims = verify(body["participant_token"])
    assert body["room_name"].startswith("gocare-") and claims.video.room == body["room_name"]
    assert claims.identity.startswith("user-") and body["participant_name"] == claims.identity


def test_standard_endpoint_agent_dispatch_request(client: TestClient) -> None:
    r = client.post("/api/token", json={
        "room_name": "r", "room_config": {"agents": [{"agent_name": "multi-assistant", "metadata": "{\"a\":1}"}]}})
    assert r.status_code == 201
    dispatch = verify(r.json()["participant_token"]).room_config.agents[0]
    assert dispatch.agent_name == "multi-assistant" and dispatch.metadata == '{"a":1}'


def test_metadata_cannot_impersonate(client: TestClient) -> None:
    from gocare_voice.conversation.identity import read_metadata

    sneaky = {"userId": "admin", "userName": "Boss", "user": {"userId": "admin"}, "user_id": "admin",
              "name": "Boss", "plan": "gold"}
    r = client.post("/api/token", json={"participant_identity": "me", "participant_name": "Me",
                                        "participant_metadata": json.dumps(sneaky)})
    metadata = verify(r.json()["participant_token"]).metadata
    assert json.loads(metadata) == {"plan": "gold", "userId": "me", "userName": "Me"}
    identity = read_metadata(metadata).identity  # what the worker will read
    assert (identity.user_id, identity.user_name) == ("me", "Me")


@pytest.mark.parametrize("body", [
    {"participant_attributes": {"userId": "victim"}},
    {"participant_attributes": {"name": "Boss"}},
    {"room_config": {"agents": [{"agent_name": "multi-assistant", "metadata": json.dumps({"userId": "victim"})}]}},
])
def test_identity_keys_elsewhere_are_refused(client: TestClient, body: dict) -> None:
    r = client.post("/api/token", json=body)
    assert r.status_code == 422 and "sets who the user is" in r.json()["detail"]


@pytest.mark.parametrize("name", ["Asha 👩\u200d⚕️", "കൃഷ്ണൻ\u200d", "कृष्ण\u200c", "José Núñez"])
def test_real_names_with_joiners_are_accepted(client: TestClient, name: str) -> None:
    r = client.post("/getToken", json={"room": "r", "identity": "i", "name": name})
    assert r.status_code == 200 and verify(r.json()["token"]).name == name


@pytest.mark.parametrize("room_config", [
    {"agents": [{"agent_name": "someone-else"}]},
    {"name": "other-room"},
    {"max_participants": 100},
    {"agents": [{"agent_name": "multi-assistant"}, {"agent_name": "multi-assistant"}]},
    {"agents": [{"agent_name": "multi-assistant", "deployment": "x"}]},
    {"agents": [{"agent_name": "multi-assistant", "agentName": "other"}]},
    {"agents": "multi-assistant"},
    ["agents"],
    "{}",
])
def test_room_config_asking_for_more_is_refused(client: TestClient, room_config: object) -> None:
    r = client.post("/api/token", json={"room_name": "r", "room_config": room_config})
    assert r.status_code == 422
    assert r.json()["error"] == "room_config_refused" and r.json()["detail"]


# --- bad input -----------------------------------------------------------------------------------------

BAD_BODIES = [
    (b"", 400, "empty_body"),
    (b"   ", 400, "empty_body"),
    (b"room=r&identity=i", 400, "invalid_json"),
    (b"{\"room\": ", 400, "invalid_json"),
    (b"[1, 2]", 422, "validation_error"),
    (b"null", 422, "validation_error"),
    (b"\"text\"", 422, "validation_error"),
    (b"{\"room\": 5, \"identity\": \"i\"}", 422, "validation_error"),
    (b"{\"room\": \"r\", \"identity\": [\"i\"]}", 422, "validation_error"),
    (b"{\"room\": \"r\", \"identity\": \"i\", \"name\": {\"x\": 1}}", 422, "validation_error"),
    (b"{\"room\": [], \"identity\": \"i\"}", 422, "validation_error"),
    (b"{\"room\": \"r\"}", 422, "validation_error"),
    (b"{\"room\": \"   \", \"identity\": \"i\"}", 422, "validation_error"),
    (json.dumps({"room": "r" * 10_000, "identity": "i"}).encode(), 422, "validation_error"),
    (json.dumps({"room": "r\x00oom", "identity": "i"}).encode(), 422, "validation_error"),
    (json.dumps({"room": "r", "identity": "i\u202e"}).encode(), 422, "validation_error"),
    (b"\xff\xfe{}", 400, "invalid_json"),
]


@pytest.mark.parametrize(("body", "status", "error"), BAD_BODIES)
def test_bad_bodies_get_clear_4xx(client: TestClient, body: bytes, status: int, error: str) -> None:
    r = client.post("/getToken", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error"] == error
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]


@pytest.mark.parametrize("body", [
    {"room_name": 1}, {"participant_metadata": "not json"}, {"participant_metadata": "[1]"},
    {"participant_attributes": ["a"]}, {"participant_attributes": {"k": 1}}, {"participant_name": "x" * 129},
])
def test_standard_endpoint_bad_fields(client: TestClient, body: dict) -> None:
    r = client.post("/api/token", json=body)
    assert r.status_code == 422 and r.json()["error"] == "validation_error"


def test_huge_body_is_413_even_without_content_length(client: TestClient) -> None:
    big = json.dumps({"room": "r", "identity": "i", "name": "n" * 200_000}).encode()
    r = client.post("/getToken", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    r = client.post("/getToken", content=iter([big[:8000], big[8000:]]),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    assert client.get("/nope").json()["error"] == "not_found"
    r = client.get("/getToken")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


# --- health, CORS, rate limit ---------------------------------------------------------------------------

def test_health_reports_only_what_is_configured(client: TestClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["livekit_configured"] is True
    assert body["deepgram_configured"] is False and body["llm_configured"] is False
    assert body["groq_configured"] is False and body["azure_tts_configured"] is False
    with TestClient(create_app(make_settings(deepgram_api_key="dg", groq_api_key="gq"))) as c:
        body = c.get("/health").json()
    assert body["deepgram_configured"] and body["groq_configured"] and body["llm_configured"]
    assert body["azure_tts_configured"] is False  # a key without a region is not configured
    assert body["tts_configured"] is False  # openai TTS needs GOCARE_TTS_API_KEY or LLM_API_KEY
    azure = make_settings(azure_speech_key="az", azure_speech_region="westeurope", tts_provider="azure",
                          llm_api_key="sk")
    with TestClient(create_app(azure)) as c:
        body = c.get("/health").json()
    import importlib.util

    plugin = importlib.util.find_spec("livekit.plugins.azure") is not None
    assert body["azure_tts_configured"] is plugin and body["tts_configured"] is plugin
    assert body["llm_configured"] is True and "sk" not in json.dumps(body)


def test_openapi_docs_are_served_and_match_responses(client: TestClient) -> None:
    from gocare_voice.token_service.schemas import LegacyTokenResponse, StandardTokenResponse

    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/getToken", "/api/token", "/health"} <= set(spec["paths"])
    assert "201" in spec["paths"]["/api/token"]["post"]["responses"]
    assert "StandardTokenRequest" in spec["components"]["schemas"]
    LegacyTokenResponse.model_validate(client.post("/getToken", json={"room": "r", "identity": "i"}).json())
    StandardTokenResponse.model_validate(client.post("/api/token", json={}).json())


def test_cors_preflight() -> None:
    with TestClient(create_app(make_settings(allowed_origins="https://app.gocare.example, http://localhost:3000"))) as c:
        r = c.options("/api/token", headers={"Origin": "https://app.gocare.example",
                                             "Access-Control-Request-Method": "POST",
                                             "Access-Control-Request-Headers": "authorization,content-type"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://app.gocare.example"
        assert "POST" in r.headers["access-control-allow-methods"]
        denied = c.options("/api/token", headers={"Origin": "https://evil.example",
                                                  "Access-Control-Request-Method": "POST"})
        assert denied.status_code == 400
        assert "access-control-allow-origin" not in denied.headers


def test_rate_limit_429_with_retry_after() -> None:
    with TestClient(create_app(make_settings(rate_limit="3/minute"))) as c:
        codes = [c.post("/getToken", json={"room": "r", "identity": "i"}).status_code for _ in range(3)]
        r = c.post("/getToken", json={"room": "r", "identity": "i"})
    assert codes == [200, 200, 200]
    assert r.status_code == 429 and r.json()["error"] == "rate_limited"
    # the sliding window counter: the first window's budget frees up when that window ends (at most the period)
    assert 1 <= int(r.headers["retry-after"]) <= 60


# --- caller authentication -------------------------------------------------------------------------------

def app_token(sub: str = "user-7", *, secret: str = APP_SECRET, exp_in: int = 300, aud: str = "gocare-app",
              iss: str = "https://auth.gocare.example", **extra: object) -> str:
    now = int(time.time())
    claims = {"sub": sub, "aud": aud, "iss": iss, "iat": now, "exp": now + exp_in, "name": "Priya Shah", **extra}
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.fixture
def jwt_client() -> Iterator[TestClient]:
    settings = make_settings(auth_mode="jwt", auth_jwt_secret=APP_SECRET, auth_audience="gocare-app",
                             auth_issuer="https://auth.gocare.example")
    with TestClient(create_app(settings)) as c:
        yield c


def test_jwt_valid_binds_identity_and_name(jwt_client: TestClient) -> None:
    r = jwt_client.post("/getToken", json={"room": "user-7~call"}, headers={"Authorization": f"Bearer {app_token()}"})
    assert r.status_code == 200, r.text
    claims = verify(r.json()["token"])
    assert claims.identity == "user-7" and claims.name == "Priya Shah"
    assert json.loads(claims.metadata) == {"userId": "user-7", "userName": "Priya Shah"}
    r = jwt_client.post("/api/token", json={"room_config": {}}, headers={"Authorization": f"Bearer {app_token()}"})
    assert r.status_code == 201 and verify(r.json()["participant_token"]).identity == "user-7"
    assert r.json()["room_name"].startswith("user-7~")  # a generated room is the caller's own


# tokens are made when the test runs, not when the module is collected: a long suite outlives their 5 minutes
@pytest.mark.parametrize(("make_token", "fragment"), [
    (lambda: None, "missing"),
    (lambda: "Basic abc", "Bearer"),
    (lambda: "Bearer ", "Bearer"),
    (lambda: "Bearer not.a.jwt", "not valid"),
    (lambda: f"Bearer {app_token(exp_in=-600)}", "expired"),
    (lambda: f"Bearer {app_token(secret='forged-secret-forged-secret-forged')}", "not valid"),
    (lambda: f"Bearer {app_token(aud='another-app')}", "audience"),
    (lambda: f"Bearer {app_token(iss='https://evil.example')}", "issuer"),
], ids=["missing", "basic", "empty", "garbage", "expired", "forged", "audience", "issuer"])
def test_jwt_rejections_are_401(jwt_client: TestClient, make_token: Callable[[], str | None], fragment: str) -> None:
    token = make_token()
    headers = {"Authorization": token} if token is not None else {}
    r = jwt_client.post("/getToken", json={"room": "r"}, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized" and fragment in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_jwt_identity_mismatch_is_403(jwt_client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {app_token()}"}
    r = jwt_client.post("/getToken", json={"room": "r", "identity": "someone-else"}, headers=headers)
    assert r.status_code == 403 and r.json()["error"] == "identity_mismatch"
    r = jwt_client.post("/api/token", json={"participant_identity": "someone-else"}, headers=headers)
    assert r.status_code == 403
    same = jwt_client.post("/getToken", json={"room": "user-7~own", "identity": "user-7"}, headers=headers)
    assert same.status_code == 200


@pytest.mark.parametrize("room", ["user-8~x", "room-of-bob", "user-7x~a", "xuser-7~a", "user~7", "user-7", "user-7~",
                                  "user-7-a", "~user-7~a", "user-7-~a"])
def test_jwt_caller_may_only_join_its_own_rooms(jwt_client: TestClient, room: str) -> None:
    headers = {"Authorization": f"Bearer {app_token()}"}
    for path, body in (("/getToken", {"room": room}), ("/api/token", {"room_name": room})):
        r = jwt_client.post(path, json=body, headers=headers)
        assert r.status_code == 403 and r.json()["error"] == "room_not_allowed", (path, r.text)


def test_jwt_name_claim_that_does_not_fit_is_trimmed_not_refused() -> None:
    settings = make_settings(auth_mode="jwt", auth_jwt_secret=APP_SECRET)
    with TestClient(create_app(settings)) as c:
        long_name = app_token(aud="x", name="Dr. " + "A" * 300 + "\x07")
        r = c.post("/getToken", json={"room": "user-7~own"}, headers={"Authorization": f"Bearer {long_name}"})
        assert r.status_code == 200 and len(r.json()["participantName"]) == 128

        future = app_token(aud="x", nbf=int(time.time()) + 3600)
        r = c.post("/getToken", json={"room": "user-7~own"}, headers={"Authorization": f"Bearer {future}"})
        assert r.status_code == 401 and "not valid yet" in r.json()["detail"]


def test_failed_authentication_is_rate_limited_per_ip() -> None:
    settings = make_settings(auth_mode="jwt", auth_jwt_secret=APP_SECRET, rate_limit="3/minute")
    with TestClient(create_app(settings)) as c:
        forged = {"Authorization": f"Bearer {app_token(secret='guess-guess-guess-guess-guess-guess')}"}
        codes = [c.post("/getToken", json={"room": "user-7"}, headers=forged).status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]


def test_jwt_rate_limit_is_per_caller() -> None:
    settings = make_settings(auth_mode="jwt", auth_jwt_secret=APP_SECRET, rate_limit="2/minute")
    with TestClient(create_app(settings)) as c:
        a = {"Authorization": f"Bearer {app_token('alice', aud='x')}"}
        b = {"Authorization": f"Bearer {app_token('bob', aud='x')}"}
        assert [c.post("/getToken", json={"room": "alice~call"}, headers=a).status_code for _ in range(3)] == [200, 200, 429]
        assert c.post("/getToken", json={"room": "bob~call"}, headers=b).status_code == 200


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, object]]:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json", key
    server.shutdown()


def test_jwt_with_jwks_url(jwks_server) -> None:
    url, key = jwks_server
    settings = make_settings(auth_mode="jwt", auth_jwks_url=url, auth_audience="gocare-app")
    now = int(time.time())
    good = jwt.encode({"sub": "rsa-user", "aud": "gocare-app", "exp": now + 60}, key, algorithm="RS256",
                      headers={"kid": "k1"})
    with TestClient(create_app(settings)) as c:
        r = c.post("/getToken", json={"room": "rsa-user~call"}, headers={"Authorization": f"Bearer {good}"})
        assert r.status_code == 200 and verify(r.json()["token"]).identity == "rsa-user"
        hs = app_token(aud="gocare-app")  # an HS256 token must not pass against a JWKS configuration
        assert c.post("/getToken", json={"room": "r"}, headers={"Authorization": f"Bearer {hs}"}).status_code == 401


def test_jwks_unreachable_is_503_not_500() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(auth_mode="jwt", auth_jwks_url=f"http://127.0.0.1:{port}/jwks.json")
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, "x" * 32, algorithm="HS256",
                       headers={"kid": "k1"})
    with TestClient(create_app(settings)) as c:
        r = c.post("/getToken", json={"room": "r"}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 503 and r.json()["error"] == "auth_unavailable"


# --- a real server on loopback ---------------------------------------------------------------------------

def test_real_uvicorn_on_loopback() -> None:
    from scripted.loopback import serve

    with serve(create_app(make_settings())) as port:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            assert http.get("/health").json()["status"] == "ok"
            r = http.post("/getToken", json={"room": "loop", "identity": "u", "name": "Loop User"})
            assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
            assert verify(r.json()["token"]).video.room == "loop"
            bad = http.post("/getToken", content=b"{oops", headers={"Content-Type": "application/json"})
            assert bad.status_code == 400 and bad.json()["error"] == "invalid_json"


# --- the URL handed to apps -----------------------------------------------------------------------------

def test_both_token_responses_and_health_carry_the_client_url() -> None:
    """An emulator reaches the developer's machine as 10.0.2.2: the app must be told that address, while
    the service itself keeps using LIVEKIT_URL."""
    settings = load_settings(env_file=None, livekit_client_url="ws://10.0.2.2:7880", rate_limit="off")
    with TestClient(create_app(settings)) as c:
        legacy = c.post("/getToken", json={"room": "r", "identity": "u"}).json()
        standard = c.post("/api/token", json={"room_name": "r", "room_config": {}}).json()
        health = c.get("/health").json()
    assert legacy["serverUrl"] == standard["server_url"] == health["livekit_url"] == "ws://10.0.2.2:7880"
    assert settings.livekit_url == "ws://localhost:7880"


def test_get_token_ignores_unknown_fields(client: TestClient) -> None:
    r = client.post("/getToken", json={"room": "r", "identity": "u", "name": "N", "platform": "android", "x": [1]})
    assert r.status_code == 200 and r.json()["participantName"] == "N"


def test_jwt_leeway_is_the_setting() -> None:
    """GOCARE_AUTH_LEEWAY: an app token expired 20 s ago passes with the default 30 s, not with 5 s."""
    expired = jwt.encode({"sub": "u-1", "exp": int(time.time()) - 20}, APP_SECRET, algorithm="HS256")
    for leeway, status in ((30, 200), (5, 401)):
        settings = make_settings(auth_mode="jwt", auth_jwt_secret=APP_SECRET, auth_leeway=leeway)
        with TestClient(create_app(settings)) as c:
            r = c.post("/getToken", json={"room": "u-1~care"}, headers={"Authorization": f"Bearer {expired}"})
        assert r.status_code == status, (leeway, r.text)
