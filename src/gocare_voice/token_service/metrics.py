"""The token service's Prometheus metrics: every definition here, recorded through one small interface.

Labels are fixed words only: route templates (never raw paths, which carry room names), methods, status
codes, error and failure-reason codes, upload stages. Nothing that names a person, a number, a room or an
identity.

One process: the metrics live in the app's own registry. Several (``gocare token-server --workers N`` or
``--reload``): prometheus-client's multiprocess mode, which the CLI turns on by setting
``PROMETHEUS_MULTIPROC_DIR`` (an empty folder) before any process imports prometheus-client; each process
then writes its values to files there and a scrape adds them up (``scrape_registry``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
_METHODS = frozenset({"GET", "POST", "OPTIONS", "HEAD", "PUT", "PATCH", "DELETE"})
UNMATCHED = "unmatched"
"""The route label of a request no route matched (404s: their paths are whatever a scanner sent)."""


class ServiceMetrics(Protocol):
    """What the service records. ``NoMetrics`` when ``GOCARE_METRICS=off``."""

    def request(self, route: str, method: str, status: int, seconds: float) -> None: ...
    def token_minted(self, endpoint: str) -> None: ...
    def rate_limited(self, kind: str) -> None: ...
    def auth_failed(self, reason: str) -> None: ...
    def upload_stage(self, stage: str, seconds: float) -> None: ...
    def upload_failed(self, stage: str, error: str) -> None: ...


class NoMetrics:
    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        pass

    def token_minted(self, endpoint: str) -> None:
        pass

    def rate_limited(self, kind: str) -> None:
        pass

    def auth_failed(self, reason: str) -> None:
        pass

    def upload_stage(self, stage: str, seconds: float) -> None:
        pass

    def upload_failed(self, stage: str, error: str) -> None:
        pass


def multiprocess_dir() -> str | None:
    """The folder of prometheus-client's multiprocess mode when this process runs in it. The mode is fixed
    when prometheus-client is first imported, from ``PROMETHEUS_MULTIPROC_DIR``."""
    from prometheus_client import values

    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


class PrometheusMetrics:
    """The metrics, in a registry of their own (several apps in one process, as tests build them, do not
    collide). Label children are cached: ``labels()`` costs more than the increment on the hot path."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter("gocare_http_requests", "HTTP requests answered, by route template, method "
                                 "and status", ["route", "method", "status"], registry=r)
        self._latency = Histogram("gocare_http_request_duration_seconds", "Time to answer a request, by route "
                                  "template and method", ["route", "method"], buckets=REQUEST_BUCKETS, registry=r)
        self._tokens = Counter("gocare_tokens_minted", "LiveKit tokens minted, by endpoint", ["endpoint"],
                               registry=r)
        self._limited = Counter("gocare_rate_limited", "Requests refused by the rate limit: caller (429), "
                                "failed_auth (429 after failed authentications), storage_unavailable (503, "
                                "GOCARE_RATE_LIMIT_FAIL_MODE=closed)", ["kind"], registry=r)
        self._auth = Counter("gocare_auth_failures", "Failed caller authentications, by reason", ["reason"],
                             registry=r)
        self._stage = Histogram("gocare_voice_upload_stage_duration_seconds", "Voice upload stage durations "
                                "(read, decode, stt, llm, tts)", ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self._upload_failures = Counter("gocare_voice_upload_failures", "Voice uploads that stopped, by stage "
                                        "and error code", ["stage", "error"], registry=r)
        self._request_children: dict[tuple[str, str, int], Any] = {}
        self._latency_children: dict[tuple[str, str], Any] = {}
        self._token_children: dict[str, Any] = {}

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self._requests.labels(route, method, str(status))
        counter.inc()
        timing = self._latency_children.get((route, method))
        if timing is None:
            timing = self._latency_children[(route, method)] = self._latency.labels(route, method)
        timing.observe(seconds)

    def token_minted(self, endpoint: str) -> None:
        counter = self._token_children.get(endpoint)
        if counter is None:
            counter = self._token_children[endpoint] = self._tokens.labels(endpoint)
        counter.inc()

    def rate_limited(self, kind: str) -> None:
        self._limited.labels(kind).inc()

    def auth_failed(self, reason: str) -> None:
        self._auth.labels(reason).inc()

    def upload_stage(self, stage: str, seconds: float) -> None:
        self._stage.labels(stage).observe(seconds)

    def upload_failed(self, stage: str, error: str) -> None:
        self._upload_failures.labels(stage, error).inc()


def build_metrics(enabled: bool) -> ServiceMetrics:
    return PrometheusMetrics() if enabled else NoMetrics()


def scrape_registry(metrics: ServiceMetrics) -> CollectorRegistry | None:
    """What a scrape reads: every process's values in multiprocess mode, else this app's registry."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    folder = multiprocess_dir()
    if folder is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]  # unannotated in prometheus-client
        return registry
    return metrics.registry if isinstance(metrics, PrometheusMetrics) else None


def exposition(metrics: ServiceMetrics) -> bytes:
    from prometheus_client import generate_latest

    registry = scrape_registry(metrics)
    return generate_latest(registry) if registry is not None else b""


class RequestMetricsMiddleware:
    """Pure ASGI (no ``BaseHTTPMiddleware``: it costs a task per request): times each HTTP request and
    counts it by the template of the route that matched. FastAPI puts its own routes in ``scope["route"]``;
    for the plain Starlette routes (the token endpoints) only the endpoint is in the scope, so the template is
    looked up by endpoint in ``routes()`` (the app's routes, read once at the first such request)."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics, routes: Callable[[], list[Any]]) -> None:
        self.app = app
        self.metrics = metrics
        self._routes = routes
        self._by_endpoint: dict[Any, str] | None = None

    def _template(self, scope: Scope) -> str:
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str):
            return path
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return UNMATCHED
        if self._by_endpoint is None:
            self._by_endpoint = {r.endpoint: r.path for r in self._routes() if hasattr(r, "endpoint")}
        return self._by_endpoint.get(endpoint, UNMATCHED)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.request(self._template(scope), method, status, time.perf_counter() - started)


def prepare_multiprocess_dir(path: str | None) -> tuple[str, bool]:
    """The folder for multiprocess mode, emptied of an earlier run's files (stale counters would be added
    to this run's); made when missing. Returns the folder and whether we created it (and so remove it)."""
    import tempfile
    from pathlib import Path

    if not path:
        return tempfile.mkdtemp(prefix="gocare-metrics-"), True
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    return str(folder), False


def serve_metrics(port: int, host: str, registry: CollectorRegistry) -> None:
    """``/metrics`` on its own port (a thread of this process), for ``GOCARE_METRICS_PORT``."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=host, registry=registry)
