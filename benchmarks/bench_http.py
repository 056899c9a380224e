"""HTTP benchmark: tradestats side by side with the stack's own limit.

One run starts two servers on free 127.0.0.1 ports, both with the same ``tradestats-serve``
configuration (same HTTP server, granian by default, same workers, threads and logging):

- ``tradestats-serve`` itself;
- ``benchmarks/limit_app.py``: a minimal Falcon app that parses the same JSON bodies with the same
  orjson handler and answers a constant stats body while storing nothing.

It preloads 10**max_k prices into one symbol (so its ring is full: the steady state), then drives
both servers with the same load from separate processes (``wrk`` when it is installed, else a
multi-process Python keep-alive load generator), tradestats then the limit app for each case:

- ``POST /add_batch/`` with 10,000-value bodies into the preloaded symbol, at each connection count;
- ``GET /stats/`` for k = 1, 4 and 8 (those up to --max-k), at each connection count;
- a mixed run: 4 connections ingesting into 10 symbols (9 of them new, so growing) while 16
  connections query stats (k = 1..max_k in turn), at the same time.

For each case it prints requests/s (and values/s for ingest), p50 and p99 latency and the ratio
tradestats / limit, then a markdown summary with the date, the machine and the exact command.
It also reports the server's CPU time per request (a figure that other load on the machine
barely moves) and how much CPU other processes used meanwhile ("other load"): cases where that
passes 0.15 cores are flagged as noisy. Both servers are stopped at the end, also on Ctrl-C,
SIGTERM or an error.

    .venv/bin/python benchmarks/bench_http.py                   # full run, about 6 minutes
    .venv/bin/python benchmarks/bench_http.py --wait-quiet 600  # same, once the machine is idle
    .venv/bin/python benchmarks/bench_http.py --quick           # smoke run, about 1.5 minutes

wrk: ``apt-get install wrk`` (Debian). Targets (2 cores): GET /stats/ >= 0.9 x limit req/s for
every k; POST >= 0.85 x limit req/s with server CPU per POST <= 1.3 x limit's; p99 of GET
/stats/ under 16 connections <= 2 ms; in the mixed run, GET p99 <= 3 x the same GETs alone and
POST p99 on disk <= 1.5 x the same tradestats in memory (a third server, --ephemeral). The load
modules: http_load.py (bodies, wrk and Python drivers, CPU meter), http_servers.py (processes).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Optional, Sequence

from http_load import (
    BATCH,
    HOST,
    Children,
    CpuMeter,
    Load,
    PythonDriver,
    Result,
    WrkDriver,
    background_load,
    get_load,
    post_load,
    stats_path,
)
from http_servers import PRELOAD_CONNECTIONS, Server, free_port, preload, request

HERE = Path(__file__).resolve().parent

SYMBOLS = [f"BENCH{i}" for i in range(10)]
QUERY_SYMBOL = SYMBOLS[0]  # preloaded with 10**max_k prices; every /stats/ case queries it
INGEST_SYMBOL = QUERY_SYMBOL  # the POST cases append here: a full ring, i.e. steady state

GET_STATS_TARGET = 0.9
POST_TARGET = 0.85
POST_CPU_TARGET = 1.3      # tradestats' server CPU per POST / the limit app's, at most
MIXED_GET_P99_TARGET = 3.0  # GET p99 while 4 connections POST / GET p99 alone, at most
DISK_POST_P99_TARGET = 1.5  # POST p99 on disk / in memory in the mixed run, at most
MIXED_GET_CONNECTIONS = 16
P99_TARGET_MS = 2.0
P99_TARGET_CONNECTIONS = 16



# --- the run --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Case:
    name: str
    connections: int
    ts: Result
    limit: Result
    target: str  # "", "ok" or "MISS ..."

    @property
    def ratio(self) -> float:
        return self.ts.rps / self.limit.rps if self.limit.rps else float("nan")

    @property
    def cpu_ratio(self) -> float:
        """limit's server CPU per request / tradestats': the ratio without other load's noise."""
        return self.limit.cpu_us_per_request / self.ts.cpu_us_per_request

    @property
    def cpu_cost(self) -> float:
        """tradestats' server CPU per request / limit's (the POST goal's form)."""
        return self.ts.cpu_us_per_request / self.limit.cpu_us_per_request


