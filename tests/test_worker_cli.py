"""``gocare worker``: the start failure paths as a user meets them (real subprocesses, exit codes, one
line on stderr), the LiveKit pre-flight against loopback servers, and the AgentServer we register."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gocare_voice.settings import Settings
from gocare_voice.worker.preflight import check_livekit

PROVIDER_VARS = ("LLM_API_KEY", "LLM_BASE_URL", "GROQ_API_KEY", "DEEPGRAM_API_KEY", "GOCARE_TTS_API_KEY",
                 "GOCARE_TTS_PROVIDER", "AZURE_SPEECH_KEY", "AZURE_SPEECH_REGION", "LIVEKIT_URL",
                 "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "GOCARE_LIVEKIT_CONNECT_RETRIES", "GOCARE_ENV")
KEYS = {"DEEPGRAM_API_KEY": "dg-test", "LLM_API_KEY": "sk-test"}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gocare(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in PROVIDER_VARS}
    return subprocess.run([sys.executable, "-m", "gocare_voice", *args], capture_output=True, text=True,
                          env={**base, "COLUMNS": "200", **env}, cwd=cwd, timeout=timeout)


def test_start_against_a_closed_port_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    port = closed_port()
    started = time.monotonic()
    proc = gocare("worker", "start", cwd=tmp_path, env={
        **KEYS, "LIVEKIT_URL": f"ws://127.0.0.1:{port}", "GOCARE_LIVEKIT_CONNECT_RETRIES": "1"})
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: cannot reach LiveKit at ws://127.0.0.1:")
    assert "LIVEKIT_URL" in lines[0] and "after 2 attempts" in lines[0]
    assert elapsed < 30
    assert "secret" not in proc.stderr


def test_missing_provider_keys_stop_the_worker_naming_each_setting(tmp_path: Path) -> None:
    proc = gocare("worker", "start", cwd=tmp_path, env={"LIVEKIT_URL": f"ws://127.0.0.1:{closed_port()}"})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert [line.split(" ")[1] for line in lines] == ["DEEPGRAM_API_KEY", "LLM_API_KEY", "GOCARE_TTS_API_KEY"]
    assert all(line.startswith("error: ") for line in lines)
    assert "Traceback" not in proc.stderr


def test_console_text_needs_only_the_llm(tmp_path: Path) -> None:
    proc = gocare("worker", "console", "--text", cwd=tmp_path, env={})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: LLM_API_KEY is not set (or set GROQ_API_KEY to use Groq's OpenAI-compatible endpoint)"]


def test_invalid_settings_stop_the_worker_first(tmp_path: Path) -> None:
    proc = gocare("worker", "start", cwd=tmp_path, env={**KEYS, "LIVEKIT_URL": "wss://example.livekit.cloud"})
    assert proc.returncode == 2
    assert "LIVEKIT_API_KEY/LIVEKIT_API_SECRET" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_connection_given_up_by_livekit_agents_exits_1(tmp_path: Path) -> None:
    """Past the pre-flight, livekit-agents' own retries end with exit 0; we turn that into exit 1."""
    script = (
        "import typer\n"
        "from gocare_voice.settings import Settings\n"
        "from gocare_voice.cli import worker as cli_worker\n"
        f"s = Settings(livekit_url='ws://127.0.0.1:{closed_port()}', livekit_connect_retries=0, "
        "deepgram_api_key='x', llm_api_key='y')\n"
        "try:\n"
        "    cli_worker._run_livekit_cli(s, 'dev', ['--log-level', 'critical'])\n"
        "except typer.Exit as done:\n"
        "    raise SystemExit(done.exit_code)\n"
    )
    base = {k: v for k, v in os.environ.items() if k not in PROVIDER_VARS}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=base, cwd=tmp_path,
                          timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: the worker could not (re)connect to LiveKit")


def test_a_worker_whose_health_port_is_taken_exits_1_with_one_line(tmp_path: Path) -> None:
    """livekit-agents logs "worker failed" when its HTTP server cannot bind, and returns: exit 0 without us."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        script = (
            "import typer\n"
            "from gocare_voice.settings import Settings\n"
            "from gocare_voice.cli import worker as cli_worker\n"
            f"s = Settings(livekit_url='ws://127.0.0.1:{closed_port()}', livekit_connect_retries=0, "
            f"worker_port={port}, deepgram_api_key='x', llm_api_key='y')\n"
            "try:\n"
            "    cli_worker._run_livekit_cli(s, 'start', ['--log-level', 'critical'])\n"
            "except typer.Exit as done:\n"
            "    raise SystemExit(done.exit_code)\n"
        )
        base = {k: v for k, v in os.environ.items() if k not in PROVIDER_VARS}
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=base,
                              cwd=tmp_path, timeout=60)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the worker could not listen: a port it serves is already in use"), proc.stderr
    assert f"GOCARE_WORKER_PORT={port}" in last


# --- pre-flight against loopback servers ----------------------------------------------------------


@pytest.fixture
def twirp_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server answering every Twirp call 401 unauthenticated, like a LiveKit server does
    for a wrong secret (only that one answer: not a LiveKit imitation)."""
    import threading

    from aiohttp import web

    seen: list[str] = []

    async def twirp(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"code": "unauthenticated", "msg": "invalid token"}, status=401)

    app = web.Application()
    app.router.add_post("/twirp/{tail:.*}", twirp)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # a started site has a server
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"ws://127.0.0.1:{port}", seen
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.run_until_complete(runner.cleanup())
    loop.close()


