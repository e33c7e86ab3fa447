"""Issue 9, finding 4: ``gocare token-server`` had no connection limits.

The real CLI runs as a subprocess on 127.0.0.1 with short limits; each attack is bounded in time (socket
timeouts) and in count (a handful of connections, a few MB).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 1.5
IDLE_TIMEOUT = 1.0
MAX_CONNECTIONS = 6
MAX_HEADER_BYTES = 8192


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, psutil.Process]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOCARE_", "LIVEKIT_", "FORWARDED_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gocare_voice", "token-server", "--port", str(port),
         "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
         "--idle-timeout", str(IDLE_TIMEOUT), "--max-connections", str(MAX_CONNECTIONS),
         "--max-header-bytes", str(MAX_HEADER_BYTES), "--no-access-log"],
        env={**env, "GOCARE_RATE_LIMIT": "off"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_healthy(port)
        yield port, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_healthy(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    pytest.fail("token-server did not start")


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket, limit: float = 10) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    sock.settimeout(limit)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data, time.monotonic() - started


def test_oversized_headers_are_refused_and_memory_stays_flat(server) -> None:
    port, process = server
    before = process.memory_info().rss
    for _ in range(6):
        with _connect(port) as sock:
            sock.sendall(b"POST /getToken HTTP/1.1\r\nHost: x\r\nX-Big: ")
            try:
                for _ in range(64):  # up to 4 MB; the server should close long before
                    sock.sendall(b"a" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer, _ = _read_until_closed(sock)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:100]
    assert process.memory_info().rss - before < 30 * 1024 * 1024
    # many small headers: the same limit
    with _connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(100))
                     + b"\r\n")
        answer, _ = _read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 431")
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200


def test_silent_connection_is_closed_after_the_header_timeout(server) -> None:
    port, _ = server
    with _connect(port) as sock:
        answer, took = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408")
    assert HEADER_TIMEOUT - 0.2 < took < HEADER_TIMEOUT + 2


def test_byte_a_second_headers_are_cut_off(server) -> None:
    port, _ = server
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 100
    started = time.monotonic()
    with _connect(port) as sock:
        try:
            for byte in request:
                sock.sendall(bytes([byte]))
                time.sleep(0.25)
                if time.monotonic() - started > HEADER_TIMEOUT + 3:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer, _ = _read_until_closed(sock, limit=3)
    assert time.monotonic() - started < HEADER_TIMEOUT + 4
    assert answer.startswith(b"HTTP/1.1 408") or answer == b""


def test_stalled_body_is_cut_off(server) -> None:
    port, _ = server
    with _connect(port) as sock:
        sock.sendall(b"POST /getToken HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"room\":")
        answer, took = _read_until_closed(sock)
    assert took < BODY_TIMEOUT + 2
    assert b" 200 " not in answer


def test_idle_keep_alive_connection_is_closed(server) -> None:
    port, _ = server
    with _connect(port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        rest, took = _read_until_closed(sock)
    assert rest == b"" and took < IDLE_TIMEOUT + 2


def test_connections_beyond_the_limit_are_refused_and_the_service_recovers(server) -> None:
    port, _ = server
    held = [_connect(port) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)
        with _connect(port) as extra:
            answer, took = _read_until_closed(extra)
        assert answer.startswith(b"HTTP/1.1 503") and took < 1.0
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200


def test_forwarded_for_is_not_trusted_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a per-IP limit, X-Forwarded-For from 127.0.0.1 must not buy a fresh budget per request: uvicorn's
    own default trusts it from 127.0.0.1; ours trusts nobody until FORWARDED_ALLOW_IPS names the proxies."""
    from gocare_voice.settings import Settings
    from gocare_voice.token_service.app import create_app
    from gocare_voice.token_service.serving import ConnectionLimits, uvicorn_options
    from scripted.loopback import serve

    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    options = uvicorn_options(ConnectionLimits(max_header_bytes=8192, header_timeout=5, body_timeout=5,
                                               idle_timeout=5, max_connections=10))
    with serve(create_app(Settings(rate_limit="2/minute")), **options) as port, \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        codes = [http.post("/getToken", json={"identity": "u"}, headers={"X-Forwarded-For": f"203.0.113.{i}"})
                 .status_code for i in range(3)]
    assert codes == [200, 200, 429]


def test_max_connections_fit_the_descriptor_limit(tmp_path) -> None:
    """The report: 300 idle sockets on a 256-descriptor limit took the service down. Under ``ulimit -n 256``
    the cap is lowered (with a warning) so the service refuses connections before it runs out."""
    import resource

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOCARE_", "LIVEKIT_"))}

    def limit_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    proc = subprocess.Popen(
        [sys.executable, "-m", "gocare_voice", "token-server", "--port", str(port),
         "--no-access-log", "--header-timeout", "30"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=limit_descriptors,
    )
    held: list[socket.socket] = []
    try:
        _wait_healthy(port)
        for _ in range(300):
            held.append(_connect(port))
        time.sleep(0.3)
        assert proc.poll() is None, "the service died"
        with _connect(port) as extra:
            answer, _ = _read_until_closed(extra, limit=5)
        assert answer.startswith(b"HTTP/1.1 503")
        for sock in held:
            sock.close()
        held.clear()
        time.sleep(0.5)
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    finally:
        for sock in held:
            sock.close()
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert "does not fit the descriptor limit (256" in err
