"""The room harness's own promises: a laptop without a LiveKit server skips the room tests with one line, and
CI (``GOCARE_REQUIRE_LIVEKIT=1``) fails instead of passing on skips. Run as a child pytest, like a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent


def _pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GOCARE_") and k != "LIVEKIT_SERVER_BIN"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS / "room" / "test_room_greeting.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**clean, **env},
    )


def test_without_a_server_room_tests_are_skipped_with_one_line_saying_how_to_get_one(tmp_path: Path) -> None:
    report = tmp_path / "room.json"
    done = _pytest(tmp_path, LIVEKIT_SERVER_BIN=str(tmp_path / "missing"), GOCARE_ROOM_REPORT=str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "room test needs livekit-server: LIVEKIT_SERVER_BIN=" in done.stdout
    assert "room tests: 0 ran in real LiveKit rooms" in done.stdout
    counts = __import__("json").loads(report.read_text())
    assert counts["ran"] == 0 and counts["skipped"] == counts["selected"] > 0


def test_when_ci_requires_the_server_a_missing_one_is_an_error_not_a_skip(tmp_path: Path) -> None:
    done = _pytest(tmp_path, LIVEKIT_SERVER_BIN=str(tmp_path / "missing"), GOCARE_REQUIRE_LIVEKIT="1")
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error: nothing ran
    assert "GOCARE_REQUIRE_LIVEKIT=1 but the room harness cannot run" in done.stderr
    assert "passed" not in done.stdout and "skipped" not in done.stdout


def test_auto_runs_one_test_process_more_than_there_are_cores(monkeypatch) -> None:
    """``-n auto`` (README, .ci/run): room tests mostly wait on real time, so one more process than cores."""
    from harness.plugin import pytest_xdist_auto_num_workers

    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    assert pytest_xdist_auto_num_workers(config=None) == 3  # type: ignore[arg-type]  # the hook does not read it
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "5")
    assert pytest_xdist_auto_num_workers(config=None) is None  # type: ignore[arg-type]  # xdist's own hook decides
