"""Fixtures of the room tests: one real LiveKit dev server, one ``gocare worker start`` and one
``gocare token-server`` per test session (subprocesses, real HTTP and WebRTC between them), the scripted
cloud providers they talk to (LLM, Deepgram live STT, OpenAI speech) in this process, and a fresh room
per test (a token's agent dispatch fires when the join creates the room).

Logs of every process are kept in ``$GOCARE_TEST_LOG_DIR/<xdist worker>/`` when set (CI prints their tails
on failure), otherwise in pytest's temporary folder.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from harness.livekit_server import LiveKitServer, start_server
from harness.plugin import PLAN
from harness.processes import ManagedProcess, free_port
from scripted.deepgram_server import ScriptedDeepgramServer
from scripted.openai_server import ScriptedOpenAIServer
from scripted.speech_server import ScriptedSpeechServer

AGENT = "multi-assistant"
JWT_AGENT = "multi-assistant-jwt"
JWT_SECRET = "room-tests-jwt-secret-0123456789abcdef"
LLM_KEY = "sk-room-tests"
TTS_KEY = "tts-room-tests"
DEEPGRAM_KEY = "dg-room-tests"

USERS = {
    # user id, full name, the registered number as the user says it, and as STT writes it
    "john": ("user-42", "John Doe", "nine eight seven six five four three two one zero", "98765 43210"),
    "asha": ("user-77", "Asha Rao", "nine one two three four five six seven eight nine", "91234 56789"),
}


def _gocare() -> list[str]:
    return [sys.executable, "-m", "gocare_voice"]


@pytest.fixture(scope="session")
def room_logs(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """One folder per xdist worker (``gw0``, ...; ``master`` without xdist): two workers' processes never
    write the same log."""
    chosen = os.environ.get("GOCARE_TEST_LOG_DIR")
    if chosen:
        path = Path(chosen) / worker_id
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("room-logs")


@pytest.fixture(scope="session")
def livekit(request: pytest.FixtureRequest, room_logs: Path) -> Iterator[LiveKitServer]:
    plan = request.config.stash[PLAN]
    if plan.external_url:
        yield LiveKitServer(
            url=plan.external_url,
            api_key=os.environ.get("GOCARE_TEST_LIVEKIT_API_KEY", "devkey"),
            api_secret=os.environ.get("GOCARE_TEST_LIVEKIT_API_SECRET", "secret"),
        )
        return
    assert plan.binary is not None, plan.skip_reason
    server = start_server(plan.binary, log_dir=room_logs, network=plan.network)
    yield server
    server.stop()


@dataclass
class Providers:
    """The paid cloud services, scripted on 127.0.0.1: what the worker and the token service talk to."""

    llm: ScriptedOpenAIServer
    speech: ScriptedSpeechServer
    deepgram: ScriptedDeepgramServer

    def reset(self) -> None:
        self.llm.reset()
        with self.speech._lock:
            self.speech.requests.clear()
        self.deepgram.reset()

    def env(self) -> dict[str, str]:
        return {
            "LLM_API_KEY": LLM_KEY,
            "LLM_BASE_URL": self.llm.base_url,
            "DEEPGRAM_API_KEY": DEEPGRAM_KEY,
            "GOCARE_DEEPGRAM_BASE_URL": self.deepgram.url,
            "GOCARE_TTS_PROVIDER": "openai",
            "GOCARE_TTS_API_KEY": TTS_KEY,
            "GOCARE_TTS_BASE_URL": self.speech.base_url,
        }


AGENT_WORDS_PER_MINUTE = 280
"""The agent's scripted voices speak 1.6 times as fast as espeak-ng's own 175 words a minute: a room test waits
for every word the agent says (a greeting takes 2.0 s instead of 3.5). The caller's microphone keeps espeak-ng's
own rate: that speech is what the worker's VAD, end-of-turn model and STT judge."""


@pytest.fixture(scope="session")
def providers() -> Iterator[Providers]:
    with ScriptedOpenAIServer() as llm, \
            ScriptedSpeechServer(api_key=TTS_KEY, words_per_minute=AGENT_WORDS_PER_MINUTE) as speech, \
            ScriptedDeepgramServer(api_key=DEEPGRAM_KEY, speak_words_per_minute=AGENT_WORDS_PER_MINUTE) as deepgram:
        yield Providers(llm=llm, speech=speech, deepgram=deepgram)


@pytest.fixture
def scripted(providers: Providers) -> Iterator[Providers]:
    """The session's providers with empty scripts and records for this test."""
    providers.reset()
    yield providers
    providers.reset()


@pytest.fixture(scope="session")
def users_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real SQLite directory, filled with ``gocare users add`` like an operator would."""
    url = f"sqlite:///{tmp_path_factory.mktemp('directory') / 'users.db'}"
    for user_id, name, _spoken, written in USERS.values():
        subprocess.run(
            [*_gocare(), "users", "add", user_id, name, written, "--database-url", url],
            check=True, capture_output=True, timeout=60, env=_clean_env({}),
        )
    return url


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The test process's environment without any gocare/LiveKit/provider setting, plus ``extra``."""
    prefixes = ("GOCARE_", "LIVEKIT_", "LLM_", "DEEPGRAM_", "GROQ_", "AZURE_SPEECH_", "OPENAI_")
    # PROMETHEUS_MULTIPROC_DIR too: processes sharing one would add up each other's metrics
    own = ("PORT", "LOG_LEVEL", "PROMETHEUS_MULTIPROC_DIR")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k not in own}
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