async def test_preflight_refused_credentials_are_not_retried(twirp_server: tuple[str, list[str]]) -> None:
    url, seen = twirp_server
    result = await check_livekit(Settings(livekit_url=url, livekit_connect_retries=5), retry_delay=0.01)
    assert not result.ok and result.kind == "refused" and result.attempts == 1
    assert "refused the credentials (LIVEKIT_API_KEY/LIVEKIT_API_SECRET)" in str(result.problem)
    assert seen == ["/twirp/livekit.RoomService/ListRooms"]


def test_start_with_refused_credentials_is_one_line(tmp_path: Path, twirp_server: tuple[str, list[str]]) -> None:
    url, _ = twirp_server
    proc = gocare("worker", "start", cwd=tmp_path, env={**KEYS, "LIVEKIT_URL": url})
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: LiveKit at ws://127.0.0.1:") and "refused the credentials" in line


async def test_preflight_unreachable_retries_as_configured() -> None:
    settings = Settings(livekit_url=f"ws://127.0.0.1:{closed_port()}", livekit_connect_retries=2)
    result = await check_livekit(settings, retry_delay=0.01)
    assert not result.ok and result.kind == "unreachable" and result.attempts == 3


async def test_preflight_times_out_on_a_silent_server() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections, never answers
        url = f"ws://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        result = await check_livekit(Settings(livekit_url=url, livekit_connect_retries=0), attempt_timeout=0.3)
    assert not result.ok and result.kind == "unreachable"
    assert "no answer within 0.3s" in str(result.problem)
    assert time.monotonic() - started < 5


# --- the server we register -----------------------------------------------------------------------


def test_build_server_registers_our_agent_name_and_retries() -> None:
    from gocare_voice.worker.entrypoint import GoCareEntrypoint, prewarm
    from gocare_voice.worker.server import build_server

    settings = Settings(agent_name="gocare-test", livekit_connect_retries=4, livekit_url="ws://127.0.0.1:7880")
    server = build_server(settings)
    assert server._agent_name == "gocare-test"
    assert server._max_retry == 4
    assert server._ws_url == "ws://127.0.0.1:7880"
    assert server.setup_fnc is prewarm
    assert isinstance(server._entrypoint_fnc, GoCareEntrypoint)
    # job processes receive the entrypoint by pickling (forkserver)
    clone = pickle.loads(pickle.dumps(server._entrypoint_fnc))
    assert clone.settings.agent_name == "gocare-test"


def test_calls_run_in_job_processes_unless_the_thread_executor_is_chosen() -> None:
    from livekit.agents import JobExecutorType

    from gocare_voice.worker.server import build_server

    assert build_server(Settings())._job_executor_type == JobExecutorType.PROCESS
    assert build_server(Settings(worker_job_executor="thread"))._job_executor_type == JobExecutorType.THREAD


