"""GET /metrics: Prometheus text format.

Request counts and latencies are per process; under tradestats-serve (``PROMETHEUS_MULTIPROC_DIR``
set by the server) prometheus_client's multiprocess mode keeps them in files that every worker's
scrape sums, so a scrape on any worker covers all of them and a worker that dies or restarts
loses nothing it counted. What the store holds (symbols, prices, rebuilds, roll-backs) is read
from the shared store itself at scrape time: no process keeps a copy that could disagree.
"""
from __future__ import annotations

import os
import time

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client import values
from prometheus_client.multiprocess import MultiProcessCollector

#: Request latency buckets, seconds: a GET takes tens of microseconds, a 10,000-value POST
#: a fraction of a millisecond.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 1.0)
UNMATCHED_ROUTE = "unmatched"


class StoreCollector:
    """The store's own figures, read when scraped."""

    def __init__(self, store) -> None:
        self._store = store

    def collect(self):
        symbols = list(self._store)
        held = received = rebuilds = recoveries = 0
        for symbol in symbols:
            stats = self._store[symbol]
            count = len(stats)
            received += count
            held += min(count, 10 ** stats.max_k)
            rebuilds += sum(stats.rebuilds)
            recoveries += stats.recoveries
        yield GaugeMetricFamily("tradestats_symbols", "Symbols stored.", value=len(symbols))
        yield GaugeMetricFamily("tradestats_prices_held",
                                "Prices held in the windows of all symbols.", value=held)
        yield CounterMetricFamily("tradestats_prices_received",
                                  "Prices ever stored, all symbols.", value=received)
        yield CounterMetricFamily("tradestats_window_rebuilds",
                                  "Windows rebuilt from the ring (numerical safety valve).",
                                  value=rebuilds)
        yield CounterMetricFamily("tradestats_torn_batch_recoveries",
                                  "Batches of killed writers rolled back.", value=recoveries)


_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def cached_pid() -> int:
    """os.getpid() without the syscall: prometheus_client calls it on every increment (to notice
    a fork), which was 9 % of a worker's time per GET /stats/."""
    return _pid


class Metrics:
    def __init__(self, store) -> None:
        self.registry = CollectorRegistry()
        multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        if multiprocess:
            values.ValueClass = values.MultiProcessValue(process_identifier=cached_pid)
        # In multiprocess mode the values live in files, collected below; registering the
        # metrics themselves too would count this process twice.
        own = None if multiprocess else self.registry
        self.requests = Counter("tradestats_http_requests", "HTTP requests answered.",
                                ["route", "method", "status"], registry=own)
        self.latency = Histogram("tradestats_http_request_duration_seconds",
                                 "Time to answer an HTTP request.", ["route", "method"],
                                 buckets=LATENCY_BUCKETS, registry=own)
        self.batches = Counter("tradestats_batches_ingested", "Batches stored.", registry=own)
        self.prices = Counter("tradestats_prices_ingested", "Prices stored by batches.",
                              registry=own)
        if multiprocess:
            MultiProcessCollector(self.registry)
        self.registry.register(StoreCollector(store))

    def batch_added(self, count: int) -> None:
        self.batches.inc()
        self.prices.inc(count)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every request, labelled by route template (not raw path: bounded)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.metrics_started = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource,
                         req_succeeded: bool) -> None:
        started = getattr(req.context, "metrics_started", None)
        route = req.uri_template or UNMATCHED_ROUTE
        method = req.method if req.method in falcon.COMBINED_METHODS else "other"
        self._metrics.requests.labels(route, method, str(resp.status_code)).inc()
        if started is not None:
            self._metrics.latency.labels(route, method).observe(time.perf_counter() - started)


class MetricsResource:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = self._metrics.exposition()
