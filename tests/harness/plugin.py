"""pytest hooks of the room harness: decide once, at start, whether room tests can run here, and say so.

- ``GOCARE_TEST_LIVEKIT_URL``: use that running server (``GOCARE_TEST_LIVEKIT_API_KEY``/``_SECRET``, default
  devkey/secret) on the host's network; nothing is started.
- otherwise a ``livekit-server`` binary (``scripts/livekit-dev-server --path``) is started per test session,
  inside a private network namespace this process enters now, before any thread exists (harness.netns).
  Without root or iproute2 the room tests are skipped, unless ``GOCARE_TEST_HOST_NETWORK=1`` opts in to
  running them on the host's own addresses.
- ``GOCARE_REQUIRE_LIVEKIT=1`` (set by .ci/run): a room harness that cannot run is an error at start, never
  a skip.

At the end the terminal summary says how many room tests ran, passed, failed and were skipped;
``GOCARE_ROOM_REPORT=path`` also writes those counts as JSON (.ci/run checks them).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field

import pytest

from harness.livekit_server import locate_server, server_version
from harness.netns import NetnsUnavailable, PrivateNetwork, enter_private_network

MARKER = "livekit"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class RoomHarnessPlan:
    binary: str | None = None
    external_url: str | None = None
    network: PrivateNetwork | None = None
    skip_reason: str | None = None
    required: bool = False
    outcomes: Counter[str] = field(default_factory=Counter)
    room_tests: set[str] = field(default_factory=set)

    def describe(self) -> str:
        if self.external_url:
            return f"external server {self.external_url}"
        where = f"network namespace, node_ip {self.network.node_ip}" if self.network else "host network (opted in)"
        return f"livekit-server {server_version(self.binary) if self.binary else '?'} at {self.binary}; {where}"


PLAN = pytest.StashKey[RoomHarnessPlan]()


def make_plan() -> RoomHarnessPlan:
    plan = RoomHarnessPlan(required=_flag("GOCARE_REQUIRE_LIVEKIT"))
    external = os.environ.get("GOCARE_TEST_LIVEKIT_URL", "").strip()
    if external:
        plan.external_url = external
        return plan
    plan.binary, reason = locate_server()
    if plan.binary is None:
        plan.skip_reason = f"room test needs livekit-server: {reason}"
        return plan
    if _flag("GOCARE_TEST_HOST_NETWORK"):
        return plan
    try:
        plan.network = enter_private_network()
    except NetnsUnavailable as error:
        plan.skip_reason = (
            f"room test needs a private network namespace ({error}); run as root, "
            "or set GOCARE_TEST_HOST_NETWORK=1 to use the host's own addresses"
        )
    return plan


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: runs in a real LiveKit room (the room harness, tests/room/)")
    plan = make_plan()
    config.stash[PLAN] = plan
    _ACTIVE[:] = [plan]
    if plan.skip_reason and plan.required:
        raise pytest.UsageError(f"GOCARE_REQUIRE_LIVEKIT=1 but the room harness cannot run: {plan.skip_reason}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    plan = config.stash[PLAN]
    if plan.skip_reason:
        for item in items:
            if item.get_closest_marker(MARKER) is not None:
                item.add_marker(pytest.mark.skip(reason=plan.skip_reason))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """What is left after ``-m``/``-k`` deselection is what "selected" counts."""
    plan = session.config.stash[PLAN]
    plan.room_tests = {item.nodeid for item in session.items if item.get_closest_marker(MARKER) is not None}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    plan = _ACTIVE[0] if _ACTIVE else None
    if plan is None or report.nodeid not in plan.room_tests:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        plan.outcomes["error" if report.when == "setup" and report.failed else report.outcome] += 1
    elif report.when == "teardown" and report.failed:  # e.g. logs_keep_secrets found a leak after the test
        plan.outcomes["error"] += 1


_ACTIVE: list[RoomHarnessPlan] = []
"""The plan of the running session (test reports carry no config to find it by)."""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    plan = config.stash[PLAN]
    counts = {key: plan.outcomes.get(key, 0) for key in ("passed", "failed", "error", "skipped")}
    ran = counts["passed"] + counts["failed"] + counts["error"]
    line = (
        f"room tests: {ran} ran in real LiveKit rooms ({counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['error']} errors), {counts['skipped']} skipped of {len(plan.room_tests)} selected"
    )
    terminalreporter.write_sep("-", "room harness")
    terminalreporter.write_line(line)
    terminalreporter.write_line(plan.skip_reason or plan.describe())
    report_path = os.environ.get("GOCARE_ROOM_REPORT")
    if report_path:
        with open(report_path, "w", encoding="utf-8") as out:
            json.dump({**counts, "ran": ran, "selected": len(plan.room_tests), "harness": plan.skip_reason or plan.describe()}, out)
