"""CI's proof that the image and compose.yaml work together: the stack up, real calls through its containers.

Run by ``scripts/ci-stack`` (which builds the images first), as root, never by pytest (no ``test_`` name):

    python tests/stack/stack_call.py --project DIR --image localhost/gocare-voice:ci --standins localhost/gocare-ci

What it does, in a network namespace of its own (``harness.netns``: libwebrtc skips loopback interfaces, and
compose.yaml runs every service on the host's network, which here is the namespace's):

1. the paid providers (LLM, Deepgram, TTS) scripted on the namespace's 127.0.0.1, and a ``.env`` pointing at them;
2. ``podman-compose up`` of compose.yaml, service by service (podman-compose 1.0.3 ignores ``depends_on``
   conditions, which docker compose honours): Redis, PostgreSQL, livekit-server, the migration (must exit 0),
   a user imported with ``gocare users import`` in a container, the token service, the worker, Prometheus;
3. a call as the app (the livekit rtc SDK): a token over HTTP from the token service's container, the greeting,
   the registered number spoken and verified against PostgreSQL, the call's record in PostgreSQL;
4. a second call, and ``podman stop`` of the worker mid-call (SIGTERM, the compose file's grace period): the call
   goes on to its verification, the container exits 0 within the grace period; started again, a third call is
   answered;
5. the container's user is not root; the models are in the image (a container with no network and
   HF_HUB_OFFLINE=1 loads and runs both; the worker never logged a fallback from the turn detector);
6. a missing key and a bad setting: the container exits 2 with the one-line message in its log;
7. the figures: image size, container start -> worker registered, -> token service healthy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS), str(TESTS / "room")]

import httpx  # noqa: E402
import yaml  # noqa: E402

from harness.netns import enter_private_network  # noqa: E402
from scripted.deepgram_server import ScriptedDeepgramServer  # noqa: E402
from scripted.openai_server import ScriptedOpenAIServer  # noqa: E402
from scripted.speech_server import ScriptedSpeechServer  # noqa: E402

PROJECT = f"gocare-ci-{os.getpid()}"
"""Per run: two CI runs on one host (each in its own namespace) never share a container name."""
RULES = TESTS.parent / "deploy" / "helm" / "gocare-voice" / "files" / "prometheus-rules.yml"
LLM_KEY, TTS_KEY, DEEPGRAM_KEY = "sk-stack-ci", "tts-stack-ci", "dg-stack-ci"
USER_ID, USER_NAME, SPOKEN, WRITTEN = "user-42", "John Doe", "nine eight seven six five four three two one zero", "98765 43210"
DRAIN_TIMEOUT, GRACE_PERIOD = 60, 90
WORDS_PER_MINUTE = 280


class StackFailure(AssertionError):
    pass


def log(message: str) -> None:
    print(f"stack: {message}", flush=True)


def run(*args: str, check: bool = True, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check and result.returncode != 0:
        raise StackFailure(f"`{' '.join(args)}` exited {result.returncode}: {(result.stderr or result.stdout)[-2000:]}")
    return result


@dataclass
class Providers:
    """What tests/room/calls.py's steps need: the scripted LLM and Deepgram (and the TTS beside them)."""

    llm: ScriptedOpenAIServer
    speech: ScriptedSpeechServer
    deepgram: ScriptedDeepgramServer


