"""``GET /metrics`` of the token service (issue 12, part 2): scraped after real requests, each counter checked
for the exact amount it moved; labels never carry a room, an identity or a number."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
from fastapi.testclient import TestClient

from gocare_voice.settings import Settings
from gocare_voice.token_service.app import create_app
from harness.processes import ManagedProcess, free_port
from harness.prometheus import samples
from harness.token_server import start_token_server
from scripted.openai_server import Reply, Rule

SECRET = "metrics-test-secret-of-32-bytes!!"


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client: TestClient | httpx.Client) -> dict:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


def test_requests_tokens_and_latency_by_route_template() -> None:
    with TestClient(create_app(Settings(rate_limit="off"))) as c:
        before = scrape(c)
        for i in range(3):
            assert c.post("/getToken", json={"room": "room-of-priya", "identity": f"user-{i}"}).status_code == 200
        assert c.post("/api/token", json={"room_name": "room-of-priya"}).status_code == 201
        assert c.post("/getToken", json=["room-of-priya"]).status_code == 422
        assert c.get("/rooms/room-of-priya/9876543210").status_code == 404
        assert c.get("/health").status_code == 200
        after = scrape(c)
    total = "gocare_http_requests_total"
    assert value(after, total, route="/getToken", method="POST", status="200") == 3
    assert value(after, total, route="/getToken", method="POST", status="422") == 1
    assert value(after, total, route="/api/token", method="POST", status="201") == 1
    assert value(after, total, route="/health", method="GET", status="200") == 1
    assert value(after, total, route="unmatched", method="GET", status="404") == 1
    assert value(after, "gocare_tokens_minted_total", endpoint="/getToken") == 3
    assert value(after, "gocare_tokens_minted_total", endpoint="/api/token") == 1
    count = "gocare_http_request_duration_seconds_count"
    assert value(after, count, route="/getToken", method="POST") == 4
    assert value(after, "gocare_http_request_duration_seconds_bucket", route="/getToken", method="POST",
                 le="+Inf") == 4
    assert 0 < value(after, "gocare_http_request_duration_seconds_sum", route="/getToken", method="POST") < 5
    assert value(before, total, route="/getToken", method="POST", status="200") == 0  # a fresh app, fresh counts
    # no personal data in any label: no room, identity or number
    labels = " ".join(f"{k}={v}" for (_, pairs) in after for k, v in pairs)
    for personal in ("priya", "user-0", "9876543210"):
        assert personal not in labels


def _app_token(**claims: Any) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "user-7", "iat": now, "exp": now + 300, **claims}, SECRET, algorithm="HS256")


def test_auth_failures_by_reason_and_rate_limited() -> None:
    settings = Settings(auth_mode="jwt", auth_jwt_secret=SECRET, rate_limit="4/minute")
    with TestClient(create_app(settings)) as c:
        expired = {"Authorization": f"Bearer {_app_token(exp=int(time.time()) - 600)}"}
        forged = {"Authorization": f"Bearer {jwt.encode({'sub': 'x', 'exp': int(time.time()) + 60}, 'guess' * 8)}"}
        codes = [c.post("/getToken", json={}, headers=expired).status_code for _ in range(2)]
        codes += [c.post("/getToken", json={}).status_code]  # no Authorization at all
        codes += [c.post("/getToken", json={}, headers=forged).status_code]
        codes += [c.post("/getToken", json={}, headers=forged).status_code]  # the IP's budget is spent: 429
        ok = {"Authorization": f"Bearer {_app_token()}"}
        codes += [c.post("/getToken", json={"room": "user-7~call"}, headers=ok).status_code for _ in range(5)]
        after = scrape(c)
    assert codes == [401, 401, 401, 401, 429, 200, 200, 200, 200, 429]
    assert value(after, "gocare_auth_failures_total", reason="expired") == 2
    assert value(after, "gocare_auth_failures_total", reason="missing") == 1
    assert value(after, "gocare_auth_failures_total", reason="invalid") == 2
    assert value(after, "gocare_rate_limited_total", kind="failed_auth") == 1
    assert value(after, "gocare_rate_limited_total", kind="caller") == 1
    assert value(after, "gocare_tokens_minted_total", endpoint="/getToken") == 4
    assert value(after, "gocare_http_requests_total", route="/getToken", method="POST", status="429") == 2


def test_metrics_off() -> None:
    with TestClient(create_app(Settings(rate_limit="off", metrics="off"))) as c:
        assert c.post("/getToken", json={"room": "r", "identity": "u"}).status_code == 200
        r = c.get("/metrics")
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_voice_upload_stage_durations_and_failures(recordings, deepgram_server, speech_server,  # type: ignore[no-untyped-def]
                                                   openai_server) -> None:
    openai_server.script(Rule(user=r"appointment", reply=Reply(text="Tomorrow at nine.")))
    settings = Settings(
        deepgram_api_key=deepgram_server.api_key, deepgram_base_url=deepgram_server.url,
        llm_api_key="llm-test-key", llm_base_url=openai_server.base_url,
        tts_api_key=speech_server.api_key, tts_base_url=speech_server.base_url,
        rate_limit="off", livekit_url=f"ws://127.0.0.1:{_closed_port()}", notify_timeout=1.0, stage_timeout=5.0,
    )
    audio = recordings.bytes("m4a")
    with TestClient(create_app(settings)) as c:
        def upload(data: bytes) -> httpx.Response:
            return c.post("/voice/upload", files={"file": ("message.m4a", data, "audio/mp4")})

        assert upload(audio).status_code == 200
        assert upload(b"this is not audio at all" * 10).status_code in (415, 422)
        deepgram_server.fail_status = 500
        assert upload(audio).status_code == 502
        after = scrape(c)
    count = "gocare_voice_upload_stage_duration_seconds_count"
    assert value(after, count, stage="read") == 2  # the refused file never got past decoding
    assert value(after, count, stage="decode") == 3
    assert value(after, count, stage="stt") == 2
    assert value(after, count, stage="llm") == 1 and value(after, count, stage="tts") == 1
    assert value(after, "gocare_voice_upload_stage_duration_seconds_sum", stage="stt") > 0
    failures = {labels: v for (name, labels), v in after.items() if name == "gocare_voice_upload_failures_total"}
    assert failures == {(("error", "stt_failed"), ("stage", "stt")): 1.0,
                        (("error", "not_audio"), ("stage", "decode")): 1.0}, failures
    assert value(after, "gocare_http_requests_total", route="/voice/upload", method="POST", status="200") == 1
    assert value(after, "gocare_http_requests_total", route="/voice/upload", method="POST", status="502") == 1


# --- real processes --------------------------------------------------------------------------------------

def _server(name: str, logs: Path, *, options: list[str], env: dict[str, str]) -> tuple[ManagedProcess, str]:
    started = start_token_server(name, logs, env={"GOCARE_RATE_LIMIT": "off", **env}, options=options)
    return started.process, started.url


def test_workers_2_scrape_adds_up_every_process(tmp_path: Path) -> None:
    folder = tmp_path / "prom"
    folder.mkdir()
    (folder / "counter_999.db").write_bytes(b"stale")  # an earlier run's file: emptied at start
    process, url = _server("metrics-w2", tmp_path, options=["--workers", "2"],
                           env={"PROMETHEUS_MULTIPROC_DIR": str(folder)})
    try:
        assert not (folder / "counter_999.db").exists()
        n = 24
        for i in range(n):  # a new connection each: both processes answer some
            r = httpx.post(url + "/getToken", json={"room": "r", "identity": f"u-{i}"}, timeout=10)
            assert r.status_code == 200
        pids = {p.name.split("_")[-1] for p in folder.glob("counter_*.db")}
        assert len(pids) >= 2, sorted(folder.iterdir())  # more than one process wrote counters
        scraped = scrape(httpx.Client(base_url=url, timeout=10))
        assert value(scraped, "gocare_tokens_minted_total", endpoint="/getToken") == n
        assert value(scraped, "gocare_http_requests_total", route="/getToken", method="POST", status="200") == n
        assert value(scraped, "gocare_http_request_duration_seconds_count", route="/getToken", method="POST") == n
    finally:
        process.stop()


def test_metrics_on_their_own_port(tmp_path: Path) -> None:
    metrics_port = free_port()
    process, url = _server("metrics-port", tmp_path, options=[], env={"GOCARE_METRICS_PORT": str(metrics_port)})
    try:
        for i in range(3):
            assert httpx.post(url + "/getToken", json={"room": "r", "identity": f"u-{i}"}).status_code == 200
        assert httpx.get(url + "/metrics").status_code == 404  # not on the public port
        scraped = samples(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text)
        assert value(scraped, "gocare_tokens_minted_total", endpoint="/getToken") == 3
    finally:
        process.stop()


def test_own_port_with_workers_2(tmp_path: Path) -> None:
    """The CLI's own process serves the port and reads every worker's files."""
    metrics_port = free_port()
    process, url = _server("metrics-port-w2", tmp_path, options=["--workers", "2"],
                           env={"GOCARE_METRICS_PORT": str(metrics_port)})
    try:
        for i in range(6):
            assert httpx.post(url + "/getToken", json={"room": "r", "identity": f"u-{i}"}).status_code == 200
        scraped = samples(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text)
        assert value(scraped, "gocare_tokens_minted_total", endpoint="/getToken") == 6
    finally:
        process.stop()
