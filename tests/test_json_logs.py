"""``GOCARE_LOG_FORMAT=json`` (issue 12, part 5): the real ``gocare token-server`` writes one JSON object per
line on stderr, in livekit-agents' field names, still without keys, tokens or full numbers."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import httpx
import jwt

from gocare_voice.logging_setup import JsonLineFormatter
from gocare_voice.redact import PiiLogFilter
from harness.token_server import start_token_server

APP_SECRET = "json-log-test-secret-0123456789abcdef"
LK_SECRET = "lk-json-log-secret-0123456789abcdefgh"


def test_token_server_writes_json_lines_without_secrets(tmp_path: Path) -> None:
    env = {"GOCARE_LOG_FORMAT": "json", "GOCARE_AUTH_MODE": "jwt", "GOCARE_AUTH_JWT_SECRET": APP_SECRET,
           "LIVEKIT_API_KEY": "APIjsonlogs", "LIVEKIT_API_SECRET": LK_SECRET, "GOCARE_RATE_LIMIT": "2/minute"}
    started = start_token_server("json-logs", tmp_path, env=env)
    process, url = started.process, started.url
    try:
        now = int(time.time())
        good = jwt.encode({"sub": "user-9", "exp": now + 300, "name": "Ravi"}, APP_SECRET, algorithm="HS256")
        forged = jwt.encode({"sub": "user-9", "exp": now + 300}, "not-the-secret-" * 3, algorithm="HS256")
        minted = httpx.post(url + "/getToken", json={"room": "user-9~call"},
                            headers={"Authorization": f"Bearer {good}"}, timeout=10)
        assert minted.status_code == 200
        for _ in range(3):  # the third failure is over the IP's budget of 2
            httpx.post(url + "/getToken", json={}, headers={"Authorization": f"Bearer {forged}"}, timeout=10)
        process.wait_for_log(r'429', timeout=10)
    finally:
        process.stop()
    lines = [line for line in process.log_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"level", "name", "message", "timestamp", "pid"} <= set(r) for r in records), records
    assert not any("color_message" in r for r in records)  # uvicorn's copy with terminal colours is left out
    messages = [r["message"] for r in records]
    assert any(m.startswith("gocare token service on http://127.0.0.1") for m in messages)
    assert any(r["name"] == "uvicorn.access" and '"POST /getToken HTTP/1.1" 200' in r["message"] for r in records)
    assert any(r["name"] == "uvicorn.access" and '" 429' in r["message"] for r in records)
    assert messages[-1].startswith("Finished server process")  # uvicorn's shutdown, a JSON line as well
    text = process.log_text()
    for secret in (APP_SECRET, LK_SECRET, good, forged, minted.json()["token"]):
        assert secret not in text


def _format(record: logging.LogRecord) -> dict:
    PiiLogFilter().filter(record)
    return json.loads(JsonLineFormatter().format(record))


def test_json_line_carries_extra_fields_and_stays_masked() -> None:
    record = logging.LogRecord("livekit.agents", logging.INFO, __file__, 1, "user said %s", ("98765 43210",), None)
    record.room = "care-1"
    record.job_id = "AJ_123"
    record.__dict__["lk.pii.user_transcript"] = "my number is nine eight seven six five four three two one zero"
    record.when = object()  # not JSON: written as its str()
    line = _format(record)
    assert line["level"] == "INFO" and line["name"] == "livekit.agents"
    assert line["room"] == "care-1" and line["job_id"] == "AJ_123"
    assert "98765" not in line["message"] and line["message"].endswith("10")
    assert "nine eight" not in line["lk.pii.user_transcript"]
    assert line["when"].startswith("<object object")
    assert line["timestamp"].endswith("+00:00")


def test_json_line_has_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("gocare.x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = _format(record)
    assert line["level"] == "ERROR" and "ValueError: boom" in line["exc_info"]
