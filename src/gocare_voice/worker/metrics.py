"""The worker's own Prometheus counters, served by livekit-agents' metrics endpoint.

Calls run in job processes (one per call, started by livekit-agents through a forkserver), while the
``/metrics`` endpoint (``AgentServer(prometheus_port=...)``) lives in the worker's main process. That
endpoint reads prometheus-client's multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``): every process
writes its counters to files there and a scrape sums them, so a counter from a call whose process has ended
still counts. ``use_multiprocess_dir`` must run before anything imports ``prometheus_client`` (livekit.agents
does): the library picks in-memory or file-backed values once, at import, and the job processes inherit
the variable from the worker.

No personal data in labels: every label value is one of a fixed set (``"other"`` otherwise), never a
number, name, identity or room name.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, Mapping, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from gocare_voice.records.plan import AnalysisPlan

    from gocare_voice.settings import Settings

logger = logging.getLogger("gocare.worker")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

END_REASONS = (
    "user_left",  # the user hung up and did not come back within GOCARE_RECONNECT_GRACE
    "locked_out",  # too many failed number checks: the agent said goodbye
    # livekit-agents' CloseReason for everything else
    "participant_disconnected", "job_shutdown", "error", "user_initiated", "task_completed",
)
PROVIDER_STAGES = ("stt", "llm", "tts")
TURN_STAGES = ("transcript", "end_of_turn", "llm_ttft", "tts_ttfb", "total")
"""worker/latency.py's ``TurnLatency.stages()``."""
TURN_LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0)
_IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,39}")
"""Agent ids are our own constants (``attorney_agent``); anything else becomes ``other``, so nothing a caller
sent can reach a label. Error codes and modes come from the protocol's own tables."""


def _one_of(value: object, allowed: tuple[str, ...]) -> str:
    return value if isinstance(value, str) and value in allowed else "other"


def _identifier(value: object) -> str:
    return value if isinstance(value, str) and _IDENTIFIER.fullmatch(value) else "other"


class CallMetrics(Protocol):
    """What the job counts; ``NO_METRICS`` when the endpoint is off."""

    def call_started(self) -> None: ...
    def call_ended(self, reason: str) -> None: ...
    def verification(self, outcome: str) -> None: ...
    def handoff(self, agent: str) -> None: ...
    def mode_switch(self, mode: str) -> None: ...
    def command_error(self, code: str) -> None: ...
    def provider_error(self, stage: str, *, recoverable: bool) -> None: ...
    def turn_latency(self, stages: Mapping[str, float]) -> None: ...
    def call_analysed(self, plan: AnalysisPlan, status: str, values: Mapping[str, object]) -> None: ...


ANALYSIS_STATUSES = ("done", "failed")


def analysis_labels(plan: AnalysisPlan, values: Mapping[str, object]) -> list[tuple[str, str]]:
    """(field, value) label pairs of an analysis: the plan's boolean and choice fields only (a text or a
    number would be unbounded), a value outside the plan's set as ``other``, no value as ``none``. The field
    names and choices are the plan's own identifiers (records/plan.py checks them at start)."""
    pairs = []
    for f in plan.fields:
        if not f.countable:
            continue
        value = values.get(f.name)
        if value is None:
            shown = "none"
        elif f.type == "boolean":
            shown = "true" if value is True else "false" if value is False else "other"
        else:
            shown = _one_of(value, f.choices)
        pairs.append((f.name, shown))
    return pairs


class NoMetrics:
    """Metrics off (``GOCARE_WORKER_METRICS_PORT`` unset): nothing counted, nothing written."""

    def call_started(self) -> None:
        pass

    def call_ended(self, reason: str) -> None:
        pass

    def verification(self, outcome: str) -> None:
        pass

    def handoff(self, agent: str) -> None:
        pass

    def mode_switch(self, mode: str) -> None:
        pass

    def command_error(self, code: str) -> None:
        pass

    def provider_error(self, stage: str, *, recoverable: bool) -> None:
        pass

    def turn_latency(self, stages: Mapping[str, float]) -> None:
        pass

    def call_analysed(self, plan: AnalysisPlan, status: str, values: Mapping[str, object]) -> None:
        pass


NO_METRICS = NoMetrics()