class Stack:
    def __init__(self, project_dir: Path, image: str, standins: str) -> None:
        self.dir = project_dir
        self.image = image
        self.standins = standins
        self.postgres_password = secrets.token_hex(12)

    # --- compose -------------------------------------------------------------------------------
    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        # the test extra's podman-compose (1.2.0), whatever else is on PATH
        return run(sys.executable, "-m", "podman_compose", "-p", PROJECT, "-f", str(self.dir / "compose.yaml"), *args,
                   timeout=timeout, cwd=self.dir)

    def container(self, service: str) -> str:
        return f"{PROJECT}_{service}_1"

    def logs(self, service: str) -> str:
        result = run("podman", "logs", self.container(service), check=False)
        return result.stdout + result.stderr

    def state(self, service: str) -> dict[str, object]:
        return json.loads(run("podman", "inspect", "--format", "{{json .State}}", self.container(service)).stdout)

    def write_env(self, providers: Providers) -> None:
        env = {
            "GOCARE_IMAGE": self.image,
            "REDIS_IMAGE": f"{self.standins}-redis",
            "POSTGRES_IMAGE": f"{self.standins}-postgres",
            "LIVEKIT_IMAGE": f"{self.standins}-livekit",
            "PROMETHEUS_IMAGE": f"{self.standins}-prometheus",
            "POSTGRES_PASSWORD": self.postgres_password,
            "LIVEKIT_API_KEY": "stack-ci-key",
            "LIVEKIT_API_SECRET": secrets.token_hex(24),
            "LLM_API_KEY": LLM_KEY,
            "LLM_BASE_URL": providers.llm.base_url,
            "DEEPGRAM_API_KEY": DEEPGRAM_KEY,
            "GOCARE_DEEPGRAM_BASE_URL": providers.deepgram.url,
            "GOCARE_TTS_PROVIDER": "openai",
            "GOCARE_TTS_API_KEY": TTS_KEY,
            "GOCARE_TTS_BASE_URL": providers.speech.base_url,
            "GOCARE_LIVEKIT_CLIENT_URL": "ws://127.0.0.1:7880",
            "GOCARE_WORKER_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT),
            "GOCARE_WORKER_STOP_GRACE_PERIOD": f"{GRACE_PERIOD}s",
            # the machine is shared by the whole CI run: do not let a busy moment make the worker refuse the call
            "GOCARE_WORKER_LOAD_THRESHOLD": "inf",
            "GOCARE_WORKER_IDLE_PROCESSES": "1",
            "GOCARE_CALL_MEMORY": "off",
            # the app hangs up for good: no need to wait livekit's 15 s for it to come back before the call ends
            "GOCARE_RECONNECT_GRACE": "3",
            "LOG_LEVEL": "INFO",
        }
        (self.dir / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        self.env = env

    # --- waiting ---------------------------------------------------------------------------------
    def count(self, service: str, pattern: str) -> int:
        return len(re.findall(pattern, self.logs(service)))

    def wait_log(self, service: str, pattern: str, *, timeout: float, seen: int = 0) -> float:
        """Until the log holds more than ``seen`` lines matching ``pattern`` (stdout and stderr both)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.logs(service)
            if len(re.findall(pattern, text)) > seen:
                return time.time()
            if self.state(service).get("Status") == "exited":
                raise StackFailure(f"{service} exited before logging {pattern!r}:\n{text[-3000:]}")
            time.sleep(0.2)
        raise StackFailure(f"{service} did not log {pattern!r} within {timeout:.0f}s:\n{self.logs(service)[-3000:]}")

    def wait_http(self, url: str, *, timeout: float, service: str) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return time.time()
            except httpx.HTTPError:
                pass
            if self.state(service).get("Status") == "exited":
                raise StackFailure(f"{service} exited:\n{self.logs(service)[-3000:]}")
            time.sleep(0.2)
        raise StackFailure(f"{url} not healthy within {timeout:.0f}s:\n{self.logs(service)[-3000:]}")

    def started_at(self, service: str) -> float:
        """When the container's process started (podman's State.StartedAt, nanoseconds cut to microseconds)."""
        from datetime import datetime

        stamp = str(self.state(service)["StartedAt"])
        head, _, rest = stamp.partition(".")
        fraction = re.match(r"\d*", rest)
        zone = rest[fraction.end():] if fraction else ""
        digits = (fraction.group(0) if fraction else "")[:6].ljust(6, "0")
        return datetime.fromisoformat(f"{head}.{digits}{zone.replace('Z', '+00:00')}").timestamp()

    def wait_exit(self, service: str, *, timeout: float) -> int:
        code = run("podman", "wait", self.container(service), timeout=timeout).stdout.strip()
        return int(code)

    def sql(self, query: str) -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=5432, user="gocare", password=self.postgres_password,
                             dbname="gocare", connect_timeout=5) as conn:
            return list(conn.execute(query).fetchall())


def script_llm(providers: Providers) -> None:
    from calls import script_number_check

    script_number_check(providers, WRITTEN)  # type: ignore[arg-type]  # the steps need only .llm and .deepgram


async def call(token_url: str, room: str, providers: Providers, *, stop_worker: Stack | None = None) -> float | None:
    """A verified call as the app; with ``stop_worker``, the worker is stopped (SIGTERM, grace period) after the
    greeting, and the call must still reach its verification. Returns how long the stopped container took."""
    from calls import GREETING_JOHN, WELCOME_BACK, join_as_john, say_number

    script_llm(providers)
    app = await join_as_john(token_url, room)
    stopper: subprocess.Popen[str] | None = None
    stopped_at = 0.0
    try:
        await app.wait_agent_says(re.escape(GREETING_JOHN), timeout=60)
        log(f"{room}: greeted by name over WebRTC")
        if stop_worker is not None:
            seen = stop_worker.count("worker", r"draining worker")
            stopped_at = time.monotonic()
            # what `docker compose stop` does: SIGTERM, then SIGKILL after the grace period
            stopper = subprocess.Popen(["podman", "stop", "--time", str(GRACE_PERIOD), stop_worker.container("worker")],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            await asyncio.to_thread(stop_worker.wait_log, "worker", r"draining worker", timeout=20, seen=seen)
            log(f"{room}: worker got SIGTERM and is draining; the call goes on")
        said_at = await say_number(app, providers, spoken=SPOKEN, written=WRITTEN)  # type: ignore[arg-type]
        await app.wait_agent_says(re.escape(WELCOME_BACK), since=said_at, timeout=60)
        log(f"{room}: the spoken number was verified against PostgreSQL")
    finally:
        await app.leave()
    if stop_worker is None or stopper is None:
        return None
    code = await asyncio.to_thread(stop_worker.wait_exit, "worker", timeout=GRACE_PERIOD + 30)
    took = time.monotonic() - stopped_at
    stopper.wait(timeout=30)
    if code != 0:
        raise StackFailure(f"the stopped worker container exited {code}, not 0:\n{stop_worker.logs('worker')[-3000:]}")
    if took > GRACE_PERIOD:
        raise StackFailure(f"the worker took {took:.1f}s to exit, longer than the grace period {GRACE_PERIOD}s")
    return took


def check_bad_input(stack: Stack) -> None:
    """A missing key and a bad setting: exit 2, and the one line is in the container's log."""
    base = ["podman", "run", "--network", "host", "--init"]
    cases = [
        ("missing-key", ["-e", "LIVEKIT_URL=ws://127.0.0.1:7880", "-e", f"DEEPGRAM_API_KEY={DEEPGRAM_KEY}",
                         "-e", f"GOCARE_TTS_API_KEY={TTS_KEY}"], ["worker", "start"],
         r"^error: LLM_API_KEY is not set"),
        ("bad-drain", ["--env-file", str(stack.dir / ".env"), "-e", "GOCARE_WORKER_DRAIN_TIMEOUT=soon"],
         ["worker", "start"], r"^error: GOCARE_WORKER_DRAIN_TIMEOUT: "),
        ("bad-ttl", ["--env-file", str(stack.dir / ".env"), "-e", "GOCARE_TOKEN_TTL=5"],
         ["token-server", "--host", "127.0.0.1", "--port", "18080"], r"^error: GOCARE_TOKEN_TTL: '5' is outside"),
    ]
    for name, env, command, expected in cases:
        container = f"{PROJECT}-bad-{name}"
        run("podman", "rm", "-f", container, check=False)
        result = run(*base, "--name", container, *env, stack.image, *command, check=False, timeout=120)
        logs = run("podman", "logs", container).stderr + run("podman", "logs", container).stdout
        run("podman", "rm", "-f", container, check=False)
        lines = [line for line in logs.splitlines() if line.strip()]
        if result.returncode != 2 or len(lines) != 1 or not re.search(expected, lines[0]) or "Traceback" in logs:
            raise StackFailure(f"{name}: exit {result.returncode}, log {logs!r}; expected exit 2 and {expected!r}")
        log(f"bad input ({name}): exit 2, the container log says {lines[0]!r}")