NOISY_OTHER_CORES = 0.15  # other processes' CPU use above which a figure is flagged
MAX_ATTEMPTS = 3  # with --wait-quiet: a case run under other load is repeated at most this often


def describe(r: Result, per_request: bool = True) -> str:
    values = f"  {fmt_rate(r.values_per_s)} values/s" if r.values_per_request else ""
    errors = f"  ERRORS {r.errors}" if r.errors else ""
    cpu = f"{r.cpu_us_per_request:,.0f} us/req, " if per_request else ""
    return (f"{r.rps:>9,.0f} req/s{values}  p50 {r.p50_ms:.3f} ms  p99 {r.p99_ms:.3f} ms  "
            f"server CPU {cpu}{r.server_cores:.2f} core  other load {r.other_cores:.2f} cores"
            f"{errors}")


def fmt_other(*results: Result) -> str:
    worst = max(r.other_cores for r in results)
    return f"{worst:.2f}" + (" (noisy)" if worst > NOISY_OTHER_CORES else "")


def fmt_rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    return f"{value:,.0f}"


def machine_description() -> tuple[int, str]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return os.cpu_count() or 0, model


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def command_line() -> str:
    exe = sys.executable
    try:
        rel = os.path.relpath(exe)
        if not rel.startswith(".."):
            exe = rel
    except ValueError:
        pass
    return shlex.join([exe, *sys.argv])


def find_serve() -> str:
    beside = Path(sys.executable).parent / "tradestats-serve"
    if beside.exists():
        return str(beside)
    found = shutil.which("tradestats-serve")
    if not found:
        raise SystemExit("tradestats-serve not found: run `make setup` and use .venv/bin/python")
    return found


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per case")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of the same load before each measured case (0: none)")
    parser.add_argument("--max-k", type=int, default=8, choices=range(1, 10), metavar="{1..9}",
                        help="the servers' --max-k; 10**max_k prices are preloaded; "
                        "GET cases use k in {1, 4, 8} up to max_k, and max_k")
    parser.add_argument("--connections", default="1,4,16",
                        help="comma-separated connection counts for the POST and GET cases")
    parser.add_argument("--server", choices=("granian", "gunicorn"), default="granian",
                        help="what serves HTTP, for both servers")
    parser.add_argument("--worker-class", default=None, choices=("meinheld", "gthread"),
                        help="with --server gunicorn: its worker class for both servers")
    parser.add_argument("--log-level", default="info", help="both servers' --log-level")
    parser.add_argument("--store", choices=("disk", "memory"), default="disk",
                        help="tradestats' data directory: on disk beside the logs, or "
                        "--ephemeral (in /dev/shm: no writeback to a disk)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes of both servers (tradestats' share one data dir)")
    parser.add_argument("--load-generator", choices=("auto", "wrk", "python"), default="auto",
                        help="auto: wrk when installed, else the Python generator")
    parser.add_argument("--cases", default="post,get,mixed",
                        help="which groups to run, comma-separated from post, get, mixed")
    parser.add_argument("--wait-quiet", type=int, default=0, metavar="SECONDS",
                        help="on a shared machine: wait, in all at most this long, for other "
                        f"processes to use less than {NOISY_OTHER_CORES} cores before the run, "
                        "and repeat a case measured under other load (at most "
                        f"{MAX_ATTEMPTS} attempts in all); a case still noisy is flagged")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: --duration 2 --max-k 4 (unless given explicitly)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the servers' logs and wrk scripts (their folder is printed)")
    args = parser.parse_args(argv)
    given = set(argv if argv is not None else sys.argv[1:])
    if args.quick:
        if not any(a.startswith("--duration") for a in given):
            args.duration = 2
        if not any(a.startswith("--max-k") for a in given):
            args.max_k = 4
    try:
        args.connections = sorted({int(c) for c in args.connections.split(",") if c.strip()})
    except ValueError:
        parser.error("--connections: comma-separated integers, e.g. 1,4,16")
    if not args.connections or min(args.connections) < 1 or max(args.connections) > 1000:
        parser.error("--connections: each between 1 and 1000")
    if args.duration < 1 or args.duration > 600:
        parser.error("--duration: 1..600 seconds")
    args.cases = {c.strip() for c in args.cases.split(",") if c.strip()}
    if not args.cases or not args.cases <= {"post", "get", "mixed"}:
        parser.error("--cases: comma-separated from post, get, mixed")
    if args.wait_quiet < 0 or args.wait_quiet > 3600:
        parser.error("--wait-quiet: 0..3600 seconds")
    if args.warmup < 0 or args.warmup > 60:
        parser.error("--warmup: 0..60 seconds")
    return args


