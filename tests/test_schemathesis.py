"""Issue 9, finding 6: schemathesis against /openapi.json, per auth mode, a bounded number of examples per
operation. The schema has to say what the service enforces (names, the upload's body and ``room``, the
statuses), and no generated request may get a 5xx or an answer outside the schema.

The app runs in-process (ASGI); providers are not configured, so an upload that decodes ends in a documented
503 ``stt_not_configured`` without any network. Hypothesis' deadline is off: the first upload starts the
decoder processes.
"""

from __future__ import annotations

import time

import jwt
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from gocare_voice.records.model import SINCE_PATTERN
from gocare_voice.settings import Settings
from gocare_voice.token_service.app import create_app

SECRET = "a-schemathesis-secret-of-32-bytes!!"
EXAMPLES = 40
"""Per operation and mode: enough to walk the schema's shapes, bounded for CI on two cores."""

def _seeded_records() -> str:
    """A call-record database with calls of user-42 (the bearer's sub) and of someone else, so GET /calls
    answers real records for schemathesis to check against the schema."""
    import tempfile
    from datetime import timedelta

    from gocare_voice.records.model import (
        AnalysisStatus,
        CallAnalysis,
        CallRecord,
        CallStatus,
        EndReason,
        Turn,
        utcnow,
    )
    from gocare_voice.records.store import CallStore

    url = f"sqlite:///{tempfile.mkdtemp(prefix='gocare-schemathesis-')}/calls.db"
    with CallStore(url=url) as store:
        for call_id, identity in (("AJ_schema42", "user-42"), ("AJ_schema77", "user-77")):
            record = CallRecord(call_id=call_id, room=f"{identity}-care", participant_identity=identity,
                                user_id=identity, verified_user_id=identity, status=CallStatus.ended,
                                started_at=utcnow() - timedelta(minutes=3), ended_at=utcnow(),
                                end_reason=EndReason.user_left, modes=["assistant"], updated_at=utcnow())
            record.turns = [Turn(role="user", text="hello", at=utcnow())]
            if identity == "user-42":  # an analysed call, so the analysis in the answers is checked too
                record.analysis = CallAnalysis(status=AnalysisStatus.done, plan="gocare-default", values={
                    "reason": "Asked for a callback", "resolved": False, "follow_up_needed": True,
                    "urgency": "urgent", "callback_time": None}, success=False,
                    alerts=[{"field": "urgency", "value": "urgent"}], attempts=1)
            store.create(record)
    return url


RECORDS_URL = _seeded_records()
open_app = create_app(Settings(rate_limit="off", database_url=RECORDS_URL))
jwt_app = create_app(Settings(rate_limit="off", auth_mode="jwt", auth_jwt_secret=SECRET, database_url=RECORDS_URL))
open_schema = schemathesis.openapi.from_asgi("/openapi.json", open_app)
jwt_schema = schemathesis.openapi.from_asgi("/openapi.json", jwt_app)


def _bearer() -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode({"sub": "user-42", "exp": int(time.time()) + 600}, SECRET,
                                                    algorithm="HS256")}


_SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


def _excluded() -> list:
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    # a schema-valid request may still be refused for reasons a schema cannot say (a room that is another
    # user's, audio bytes that are not audio, no provider configured): those are 4xx by design
    return [positive_data_acceptance]


@open_schema.parametrize()
@_SETTINGS
def test_open_mode_follows_its_schema(case) -> None:
    case.call_and_validate(excluded_checks=_excluded())


@jwt_schema.parametrize()
@_SETTINGS
def test_jwt_mode_follows_its_schema(case) -> None:
    case.call_and_validate(headers=_bearer(), excluded_checks=_excluded())


@jwt_schema.include(path="/calls", method="GET").parametrize()
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_the_calls_query_reaches_its_ranges(case) -> None:
    """Issue 28: ``since=99999999999d`` was a 500. The schema states ``since``'s pattern (spans up to 12
    digits, past the accepted range on purpose) and the ranges of ``limit``/``offset``; more examples here
    than for the other operations, so generated values reach the edges where parsing used to overflow."""
    case.call_and_validate(headers=_bearer(), excluded_checks=_excluded())


@jwt_schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_jwt_mode_without_a_token_is_401_everywhere_but_health(case) -> None:
    response = case.call()
    # /metrics is open like /health (counts only; docs/security.md): GOCARE_METRICS_PORT moves it off this port
    if case.path in ("/health", "/metrics") or case.path.startswith(("/docs", "/openapi", "/redoc")):
        return
    assert response.status_code in (401, 405, 413, 415), (case.path, response.status_code, response.text[:200])
    assert response.status_code < 500


def test_the_schema_says_what_the_service_enforces() -> None:
    upload = open_app.openapi()["paths"]["/voice/upload"]["post"]
    assert upload["requestBody"]["content"]["multipart/form-data"]["schema"]["required"] == ["file"]
    assert [p["name"] for p in upload["parameters"]] == ["room"]
    assert "pattern" in upload["parameters"][0]["schema"]
    legacy = open_app.openapi()["components"]["schemas"]["LegacyTokenRequest"]
    assert legacy["required"] == ["identity"] and "pattern" in legacy["properties"]["identity"]
    assert "required" not in jwt_app.openapi()["components"]["schemas"]["LegacyTokenRequest"]


def test_the_calls_routes_are_in_the_schema() -> None:
    paths = jwt_app.openapi()["paths"]
    assert set(paths["/calls"]["get"]["responses"]) >= {"200", "401", "403", "422"}
    assert "404" in paths["/calls/{call_id}"]["get"]["responses"]
    assert {p["name"] for p in paths["/calls"]["get"]["parameters"]} == {"identity", "user", "since", "limit", "offset",
                                                                         "where"}
    # every parameter states its range or shape, so the generated requests reach the edges (issue 28: a
    # huge ``since`` span was a 500 that a pattern-less string parameter never produced)
    params = {p["name"]: p["schema"] for p in paths["/calls"]["get"]["parameters"]}
    assert params["since"]["anyOf"][0]["pattern"] == SINCE_PATTERN
    assert params["limit"]["minimum"] == 1 and params["offset"]["maximum"] == 1_000_000
    assert all("pattern" in params[name] for name in ("identity", "user"))
    # the analysis filters: a list of FIELD=VALUE, the plan's fields named in the operation's description
    assert params["where"]["anyOf"][0]["items"]["pattern"].startswith("^[a-z][a-z0-9_]{0,39}=")
    assert "follow_up_needed (boolean)" in paths["/calls"]["get"]["description"]


@pytest.fixture(autouse=True, scope="module")
def _close_decoders():
    yield
    from gocare_voice.audio import shared_audio_workers

    shared_audio_workers().close()
