"""POST /getToken under load: gocare token-server (one process) against the Node peer and a bare Starlette
route, side by side.

Servers, each one process on 127.0.0.1 with the same API key/secret and agent name:
- gocare: the rate limit and the metrics off (the figure before issue 12);
- gocare+metrics+limit(memory): GOCARE_METRICS=on, the rate limit on in memory (limits' sliding window counter);
- gocare+metrics+limit(redis): the same with the counters in a local redis-server (one round trip a request);
- node-peer: ../shared/peers/node-token-server (express + livekit-server-sdk);
- bare-starlette: bench/bare_starlette.py, a route that reads the body and returns fixed JSON (the ceiling of
  the framework and server on this machine).
The limit is set far above what the run sends (every request is counted, none refused). `wrk` (Debian
package) drives 16 connections from one thread for a fixed time; rounds alternate between the servers so
that machine noise hits all alike. One token from each gocare variant and the peer is verified with
livekit.api.TokenVerifier and their claims compared. Prints a Markdown table and the ratios.

    python bench/bench_token.py --duration 10 --rounds 3

Needs: wrk, node + npm (the peer is installed into a temporary copy with `npm install`), redis-server for
the Redis row (left out, with a line, without it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

KEY, SECRET = "devkey", "secretsecretsecretsecretsecretsecret"
BODY = '{"room":"bench-room","identity":"user-1","name":"John Doe"}'
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PEER = ROOT.parent / "shared" / "peers" / "node-token-server"

LUA = f"""
wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server at {url} did not start")


def post_token(port: int) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/getToken", data=BODY.encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def parse_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]  # wrk prints this format
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(port: int, script: Path, *, duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script),
         f"http://127.0.0.1:{port}/getToken"],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]  # wrk prints this format
    p50 = parse_ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]  # wrk prints this format
    p99 = parse_ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]  # wrk prints this format
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock_err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock_err:
        errors += sum(int(g) for g in sock_err.groups())
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors}


HIGH_LIMIT = "100000000/minute"
"""Far above what a run sends: every request is charged, none refused."""


def start_gocare(port: int, **settings: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOCARE_", "PROMETHEUS_"))}
    env.update({"LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET, "GOCARE_RATE_LIMIT": "off",
                "GOCARE_METRICS": "off", "LOG_LEVEL": "WARNING", **settings})
    cmd = [sys.executable, "-m", "gocare_voice", "--env-file", os.devnull, "token-server", "--port", str(port),
           "--no-access-log"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_bare(port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT / "bench"), "bare_starlette:app",
           "--port", str(port), "--no-access-log", "--log-level", "warning", "--http", "httptools", "--loop", "uvloop"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_redis(port: int, workdir: Path) -> subprocess.Popen | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    raise SystemExit("redis-server did not start")


def start_peer(port: int, peer_src: Path, workdir: Path) -> subprocess.Popen:
    peer = workdir / "peer"
    peer.mkdir()
    for name in ("package.json", "server.mjs"):
        shutil.copy(peer_src / name, peer / name)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=peer, check=True)
    env = {**os.environ, "LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET, "PORT": str(port)}
    return subprocess.Popen(["node", "server.mjs"], cwd=peer, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def verified_claims(token: str) -> dict:
    from livekit import api

    claims = api.TokenVerifier(KEY, SECRET).verify(token)
    return {
        "identity": claims.identity, "name": claims.name, "room": claims.video.room,
        "room_join": claims.video.room_join, "can_publish": claims.video.can_publish,
        "can_subscribe": claims.video.can_subscribe, "can_update_own_metadata": claims.video.can_update_own_metadata,
        "agent": claims.room_config.agents[0].agent_name if claims.room_config else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per round (max 60)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server, alternating (max 10)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--peer", type=Path, default=DEFAULT_PEER, help="the Node peer's folder")
    args = parser.parse_args()
    duration, rounds = min(args.duration, 60), min(args.rounds, 10)
    for tool in ("wrk", "node", "npm"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is required (apt-get install wrk nodejs npm)")

    load_before = os.getloadavg()[0]
    procs: dict[str, subprocess.Popen] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        script = workdir / "post.lua"
        script.write_text(LUA)
        redis_port = free_port()
        redis = start_redis(redis_port, workdir)
        if redis is None:
            print("redis-server not found: the Redis row is left out (apt-get install redis-server)")
        metered = {"GOCARE_METRICS": "on", "GOCARE_RATE_LIMIT": HIGH_LIMIT}
        starters = {
            "gocare": lambda port: start_gocare(port),
            "gocare+metrics+limit(memory)": lambda port: start_gocare(port, **metered),
            **({"gocare+metrics+limit(redis)": lambda port: start_gocare(
                port, **metered, GOCARE_RATE_LIMIT_STORAGE=f"redis://127.0.0.1:{redis_port}/0")} if redis else {}),
            "node-peer": lambda port: start_peer(port, args.peer, workdir),
            "bare-starlette": start_bare,
        }
        ports = {name: free_port() for name in starters}
        try:
            for name, start in starters.items():
                procs[name] = start(ports[name])
            for port in ports.values():
                wait_ready(f"http://127.0.0.1:{port}/health")
                run_wrk(port, script, duration=2, connections=args.connections)  # warm-up (JIT, caches)
            results: dict[str, list[dict[str, float]]] = {name: [] for name in ports}
            for _ in range(rounds):
                for name, port in ports.items():
                    results[name].append(run_wrk(port, script, duration=duration, connections=args.connections))
            tokens = {name: post_token(port) for name, port in ports.items() if name != "bare-starlette"}
        finally:
            for proc in [*procs.values(), *([redis] if redis else [])]:
                proc.terminate()
                proc.wait(timeout=10)

    claims = {name: verified_claims(body["token"]) for name, body in tokens.items()}
    summary = {
        name: {
            "rps": statistics.median(r["rps"] for r in rs),
            "p50": statistics.median(r["p50"] for r in rs),
            "p99": max(r["p99"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
        }
        for name, rs in results.items()
    }
    print(f"wrk -t1 -c{args.connections} -d{duration}s, {rounds} alternating rounds per server, loopback; "
          f"load average before: {load_before:.2f} (1 min), after: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    print("| server | req/s (median) | p50 ms (median) | p99 ms (worst) | errors | per-round req/s |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, s in summary.items():
        rounds_text = ", ".join(f"{r['rps']:.0f}" for r in results[name])
        print(f"| {name} | {s['rps']:.0f} | {s['p50']:.2f} | {s['p99']:.2f} | {s['errors']:.0f} | {rounds_text} |")
    print()
    for name in [n for n in summary if n.startswith("gocare")]:
        rps = summary[name]["rps"]
        print(f"{name}: {rps / summary['node-peer']['rps']:.2f}x node-peer, "
              f"{rps / summary['bare-starlette']['rps']:.2f}x bare-starlette")
    same = all(c == claims["node-peer"] for c in claims.values())
    print(f"tokens verified with TokenVerifier; same claims (every gocare variant and the peer): {same}")
    if not same:
        print(json.dumps(claims, indent=2))


if __name__ == "__main__":
    main()
