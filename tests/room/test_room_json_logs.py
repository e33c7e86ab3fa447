"""``gocare worker start`` writes livekit-agents' JSON log lines (the worker and its job processes): every
line a parseable object in the same field names as the token service's ``GOCARE_LOG_FORMAT=json``, the
call's lines carrying its room and job; no secrets (the autouse ``logs_keep_secrets`` checks the same lines)."""

from __future__ import annotations

import json

import pytest

from harness.app_client import AppClient

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(120)]


async def test_worker_log_lines_are_json_with_room_and_job(worker, token_service, scripted, room_name):
    mark = worker.process.mark()
    body = {"room_name": room_name, "participant_identity": "user-42", "participant_name": "John Doe",
            "room_config": {}}
    app = await AppClient.join(token_service.url, body=body, microphone=False)
    try:
        await app.wait_packet("welcome", timeout=30)
    finally:
        await app.leave()
    worker.process.wait_for_log(r'"room ready', timeout=10, since=mark)
    lines = [line for line in worker.process.log_since(mark).splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert all({"level", "name", "message", "timestamp", "pid"} <= set(r) for r in records)
    ours = [r for r in records if r.get("room") == room_name]
    assert any(r["name"] == "gocare.worker" and r["message"].startswith("room ready") for r in ours), ours
    assert all(r.get("job_id", "").startswith("AJ_") for r in ours if r["name"].startswith("gocare"))
