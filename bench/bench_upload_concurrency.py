"""20 concurrent voice uploads of 30 s recordings against a real token service on 127.0.0.1.

What it shows: uploads overlap instead of queueing (total wall time close to one upload's), the event loop
stays free while recordings are decoded and replies encoded (``GET /health`` p99 <= 50 ms during the run),
and how much memory the server process needs for it (peak RSS).

Set-up, all on loopback: the scripted Deepgram (``/v1/listen``), OpenAI-compatible chat and OpenAI speech
servers from tests/scripted/ run in this process, each adding a fixed latency per request (``--latency``);
the service runs as ``gocare token-server`` in its own process (that is whose RSS is sampled); ``/health`` is
polled from a third process so the measurement is not disturbed by this one's work.

    .venv/bin/python bench/bench_upload_concurrency.py [--uploads 20] [--seconds 30] [--latency 0.5]

Bounded: at most 100 uploads, 600 s of audio each, and a 300 s overall deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

DEADLINE_SECONDS = 300


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the /health poller (runs as its own process) ------------------------------------------------------


def poll_health(port: int, stop_file: Path, interval: float) -> None:
    """GET /health over one keep-alive connection until ``stop_file`` exists; print latencies (s) as JSON."""
    import http.client

    latencies: list[float] = []
    errors = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not stop_file.exists() and time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors += 1
            latencies.append(time.perf_counter() - started)
        except OSError:
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        time.sleep(interval)
    print(json.dumps({"latencies": latencies, "errors": errors}))


# --- the benchmark -------------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class RssSampler(threading.Thread):
    """Peak RSS of the server process and, separately, of its audio worker processes (its children)."""

    def __init__(self, pid: int, *, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        import psutil

        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop_event = threading.Event()
        self.first_server, self.first_children = self._sample()
        self.peak_server, self.peak_children, self.peak_total = self.first_server, self.first_children, 0
        self.children_seen = 0

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time (user+system) used so far by the server and by its live children."""
        import psutil

        times = self._process.cpu_times()
        children = 0.0
        for child in self._process.children(recursive=True):
            try:
                t = child.cpu_times()
                children += t.user + t.system
            except psutil.Error:
                pass
        return times.user + times.system, children

    def _sample(self) -> tuple[int, int]:
        import psutil

        server = self._process.memory_info().rss
        children = 0
        kids = self._process.children(recursive=True)
        self.children_seen = max(getattr(self, "children_seen", 0), len(kids))
        for child in kids:
            try:
                children += child.memory_info().rss
            except psutil.Error:
                pass
        return server, children

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                server, children = self._sample()
            except Exception:  # noqa: BLE001 - the process may be gone at the end
                return
            self.peak_server = max(self.peak_server, server)
            self.peak_children = max(self.peak_children, children)
            self.peak_total = max(self.peak_total, server + children)
            time.sleep(self._interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(2)


async def _upload(client, url: str, data: bytes, filename: str) -> tuple[float, int, dict]:
    started = time.perf_counter()
    response = await client.post(url, files={"file": (filename, data, "audio/webm")})
    elapsed = time.perf_counter() - started
    try:
        body = response.json()
    except ValueError:
        body = {"raw": response.text[:200]}
    return elapsed, response.status_code, body


async def run_uploads(port: int, data: bytes, filename: str, count: int) -> tuple[float, list[tuple[float, int, dict]]]:
    import httpx

    url = f"http://127.0.0.1:{port}/voice/upload"
    limits = httpx.Limits(max_connections=count + 5, max_keepalive_connections=count + 5)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(_upload(client, url, data, filename) for _ in range(count)))
        return time.perf_counter() - started, list(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each recording")
    parser.add_argument("--latency", type=float, default=0.5, help="fixed latency added by each scripted provider")
    parser.add_argument("--format", default="webm", choices=["webm", "m4a", "ogg", "mp3", "wav"])
    parser.add_argument("--health-interval", type=float, default=0.02)
    parser.add_argument("--poll-health", nargs=2, metavar=("PORT", "STOP_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.poll_health:
        poll_health(int(args.poll_health[0]), Path(args.poll_health[1]), args.health_interval)
        return 0
    if not 1 <= args.uploads <= 100 or not 1 <= args.seconds <= 600 or not 0 <= args.latency <= 10:
        parser.error("--uploads 1..100, --seconds 1..600, --latency 0..10")

    from scripted.deepgram_server import ScriptedDeepgramServer
    from scripted.openai_server import Reply, ScriptedOpenAIServer
    from scripted.recordings import make_recordings, tools_missing
    from scripted.speech_server import ScriptedSpeechServer

    reason = tools_missing()
    if reason:
        print(f"cannot make recordings: {reason}", file=sys.stderr)
        return 2

    reply = "Your appointment is tomorrow at nine in the morning. Please arrive ten minutes early."
    with tempfile.TemporaryDirectory() as tmp_name, \
            ScriptedDeepgramServer(delay=args.latency) as deepgram, \
            ScriptedOpenAIServer(default_reply=Reply(text=reply, delay=args.latency)) as llm, \
            ScriptedSpeechServer(delay=args.latency) as speech:
        tmp = Path(tmp_name)
        recs = make_recordings(tmp / "rec", repeat_to_seconds=args.seconds, formats=[args.format], stem="bench")
        data = recs.bytes(args.format)
        filename = recs.files[args.format].name
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GOCARE_", "LIVEKIT_", "LLM_", "DEEPGRAM_"))}
        env.update({
            "DEEPGRAM_API_KEY": deepgram.api_key,
            "GOCARE_DEEPGRAM_BASE_URL": deepgram.url,
            "LLM_API_KEY": "bench-llm-key",
            "LLM_BASE_URL": llm.base_url,
            "GOCARE_TTS_API_KEY": speech.api_key,
            "GOCARE_TTS_BASE_URL": speech.base_url,
            "GOCARE_RATE_LIMIT": "off",
            "GOCARE_STAGE_TIMEOUT": "60",
            "LIVEKIT_URL": f"ws://127.0.0.1:{_free_port()}",
            "LOG_LEVEL": os.environ.get("BENCH_SERVER_LOG_LEVEL", "WARNING"),
        })
        server = subprocess.Popen(
            [sys.executable, "-m", "gocare_voice", "token-server", "--port", str(port), "--no-access-log"],
            env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=open(os.environ.get("BENCH_SERVER_LOG", os.devnull), "wb"),
        )
        try:
            return _measure(args, server, port, data, filename, recs.seconds, tmp)
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)


def _measure(args, server: subprocess.Popen, port: int, data: bytes, filename: str, seconds: float, tmp: Path) -> int:
    import httpx

    deadline = time.monotonic() + 60
    while True:
        if server.poll() is not None:
            print("token server exited:", (server.stderr.read() or b"").decode()[-2000:], file=sys.stderr)
            return 2
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            print("token server did not start within 60 s", file=sys.stderr)
            return 2
        time.sleep(0.1)

    # warm-up (provider clients, codec tables), then one upload alone, three times
    asyncio.run(run_uploads(port, data, filename, 1))
    singles = []
    for _ in range(3):
        wall, ((_, status, body),) = asyncio.run(run_uploads(port, data, filename, 1))
        if status != 200:
            print(f"single upload failed: {status} {body}", file=sys.stderr)
            return 1
        singles.append(wall)
    single = statistics.median(singles)

    stop_file = tmp / "stop-health"
    poller = subprocess.Popen(
        [sys.executable, __file__, "--poll-health", str(port), str(stop_file),
         "--health-interval", str(args.health_interval)],
        stdout=subprocess.PIPE, text=True,
    )
    sampler = RssSampler(server.pid)
    cpu_server_before, cpu_workers_before = sampler.cpu_seconds()
    sampler.start()
    time.sleep(0.3)  # a few idle health samples first
    wall, results = asyncio.run(run_uploads(port, data, filename, args.uploads))
    cpu_server_after, cpu_workers_after = sampler.cpu_seconds()
    sampler.stop()
    stop_file.touch()
    out, _ = poller.communicate(timeout=30)
    health = json.loads(out)
    latencies = [x * 1000 for x in health["latencies"]]

    statuses = [status for _, status, _ in results]
    per_upload = [elapsed for elapsed, _, _ in results]
    ok = sum(1 for s in statuses if s == 200)
    p99 = _percentile(latencies, 99) if latencies else float("nan")
    print(f"# {args.uploads} concurrent uploads of a {seconds:.0f} s {args.format} recording ({len(data)} bytes), "
          f"scripted providers +{args.latency:.2f} s per stage (STT, LLM, TTS)")
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, one uvicorn worker")
    print(f"one upload alone (median of 3):   {single:.2f} s   (floor from provider latency: {3 * args.latency:.2f} s)")
    print(f"{args.uploads} concurrent, total wall:      {wall:.2f} s   = {wall / single:.2f}x one upload")
    print(f"per-upload latency under load:    min {min(per_upload):.2f} s, median "
          f"{statistics.median(per_upload):.2f} s, max {max(per_upload):.2f} s; {ok}/{len(results)} answered 200")
    print(f"GET /health during the run:       n={len(latencies)}, p50 {_percentile(latencies, 50):.1f} ms, "
          f"p99 {p99:.1f} ms, max {max(latencies):.1f} ms, errors {health['errors']}")
    print(f"CPU used during the run:          server {cpu_server_after - cpu_server_before:.2f} s, audio workers "
          f"{cpu_workers_after - cpu_workers_before:.2f} s (for {args.uploads} x {seconds:.0f} s of audio)")
    mib = 2**20
    print(f"server process RSS:               before {sampler.first_server / mib:.0f} MiB, peak "
          f"{sampler.peak_server / mib:.0f} MiB")
    print(f"child processes ({sampler.children_seen}) RSS:         before {sampler.first_children / mib:.0f} MiB, "
          f"peak {sampler.peak_children / mib:.0f} MiB; peak of server + workers {sampler.peak_total / mib:.0f} MiB")
    passed = ok == len(results) and p99 <= 50
    print(f"health p99 <= 50 ms and all uploads 200: {'PASS' if passed else 'FAIL'}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