def check_image(stack: Stack) -> None:
    uid = run("podman", "exec", stack.container("worker"), "id", "-u").stdout.strip()
    configured = run("podman", "image", "inspect", "--format", "{{.Config.User}}", stack.image).stdout.strip()
    if uid in ("", "0") or configured.split(":")[0] in ("", "0", "root"):
        raise StackFailure(f"the worker container runs as uid {uid!r} (image user {configured!r}): must not be root")
    log(f"the worker container runs as uid {uid} (image USER {configured})")
    # the models: loaded and run with no network at all, Hugging Face offline
    probe = (
        "import numpy as np\n"
        "from livekit.local_inference import EOT, VAD, VAD_WINDOW_SAMPLES\n"
        "from gocare_voice.providers import build_vad\n"
        "build_vad()\n"  # the worker's VAD: Silero run by livekit-local-inference
        "v = VAD().predict(np.zeros(VAD_WINDOW_SAMPLES, dtype=np.int16))\n"
        "p = EOT().predict(np.zeros(16000, dtype=np.int16))\n"
        "assert 0.0 <= p <= 1.0 and 0.0 <= v <= 1.0, (p, v)\n"
        "print(f'models: Silero VAD ran (P(speech)={v:.2f}), end-of-turn model ran offline (P(end)={p:.2f})')\n"
    )
    result = run("podman", "run", "--rm", "--network", "none", "-e", "HF_HUB_OFFLINE=1", "--entrypoint", "python3",
                 stack.image, "-c", probe, timeout=120)
    log(result.stdout.strip() + " in a container with --network none")
    if re.search(r"turn detector unavailable|falling back to VAD", stack.logs("worker")):
        raise StackFailure("the worker fell back from the end-of-turn model: " + stack.logs("worker")[-2000:])


