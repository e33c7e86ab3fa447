"""POST /getToken under load: gocare token-server (one process) against the Node peer, side by side.

Both servers run on 127.0.0.1 with the same API key/secret and agent name; `wrk` (Debian package) drives
16 connections from one thread for a fixed time; rounds alternate between the two so that machine noise
hits both alike. At the end one token from each is verified with livekit.api.TokenVerifier and their
claims are compared. Prints a Markdown table with req/s, p50, p99, errors and the ratio.

    python bench/bench_token.py --duration 10 --rounds 3

Needs: wrk, node + npm (the peer is installed into a temporary copy with `npm install`).
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


def start_gocare(port: int) -> subprocess.Popen:
    env = {**os.environ, "LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET, "GOCARE_RATE_LIMIT": "off",
           "LOG_LEVEL": "WARNING"}
    cmd = [sys.executable, "-m", "gocare_voice", "--env-file", os.devnull, "token-server", "--port", str(port),
           "--no-access-log"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        script = workdir / "post.lua"
        script.write_text(LUA)
        ports = {"gocare": free_port(), "node-peer": free_port()}
        procs = {"gocare": start_gocare(ports["gocare"]),
                 "node-peer": start_peer(ports["node-peer"], args.peer, workdir)}
        try:
            for _name, port in ports.items():
                wait_ready(f"http://127.0.0.1:{port}/health")
                run_wrk(port, script, duration=2, connections=args.connections)  # warm-up (JIT, caches)
            results: dict[str, list[dict[str, float]]] = {name: [] for name in ports}
            for _ in range(rounds):
                for name, port in ports.items():
                    results[name].append(run_wrk(port, script, duration=duration, connections=args.connections))
            tokens = {name: post_token(port) for name, port in ports.items()}
        finally:
            for proc in procs.values():
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
    ratio = summary["gocare"]["rps"] / summary["node-peer"]["rps"]
    print(f"wrk -t1 -c{args.connections} -d{duration}s, {rounds} alternating rounds per server, loopback")
    print("| server | req/s (median) | p50 ms (median) | p99 ms (worst) | errors | per-round req/s |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, s in summary.items():
        rounds_text = ", ".join(f"{r['rps']:.0f}" for r in results[name])
        print(f"| {name} | {s['rps']:.0f} | {s['p50']:.2f} | {s['p99']:.2f} | {s['errors']:.0f} | {rounds_text} |")
    print(f"\nratio gocare / node-peer (req/s): {ratio:.2f}x")
    same = claims["gocare"] == claims["node-peer"]
    print(f"tokens verified with TokenVerifier; same claims: {same}")
    if not same:
        print(json.dumps(claims, indent=2))


if __name__ == "__main__":
    main()
