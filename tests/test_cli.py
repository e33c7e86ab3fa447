"""The ``gocare`` command as a user runs it: real subprocesses, real exit codes, real output."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from livekit import api


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "gocare_voice", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_help_lists_commands_without_importing_livekit_agents() -> None:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "gocare_voice", "--help"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=60)
    assert proc.returncode == 0
    for command in ("token-server", "token", "test-metadata", "check", "worker", "users"):
        assert command in proc.stdout
    imported = [line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line]
    assert "gocare_voice.cli" in imported
    assert not [m for m in imported if m.startswith(("livekit.agents", "fastapi", "uvicorn", "sqlalchemy"))]


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip().startswith("gocare-voice ")


def test_test_metadata_sample_and_argument() -> None:
    sample = run("test-metadata")
    assert sample.returncode == 0
    assert "Welcome John! Please say your registered mobile number." in sample.stdout
    named = run("test-metadata", '{"userId": "42", "userName": "Asha Rao"}', "--strict")
    assert named.returncode == 0 and "Welcome Asha!" in named.stdout and "42" in named.stdout


@pytest.mark.parametrize("metadata", ["", "null", "[1,2]", "42", "{not json", '{"other": 1}', "\"str\"", "[/]",
                                      "[bold]x[/bold]"])
def test_test_metadata_malformed_is_reported_not_crashed(metadata: str) -> None:
    proc = run("test-metadata", metadata)
    assert proc.returncode == 0, proc.stderr
    assert "Welcome. Please say your registered mobile number." in proc.stdout
    assert "Traceback" not in proc.stderr
    strict = run("test-metadata", metadata, "--strict")
    assert strict.returncode == 1 and "no identity" in strict.stderr


def test_brackets_in_names_are_text_not_markup() -> None:
    proc = run("test-metadata", '{"userId": "[/]", "userName": "[bold]Eve[/bold] Adams"}')
    assert proc.returncode == 0, proc.stderr
    assert "[/]" in proc.stdout and "[bold]Eve[/bold]" in proc.stdout


def test_error_lines_with_brackets_are_printed_whole(tmp_path) -> None:
    missing = tmp_path / "[/]meta[bold].json"
    proc = run("test-metadata", "--file", str(missing))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: cannot read {missing}" in proc.stderr


def test_test_metadata_from_file(tmp_path) -> None:
    good = tmp_path / "meta.json"
    good.write_text('{"userName": "Maria Lopez"}')
    assert "Welcome Maria!" in run("test-metadata", "--file", str(good)).stdout
    binary = tmp_path / "bad.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    proc = run("test-metadata", "--file", str(binary))
    assert proc.returncode == 0 and "not valid UTF-8" in proc.stdout
    missing = run("test-metadata", "--file", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "Traceback" not in missing.stderr


def test_invalid_settings_one_line_each_no_traceback() -> None:
    proc = run("token", "--room", "r", "--identity", "i",
               env={"GOCARE_TOKEN_TTL": "soon", "PORT": "nope", "GOCARE_AUTH_MODE": "magic"})
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert {line.split(":")[1].strip() for line in lines} == {"GOCARE_TOKEN_TTL", "PORT", "GOCARE_AUTH_MODE"}
    assert "Traceback" not in proc.stderr


def test_dev_credentials_refused_for_remote_server() -> None:
    proc = run("check", env={"LIVEKIT_URL": "wss://gocare.livekit.cloud"})
    assert proc.returncode == 2
    assert "development credentials" in proc.stderr and "Traceback" not in proc.stderr


def test_env_file_option(tmp_path) -> None:
    env_file = tmp_path / "custom.env"
    env_file.write_text("LIVEKIT_API_KEY=APIfromfile\nLIVEKIT_API_SECRET=" + "f" * 32 + "\n")
    proc = run("--env-file", str(env_file), "token", "--room", "r", "--identity", "i")
    assert proc.returncode == 0
    claims = api.TokenVerifier("APIfromfile", "f" * 32).verify(proc.stdout.strip())
    assert claims.identity == "i"


def test_token_command_mints_a_verified_token() -> None:
    proc = run("token", "--room", "care", "--identity", "u-9", "--name", "Ravi Kumar", "--ttl", "2m", "--json")
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    claims = api.TokenVerifier("devkey", "secret").verify(body["token"])
    assert claims.video.room == "care" and claims.name == "Ravi Kumar"
    assert claims.room_config.agents[0].agent_name == "multi-assistant"
    assert json.loads(claims.metadata) == {"userId": "u-9", "userName": "Ravi Kumar"}
    bad = run("token", "--room", "", "--identity", "u")
    assert bad.returncode == 2 and "room" in bad.stderr


def test_check_exits_1_when_required_missing_and_0_when_configured() -> None:
    missing = run("check")
    assert missing.returncode == 1 and "missing" in missing.stdout
    full = run("check", env={"LLM_API_KEY": "sk-x", "DEEPGRAM_API_KEY": "dg-x"})
    assert full.returncode == 0, full.stdout + full.stderr
    assert "sk-x" not in full.stdout and "dg-x" not in full.stdout


def test_check_livekit_unreachable_is_one_clear_line() -> None:
    port = free_port()
    proc = run("check", "--livekit", "--timeout", "2",
               env={"LLM_API_KEY": "k", "DEEPGRAM_API_KEY": "d", "LIVEKIT_URL": f"ws://127.0.0.1:{port}"})
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot reach LiveKit" in errors[0] and "Traceback" not in proc.stderr


def test_token_server_runs_with_no_configuration() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gocare_voice", "token-server", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail("token-server did not start")
        assert health.json()["livekit_configured"] is True
        r = httpx.post(f"http://127.0.0.1:{port}/getToken", json={"room": "r", "identity": "i", "name": "N"})
        token = r.json()["token"]
        assert api.TokenVerifier("devkey", "secret").verify(token).identity == "i"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert token not in out + err  # tokens are never logged, not even in the access log
    assert "authentication is OFF" in err


def test_token_server_port_in_use_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run("token-server", "--port", str(port), timeout=30)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]


# --- what a new user trips over ---------------------------------------------------------------------------

def test_missing_env_file_is_one_line_exit_2() -> None:
    proc = run("--env-file", "typo.env", "check")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --env-file typo.env: no such file"


def test_token_ttl_error_names_the_option() -> None:
    proc = run("token", "--room", "r", "--identity", "i", "--ttl", "5")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --ttl: ")
    assert "GOCARE_TOKEN_TTL" not in proc.stderr


def test_flags_have_no_bool_placeholder() -> None:
    for args in (["--help"], ["users", "import", "--help"], ["token", "--help"], ["check", "--help"]):
        out = run(*args).stdout
        assert "<bool>" not in out and "--help" in out, args


def test_check_keeps_variable_names_whole_at_80_columns() -> None:
    proc = run("check", env={"COLUMNS": "80"})
    lines = proc.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    for name in ("GOCARE_AUTH_JWT_SECRET", "GOCARE_AUTH_JWKS_URL", "AZURE_SPEECH_REGION", "GOCARE_TTS_API_KEY",
                 "GOCARE_DATABASE_URL", "LIVEKIT_API_SECRET"):
        assert name in proc.stdout, name
    assert "…" not in proc.stdout


def test_check_prints_where_a_relative_sqlite_path_lives(tmp_path) -> None:
    proc = subprocess.run([sys.executable, "-m", "gocare_voice", "--env-file", os.devnull, "check"],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "COLUMNS": "300"})
    assert str(tmp_path / "gocare-users.db") in proc.stdout


@pytest.mark.parametrize("command", ["start", "dev", "console", "connect"])
def test_worker_help_needs_no_settings(command: str) -> None:
    proc = run("worker", command, "--help", env={"GOCARE_TOKEN_TTL": "broken"})
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout and "error" not in proc.stderr


def test_audio_console_without_a_sound_device_says_why() -> None:
    from gocare_voice.cli.worker import audio_device_problem

    if audio_device_problem() is None:
        pytest.skip("this machine has a sound device")
    proc = run("worker", "console", env={"LLM_API_KEY": "k", "DEEPGRAM_API_KEY": "d"})
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--text" in errors[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_token_server_ctrl_c_is_one_clean_line(workers: int) -> None:
    """Ctrl+C reaches the whole process group (the server, uvicorn's workers, the audio processes)."""
    import signal

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gocare_voice", "--env-file", os.devnull, "token-server",
                             "--port", str(port), "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        time.sleep(1.0)  # the audio worker processes are up
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "leaked" not in err, err
    assert err.rstrip().splitlines()[-1] == "gocare token service stopped"