FULL_NUMBERS = re.compile(r"98765\s?43210|9876543210")
JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}")


def check_logs_keep_secrets(stack: Stack) -> None:
    """What the room tests check of every process, here of the containers: no key, no token, no full number."""
    secrets_ = [LLM_KEY, TTS_KEY, DEEPGRAM_KEY, stack.env["LIVEKIT_API_SECRET"], stack.postgres_password]
    for service in ("migrate", "token-server", "worker"):
        text = stack.logs(service)
        leaked = [s for s in secrets_ if s in text] + FULL_NUMBERS.findall(text) + JWT_LIKE.findall(text)
        if leaked:
            raise StackFailure(f"the {service} container logged secrets or personal data: {[x[:6] + '...' for x in leaked[:3]]}")
    log("the migrate, token-server and worker containers logged no key, token or full phone number")


def check_prometheus() -> None:
    deadline = time.monotonic() + 60
    health: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            targets = httpx.get("http://127.0.0.1:9090/api/v1/targets", timeout=3).json()["data"]["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in targets}
        except (httpx.HTTPError, KeyError, ValueError):
            health = {}
        if health and all(h == "up" for h in health.values()) and len(health) == 2:
            log(f"prometheus scrapes {sorted(health)}: all up")
            break
        time.sleep(2)
    else:
        raise StackFailure(f"prometheus targets not all up within 60s: {health}")
    # the alerting rules are loaded and evaluate without error against the real series
    expected = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    deadline = time.monotonic() + 60
    loaded: dict[str, str] = {}
    while time.monotonic() < deadline:
        groups = httpx.get("http://127.0.0.1:9090/api/v1/rules", timeout=3).json()["data"]["groups"]
        loaded = {r["name"]: r["health"] for g in groups for r in g["rules"]}
        if set(loaded) == expected and all(h == "ok" for h in loaded.values()):
            log(f"prometheus loaded the {len(loaded)} alerting rules, all evaluating ok")
            return
        time.sleep(2)
    raise StackFailure(f"prometheus rules not loaded and healthy within 60s: {loaded} (expected {sorted(expected)})")


def figures(stack: Stack, token_ready: tuple[float, float], worker_registered: tuple[float, float],
            restart_registered: tuple[float, float], drain_exit: float) -> None:
    """Each start figure twice: from podman's record of the container's start, and from the `up` command (which
    also starts the service's dependencies again and creates the container)."""
    size = int(run("podman", "image", "inspect", "--format", "{{.Size}}", stack.image).stdout.strip())
    log(f"FIGURE image {stack.image}: {size / 1e6:.0f} MB")
    log(f"FIGURE cold start, token service container start -> GET /health 200: {token_ready[1]:.1f} s "
        f"(from `up -d token-server`: {token_ready[0]:.1f} s)")
    log(f"FIGURE cold start, worker container start -> 'registered worker': {worker_registered[1]:.1f} s "
        f"(from `up -d worker`: {worker_registered[0]:.1f} s)")
    log(f"FIGURE second worker start after the stop -> 'registered worker': {restart_registered[1]:.1f} s "
        f"(from `up -d worker`: {restart_registered[0]:.1f} s)")
    log(f"FIGURE SIGTERM mid-call -> the worker container exited 0: {drain_exit:.1f} s (grace period {GRACE_PERIOD} s)")


async def main_async(stack: Stack, providers: Providers) -> None:
    stack.write_env(providers)
    stack.compose("down", "-v", timeout=180)  # leftovers of an interrupted run
    stack.compose("up", "-d", "--no-build", "redis", "postgres")
    deadline = time.monotonic() + 60
    while run("podman", "exec", stack.container("postgres"), "pg_isready", "-h", "127.0.0.1", "-p", "5432",
              check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise StackFailure("postgres not ready within 60s:\n" + stack.logs("postgres")[-2000:])
        time.sleep(0.5)
    run("podman", "exec", stack.container("redis"), "redis-cli", "ping")
    stack.compose("up", "-d", "--no-build", "--no-deps", "livekit")
    stack.wait_http("http://127.0.0.1:7880/", timeout=60, service="livekit")
    log("redis, postgres (initialised from the env) and livekit-server are up")

    stack.compose("up", "-d", "--no-build", "--no-deps", "migrate")
    code = stack.wait_exit("migrate", timeout=120)
    if code != 0:
        raise StackFailure(f"the migration exited {code}:\n{stack.logs('migrate')}")
    log(f"migration: {stack.logs('migrate').strip().splitlines()[-1]}")
    started = time.time()
    stack.compose("up", "-d", "--no-build", "--no-deps", "token-server")
    healthy = stack.wait_http("http://127.0.0.1:8080/health", timeout=120, service="token-server")
    token_ready = (healthy - started, healthy - stack.started_at("token-server"))
    # the registered user, imported the way docs/deployment.md says (compose exec into a running gocare container)
    imported = subprocess.run(
        ["podman", "exec", "-i", stack.container("token-server"), "gocare", "users", "import", "-"],
        input=f"user_id,name,phone\n{USER_ID},{USER_NAME},{WRITTEN}\n", capture_output=True, text=True, timeout=120)
    if imported.returncode != 0:
        raise StackFailure(f"users import in the token-server container exited {imported.returncode}: {imported.stderr}")
    log(f"users import in a container: {imported.stdout.strip()}")
    started = time.time()
    stack.compose("up", "-d", "--no-build", "--no-deps", "worker")
    registered = stack.wait_log("worker", r"registered worker", timeout=180)
    worker_registered = (registered - started, registered - stack.started_at("worker"))
    stack.compose("up", "-d", "--no-build", "--no-deps", "prometheus")
    for service in ("redis", "postgres", "token-server", "worker"):  # compose.yaml's healthchecks, run by podman
        result = run("podman", "healthcheck", "run", stack.container(service), check=False)
        if result.returncode != 0:
            raise StackFailure(f"{service}'s healthcheck from compose.yaml failed: {result.stdout}{result.stderr}")
    log("compose.yaml's healthchecks pass for redis, postgres, token-server and worker")
    log(f"token service healthy {token_ready[1]:.1f}s after its container started, worker registered {worker_registered[1]:.1f}s")

    token_url = "http://127.0.0.1:8080"
    await call(token_url, f"stack-first-{secrets.token_hex(3)}", providers)
    deadline = time.monotonic() + 45
    rows: list[tuple[object, ...]] = []
    while time.monotonic() < deadline:
        rows = stack.sql("SELECT participant_identity, verified_user_id, status, ended_at FROM gocare_calls")
        if rows and rows[0][3] is not None:
            break
        await asyncio.sleep(0.5)
    if len(rows) != 1 or rows[0][0] != USER_ID or rows[0][1] != USER_ID or rows[0][3] is None:
        raise StackFailure(f"the call's record in PostgreSQL: {rows}")
    log(f"the call's record in PostgreSQL: identity {rows[0][0]}, verified {rows[0][1]}, status {rows[0][2]}, ended")

    check_image(stack)
    check_prometheus()

    drain_exit = await call(token_url, f"stack-drain-{secrets.token_hex(3)}", providers, stop_worker=stack)
    assert drain_exit is not None
    log(f"the worker finished the call after SIGTERM and its container exited 0 after {drain_exit:.1f}s")
    # up again: a new worker container of the service (podman-compose's `--requires` links make `podman start` of the
    # stopped one fail on podman 4.3: "generating dependency graph ... not found in input list")
    run("podman", "rm", stack.container("worker"))
    started = time.time()
    stack.compose("up", "-d", "--no-build", "--no-deps", "worker")
    registered = stack.wait_log("worker", r"registered worker", timeout=180)
    restart_registered = (registered - started, registered - stack.started_at("worker"))
    await call(token_url, f"stack-after-{secrets.token_hex(3)}", providers)
    log("started again, the worker answered the next call")
    count = stack.sql("SELECT count(*) FROM gocare_calls WHERE verified_user_id = 'user-42'")[0][0]
    if count != 3:
        raise StackFailure(f"expected 3 verified call records, found {count}")

    check_logs_keep_secrets(stack)
    check_bad_input(stack)
    figures(stack, token_ready, worker_registered, restart_registered, drain_exit)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="a folder with compose.yaml, deploy/compose/ and the chart's files/ (the alerting rules)")
    parser.add_argument("--image", required=True)
    parser.add_argument("--standins", required=True, help="prefix of the stand-in images: PREFIX-redis, ...")
    parser.add_argument("--keep", action="store_true", help="leave the stack running (debugging)")
    args = parser.parse_args()
    network = enter_private_network(subnet="10.213.8.0/30")
    log(f"in network namespace {network.name} (node address {network.node_ip})")
    stack = Stack(args.project.resolve(), args.image, args.standins)
    with ScriptedOpenAIServer() as llm, \
            ScriptedSpeechServer(api_key=TTS_KEY, words_per_minute=WORDS_PER_MINUTE) as speech, \
            ScriptedDeepgramServer(api_key=DEEPGRAM_KEY, speak_words_per_minute=WORDS_PER_MINUTE) as deepgram:
        providers = Providers(llm=llm, speech=speech, deepgram=deepgram)
        try:
            asyncio.run(main_async(stack, providers))
        except BaseException:
            for service in ("livekit", "migrate", "token-server", "worker", "prometheus"):
                print(f"--- last lines of the {service} container's log", file=sys.stderr)
                print(stack.logs(service)[-2500:], file=sys.stderr)
            raise
        finally:
            if not args.keep:
                stack.compose("down", "-v", timeout=180)
    log("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
