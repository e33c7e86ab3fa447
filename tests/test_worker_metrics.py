"""The worker's own counters (worker/metrics.py): labels from fixed sets only, one budget of files summed
across processes the way livekit-agents' endpoint reads them, and the handlers counting refused commands.
The end-to-end check (a real worker, real calls, a scrape of livekit-agents' endpoint) is
tests/room/test_room_metrics.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, multiprocess

from gocare_voice import protocol as cmd
from gocare_voice.settings import Settings, SettingsError, load_settings
from gocare_voice.worker import metrics as worker_metrics
from gocare_voice.worker.handlers import RoomHandlers
from gocare_voice.worker.metrics import NO_METRICS, WorkerMetrics, metrics_for, use_multiprocess_dir
from test_room_handlers import Executor, Participant, Rpc, make


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_label_values_come_from_fixed_sets_never_from_what_a_caller_sent() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry=registry)
    metrics.call_started()
    metrics.call_ended("user_left")
    metrics.call_ended("t-room-of-john-42")  # not a reason we know
    metrics.verification("verified")
    metrics.verification("+919876543210")
    metrics.handoff("attorney_agent")
    metrics.handoff("Agent for John Doe")
    metrics.mode_switch("attorney")
    metrics.mode_switch("pirate")
    metrics.command_error(cmd.E_INVALID_AGENT)
    metrics.command_error("9876543210")
    metrics.provider_error("llm_error", recoverable=False)
    metrics.provider_error("stt_error", recoverable=True)
    metrics.provider_error("realtime_model_error", recoverable=True)

    assert value(registry, "gocare_calls_started_total") == 1
    assert value(registry, "gocare_calls_ended_total", reason="user_left") == 1
    assert value(registry, "gocare_calls_ended_total", reason="other") == 1
    assert value(registry, "gocare_verifications_total", outcome="verified") == 1
    assert value(registry, "gocare_verifications_total", outcome="other") == 1
    assert value(registry, "gocare_agent_handoffs_total", agent="attorney_agent") == 1
    assert value(registry, "gocare_agent_handoffs_total", agent="other") == 1
    assert value(registry, "gocare_mode_switches_total", mode="attorney") == 1
    assert value(registry, "gocare_mode_switches_total", mode="other") == 1
    assert value(registry, "gocare_command_errors_total", code="invalid_agent") == 1
    assert value(registry, "gocare_command_errors_total", code="other") == 1
    assert value(registry, "gocare_provider_errors_total", stage="llm", recoverable="false") == 1
    assert value(registry, "gocare_provider_errors_total", stage="stt", recoverable="true") == 1
    assert value(registry, "gocare_provider_errors_total", stage="other", recoverable="true") == 1
    labels = {v for metric in registry.collect() for s in metric.samples for v in s.labels.values()}
    for personal in ("9876543210", "John", "room", "+91"):
        assert not any(personal in label for label in labels), labels


def test_metrics_off_counts_nothing_and_on_is_one_instance_per_process() -> None:
    assert metrics_for(Settings()) is NO_METRICS
    on = Settings(worker_metrics_port=9464)
    assert isinstance(metrics_for(on), WorkerMetrics)
    assert metrics_for(on) is metrics_for(on)


_COUNT_IN_A_PROCESS = """
import sys
from gocare_voice.settings import Settings
from gocare_voice.worker.metrics import metrics_for
m = metrics_for(Settings(worker_metrics_port=9464))
m.call_started()
m.verification(sys.argv[1])
m.command_error("malformed")
"""


def test_counts_of_every_process_are_summed_even_after_the_process_ended(tmp_path: Path) -> None:
    """What livekit-agents' endpoint does with PROMETHEUS_MULTIPROC_DIR: job processes (here two finished
    Python processes) write files, one collector sums them."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for outcome in ("verified", "mismatch"):
        subprocess.run([sys.executable, "-c", _COUNT_IN_A_PROCESS, outcome], env=env, check=True, timeout=60)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    assert value(registry, "gocare_calls_started_total") == 2
    assert value(registry, "gocare_verifications_total", outcome="verified") == 1
    assert value(registry, "gocare_verifications_total", outcome="mismatch") == 1
    assert value(registry, "gocare_command_errors_total", code="malformed") == 2


def test_the_multiprocess_directory_is_set_up_only_when_metrics_are_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # set, then removed, through monkeypatch: what use_multiprocess_dir writes into os.environ is undone after
    # the test (a delenv of an absent variable alone would not be), or every process the later tests start
    # would share this directory
    monkeypatch.setenv(worker_metrics.MULTIPROC_ENV, "placeholder")
    monkeypatch.delenv(worker_metrics.MULTIPROC_ENV)
    assert use_multiprocess_dir(Settings()) is None
    assert worker_metrics.MULTIPROC_ENV not in os.environ

    made = use_multiprocess_dir(Settings(worker_metrics_port=9464))
    assert made is not None and Path(made).is_dir() and os.environ[worker_metrics.MULTIPROC_ENV] == made
    # the second call (the CLI asks before and after its checks) keeps the same directory
    assert use_multiprocess_dir(Settings(worker_metrics_port=9464)) == made

    chosen = tmp_path / "chosen"
    monkeypatch.setenv(worker_metrics.MULTIPROC_ENV, str(chosen))
    assert use_multiprocess_dir(Settings(worker_metrics_port=9464)) == str(chosen) and chosen.is_dir()