def stats_ks(max_k: int) -> list[int]:
    return sorted({k for k in (1, 4, 8) if k <= max_k} | {max_k})


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, children: Children) -> None:
        self.args = args
        self.workdir = workdir
        self.children = children
        self.cases: list[Case] = []
        self.mixed: list[tuple[str, Result, Result]] = []  # (what, tradestats, limit)
        self.gets_alone: Optional[Result] = None   # the mixed run's queries with no POST
        self.memory_post: Optional[Result] = None  # the mixed run's POSTs, in memory
        self.memory_get: Optional[Result] = None   # ... and its GETs
        self.preload_info = ""
        self.background = float("nan")
        self.quiet_deadline = 0.0
        self.worker_class = "?"
        if args.load_generator == "wrk" or (args.load_generator == "auto" and shutil.which("wrk")):
            if not shutil.which("wrk"):
                raise SystemExit("wrk is not installed (apt-get install wrk)")
            self.driver = WrkDriver(workdir, children)
        else:
            self.driver = PythonDriver(children)

    def server_argv(self, program: list[str]) -> list[str]:
        argv = program + ["--host", HOST, "--port", str(free_port()),
                          "--max-k", str(self.args.max_k), "--max-symbols", str(len(SYMBOLS)),
                          "--log-level", self.args.log_level, "--workers", str(self.args.workers),
                          "--server", self.args.server]
        if self.args.worker_class:
            argv += ["--worker-class", self.args.worker_class]
        return argv

    def wait_for_quiet(self) -> bool:
        """Wait (within --wait-quiet's budget, shared by the whole run) until other processes use
        less than NOISY_OTHER_CORES; True once they do."""
        left = self.quiet_deadline - time.monotonic()
        if left <= 0:
            return False
        print(f"other load on the machine; waiting up to {left:.0f} s for it to drop...",
              flush=True)
        while True:
            left = self.quiet_deadline - time.monotonic()
            if left <= 0:
                return False
            self.background = background_load(max(0.5, min(5.0, left)))
            if self.background <= NOISY_OTHER_CORES:
                return True

    def measure(self, server: Server, load: Load, connections: int) -> Result:
        if self.args.warmup:
            self.driver.run(server.port, load, connections, self.args.warmup)
        meter = CpuMeter(server.pids)
        before = meter.snapshot()
        result = self.driver.run(server.port, load, connections, self.args.duration)
        CpuMeter.attribute(before, meter.snapshot(), result)
        return result

    def pair(self, name: str, load: Load, connections: int, ts: Server, limit: Server,
             target_ratio: float, p99_limit_ms: Optional[float] = None,
             cpu_cost_limit: Optional[float] = None) -> Case:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            ts_result = self.measure(ts, load, connections)
            limit_result = self.measure(limit, load, connections)
            other = max(ts_result.other_cores, limit_result.other_cores)
            if other <= NOISY_OTHER_CORES or attempt == MAX_ATTEMPTS or not self.wait_for_quiet():
                break
            print(f"{name}, {connections} connections: other load {other:.2f} cores; "
                  f"repeating it now that the machine is quiet", flush=True)
        case = Case(name, connections, ts_result, limit_result, "")
        misses = []
        if case.ratio < target_ratio:
            misses.append(f"ratio < {target_ratio}")
        if p99_limit_ms is not None and ts_result.p99_ms > p99_limit_ms:
            misses.append(f"p99 > {p99_limit_ms:g} ms")
        if cpu_cost_limit is not None and case.cpu_cost > cpu_cost_limit:
            misses.append(f"CPU/request > {cpu_cost_limit:g} x limit")
        if ts_result.errors or limit_result.errors:
            misses.append(f"ERRORS {ts_result.errors}/{limit_result.errors}")
        case.target = "MISS: " + ", ".join(misses) if misses else "ok"
        self.cases.append(case)
        print(f"{name}, {connections} connection{'s' if connections > 1 else ''}:")
        print(f"  tradestats {describe(ts_result)}")
        print(f"  limit      {describe(limit_result)}")
        print(f"  ratio {case.ratio:.2f} (by CPU per request {case.cpu_ratio:.2f})  {case.target}",
              flush=True)
        return case

    def run(self) -> None:
        args = self.args
        where = (["--ephemeral"] if args.store == "memory"
                 else ["--data-dir", str(self.workdir / "data")])
        ts = Server("tradestats-serve", self.server_argv([find_serve()]) + where,
                    self.workdir / "tradestats-serve.log")
        limit = Server("limit app", self.server_argv([sys.executable,
                                                      str(HERE / "limit_app.py")]),
                       self.workdir / "limit_app.log")
        servers = [ts, limit]
        # The mixed run's disk-stall goal: the same tradestats in memory, preloaded alike.
        in_memory = None
        if "mixed" in args.cases and args.store == "disk":
            in_memory = Server("tradestats-serve (memory)",
                               self.server_argv([find_serve()]) + ["--ephemeral"],
                               self.workdir / "tradestats-memory.log")
            servers.append(in_memory)
        for server in servers:
            server.expected_workers = args.workers
        self.quiet_deadline = time.monotonic() + self.args.wait_quiet
        self.background = background_load()
        if self.background > NOISY_OTHER_CORES:
            self.wait_for_quiet()
        print(f"other load on the machine: {self.background:.2f} cores"
              + ("  (warning: figures will be noisy)" if self.background > NOISY_OTHER_CORES
                 else ""), flush=True)
        try:
            for server in servers:
                server.start()
                print(f"started {server.name} on {HOST}:{server.port} "
                      f"(master pid {server.proc.pid}, worker pids {server.worker_pids()})",
                      flush=True)
            self.worker_class = self.read_server_name(ts)
            if self.read_server_name(limit) != self.worker_class:
                raise RuntimeError("the two servers run different HTTP servers")
            print(f"HTTP server {self.worker_class}; load generator {self.driver.version()}")

            prices = 10 ** args.max_k
            print(f"preloading {prices:,} prices into {QUERY_SYMBOL} "
                  f"({PRELOAD_CONNECTIONS} keep-alive connections, {BATCH:,}-value batches)...",
                  flush=True)
            batches, seconds = preload(ts.port, QUERY_SYMBOL, prices, PRELOAD_CONNECTIONS)
            if in_memory is not None:
                preload(in_memory.port, QUERY_SYMBOL, prices, PRELOAD_CONNECTIONS)
            self.preload_info = (f"{batches * BATCH:,} prices in {seconds:.1f} s "
                                 f"({batches / seconds:,.0f} batches/s, "
                                 f"{batches * BATCH / seconds / 1e6:.2f} M values/s)")
            print(f"preload: {self.preload_info}", flush=True)
            ks = stats_ks(args.max_k)
            for k in ks:
                status, body = request(ts.port, "GET", stats_path(QUERY_SYMBOL, k))
                if status != 200:
                    raise RuntimeError(f"GET {stats_path(QUERY_SYMBOL, k)} -> {status} {body!r}")

            ingest = post_load([INGEST_SYMBOL], seed=1)
            for c in args.connections if "post" in args.cases else ():
                self.pair("POST /add_batch/", ingest, c, ts, limit, POST_TARGET,
                          cpu_cost_limit=POST_CPU_TARGET)
            for k in ks if "get" in args.cases else ():
                load = get_load(QUERY_SYMBOL, [k])
                for c in args.connections:
                    self.pair(f"GET /stats/ k={k}", load, c, ts, limit, GET_STATS_TARGET,
                              P99_TARGET_MS if c == P99_TARGET_CONNECTIONS else None)
            if "mixed" in args.cases:
                self.run_mixed(ts, limit, in_memory)
        finally:
            for server in servers:
                server.stop()

    @staticmethod
    def read_server_name(server: Server) -> str:
        """What the start-up line names: "granian" or "gunicorn (meinheld workers)"."""
        match = re.search(r"(?:tradestats \S+|limit app \(bench_http.py\)): ([^,]+),",
                          server.log_path.read_text(errors="replace"))
        return match.group(1) if match else "?"

    def run_mixed(self, ts: Server, limit: Server, in_memory: Optional[Server]) -> None:
        """GETs alone, then GETs while 4 connections POST into 10 symbols (9 of them new, so
        growing: first fills), on tradestats (disk and, if given, memory) and the limit app."""
        ingest = post_load(SYMBOLS, seed=100)
        queries = get_load(QUERY_SYMBOL, list(range(1, self.args.max_k + 1)))
        self.gets_alone = self.measure(ts, queries, MIXED_GET_CONNECTIONS)
        results = {}
        for server in [s for s in (ts, in_memory, limit) if s is not None]:
            if self.args.warmup:
                self.concurrently(server, ingest, queries, self.args.warmup)
            meter = CpuMeter(server.pids)
            before = meter.snapshot()
            results[server.name] = self.concurrently(server, ingest, queries, self.args.duration)
            CpuMeter.attribute(before, meter.snapshot(), *results[server.name])
        (ts_post, ts_get), (lim_post, lim_get) = results[ts.name], results[limit.name]
        self.mixed = [("POST /add_batch/ (10 symbols)", ts_post, lim_post),
                      (f"GET /stats/ k=1..{self.args.max_k}", ts_get, lim_get)]
        if in_memory is not None:
            self.memory_post, self.memory_get = results[in_memory.name]
        print(f"mixed run: 4 connections POST into 10 symbols while {MIXED_GET_CONNECTIONS} "
              "connections GET /stats/:")
        print(f"  GET /stats/ alone: tradestats {describe(self.gets_alone)}")
        for what, t, lim in self.mixed:
            print(f"  {what}:")
            print(f"    tradestats {describe(t, per_request=False)}")
            print(f"    limit      {describe(lim, per_request=False)}")
            print(f"    ratio {t.rps / lim.rps if lim.rps else float('nan'):.2f}", flush=True)
        if self.memory_post is not None:
            print(f"  POST in memory: {describe(self.memory_post, per_request=False)}")
            print(f"  GET in memory:  {describe(self.memory_get, per_request=False)}")
        for line in self.mixed_goals():
            print(f"  {line}", flush=True)

    def mixed_goals(self) -> list[str]:
        """The mixed run's two goals, each with its measured ratio."""
        if not self.mixed:
            return []
        ts_post, ts_get = self.mixed[0][1], self.mixed[1][1]
        get_ratio = ts_get.p99_ms / self.gets_alone.p99_ms
        lines = [f"GET p99 while POSTing / alone: {ts_get.p99_ms:.2f} / "
                 f"{self.gets_alone.p99_ms:.2f} ms = {get_ratio:.2f} "
                 f"({'ok' if get_ratio <= MIXED_GET_P99_TARGET else 'MISS'}: goal <= "
                 f"{MIXED_GET_P99_TARGET:g})"]
        if self.memory_post is not None:
            disk_ratio = ts_post.p99_ms / self.memory_post.p99_ms
            lines.append(f"POST p99 on disk / in memory: {ts_post.p99_ms:.2f} / "
                         f"{self.memory_post.p99_ms:.2f} ms = {disk_ratio:.2f} "
                         f"({'ok' if disk_ratio <= DISK_POST_P99_TARGET else 'MISS'}: goal <= "
                         f"{DISK_POST_P99_TARGET:g})")
        return lines

    def concurrently(self, server: Server, ingest: Load, queries: Load,
                     seconds: int) -> tuple[Result, Result]:
        out: dict[str, Result] = {}
        failures: list[BaseException] = []

        def go(key: str, load: Load, connections: int) -> None:
            try:
                out[key] = self.driver.run(server.port, load, connections, seconds)
            except BaseException as error:  # re-raised below in the main thread
                failures.append(error)

        threads = [threading.Thread(target=go, args=("post", ingest, 4), daemon=True),
                   threading.Thread(target=go, args=("get", queries, MIXED_GET_CONNECTIONS), daemon=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        return out["post"], out["get"]

    # --- report ---

    def report(self) -> str:
        args = self.args
        cores, model = machine_description()
        lines = [
            "",
            f"## HTTP benchmark: tradestats vs the limit app ({datetime.date.today().isoformat()})",
            "",
            f"- machine: {cores} cores, {model}, Linux {platform.release()}",
            f"- HTTP server: {self.worker_class} ({self.args.workers} worker process(es) each, "
            "the same settings for both; tradestats on a file store)",
            f"- versions: Python {platform.python_version()}, falcon {package_version('falcon')}, "
            f"granian {package_version('granian')}, gunicorn {package_version('gunicorn')}, "
            f"meinheld {package_version('meinheld')}, "
            f"orjson {package_version('orjson')}",
            f"- load: {self.driver.version()}, same host; {args.duration} s per case after "
            f"{args.warmup} s warm-up; POST bodies {BATCH:,} values",
            f"- preload: {self.preload_info}",
            f"- other load on the machine before the run: {self.background:.2f} cores "
            "(\"other load\" below: CPU used meanwhile by processes that are neither the server "
            "nor the load generator)",
            f"- command: `{command_line()}`",
            "",
            "| case | conns | tradestats req/s | values/s | p50 ms | p99 ms | CPU us/req "
            "| limit req/s | limit p50 ms | limit p99 ms | limit CPU us/req | ratio "
            "| other load (cores) | target |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
            "| ---: | --- |",
        ]
        for case in self.cases:
            t, lim = case.ts, case.limit
            values = fmt_rate(t.values_per_s) if t.values_per_request else ""
            lines.append(
                f"| {case.name} | {case.connections} | {t.rps:,.0f} | {values} | {t.p50_ms:.3f} "
                f"| {t.p99_ms:.3f} | {t.cpu_us_per_request:,.0f} | {lim.rps:,.0f} "
                f"| {lim.p50_ms:.3f} | {lim.p99_ms:.3f} | {lim.cpu_us_per_request:,.0f} "
                f"| {case.ratio:.2f} | {fmt_other(t, lim)} | {case.target} |")
        if self.mixed:
            lines += [
                "",
                "Mixed: 4 connections POST into 10 symbols while 16 connections GET /stats/ "
                f"(k = 1..{args.max_k} in turn), at the same time:",
                "",
                "| stream | tradestats req/s | values/s | p50 ms | p99 ms | limit req/s "
                "| limit p99 ms | ratio | other load (cores) |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for what, t, lim in self.mixed:
                values = fmt_rate(t.values_per_s) if t.values_per_request else ""
                ratio = t.rps / lim.rps if lim.rps else float("nan")
                lines.append(f"| {what} | {t.rps:,.0f} | {values} | {t.p50_ms:.3f} "
                             f"| {t.p99_ms:.3f} | {lim.rps:,.0f} | {lim.p99_ms:.3f} | {ratio:.2f} "
                             f"| {fmt_other(t, lim)} |")
        if self.mixed:
            lines += ["", f"Mixed-run goals ({MIXED_GET_CONNECTIONS} connections GET alone: "
                          f"{self.gets_alone.rps:,.0f} req/s, p99 {self.gets_alone.p99_ms:.3f} ms):",
                      ""] + [f"- {line}" for line in self.mixed_goals()]
            if self.memory_post is not None:
                m = self.memory_post
                lines.append(f"- in memory, same mixed load: POST {m.rps:,.0f} req/s, p50 "
                             f"{m.p50_ms:.3f} ms, p99 {m.p99_ms:.3f} ms; GET "
                             f"{self.memory_get.rps:,.0f} req/s, p99 {self.memory_get.p99_ms:.3f} ms")
        misses = [c for c in self.cases if c.target != "ok"]
        noisy = [c for c in self.cases if max(c.ts.other_cores, c.limit.other_cores)
                 > NOISY_OTHER_CORES]
        lines += ["", f"Targets: GET /stats/ >= {GET_STATS_TARGET} x limit, POST >= {POST_TARGET}"
                      f" x limit with CPU/POST <= {POST_CPU_TARGET} x limit's, GET p99 at {P99_TARGET_CONNECTIONS} connections <= "
                      f"{P99_TARGET_MS:g} ms: "
                      + ("all met" if not misses else f"{len(misses)} case(s) missed")]
        if noisy:
            lines.append(f"Warning: {len(noisy)} case(s) ran while other processes used more than "
                         f"{NOISY_OTHER_CORES} cores; their req/s and latencies understate what "
                         "a quiet machine gives (CPU us/req is the robust figure).")
        return "\n".join(lines)

    def to_json(self) -> dict:
        def result(r: Result) -> dict:
            return {"requests": r.requests, "seconds": r.seconds, "rps": r.rps,
                    "values_per_s": r.values_per_s, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
                    "errors": r.errors, "server_cpu_us_per_request": r.cpu_us_per_request,
                    "server_cores": r.server_cores, "other_cores": r.other_cores}
        cores, model = machine_description()
        return {
            "date": datetime.date.today().isoformat(), "cores": cores, "cpu": model,
            "worker_class": self.worker_class, "load_generator": self.driver.version(),
            "command": command_line(), "preload": self.preload_info,
            "background_cores": self.background,
            "cases": [{"case": c.name, "connections": c.connections, "tradestats": result(c.ts),
                       "limit": result(c.limit), "ratio": c.ratio, "target": c.target}
                      for c in self.cases],
            "mixed": [{"stream": w, "tradestats": result(t), "limit": result(lim)}
                      for w, t, lim in self.mixed],
        }


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    children = Children()

    def on_term(signum, frame):
        raise KeyboardInterrupt  # unwinds through the finally blocks that stop the servers

    signal.signal(signal.SIGTERM, on_term)
    workdir = Path(tempfile.mkdtemp(prefix="bench_http-"))
    bench = None
    try:
        bench = Bench(args, workdir, children)
        started = time.monotonic()
        bench.run()
        print(bench.report())
        print(f"\n(total time {time.monotonic() - started:.0f} s)")
        if args.json:
            args.json.write_text(json.dumps(bench.to_json(), indent=2) + "\n")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: servers stopped", file=sys.stderr)
        return 130
    finally:
        children.stop_all()
        if args.keep_logs:
            print(f"logs and scripts kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