def _livekit_env(livekit: LiveKitServer) -> dict[str, str]:
    return {"LIVEKIT_URL": livekit.url, "LIVEKIT_API_KEY": livekit.api_key, "LIVEKIT_API_SECRET": livekit.api_secret}


@dataclass
class RunningWorker:
    process: ManagedProcess
    http_url: str
    """livekit-agents' own HTTP server of the worker: ``/`` health, ``/worker`` load and active jobs."""

    def info(self) -> dict[str, object]:
        return httpx.get(self.http_url + "/worker", timeout=5).json()

    def active_jobs(self) -> int:
        return int(self.info().get("active_jobs", 0))  # type: ignore[call-overload]  # the worker's /worker JSON: active_jobs is an int


def start_worker(*, name: str, livekit: LiveKitServer, providers: Providers, users_db: str, logs: Path,
                 extra: dict[str, str] | None = None) -> RunningWorker:
    http_port = free_port()
    env = _clean_env({
        **_livekit_env(livekit), **providers.env(),
        "GOCARE_DATABASE_URL": users_db,
        # a port of our choosing: with 0, the IPv4 and IPv6 sockets of its HTTP server get different ports
        "GOCARE_WORKER_PORT": str(http_port),
        "GOCARE_WORKER_IDLE_PROCESSES": "1",
        # the tests share 2 cores with the server and the clients; the default 0.7 would make the worker
        # refuse jobs whenever the machine is busy, which is not what these tests are about
        "GOCARE_WORKER_LOAD_THRESHOLD": "inf",
        "LOG_LEVEL": "DEBUG",
        # a hanging LLM is apologised for after 4 s x 2 attempts instead of livekit's 10 s x 4
        "GOCARE_LLM_TIMEOUT": "4",
        "GOCARE_LLM_RETRIES": "1",
        # the summary a verified call asks the LLM for at its end would land in the next test's script
        # (tests/room/test_room_call_records.py runs a worker of its own with memory on)
        "GOCARE_CALL_MEMORY": "off",
        # the same for the end-of-call analysis (on in that module's worker only)
        "GOCARE_CALL_ANALYSIS": "off",
        **(extra or {}),
    })
    worker = ManagedProcess(name, [*_gocare(), "worker", "start"], log_path=logs / f"{name}.log", env=env,
                            cwd=logs)
    try:
        worker.wait_for_log(r"registered worker", timeout=90)
    except Exception:
        worker.stop()
        raise
    return RunningWorker(process=worker, http_url=f"http://127.0.0.1:{http_port}")


@pytest.fixture(scope="session")
def worker(livekit: LiveKitServer, providers: Providers, users_db: str, room_logs: Path) -> Iterator[RunningWorker]:
    """``gocare worker start``, registered as multi-assistant, open (no caller authentication)."""
    running = start_worker(name="worker", livekit=livekit, providers=providers, users_db=users_db, logs=room_logs)
    yield running
    running.process.stop()


@dataclass
class TokenService:
    url: str
    process: ManagedProcess


def start_token_service(*, name: str, livekit: LiveKitServer, logs: Path, extra: dict[str, str] | None = None,
                        providers: Providers | None = None) -> TokenService:
    port = free_port()
    env = _clean_env({**_livekit_env(livekit), **(providers.env() if providers else {}), **(extra or {})})
    process = ManagedProcess(
        name, [*_gocare(), "token-server", "--host", "127.0.0.1", "--port", str(port)],
        log_path=logs / f"{name}.log", env=env, cwd=logs,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_http(url + "/health", timeout=60)
    except Exception:
        process.stop()
        raise
    return TokenService(url=url, process=process)


@pytest.fixture(scope="session")
def token_service(livekit: LiveKitServer, providers: Providers, room_logs: Path) -> Iterator[TokenService]:
    """``gocare token-server`` with no caller authentication (development), dispatching multi-assistant."""
    service = start_token_service(name="token-service", livekit=livekit, logs=room_logs, providers=providers)
    yield service
    service.process.stop()


SECRETS = (LLM_KEY, TTS_KEY, DEEPGRAM_KEY, JWT_SECRET)
FULL_NUMBERS = re.compile(r"98765\s?43210|9876543210|91234\s?56789|9123456789|12345\s?67890|1234567890")
JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}")


@pytest.fixture(autouse=True)
def logs_keep_secrets(room_logs: Path) -> Iterator[None]:
    """Every room test also checks what the processes logged meanwhile: no API key, no token, no full phone
    number (docs/configuration.md promises it; the worker sees real numbers and tokens in a room)."""
    logs = {path: len(path.read_text(errors="replace")) for path in room_logs.glob("*.log")}
    yield
    for path in sorted(room_logs.glob("*.log")):
        if path.name == "livekit-server.log":
            continue  # LiveKit's own log is not ours to keep clean
        text = path.read_text(errors="replace")[logs.get(path, 0):]
        leaked = [s for s in SECRETS if s in text] + FULL_NUMBERS.findall(text) + JWT_LIKE.findall(text)
        assert not leaked, f"{path.name} logged secrets or personal data: {leaked[:3]}"


@pytest.fixture
def room_name(request: pytest.FixtureRequest) -> str:
    """A room no one has joined yet: its first join creates it and fires the token's agent dispatch."""
    base = request.node.name.split("[")[0].removeprefix("test_").replace("_", "-")[:40]
    return f"t-{base}-{secrets.token_hex(3)}"