def test_worker_metrics_port_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOCARE_WORKER_METRICS_PORT", "")
    assert load_settings(env_file=None).worker_metrics_port is None
    monkeypatch.setenv("GOCARE_WORKER_METRICS_PORT", "9464")
    assert load_settings(env_file=None).worker_metrics_port == 9464
    monkeypatch.setenv("GOCARE_WORKER_PORT", "9464")
    with pytest.raises(SettingsError) as refused:
        load_settings(env_file=None)
    assert refused.value.problems == [
        "GOCARE_WORKER_METRICS_PORT: 9464 is also GOCARE_WORKER_PORT (the worker's health server); use another port"]


class Recorded:
    """A CallMetrics that remembers the command errors it was told about."""

    def __init__(self) -> None:
        self.codes: list[str] = []

    def command_error(self, code: str) -> None:
        self.codes.append(code)

    def __getattr__(self, name: str):  # the other counters: not what these tests are about
        return lambda *args, **kwargs: None


async def test_handlers_count_each_refused_command_once_by_its_code() -> None:
    handlers, room, state, _ = make()
    recorded = Recorded()
    handlers = RoomHandlers(room=room, state=state, metrics=recorded)  # type: ignore[arg-type]
    handlers.link_user(Participant())
    handlers.register_rpc()
    rpc = room.local_participant.rpc["switch_agent"]

    await rpc(Rpc("switch_agent", '{"agent": "attorney"}'))  # the session has not started yet
    handlers.bind_session(executor=Executor())  # type: ignore[arg-type]
    assert json.loads(await rpc(Rpc("switch_agent", '{"agent": "attorney"}')))["ok"] is True  # not counted
    await rpc(Rpc("switch_agent", "{not json"))
    await rpc(Rpc("switch_agent", '{"agent": "pirate"}'))
    await rpc(Rpc("switch_agent", '{"agent": "attorney"}', caller_identity="someone-else"))
    handlers.on_data_received(type("P", (), {"data": b"[1]", "topic": "gocare", "participant": Participant()})())
    assert recorded.codes == [cmd.E_NOT_READY, cmd.E_MALFORMED, cmd.E_INVALID_AGENT, cmd.E_FORBIDDEN, cmd.E_MALFORMED]


def test_a_counter_that_fails_is_logged_and_the_call_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    metrics = WorkerMetrics(registry=CollectorRegistry())

    class Broken:
        _name = "gocare_verifications"

        def labels(self, **labels: str):
            raise OSError("No space left on device")

    metrics.verifications = Broken()  # type: ignore[assignment]
    metrics.verification("verified")  # no exception
    assert "metric gocare_verifications not counted: OSError" in caplog.text


def test_analysed_calls_are_counted_by_the_plans_boolean_and_choice_fields_only() -> None:
    """Issue 31: the label values are the plan's own (its field names, true/false, its choices); a text or a
    number never becomes a label, and a value outside the plan counts as ``other``."""
    from gocare_voice.records.plan import load_plan

    plan = load_plan()
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry=registry)
    values = {"reason": "Callback about 98765 43210", "resolved": False, "follow_up_needed": True,
              "urgency": "urgent", "callback_time": "after 5 pm"}
    metrics.call_analysed(plan, "done", values)
    metrics.call_analysed(plan, "done", {**values, "urgency": "<script>", "follow_up_needed": None})
    metrics.call_analysed(plan, "failed", {})
    metrics.call_analysed(plan, "weird", {})
    name = "gocare_call_analysis_values_total"
    assert value(registry, name, field="follow_up_needed", value="true") == 1
    assert value(registry, name, field="follow_up_needed", value="none") == 1
    assert value(registry, name, field="resolved", value="false") == 2
    assert value(registry, name, field="urgency", value="urgent") == 1
    assert value(registry, name, field="urgency", value="other") == 1
    assert value(registry, "gocare_call_analyses_total", status="done") == 2
    assert value(registry, "gocare_call_analyses_total", status="failed") == 1
    assert value(registry, "gocare_call_analyses_total", status="other") == 1
    labels = {s.labels.get("field") for m in registry.collect() for s in m.samples if m.name == "gocare_call_analysis_values"}
    assert labels == {"resolved", "follow_up_needed", "urgency"}  # never reason or callback_time
    exposed = " ".join(str(s.labels) for m in registry.collect() for s in m.samples)
    assert "98765" not in exposed and "after 5 pm" not in exposed and "<script>" not in exposed
