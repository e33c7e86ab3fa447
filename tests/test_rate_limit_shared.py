"""One rate limit across processes and instances (issue 12, part 1): real ``gocare token-server`` processes on
127.0.0.1, real HTTP, a real ``redis-server`` (the session fixture; a test that stops Redis starts its own).

Each request goes on a fresh connection, so with ``--workers 2`` the kernel hands them to both processes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from harness.processes import free_port
from harness.token_server import start_token_server

LIMIT = 5


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GOCARE_", "LIVEKIT_", "FORWARDED_", "PROMETHEUS_")) and k not in ("PORT", "LOG_LEVEL")}
    return {**env, **extra}


class Server:
    def __init__(self, name: str, logs: Path, *, env: dict[str, str], options: Sequence[str] = ()) -> None:
        started = start_token_server(name, logs, env=env, options=options)
        self.process, self.url = started.process, started.url

    def get_token(self, identity: str = "u-1", headers: dict[str, str] | None = None) -> httpx.Response:
        # a new connection per request (no keep-alive): with --workers N any process may answer
        return httpx.post(self.url + "/getToken", json={"room": "r", "identity": identity}, headers=headers,
                          timeout=10)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.process.stop()


@pytest.fixture
def redis_url(redis_server) -> str:  # type: ignore[no-untyped-def]
    import redis

    with redis.Redis.from_url(redis_server.url) as client:
        client.flushdb()
    return redis_server.url


def _limited(env_extra: dict[str, str] | None = None, **more: str) -> dict[str, str]:
    return {"GOCARE_RATE_LIMIT": f"{LIMIT}/minute", **(env_extra or {}), **more}


def test_two_token_servers_share_one_budget(servers: list[Server], redis_url: str, tmp_path: Path) -> None:
    env = _limited(GOCARE_RATE_LIMIT_STORAGE=redis_url)
    a, b = Server("a", tmp_path, env=env), Server("b", tmp_path, env=env)
    servers += [a, b]
    codes = [(a if i % 2 == 0 else b).get_token().status_code for i in range(LIMIT + 3)]
    assert codes == [200] * LIMIT + [429] * 3, codes
    refused = b.get_token()
    assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60


def test_memory_storage_is_per_process(servers: list[Server], tmp_path: Path) -> None:
    """The contrast that makes the Redis test mean something: two processes with ``memory://`` each give
    the caller its own budget."""
    a, b = Server("a", tmp_path, env=_limited()), Server("b", tmp_path, env=_limited())
    servers += [a, b]
    assert [a.get_token().status_code for _ in range(LIMIT + 1)] == [200] * LIMIT + [429]
    assert [b.get_token().status_code for _ in range(LIMIT)] == [200] * LIMIT


def test_workers_2_share_one_budget(servers: list[Server], redis_url: str, tmp_path: Path) -> None:
    server = Server("w2", tmp_path, env=_limited(GOCARE_RATE_LIMIT_STORAGE=redis_url), options=["--workers", "2"])
    servers.append(server)
    codes = [server.get_token().status_code for _ in range(3 * LIMIT)]
    assert codes.count(200) == LIMIT and codes[:LIMIT] == [200] * LIMIT, codes


def test_forged_forwarded_for_from_an_untrusted_peer_does_not_reset_the_budget(
        servers: list[Server], redis_url: str, tmp_path: Path) -> None:
    server = Server("untrusted", tmp_path, env=_limited(GOCARE_RATE_LIMIT_STORAGE=redis_url))
    servers.append(server)
    codes = [server.get_token(headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(LIMIT + 2)]
    assert codes == [200] * LIMIT + [429, 429], codes


@pytest.mark.parametrize("how", ["option", "setting"])
def test_forwarded_for_from_a_trusted_proxy_separates_clients(
        servers: list[Server], redis_url: str, tmp_path: Path, how: str) -> None:
    env = _limited(GOCARE_RATE_LIMIT_STORAGE=redis_url)
    options: list[str] = []
    if how == "option":
        options = ["--forwarded-allow-ips", "127.0.0.0/8"]
        env["GOCARE_TRUSTED_PROXIES"] = "10.9.9.9"  # the option wins over the setting
    else:
        env["GOCARE_TRUSTED_PROXIES"] = "127.0.0.1"
    server = Server(f"trusted-{how}", tmp_path, env=env, options=options)
    servers.append(server)
    alice = {"X-Forwarded-For": "198.51.100.7"}
    bob = {"X-Forwarded-For": "198.51.100.8"}
    assert [server.get_token(headers=alice).status_code for _ in range(LIMIT + 1)] == [200] * LIMIT + [429]
    assert server.get_token(headers=bob).status_code == 200  # another client behind the same proxy
    assert server.get_token(headers=alice).status_code == 429
    # the access log shows the client, not the proxy
    server.process.wait_for_log(r"198\.51\.100\.8:\d+ - \"POST /getToken", timeout=5)


def test_a_bad_trusted_proxy_is_one_line(tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "gocare_voice", "--env-file", os.devnull, "token-server",
                           "--port", str(free_port()), "--forwarded-allow-ips", "10.0.0.1,proxy.example"],
                          env=_env({}), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "GOCARE_TRUSTED_PROXIES: 'proxy.example' is not an IP address or network" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("mode", "status"), [("open", 200), ("closed", 503)])
def test_storage_down_at_run_time(servers: list[Server], redis_server, tmp_path: Path,  # type: ignore[no-untyped-def]
                                  mode: str, status: int) -> None:
    from harness.redis_server import locate_redis, start_redis

    own = start_redis(locate_redis(), tmp_path, name=f"redis-{mode}")  # type: ignore[arg-type]
    try:
        server = Server(f"down-{mode}", tmp_path,
                        env=_limited(GOCARE_RATE_LIMIT_STORAGE=own.url, GOCARE_RATE_LIMIT_FAIL_MODE=mode))
        servers.append(server)
        assert [server.get_token().status_code for _ in range(2)] == [200, 200]
    finally:
        own.stop()
    answers = [server.get_token() for _ in range(LIMIT + 3)]  # more than the budget: nothing counts them now
    assert [r.status_code for r in answers] == [status] * (LIMIT + 3)
    if mode == "closed":
        body = answers[0].json()
        assert body["error"] == "rate_limit_unavailable" and "GOCARE_RATE_LIMIT_FAIL_MODE=closed" in body["detail"]
        assert answers[0].headers["retry-after"] == "2"
    log = server.process.log_text()
    warnings = [line for line in log.splitlines() if "rate-limit storage" in line and "is not answering" in line]
    assert len(warnings) == 1, log  # at most once a minute
    assert "Traceback" not in log and " 500" not in log


def test_storage_unreachable_at_start_is_one_line(servers: list[Server], tmp_path: Path) -> None:
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    server = Server("unreachable", tmp_path, env=_limited(GOCARE_RATE_LIMIT_STORAGE=url))
    servers.append(server)
    lines = [line for line in server.process.log_text().splitlines() if "cannot be reached" in line]
    assert len(lines) == 1, server.process.log_text()
    assert "GOCARE_RATE_LIMIT_STORAGE=redis://:***@127.0.0.1" in lines[0] and "hunter2" not in server.process.log_text()
    assert "GOCARE_RATE_LIMIT_FAIL_MODE=open" in lines[0]
    assert server.get_token().status_code == 200
