"""The alerting rules we ship (deploy/helm/gocare-voice/files/prometheus-rules.yml): valid for Prometheus, each
alert firing on the series it is for and quiet on healthy ones (``promtool test rules``,
tests/prometheus/rules_test.yml), and written against the metrics our code really exports, so a renamed metric
or label cannot leave an alert that never fires.

promtool comes with Debian's ``prometheus`` package. Without it the promtool tests skip with one line;
``GOCARE_REQUIRE_PROMTOOL=1`` (.ci/run) makes that a failure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from gocare_voice.token_service.metrics import PrometheusMetrics
from gocare_voice.worker.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "helm" / "gocare-voice" / "files" / "prometheus-rules.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "rules_test.yml"

def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("GOCARE_REQUIRE_PROMTOOL") == "1":
        pytest.fail("GOCARE_REQUIRE_PROMTOOL=1 but promtool is not installed (apt-get install prometheus)")
    pytest.skip("promtool not installed (Debian: apt-get install prometheus)")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60, cwd=RULE_TESTS.parent)


def test_the_rules_file_is_valid_for_prometheus() -> None:
    result = run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_each_alert_fires_on_its_series_and_not_on_healthy_ones() -> None:
    result = run("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_has_a_test_that_makes_it_fire() -> None:
    tested = yaml.safe_load(RULE_TESTS.read_text())
    firing = {case["alertname"] for test in tested["tests"] for case in test.get("alert_rule_test", [])
              if case.get("exp_alerts")}
    assert {str(rule["alert"]) for rule in alerts()} == firing


def exported_metrics() -> dict[str, set[str]]:
    """Metric name -> label names, from the exposition of the real worker and token service registries."""
    worker_registry = CollectorRegistry()
    worker = WorkerMetrics(registry=worker_registry)
    worker.turn_latency({"total": 1.0})
    worker.provider_error("llm", recoverable=False)
    worker.call_ended("error")
    worker.verification("verified")
    service = PrometheusMetrics()
    service.rate_limited("storage_unavailable")
    service.request("/getToken", "POST", 200, 0.01)
    # livekit-agents' own, served beside ours on the worker's port (in prometheus-client's default registry)
    from livekit.agents.telemetry import metrics as livekit_metrics

    livekit_metrics.CPU_LOAD_GAUGE.labels(nodename="test").set(0.1)
    text = b"".join(generate_latest(r) for r in (worker_registry, service.registry, REGISTRY)).decode()
    found: dict[str, set[str]] = {}
    for name, labels in re.findall(r"^([a-z_]+)(?:\{([^}]*)\})? ", text, flags=re.MULTILINE):
        found.setdefault(name, set()).update(re.findall(r"([a-z_]+)=", labels or ""))
    return found


def test_the_rules_use_only_metrics_and_labels_our_code_exports() -> None:
    exported = exported_metrics()
    for rule in alerts():
        expr = str(rule["expr"])
        for name, matchers in re.findall(r"\b((?:gocare|lk_agents)_[a-z_]+)(?:\{([^}]*)\})?", expr):
            assert name in exported, f"{rule['alert']}: {name} is not exported by our code"
            used = set(re.findall(r"([a-z_]+)\s*=~?", matchers or ""))
            assert used <= exported[name], f"{rule['alert']}: {name} has no label {used - exported[name]}"
        grouped = {label for group in re.findall(r"by \(([^)]*)\)", expr) for label in re.split(r",\s*", group)}
        assert grouped <= {"le", "instance", "stage"}, f"{rule['alert']}: grouped by {grouped}"
