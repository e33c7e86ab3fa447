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

Under pytest-xdist (``-n``): the controller starts nothing and enters no namespace; each xdist worker that
runs room tests enters a namespace of its own (so two workers' servers never meet) and starts the session's
server, worker and token service on first use, and shares them among every room test it runs. Each room
module goes to one xdist worker whole (``schedule_scope``), so its module-scoped services start once. The
controller counts the room tests' outcomes from the reports and learns which were selected from each
worker's ``workeroutput``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field

import pytest

from harness.livekit_server import locate_server, server_version
from harness.netns import NetnsUnavailable, PrivateNetwork, enter_private_network, unavailable_reason

MARKER = "livekit"
ROOM_DIR = "tests/room/"
"""Where the room tests live: their node ids start with it (relative to the repository's root)."""


def schedule_scope(nodeid: str) -> str:
    """What an xdist worker takes as one unit of work: a room test module whole (its module-scoped services,
    a module's own worker or cluster, start once, and the session's server, worker and token service of
    that xdist worker are shared by every room module it runs); any other test alone."""
    path = nodeid.split("::", 1)[0]
    return path if path.startswith(ROOM_DIR) else nodeid


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class RoomHarnessPlan:
    binary: str | None = None
    external_url: str | None = None
    network: PrivateNetwork | None = None
    networks_in_workers: bool = False
    """The xdist controller: each xdist worker enters a namespace of its own."""
    skip_reason: str | None = None
    required: bool = False
    outcomes: dict[str, str] = field(default_factory=dict)
    """nodeid -> its worst outcome so far (passed < skipped < failed < error), for every test reported."""
    room_tests: set[str] = field(default_factory=set)

    def describe(self) -> str:
        if self.external_url:
            return f"external server {self.external_url}"
        if self.networks_in_workers:
            where = "a network namespace per xdist worker"
        elif self.network:
            where = f"network namespace, node_ip {self.network.node_ip}"
        else:
            where = "host network (opted in)"
        return f"livekit-server {server_version(self.binary) if self.binary else '?'} at {self.binary}; {where}"


PLAN = pytest.StashKey[RoomHarnessPlan]()


def make_plan(*, controller: bool = False) -> RoomHarnessPlan:
    """``controller``: the xdist controller, which runs no test: it checks that a namespace could be made
    (for the skip line and ``GOCARE_REQUIRE_LIVEKIT``) but enters none; its workers do."""
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
        if controller:
            reason = unavailable_reason()
            if reason:
                raise NetnsUnavailable(reason)
            plan.networks_in_workers = True
        else:
            plan.network = enter_private_network()
    except NetnsUnavailable as error:
        plan.skip_reason = (
            f"room test needs a private network namespace ({error}); run as root, "
            "or set GOCARE_TEST_HOST_NETWORK=1 to use the host's own addresses"
        )
    return plan


def is_xdist_controller(config: pytest.Config) -> bool:
    """This process hands tests to xdist workers and runs none itself."""
    return bool(getattr(config.option, "tx", None)) and getattr(config.option, "dist", "no") != "no" \
        and not hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: runs in a real LiveKit room (the room harness, tests/room/)")
    plan = make_plan(controller=is_xdist_controller(config))
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
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller learns the selection from it
        workeroutput["room_tests"] = sorted(plan.room_tests)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` (and ``-n logical``): one test process more than the CPUs this run may use (its affinity
    mask, logical CPUs). A room test spends most of its time waiting on real time (speech played at its own
    pace, a reconnect grace), not on a CPU: on the 2-CPU machine here 2 processes left a third of the CPU idle
    (633 s), 3 used it (449 s), 4 saturated it and timing-bound room tests failed (docs/testing.md, "Speed").
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` (xdist's own variable) still decides when set; ``-n N`` is always N."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own implementation reads it
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cpus + 1


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """xdist controller, ``-n`` with the default distribution: room modules as whole units, every other test
    alone (``schedule_scope``); the units with the most tests go out first, so the room modules start at
    once and the short tests fill the gaps. (Not xdist's ``loadgroup``: it marks groups by rewriting
    ``item._nodeid``, which pytest 9.2 no longer reads.)"""
    if config.getoption("dist") != "load":
        return None  # an explicit --dist is the user's choice
    from xdist.scheduler import LoadScopeScheduling

    class RoomModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return schedule_scope(nodeid)

    return RoomModuleScheduling(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """xdist controller: an xdist worker finished; every worker collects the same tests, so the union of
    what they report is the selection."""
    plan = _ACTIVE[0] if _ACTIVE else None
    output = getattr(node, "workeroutput", None) or {}
    if plan is not None:
        plan.room_tests.update(output.get("room_tests", []))


_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Every test's outcome by nodeid (in the xdist controller too: the reports come to it); which of them
    are room tests is decided at the end, when the selection is known."""
    plan = _ACTIVE[0] if _ACTIVE else None
    if plan is None:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        outcome = "error" if report.when == "setup" and report.failed else report.outcome
    elif report.when == "teardown" and report.failed:  # e.g. logs_keep_secrets found a leak after the test
        outcome = "error"
    else:
        return
    previous = plan.outcomes.get(report.nodeid)
    if previous is None or _RANK[outcome] > _RANK[previous]:
        plan.outcomes[report.nodeid] = outcome


_ACTIVE: list[RoomHarnessPlan] = []
"""The plan of the running session (test reports carry no config to find it by)."""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    plan = config.stash[PLAN]
    room = Counter(outcome for nodeid, outcome in plan.outcomes.items() if nodeid in plan.room_tests)
    counts = {key: room.get(key, 0) for key in ("passed", "failed", "error", "skipped")}
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
