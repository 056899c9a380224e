"""GET /metrics: Prometheus text format.

A request only appends its figures to a queue (one atomic ``deque.append``, no lock); a thread
per process moves them into prometheus_client's metrics every ``FLUSH_SECONDS``, and a scrape
first moves its own process' queue. Why: prometheus_client takes a lock per update (one lock
for all metrics in multiprocess mode), and with the app's threads (servers/granian.py) lock
convoys under the GIL halved GET /stats/ throughput (18 k against 36 k req/s at 16
connections, measured). A worker killed by SIGKILL loses at most its last FLUSH_SECONDS of
request counts; one stopped by SIGTERM or SIGINT loses nothing. Batch and price counts are
written at once.

Request counts and latencies are per process; under tradestats-serve (``PROMETHEUS_MULTIPROC_DIR``
set by the server) prometheus_client's multiprocess mode keeps them in files that every worker's
scrape sums, so a scrape on any worker covers all of them and a worker that restarts keeps
what it counted. What the store holds (symbols, prices, roll-backs, damaged files) is read
from the shared store itself at scrape time: no process keeps a copy that could disagree.

Process metrics (``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
``process_open_fds``, ``process_start_time_seconds``... prometheus_client's ProcessCollector)
are per worker, labelled ``pid``: a scrape answered by any worker reads ``/proc`` for every live
worker of the server (the workers that write to the multiprocess directory and share this
worker's parent). Why not one aggregated series: only CPU seconds add up meaningfully; memory
and descriptors need the largest worker as much as the sum (one worker leaking is the alert),
and start times do not add at all. Prometheus sums or maxes over ``pid`` as needed; a restarted
worker is a new series, and the series of workers gone stop (bounded: --workers at a time).
The master only supervises and is not included. ``tradestats_build_info{version, python,
server} 1`` says what runs (``server``: granian or gunicorn, from the scrape's own WSGI server).
"""
from __future__ import annotations

import atexit
import bisect
import collections
import logging
import multiprocessing.util
import os
import platform
import re
import threading
import time

import falcon
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from tradestats import __version__
from tradestats.errors import StoreFormatError

#: Request latency buckets, seconds: a GET takes tens of microseconds, a 10,000-value POST
#: a fraction of a millisecond.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 1.0)
UNMATCHED_ROUTE = "unmatched"
#: Where a request's start time waits for its response (the WSGI environ).
STARTED = "tradestats.started"
#: How often recorded figures reach prometheus_client's metrics (the shared files).
FLUSH_SECONDS = 0.1
log = logging.getLogger("tradestats.metrics")


class StoreCollector:
    """The store's own figures, read when scraped."""

    def __init__(self, store) -> None:
        self._store = store

    def collect(self):
        symbols = list(self._store)
        held = received = recoveries = damaged = 0
        for symbol in symbols:
            try:
                stats = self._store[symbol]
                count = len(stats)
            except StoreFormatError:   # refused by name on its own requests; counted here
                damaged += 1
                continue
            received += count
            held += min(count, 10 ** stats.max_k)
            recoveries += stats.recoveries
        yield GaugeMetricFamily("tradestats_symbols", "Symbols stored.", value=len(symbols))
        yield GaugeMetricFamily("tradestats_prices_held",
                                "Prices held in the windows of all symbols.", value=held)
        yield CounterMetricFamily("tradestats_prices_received",
                                  "Prices ever stored, all symbols.", value=received)
        yield GaugeMetricFamily("tradestats_damaged_symbols",
                                "Symbols whose file failed a check: refused, not served.",
                                value=damaged)
        yield CounterMetricFamily("tradestats_torn_batch_recoveries",
                                  "Batches of killed writers rolled back.", value=recoveries)


#: prometheus_client's multiprocess files end in the pid of the process that wrote them.
MULTIPROCESS_FILE = re.compile(r"_(\d+)\.db$")


