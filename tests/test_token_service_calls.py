"""GET /calls and GET /calls/{id} on the token service: the caller's own calls in jwt mode, every call only
with the operator token, the named identity's in development's open mode; paginated."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gocare_voice.records.model import MAX_SINCE_DAYS, SINCE_PATTERN, CallRecord, CallStatus, EndReason, Turn, utcnow
from gocare_voice.records.store import CallStore
from gocare_voice.settings import Settings, SettingsError, load_settings
from gocare_voice.token_service.app import create_app

SECRET = "calls-test-jwt-secret-0123456789abcdef"
OPERATOR = "operator-token-0123456789abcdef"


def bearer(sub: str) -> dict[str, str]:
    token = jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def add_call(url: str, call_id: str, identity: str, *, minutes_ago: int = 1) -> None:
    with CallStore(url=url) as store:
        record = CallRecord(call_id=call_id, room=f"{identity}-care", participant_identity=identity, user_id=identity,
                            verified_user_id=identity, status=CallStatus.ended,
                            started_at=utcnow() - timedelta(minutes=minutes_ago), ended_at=utcnow(),
                            end_reason=EndReason.user_left, updated_at=utcnow())
        record.turns = [Turn(role="user", text=f"hello from {identity}", at=utcnow())]
        store.create(record)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'users.db'}"


def test_jwt_mode_the_caller_sees_only_their_own(url: str) -> None:
    client = TestClient(create_app(Settings(rate_limit="off", auth_mode="jwt", auth_jwt_secret=SECRET,
                                            database_url=url, operator_token=OPERATOR)))
    assert client.get("/calls", headers=bearer("user-42")).json()["calls"] == []  # no database yet: no calls
    for i in range(3):
        add_call(url, f"AJ_john{i}", "user-42", minutes_ago=10 - i)
    add_call(url, "AJ_asha", "user-77")
    assert client.get("/calls").status_code == 401
    page = client.get("/calls", headers=bearer("user-42"), params={"limit": 2})
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    body = page.json()
    assert [c["call_id"] for c in body["calls"]] == ["AJ_john2", "AJ_john1"]
    assert body["total"] == 3 and body["next_offset"] == 2 and "turns" not in body["calls"][0]
    last = client.get("/calls", headers=bearer("user-42"), params={"limit": 2, "offset": 2}).json()
    assert [c["call_id"] for c in last["calls"]] == ["AJ_john0"] and last["next_offset"] is None
    # another user's call is not found, whatever the caller names
    assert client.get("/calls/AJ_asha", headers=bearer("user-42")).status_code == 404
    assert client.get("/calls", headers=bearer("user-42"), params={"identity": "user-77"}).json()["total"] == 3
    refused = client.get("/calls", headers=bearer("user-42"), params={"user": "user-77"})
    assert refused.status_code == 403 and refused.json()["error"] == "operator_only"
    detail = client.get("/calls/AJ_john0", headers=bearer("user-42")).json()
    assert detail["turns"][0]["text"] == "hello from user-42" and detail["end_reason"] == "user_left"
    # the operator sees everyone, and can narrow it to one user
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    assert client.get("/calls", headers=operator).json()["total"] == 4
    assert [c["call_id"] for c in client.get("/calls", headers=operator, params={"user": "user-77"}).json()["calls"]] == ["AJ_asha"]
    assert client.get("/calls/AJ_asha", headers=operator).status_code == 200
    assert client.get("/calls", headers={"Authorization": "Bearer " + OPERATOR[:-1] + "x"}).status_code == 401
    since = client.get("/calls", headers=operator, params={"since": "5m"}).json()
    assert [c["call_id"] for c in since["calls"]] == ["AJ_asha"]
    assert client.get("/calls", headers=operator, params={"since": "soon"}).status_code == 422
    assert client.get("/calls", headers=operator, params={"limit": 0}).status_code == 422


def test_open_mode_reads_the_named_identity_and_no_operator_without_the_setting(url: str) -> None:
    add_call(url, "AJ_john", "user-42")
    client = TestClient(create_app(Settings(rate_limit="off", database_url=url)))
    refused = client.get("/calls")
    assert refused.status_code == 403 and refused.json()["error"] == "identity_required"
    assert [c["call_id"] for c in client.get("/calls", params={"identity": "user-42"}).json()["calls"]] == ["AJ_john"]
    assert client.get("/calls/AJ_john", params={"identity": "user-77"}).status_code == 404
    assert client.get("/calls/AJ_john", params={"identity": "user-42"}).status_code == 200
    assert client.get("/calls", headers={"Authorization": f"Bearer {OPERATOR}"}).status_code == 403  # no operator set


def test_operator_and_webhook_secrets_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError) as short:
        load_settings(env_file=None, operator_token="short")
    assert "GOCARE_OPERATOR_TOKEN: at least 16 bytes" in short.value.problems
    with pytest.raises(SettingsError) as unsigned:
        load_settings(env_file=None, call_webhook_url="https://example.invalid/hook")
    assert any(p.startswith("GOCARE_CALL_WEBHOOK_SECRET: required") for p in unsigned.value.problems)
    with pytest.raises(SettingsError) as plain:
        load_settings(env_file=None, env="production", livekit_api_key="k", livekit_api_secret="s" * 32,
                      livekit_url="wss://lk.example.com", auth_mode="jwt", auth_jwt_secret="x" * 32,
                      auth_audience="app", call_webhook_url="http://example.com/hook",
                      call_webhook_secret="w" * 32, operator_token="o" * 20)
    problems = plain.value.problems
    assert "GOCARE_CALL_WEBHOOK_URL: must be an https:// URL when GOCARE_ENV=production" in problems
    assert "GOCARE_OPERATOR_TOKEN: at least 32 bytes" in problems
    monkeypatch.setenv("GOCARE_CALL_RECORDS", "off")
    assert load_settings(env_file=None).records_level.value == "off"
    monkeypatch.delenv("GOCARE_CALL_RECORDS")
    assert load_settings(env_file=None).records_level.value == "transcript"
    production = load_settings(env_file=None, env="production", livekit_api_key="k", livekit_api_secret="s" * 32,
                               livekit_url="wss://lk.example.com", auth_mode="jwt", auth_jwt_secret="x" * 32,
                               auth_audience="app")
    assert production.records_level.value == "metadata"


SINCE_BAD = ["99999999999d", "999999999999w", "-5d", "garbage", "2026-13-45", "²d", "9999-12-31T23:59:59-05:00",
             "0001-01-01T00:00:00+01:00", "1" * 40, "7d\n", "%00", "2026-12-01T25:00"]


@pytest.fixture(scope="module")
def open_client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    url = f"sqlite:///{tmp_path_factory.mktemp('since') / 'users.db'}"
    add_call(url, "AJ_john", "user-42")
    return TestClient(create_app(Settings(rate_limit="off", database_url=url)), raise_server_exceptions=False)


@pytest.mark.parametrize("since", SINCE_BAD)
def test_a_bad_since_is_a_422_with_a_message(open_client: TestClient, since: str) -> None:
    """Issue 28: ``since=99999999999d`` was a 500 with two tracebacks."""
    answer = open_client.get("/calls", params={"identity": "user-42", "since": since})
    assert answer.status_code == 422, (since, answer.text)
    body = answer.json()
    assert body["error"] == "validation_error" and "since" in body["detail"]


def test_since_in_range_answers(open_client: TestClient) -> None:
    for since in ("36600d", "5228w", "10m", "2000-01-01", "2000-01-01T08:00:00Z", "2000-01-01T08:00+05:30"):
        answer = open_client.get("/calls", params={"identity": "user-42", "since": since})
        assert answer.status_code == 200 and answer.json()["total"] == 1, (since, answer.text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(since=st.one_of(st.from_regex(SINCE_PATTERN), st.text(max_size=40),
                       st.integers(min_value=0, max_value=10**12).map(lambda n: f"{n}{'mhdw'[n % 4]}")))
def test_any_since_is_answered_never_a_500(open_client: TestClient, since: str) -> None:
    answer = open_client.get("/calls", params={"identity": "user-42", "since": since})
    assert answer.status_code in (200, 422), (since, answer.status_code, answer.text[:200])
    if answer.status_code == 422:
        assert answer.json()["detail"]


def test_the_schema_states_the_since_pattern_and_range() -> None:
    app = create_app(Settings(rate_limit="off"))
    params = {p["name"]: p for p in app.openapi()["paths"]["/calls"]["get"]["parameters"]}
    assert params["since"]["schema"]["anyOf"][0]["pattern"] == SINCE_PATTERN
    assert f"at most {MAX_SINCE_DAYS} days" in params["since"]["description"]
    assert params["limit"]["schema"]["maximum"] >= 1 and params["offset"]["schema"]["maximum"] == 1_000_000


def test_calls_filter_on_the_analysis(url: str) -> None:
    """``?where=FIELD=VALUE`` (repeatable) by the configured plan; a field or value the plan does not have is
    a 422 naming it; the filter and the analysis are in the OpenAPI schema."""
    from gocare_voice.records.model import AnalysisStatus, CallAnalysis

    add_call(url, "AJ_callback", "user-42", minutes_ago=3)
    add_call(url, "AJ_hours", "user-42", minutes_ago=2)
    add_call(url, "AJ_plain", "user-42", minutes_ago=1)
    base = {"reason": "Asked for a callback about insulin", "resolved": False, "follow_up_needed": True,
            "urgency": "urgent", "callback_time": "after 5 pm"}
    with CallStore(url=url) as store:
        store.set_analysis("AJ_callback", CallAnalysis(status=AnalysisStatus.done, plan="gocare-default", values=base,
                                                       alerts=[{"field": "urgency", "value": "urgent"}], attempts=1))
        store.set_analysis("AJ_hours", CallAnalysis(status=AnalysisStatus.done, plan="gocare-default", values={
            **base, "reason": "Opening hours", "follow_up_needed": False, "resolved": True, "urgency": "routine"}))
    client = TestClient(create_app(Settings(rate_limit="off", auth_mode="jwt", auth_jwt_secret=SECRET,
                                            database_url=url)))

    def ids(*where: str) -> list[str]:
        answer = client.get("/calls", headers=bearer("user-42"), params=[("where", w) for w in where])
        assert answer.status_code == 200, answer.text
        assert answer.json()["total"] == len(answer.json()["calls"])
        return [c["call_id"] for c in answer.json()["calls"]]

    assert ids() == ["AJ_plain", "AJ_hours", "AJ_callback"]
    assert ids("follow_up_needed=true") == ["AJ_callback"]
    assert ids("follow_up_needed=false", "urgency=routine") == ["AJ_hours"]
    assert ids("follow_up_needed=true", "urgency=routine") == []
    assert ids("reason=insulin") == ["AJ_callback"]
    listed = client.get("/calls", headers=bearer("user-42"), params={"where": "urgency=urgent"}).json()["calls"][0]
    assert listed["analysis"]["values"]["follow_up_needed"] is True
    assert listed["analysis"]["alerts"] == [{"field": "urgency", "value": "urgent"}]
    for wrong, message in [("mood=sad", "where: 'mood' is not a field of the analysis plan"),
                           ("urgency=asap", "where: urgency: 'asap' is not one of routine, soon, urgent")]:
        refused = client.get("/calls", headers=bearer("user-42"), params={"where": wrong})
        assert refused.status_code == 422 and message in refused.json()["detail"], refused.text
    assert client.get("/calls", headers=bearer("user-42"), params={"where": "no-equals"}).status_code == 422
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/calls"]["get"]
    where = next(p for p in operation["parameters"] if p["name"] == "where")
    assert where["schema"]["anyOf"][0]["type"] == "array" and "FIELD=VALUE" in where["description"]
    assert "follow_up_needed (boolean)" in operation["description"]
    assert "urgency (routine|soon|urgent)" in operation["description"]
    assert "analysis" in schema["components"]["schemas"]["CallOut"]["properties"]