class WorkerMetrics:
    """The counters (names end in ``_total`` in the exposition). One instance per process: prometheus-client's
    file-backed values of two instances with the same names would overwrite each other."""

    def __init__(self, *, registry: CollectorRegistry | None) -> None:
        from prometheus_client import Counter, Histogram

        from gocare_voice.conversation.state import VERIFICATION_OUTCOMES
        from gocare_voice.protocol import ERROR_CODES, MODES

        self._modes = tuple(MODES)
        self._codes = tuple(ERROR_CODES)
        self._outcomes = tuple(VERIFICATION_OUTCOMES)
        self.calls_started = Counter(
            "gocare_calls_started", "Calls whose agent session started", registry=registry)
        self.calls_ended = Counter(
            "gocare_calls_ended", "Calls ended, by reason", ["reason"], registry=registry)
        self.verifications = Counter(
            "gocare_verifications", "Mobile number checks, by outcome (locked_out: a call ran out of attempts)",
            ["outcome"], registry=registry)
        self.handoffs = Counter(
            "gocare_agent_handoffs", "Handoffs to another agent during a call, by the agent handed to",
            ["agent"], registry=registry)
        self.mode_switches = Counter(
            "gocare_mode_switches", "Mode switches the app asked for and got, by mode", ["mode"], registry=registry)
        self.command_errors = Counter(
            "gocare_command_errors", "App commands (RPC or data packet) refused or failed, by error code",
            ["code"], registry=registry)
        self.provider_errors = Counter(
            "gocare_provider_errors",
            "Provider errors reported by the agent session, by stage (recoverable: livekit-agents retries)",
            ["stage", "recoverable"], registry=registry)
        self.turn_latencies = Histogram(
            "gocare_turn_latency_seconds",
            "Answered turns: seconds from the end of the caller's speech to each stage (transcript, end_of_turn, "
            "total = the first audio of the reply); llm_ttft and tts_ttfb from their own start",
            ["stage"], buckets=TURN_LATENCY_BUCKETS, registry=registry)
        self.call_analyses = Counter(
            "gocare_call_analyses", "End-of-call analyses, by status (failed: no valid answer in time)",
            ["status"], registry=registry)
        self.call_analysis_values = Counter(
            "gocare_call_analysis_values",
            "Analysed calls by the value of each boolean and choice field of the analysis plan",
            ["field", "value"], registry=registry)

    def call_started(self) -> None:
        self._count(self.calls_started)

    def call_ended(self, reason: str) -> None:
        self._count(self.calls_ended, reason=_one_of(reason, END_REASONS))

    def verification(self, outcome: str) -> None:
        self._count(self.verifications, outcome=_one_of(outcome, self._outcomes))

    def handoff(self, agent: str) -> None:
        self._count(self.handoffs, agent=_identifier(agent))

    def mode_switch(self, mode: str) -> None:
        self._count(self.mode_switches, mode=_one_of(mode, self._modes))

    def command_error(self, code: str) -> None:
        self._count(self.command_errors, code=_one_of(code, self._codes))

    def provider_error(self, stage: str, *, recoverable: bool) -> None:
        # livekit-agents names the error types llm_error, stt_error, tts_error
        name = stage.removesuffix("_error") if isinstance(stage, str) else stage
        self._count(self.provider_errors, stage=_one_of(name, PROVIDER_STAGES),
                    recoverable="true" if recoverable else "false")

    def turn_latency(self, stages: Mapping[str, float]) -> None:
        for stage, seconds in stages.items():
            if stage in TURN_STAGES:
                self._count(self.turn_latencies, seconds, stage=stage)

    def call_analysed(self, plan: AnalysisPlan, status: str, values: Mapping[str, object]) -> None:
        self._count(self.call_analyses, status=_one_of(status, ANALYSIS_STATUSES))
        if status == "done":
            for name, value in analysis_labels(plan, values):
                self._count(self.call_analysis_values, field=name, value=value)

    @staticmethod
    def _count(counter: Any, amount: float | None = None, /, **labels: str) -> None:
        """Counting runs inside the call (the number check, room callbacks): it must never break it.
        ``amount``: observe it (a histogram) instead of counting one."""
        try:
            metric = counter.labels(**labels) if labels else counter
            metric.inc() if amount is None else metric.observe(amount)
        except Exception as error:  # noqa: BLE001 - a full disk under the multiprocess directory, say
            logger.warning("metric %s not counted: %s", getattr(counter, "_name", "?"), type(error).__name__)


_process_metrics: WorkerMetrics | None = None


def metrics_for(settings: Settings) -> CallMetrics:
    """The counters of this process when the worker serves metrics, else ``NO_METRICS``."""
    global _process_metrics
    if settings.worker_metrics_port is None:
        return NO_METRICS
    if _process_metrics is None:
        from prometheus_client import REGISTRY

        # the default registry serves them when there is no multiprocess directory (a thread executor);
        # with one, the endpoint reads the files and this registry is not used
        _process_metrics = WorkerMetrics(registry=REGISTRY)
    return _process_metrics


def use_multiprocess_dir(settings: Settings) -> str | None:
    """Before livekit.agents is imported: the directory every process of this worker writes its metrics to.
    ``PROMETHEUS_MULTIPROC_DIR`` when the operator set one (one directory per worker: livekit-agents empties
    it at start), else a fresh temporary one, removed at exit. None when metrics are off."""
    if settings.worker_metrics_port is None:
        return None
    chosen = os.environ.get(MULTIPROC_ENV, "").strip()
    if chosen:
        os.makedirs(chosen, exist_ok=True)
        return chosen
    made = tempfile.mkdtemp(prefix="gocare-worker-metrics-")
    os.environ[MULTIPROC_ENV] = made
    atexit.register(shutil.rmtree, made, ignore_errors=True)
    return made