def test_an_unknown_job_executor_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    proc = gocare("worker", "start", cwd=tmp_path, env={**KEYS, "GOCARE_WORKER_JOB_EXECUTOR": "fiber"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: GOCARE_WORKER_JOB_EXECUTOR: Input should be 'process' or 'thread'"]


@pytest.mark.parametrize(("value", "warn"), [(None, 0.25), ("100", 0.1), ("0", None)])
def test_the_loop_monitor_threshold_reaches_livekit_agents(value: str | None, warn: float | None) -> None:
    """GOCARE_WORKER_LOOP_BLOCK_WARN_MS becomes livekit-agents' own variable, read by its monitor (its real
    parser here): 250 ms by default, livekit's 100 ms on request, 0 = no monitor at all."""
    from livekit.agents.telemetry.loop_monitor import LoopMonitorThresholds

    from gocare_voice.worker.server import LOOP_BLOCK_WARN_ENV, use_loop_block_warn

    settings = Settings() if value is None else Settings(worker_loop_block_warn_ms=value)  # type: ignore[arg-type]  # as the env gives it
    environ: dict[str, str] = {}
    use_loop_block_warn(settings, environ)
    assert environ == {LOOP_BLOCK_WARN_ENV: str(settings.worker_loop_block_warn_ms)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(LOOP_BLOCK_WARN_ENV, environ[LOOP_BLOCK_WARN_ENV])
        thresholds = LoopMonitorThresholds.from_env()
    assert (thresholds.warn if thresholds is not None else None) == warn


def test_a_negative_loop_monitor_threshold_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    proc = gocare("worker", "start", cwd=tmp_path, env={**KEYS, "GOCARE_WORKER_LOOP_BLOCK_WARN_MS": "-5"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: GOCARE_WORKER_LOOP_BLOCK_WARN_MS: Input should be greater than or equal to 0"]


@pytest.mark.parametrize("threshold", [1.0, 5.0, float("inf")])
def test_a_worker_that_never_refuses_reports_a_load_below_full(threshold: float) -> None:
    """livekit-server skips a worker reporting load 1.0 whatever its threshold (a busy machine with
    GOCARE_WORKER_LOAD_THRESHOLD=inf left a room without its agent): such a worker reports its real load,
    capped below 1.0. The real load figure runs here: livekit's sampler thread, on this machine's CPU."""
    from gocare_voice.worker.server import REPORTED_LOAD_CEILING, build_server, reported_load_below_full

    server = build_server(Settings(worker_load_threshold=threshold))
    assert server._load_threshold == threshold
    assert server.load_fnc is reported_load_below_full
    load = server.load_fnc(server)
    assert 0.0 <= load <= REPORTED_LOAD_CEILING < 1.0


def test_a_worker_with_a_real_threshold_still_reports_itself_full_from_it() -> None:
    """The cap is on for every worker (``worker dev``'s own default threshold is inf too); below 1 it changes
    nothing: the worker compares the same capped figure with its threshold."""
    from gocare_voice.worker.server import REPORTED_LOAD_CEILING, build_server, reported_load_below_full

    for settings in (Settings(worker_load_threshold=0.7), Settings()):
        server = build_server(settings)
        assert server.load_fnc is reported_load_below_full
    assert 0.7 < REPORTED_LOAD_CEILING  # a saturated worker still reaches a 0.7 threshold, so it reports itself full


def test_the_load_cap_applies_when_livekit_reports_full(monkeypatch: pytest.MonkeyPatch) -> None:
    from gocare_voice.worker import livekit_private, server as server_module

    monkeypatch.setattr(livekit_private, "default_worker_load", lambda _server: 1.0)
    assert server_module.reported_load_below_full(object()) == server_module.REPORTED_LOAD_CEILING
    monkeypatch.setattr(livekit_private, "default_worker_load", lambda _server: 0.42)
    assert server_module.reported_load_below_full(object()) == 0.42


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
def test_every_log_level_the_settings_accept_starts_the_server(level: str) -> None:
    # livekit-agents spells WARNING "WARN" and refused LOG_LEVEL=WARNING with a traceback at start
    from gocare_voice.worker.server import build_server

    server = build_server(Settings(log_level=level))
    assert server._log_level in ("DEBUG", "INFO", "WARN", "ERROR", "CRITICAL")


def test_prewarm_loads_the_vad_once_into_userdata() -> None:
    from livekit.agents import inference

    from gocare_voice.worker.entrypoint import VAD_KEY, prewarm

    class Proc:
        userdata: dict[str, object] = {}

    proc = Proc()
    prewarm(proc)
    assert isinstance(proc.userdata[VAD_KEY], inference.VAD)


def test_start_help_is_livekit_agents_own(tmp_path: Path) -> None:
    proc = gocare("worker", "start", "--help", cwd=tmp_path, env=KEYS)
    assert proc.returncode == 0, proc.stderr
    assert "--drain-timeout" in proc.stdout and "--log-level" in proc.stdout
    assert json.dumps("gocare worker")[1:-1] in proc.stdout


def test_livekit_options_passed_through_are_what_the_preflight_checks(tmp_path: Path) -> None:
    from gocare_voice.cli.worker import livekit_overrides

    assert livekit_overrides(["--url", "ws://a:1", "--api-key=k", "--log-level", "debug", "--api-secret"]) == {
        "livekit_url": "ws://a:1", "livekit_api_key": "k"}
    port = closed_port()
    proc = gocare("worker", "start", "--url", f"ws://127.0.0.1:{port}", cwd=tmp_path, env={
        **KEYS, "LIVEKIT_URL": "ws://127.0.0.1:1", "GOCARE_LIVEKIT_CONNECT_RETRIES": "0"})
    assert proc.returncode == 1
    assert f"cannot reach LiveKit at ws://127.0.0.1:{port}" in proc.stderr
