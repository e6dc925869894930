"""Prometheus metrics of the API, on a registry of its own so that each app reports only itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Fine at the low end: a single-row prediction takes about a millisecond.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class _BatchRows(Collector):
    """Batch rows processed, read from the job store's database when scraped.

    The read runs in a thread of its own and a scrape waits for it only `wait_seconds`: while
    the database cannot be reached, the scrape still answers at once with the last figure read,
    so the decision-log backlog, which matters most then, stays visible.
    """

    def __init__(self, rows_processed: Callable[[], int], wait_seconds: float = 0.5) -> None:
        self._rows_processed = rows_processed
        self._wait_seconds = wait_seconds
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._value = 0

    def describe(self) -> Iterable[Metric]:
        # Registering asks for this instead of `collect`, so building the app reads no database.
        yield self._family()

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if self._reader is None or not self._reader.is_alive():
                self._reader = threading.Thread(target=self._read, name="batch-rows", daemon=True)
                self._reader.start()
            reader = self._reader
        reader.join(self._wait_seconds)
        family = self._family()
        with self._lock:
            family.add_metric([], float(self._value))
        yield family

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "loanops_batch_rows_processed", "Rows of batch jobs scored or rejected by workers."
        )

    def _read(self) -> None:
        value = self._rows_processed()
        with self._lock:
            self._value = max(self._value, value)


_Metric = TypeVar("_Metric", Counter, Histogram)


class _Bound(Generic[_Metric]):
    """A labelled metric's children, each looked up once and then reused.

    `labels()` validates and joins the label values and takes a lock on every call, which costs
    more than the increment itself; the label sets here are few (route templates, methods,
    statuses, decisions), so each child is kept after its first use.
    """

    def __init__(self, metric: _Metric) -> None:
        self._metric: _Metric = metric
        self._children: dict[tuple[str, ...], _Metric] = {}

    def __call__(self, *values: str) -> _Metric:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class Metrics:
    """Every metric the API exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "loanops_http_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "loanops_http_request_duration_seconds",
            "Time from request to response start, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "loanops_predictions",
            "Applications scored online, by decision.",
            ["decision"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "loanops_model_info",
            "The model version serving (value 1), with its run id.",
            ["model", "version", "run_id"],
            registry=self.registry,
        )
        self.model_loaded_at = Gauge(
            "loanops_model_loaded_timestamp_seconds",
            "When the serving model was loaded.",
            registry=self.registry,
        )
        self.reload_failures = Counter(
            "loanops_model_reload_failures",
            "Failed attempts to load a model; the previous one kept serving.",
            registry=self.registry,
        )
        self.challenger_failures = Counter(
            "loanops_challenger_failures",
            "Challenger versions dropped because they failed to load or to score, by stage.",
            ["stage"],
            registry=self.registry,
        )
        self.challenger_overflow = Counter(
            "loanops_challenger_shadow_overflow",
            "Decisions recorded champion-only because the shadow queue was full.",
            registry=self.registry,
        )
        self.decisions_pending = Gauge(
            "loanops_decision_log_pending",
            "Decisions recorded but not yet written to the decision log.",
            registry=self.registry,
        )
        self.decisions_backlog = Gauge(
            "loanops_decision_log_backlog",
            "Decisions recorded and not yet in the database: in memory for the writer process, "
            "or on disk in overflow files while it is behind.",
            ["where"],
            registry=self.registry,
        )

        self.request_count = _Bound(self.requests)
        self.request_latency = _Bound(self.latency)
        self.decided = _Bound(self.predictions)
        """`predictions` by decision, for the scoring routes."""

    def watch_batch_rows(self, rows_processed: Callable[[], int]) -> None:
        self.registry.register(_BatchRows(rows_processed))

    def serving(self, model: str, version: str, run_id: str | None, loaded_at: float) -> None:
        self.model_info.clear()
        self.model_info.labels(model, version, run_id or "").set(1)
        self.model_loaded_at.set(loaded_at)


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (never the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self._observe(scope, start, status)
            await send(message)

        try:
            await self.app(scope, receive, send_and_observe)
        except Exception:
            if status == 500:  # no response started: the server error middleware answers 500
                self._observe(scope, start, 500)
            raise

    def _observe(self, scope: Scope, start: float, status: int) -> None:
        route, method = _route(scope), scope["method"]
        self.metrics.request_latency(route, method).observe(time.perf_counter() - start)
        self.metrics.request_count(route, method, str(status)).inc()


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths share one label, so random URLs cannot grow the series without bound.
    return path if isinstance(path, str) else "<unmatched>"