def parent_pid(pid: int) -> int | None:
    """The parent of a live process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()   # the name may hold spaces
    except (OSError, IndexError):
        return None
    return int(fields[1])


def server_worker_pids(directory: str | None) -> list[int]:
    """This process and the live workers of the same server: those with files in the
    multiprocess directory and this process's parent (a dead worker's pid, reused by an
    unrelated process, has another)."""
    own = os.getpid()
    if not directory:
        return [own]
    try:
        names = os.listdir(directory)
    except OSError:
        return [own]
    written = {int(match.group(1)) for match in map(MULTIPROCESS_FILE.search, names) if match}
    siblings = {pid for pid in written if pid != own and parent_pid(pid) == os.getppid()}
    return sorted(siblings | {own})


class WorkerProcessCollector:
    """prometheus_client's process metrics for every worker, labelled ``pid`` (module
    docstring: why per worker)."""

    def __init__(self, directory: str | None) -> None:
        self._directory = directory
        self._by_pid: dict[int, ProcessCollector] = {}

    def _collector(self, pid: int) -> ProcessCollector:
        if pid not in self._by_pid:
            self._by_pid[pid] = ProcessCollector(pid=lambda: pid, registry=None)
        return self._by_pid[pid]

    def collect(self):
        pids = server_worker_pids(self._directory)
        for gone in set(self._by_pid) - set(pids):
            del self._by_pid[gone]
        families: dict[str, Metric] = {}
        for pid in pids:
            for family in self._collector(pid).collect():
                labelled = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    labelled.add_sample(sample.name, {**sample.labels, "pid": str(pid)},
                                        sample.value)
        yield from families.values()


#: SERVER_SOFTWARE's product (before any "/version") -> --server's name.
SERVER_NAMES = {"granian": "granian", "gunicorn": "gunicorn"}


def server_name(environ: dict) -> str:
    """granian or gunicorn, from a request's WSGI environ: SERVER_SOFTWARE, which meinheld (a
    gunicorn worker here) does not set, though its request body type names it; else what
    SERVER_SOFTWARE says, or "unknown" (the app called in-process)."""
    software = environ.get("SERVER_SOFTWARE", "").split("/", 1)[0].strip().lower()
    if not software and type(environ.get("wsgi.input")).__module__ == "meinheld":
        return "gunicorn"
    return SERVER_NAMES.get(software, software or "unknown")


class BuildInfoCollector:
    """``tradestats_build_info{version, python, server} 1``."""

    def __init__(self) -> None:
        self.server = "unknown"   # set from each scrape's WSGI environ

    def collect(self):
        info = GaugeMetricFamily("tradestats_build_info",
                                 "What runs: tradestats' version, Python's, the HTTP server.",
                                 labels=["version", "python", "server"])
        info.add_metric([__version__, platform.python_version(), self.server], 1)
        yield info


_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def cached_pid() -> int:
    """os.getpid() without the syscall: prometheus_client calls it on every increment (to notice
    a fork), which was 9 % of a worker's time per GET /stats/."""
    return _pid


def observe_all(histogram, observed: list[float]) -> None:
    """``histogram.observe(x)`` for every x, with one update per bucket instead of two per value.

    prometheus_client has no bulk observe; this writes the labelled histogram's own per-bucket
    values and sum (``_upper_bounds``, ``_buckets``, ``_sum``: what its ``observe`` writes,
    unchanged since 0.4; tests/test_web.py compares the result with ``observe``'s).
    """
    bounds = histogram._upper_bounds
    for index, count in collections.Counter(
            bisect.bisect_left(bounds, seconds) for seconds in observed).items():
        histogram._buckets[index].inc(count)
    histogram._sum.inc(sum(observed))


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
        self.registry.register(WorkerProcessCollector(
            os.environ.get("PROMETHEUS_MULTIPROC_DIR") if multiprocess else None))
        self.build_info = BuildInfoCollector()
        self.registry.register(self.build_info)
        self._pending: collections.deque = collections.deque()
        self._flush_lock = threading.Lock()
        self._flusher: threading.Thread | None = None

    def request_answered(self, route: str, method: str, status: int, seconds: float) -> None:
        self._pending.append((route, method, status, seconds))
        self._ensure_flusher()

    def batch_added(self, count: int) -> None:
        # Written at once: a batch is rare next to the GETs, and its count must survive a kill.
        self.batches.inc()
        self.prices.inc(count)

    def flush(self) -> None:
        """Move every recorded figure into the metrics: few updates per distinct label."""
        with self._flush_lock:
            requests: collections.Counter = collections.Counter()
            latencies: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
            pending = self._pending
            while pending:
                route, method, status, seconds = pending.popleft()
                requests[route, method, str(status)] += 1
                latencies[route, method].append(seconds)
            for labels, count in requests.items():
                self.requests.labels(*labels).inc(count)
            for labels, observed in latencies.items():
                observe_all(self.latency.labels(*labels), observed)

    def _ensure_flusher(self) -> None:
        # Started by the first request, in the worker process itself (a thread does not
        # survive a fork).
        if self._flusher is None:
            with self._flush_lock:
                if self._flusher is None:
                    self._flusher = threading.Thread(target=self._flush_forever,
                                                     name="tradestats-metrics", daemon=True)
                    self._flusher.start()
                    # A worker that stops gracefully moves what is left: gunicorn's workers
                    # exit through atexit, granian's (multiprocessing) through its finalizers.
                    atexit.register(self.flush)
                    multiprocessing.util.Finalize(None, self.flush, exitpriority=10)

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the metrics must never stop being moved
                log.exception("moving request metrics failed")

    def exposition(self, environ: dict | None = None) -> bytes:
        self.flush()
        self.build_info.server = server_name(environ or {})
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every request, labelled by route template (not raw path: bounded)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        # In the WSGI environ, not req.context: that object is made on first use, per request.
        req.env[STARTED] = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource,
                         req_succeeded: bool) -> None:
        started = req.env.get(STARTED)
        if started is None:  # the request never reached process_request
            return
        method = req.method if req.method in falcon.COMBINED_METHODS else "other"
        self._metrics.request_answered(req.uri_template or UNMATCHED_ROUTE, method,
                                       resp.status_code, time.perf_counter() - started)


class MetricsResource:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = self._metrics.exposition(req.env)
