"""HTTP benchmark: tradestats side by side with the stack's own limit.

One run starts two servers on free 127.0.0.1 ports, both under the same gunicorn configuration
(same worker class, one worker, same keep-alive and logging):

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

wrk: ``apt-get install wrk`` (Debian). Targets (2 cores): GET /stats/ >= 0.85 x limit req/s for
every k; POST >= 0.6 x limit req/s; p99 of GET /stats/ under 16 connections <= 2 ms.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import http.client
import json
import math
import multiprocessing
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from importlib import metadata
from pathlib import Path
from typing import Optional, Sequence

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"  # the only address this benchmark ever talks to

BATCH = 10_000
SYMBOLS = [f"BENCH{i}" for i in range(10)]
QUERY_SYMBOL = SYMBOLS[0]  # preloaded with 10**max_k prices; every /stats/ case queries it
INGEST_SYMBOL = QUERY_SYMBOL  # the POST cases append here: a full ring, i.e. steady state
BODY_VARIANTS = 4  # distinct 10,000-value bodies per symbol, sent in rotation

GET_STATS_TARGET = 0.85
POST_TARGET = 0.6
P99_TARGET_MS = 2.0
P99_TARGET_CONNECTIONS = 16

PRELOAD_CONNECTIONS = 4
PRELOAD_TIME_LIMIT_S = 1800
SERVER_START_TIMEOUT_S = 60
LOAD_REQUEST_CAP = 50_000_000  # per load generator process: a second bound besides time
STALL_TIMEOUT_S = 20.0


# --- request bodies -------------------------------------------------------------------------------

def price_walk(rng: random.Random, count: int, level: float) -> tuple[list[float], float]:
    """A random walk of trade prices with 2 decimals, kept within 100..10,000."""
    out = []
    for _ in range(count):
        level += rng.gauss(0.0, 0.5)
        if level < 100.0 or level > 10_000.0:
            level = 1000.0
        out.append(round(level, 2))
    return out, level


def batch_bodies(symbol: str, variants: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    level = 1000.0
    bodies = []
    for _ in range(variants):
        values, level = price_walk(rng, BATCH, level)
        bodies.append(json.dumps({"symbol": symbol, "values": values},
                                 separators=(",", ":")).encode())
    return bodies


def stats_path(symbol: str, k: int) -> str:
    return f"/stats/?symbol={symbol}&k={k}"


@dataclasses.dataclass(frozen=True)
class Load:
    """What one group of connections sends, each connection cycling through ``requests``."""

    method: str
    paths: tuple[str, ...]  # one per request (cycled together with bodies)
    bodies: tuple[bytes, ...] = ()  # empty for GET; else one per path
    values_per_request: int = 0

    def raw_requests(self, port: int) -> list[bytes]:
        out = []
        for i, path in enumerate(self.paths):
            head = f"{self.method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            if self.bodies:
                body = self.bodies[i]
                head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            else:
                body = b""
            out.append(head.encode() + b"\r\n" + body)
        return out


def post_load(symbols: Sequence[str], seed: int) -> Load:
    paths, bodies = [], []
    for n, symbol in enumerate(symbols):
        for body in batch_bodies(symbol, BODY_VARIANTS, seed + n):
            paths.append("/add_batch/")
            bodies.append(body)
    return Load("POST", tuple(paths), tuple(bodies), BATCH)


def get_load(symbol: str, ks: Sequence[int]) -> Load:
    return Load("GET", tuple(stats_path(symbol, k) for k in ks))


# --- results --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Result:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers, socket errors, timeouts
    values_per_request: int = 0
    server_cpu_s: float = float("nan")  # CPU seconds the server's processes used meanwhile
    other_cpu_s: float = float("nan")  # CPU seconds used by neither the server nor the load
    span_s: float = float("nan")  # wall time over which the two above were measured

    @property
    def server_cores(self) -> float:
        """How much of one core the server used: ~1.0 means its one worker was saturated."""
        return self.server_cpu_s / self.span_s if self.span_s > 0 else float("nan")

    @property
    def cpu_us_per_request(self) -> float:
        """Server CPU time per answered request: unlike req/s, barely moved by other load."""
        return self.server_cpu_s / self.requests * 1e6 if self.requests else float("nan")

    @property
    def other_cores(self) -> float:
        return self.other_cpu_s / self.span_s if self.span_s > 0 else float("nan")

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def values_per_s(self) -> float:
        return self.rps * self.values_per_request


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


# --- CPU accounting -------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (user, nice, system, irq, softirq, steal)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
        return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS
    except (OSError, ValueError):
        return float("nan")


def process_cpu_s(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    except (OSError, ValueError, IndexError):
        return float("nan")


def own_and_children_cpu_s() -> float:
    """This process, its threads and its reaped children (wrk, Python load processes)."""
    import resource
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class CpuMeter:
    """CPU used by one server, by us + our load generators, and by everything else, over a span."""

    def __init__(self, server_pids: Sequence[int]) -> None:
        self.server_pids = list(server_pids)

    def snapshot(self) -> tuple[float, ...]:
        return (time.monotonic(), machine_busy_s(),
                sum(process_cpu_s(p) for p in self.server_pids), own_and_children_cpu_s())

    @staticmethod
    def attribute(before: tuple[float, ...], after: tuple[float, ...], *results: "Result") -> None:
        wall, machine, server, ours = (b - a for a, b in zip(before, after))
        for result in results:
            result.span_s = wall
            result.server_cpu_s = server
            result.other_cpu_s = max(0.0, machine - server - ours)


def background_load(seconds: float = 1.0) -> float:
    """Cores busy with other work right now (nothing of ours is running yet)."""
    before, start = machine_busy_s(), time.monotonic()
    time.sleep(seconds)
    return (machine_busy_s() - before) / (time.monotonic() - start)


# --- load generator 1: wrk ------------------------------------------------------------------------

LUA_TEMPLATE = r"""
-- written by benchmarks/bench_http.py
local method = "{method}"
local paths = {{ {paths} }}
local body_files = {{ {body_files} }}
local reqs = {{}}
local n = 0

init = function(args)
  local headers = {{}}
  if #body_files > 0 then headers["Content-Type"] = "application/json" end
  for i, path in ipairs(paths) do
    local body = nil
    if #body_files > 0 then
      local f = assert(io.open(body_files[i], "rb"))
      body = f:read("*a")
      f:close()
    end
    reqs[i] = wrk.format(method, path, headers, body)
  end
end

request = function()
  n = n % #reqs + 1
  return reqs[n]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT {{\"requests\": %d, \"duration_us\": %d, \"p50_us\": %.1f, \"p99_us\": %.1f, "
    .. "\"errors\": %d}}\n",
    summary.requests, summary.duration, latency:percentile(50.0), latency:percentile(99.0),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for our ASCII


class WrkDriver:
    name = "wrk"

    def __init__(self, workdir: Path, children: "Children") -> None:
        self.wrk = shutil.which("wrk")
        self.workdir = workdir
        self.children = children
        self._scripts: dict[Load, Path] = {}
        self._scripts_lock = threading.Lock()  # the mixed run starts two wrk at once

    def version(self) -> str:
        proc = subprocess.run([self.wrk, "--version"], capture_output=True, text=True)
        first = (proc.stdout or proc.stderr).strip().splitlines()
        return first[0].split(" Copyright")[0] if first else "wrk"

    def _script(self, load: Load) -> Path:
        with self._scripts_lock:
            return self._write_script(load)

    def _write_script(self, load: Load) -> Path:
        if load not in self._scripts:
            index = len(self._scripts)
            body_files = []
            for i, body in enumerate(load.bodies):
                path = self.workdir / f"body-{index}-{i}.json"
                path.write_bytes(body)
                body_files.append(lua_string(str(path)))
            script = self.workdir / f"load-{index}.lua"
            script.write_text(LUA_TEMPLATE.format(
                method=load.method,
                paths=", ".join(lua_string(p) for p in load.paths),
                body_files=", ".join(body_files),
            ))
            self._scripts[load] = script
        return self._scripts[load]

    def run(self, port: int, load: Load, connections: int, seconds: int) -> Result:
        argv = [self.wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
                "-s", str(self._script(load)), f"http://{HOST}:{port}"]
        proc = self.children.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
        try:
            out, _ = proc.communicate(timeout=seconds + 60)
        finally:
            self.children.reap(proc)
        match = re.search(r"^BENCH_RESULT (.*)$", out, re.M)
        if proc.returncode != 0 or not match:
            raise RuntimeError(f"wrk failed (exit {proc.returncode}):\n{out}")
        data = json.loads(match.group(1))
        return Result(
            requests=data["requests"],
            seconds=data["duration_us"] / 1e6,
            p50_ms=data["p50_us"] / 1000.0,
            p99_ms=data["p99_us"] / 1000.0,
            errors=data["errors"],
            values_per_request=load.values_per_request,
        )


# --- load generator 2: Python processes -----------------------------------------------------------

def _py_load_process(port: int, raw_requests: list[bytes], connections: int, start_at: float,
                     stop_at: float, result_pipe) -> None:
    """One process driving ``connections`` keep-alive connections with a selector loop.

    Counts the responses completed between start_at and stop_at (wall clock, shared by all the
    processes); stops at stop_at, after LOAD_REQUEST_CAP responses, or when no byte moved for
    STALL_TIMEOUT_S.
    """
    import selectors
    import socket

    sel = selectors.DefaultSelector()
    latencies = array("d")
    errors = 0
    states = {}

    def open_connection(n):
        sock = socket.create_connection((HOST, port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        state = {"sock": sock, "next": n % len(raw_requests), "out": None, "in": bytearray(),
                 "sent": 0.0, "need": None, "status": 0}
        states[sock.fileno()] = state
        return state

    def send_next(state):
        raw = raw_requests[state["next"]]
        state["next"] = (state["next"] + 1) % len(raw_requests)
        state["out"] = memoryview(raw)
        state["in"] = bytearray()
        state["need"] = None
        state["sent"] = time.perf_counter()
        sel.register(state["sock"], selectors.EVENT_WRITE, state)

    try:
        conns = [open_connection(n) for n in range(connections)]
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)
        for state in conns:
            send_next(state)
        completed = 0
        last_progress = time.monotonic()
        while time.time() < stop_at and completed < LOAD_REQUEST_CAP:
            if time.monotonic() - last_progress > STALL_TIMEOUT_S:
                errors += 1
                break
            for key, mask in sel.select(timeout=0.2):
                state = key.data
                sock = state["sock"]
                if mask & selectors.EVENT_WRITE:
                    sent = sock.send(state["out"])
                    state["out"] = state["out"][sent:]
                    last_progress = time.monotonic()
                    if not len(state["out"]):
                        sel.modify(sock, selectors.EVENT_READ, state)
                    continue
                chunk = sock.recv(262144)
                last_progress = time.monotonic()
                if not chunk:  # the server closed the connection: count it, reconnect
                    errors += 1
                    sel.unregister(sock)
                    sock.close()
                    del states[key.fd]
                    send_next(open_connection(state["next"]))
                    continue
                buf = state["in"]
                buf += chunk
                if state["need"] is None:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    head = bytes(buf[:end]).decode("latin-1")
                    state["status"] = int(head.split(" ", 2)[1])
                    length = re.search(r"(?im)^content-length:\s*(\d+)", head)
                    state["need"] = end + 4 + (int(length.group(1)) if length else 0)
                if len(buf) < state["need"]:
                    continue
                now = time.perf_counter()
                if time.time() <= stop_at:
                    completed += 1
                    latencies.append(now - state["sent"])
                    if not 200 <= state["status"] < 400:
                        errors += 1
                sel.unregister(sock)
                send_next(state)
        result_pipe.send((completed, errors, latencies.tobytes()))
    except Exception as error:  # report, never hang the parent
        result_pipe.send((0, errors + 1, array("d").tobytes(), repr(error)))
    finally:
        for state in list(states.values()):
            state["sock"].close()
        result_pipe.close()


class PythonDriver:
    name = "python"
    connections_per_process = 4

    def __init__(self, children: "Children") -> None:
        self.children = children
        self.ctx = multiprocessing.get_context("spawn")

    def version(self) -> str:
        return (f"Python {platform.python_version()} multi-process keep-alive generator "
                f"({self.connections_per_process} connections per process)")

    def run(self, port: int, load: Load, connections: int, seconds: int) -> Result:
        raw = load.raw_requests(port)
        groups = [self.connections_per_process] * (connections // self.connections_per_process)
        if connections % self.connections_per_process:
            groups.append(connections % self.connections_per_process)
        start_at = time.time() + 1.0 + 0.2 * len(groups)  # all processes up and connected
        stop_at = start_at + seconds
        procs, pipes = [], []
        for group in groups:
            parent_end, child_end = self.ctx.Pipe(duplex=False)
            proc = self.ctx.Process(target=_py_load_process, daemon=True,
                                    args=(port, raw, group, start_at, stop_at, child_end))
            proc.start()
            child_end.close()
            self.children.add_process(proc)
            procs.append(proc)
            pipes.append(parent_end)
        requests = errors = 0
        latencies = array("d")
        try:
            for pipe in pipes:
                if not pipe.poll(stop_at - time.time() + STALL_TIMEOUT_S + 30):
                    raise RuntimeError("a load generator process did not report back")
                message = pipe.recv()
                requests += message[0]
                errors += message[1]
                latencies.frombytes(message[2])
                if len(message) > 3:
                    print(f"  load generator process failed: {message[3]}", file=sys.stderr)
        finally:
            for proc in procs:
                proc.join(timeout=5)
                self.children.discard_process(proc)
        ordered = sorted(latencies)
        return Result(requests, seconds, percentile(ordered, 50) * 1000,
                      percentile(ordered, 99) * 1000, errors, load.values_per_request)


# --- the servers and other children ---------------------------------------------------------------

class Children:
    """Every process this benchmark starts, so that all of them are stopped on any exit."""

    def __init__(self) -> None:
        self._popens: set[subprocess.Popen] = set()
        self._procs: set[multiprocessing.Process] = set()
        self._lock = threading.Lock()

    def popen(self, argv, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(argv, **kwargs)
        with self._lock:
            self._popens.add(proc)
        return proc

    def reap(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with self._lock:
            self._popens.discard(proc)

    def add_process(self, proc) -> None:
        with self._lock:
            self._procs.add(proc)

    def discard_process(self, proc) -> None:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
        with self._lock:
            self._procs.discard(proc)

    def stop_all(self) -> None:
        with self._lock:
            popens, procs = list(self._popens), list(self._procs)
        for proc in popens:
            self.reap(proc)
        for proc in procs:
            self.discard_process(proc)


class Server:
    """A gunicorn server started with port 0; its real port is read from its log."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0
        self.worker_pid = 0

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            # its own session: a Ctrl-C in the terminal reaches only us, and we stop it in order
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            listening = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", text)
            worker = re.search(r"Booting worker with pid: (\d+)", text)
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up:\n{text}")
            if listening and worker:
                self.port, self.worker_pid = int(listening.group(1)), int(worker.group(1))
                if self._healthy() and len(self.worker_pids()) >= self.expected_workers:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer /health in {SERVER_START_TIMEOUT_S} s:\n"
                           + self.log_path.read_text(errors="replace"))

    expected_workers = 1

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return [self.worker_pid]

    @property
    def pids(self) -> list[int]:
        """The master and every worker (gunicorn restarts none of them during a run)."""
        return [self.proc.pid, *self.worker_pids()] if self.proc else []

    def _healthy(self) -> bool:
        try:
            return request(self.port, "GET", "/health")[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # gunicorn master: graceful stop of its worker
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group we created for it at start
            self.proc.wait(timeout=5)


def request(port: int, method: str, path: str, body: Optional[bytes] = None,
            conn: Optional[http.client.HTTPConnection] = None) -> tuple[int, bytes]:
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


# --- preload --------------------------------------------------------------------------------------

def preload(port: int, symbol: str, prices: int, connections: int) -> tuple[int, float]:
    """POST ``prices`` (rounded up to whole batches) into ``symbol`` over a few keep-alive
    connections. Returns (batches, seconds)."""
    batches = max(1, math.ceil(prices / BATCH))
    bodies = batch_bodies(symbol, 16, seed=12345)
    lock = threading.Lock()
    state = {"next": 0, "failure": None}
    deadline = time.monotonic() + PRELOAD_TIME_LIMIT_S

    def worker() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        try:
            while time.monotonic() < deadline:
                with lock:
                    if state["next"] >= batches or state["failure"]:
                        return
                    n = state["next"]
                    state["next"] += 1
                status, reply = request(port, "POST", "/add_batch/", bodies[n % len(bodies)], conn)
                if status != 200:
                    with lock:
                        state["failure"] = f"HTTP {status}: {reply[:200]!r}"
                    return
        except OSError as error:
            with lock:
                state["failure"] = repr(error)
        finally:
            conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if state["failure"]:
        raise RuntimeError(f"preload failed: {state['failure']}")
    if state["next"] < batches:
        raise RuntimeError(f"preload did not finish in {PRELOAD_TIME_LIMIT_S} s")
    return batches, seconds


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
    parser.add_argument("--worker-class", default=None,
                        help="gunicorn worker class for both servers (default: tradestats-serve's)")
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
        argv = program + ["--host", HOST, "--port", "0", "--max-k", str(self.args.max_k),
                          "--max-symbols", str(len(SYMBOLS)), "--log-level", self.args.log_level,
                          "--workers", str(self.args.workers)]
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
             target_ratio: float, p99_limit_ms: Optional[float] = None) -> Case:
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
                      f"(gunicorn master pid {server.proc.pid}, worker pid {server.worker_pid})",
                      flush=True)
            self.worker_class = self.read_worker_class(ts)
            if self.read_worker_class(limit) != self.worker_class:
                raise RuntimeError("the two servers run different worker classes")
            print(f"worker class {self.worker_class}; load generator {self.driver.version()}")

            prices = 10 ** args.max_k
            print(f"preloading {prices:,} prices into {QUERY_SYMBOL} "
                  f"({PRELOAD_CONNECTIONS} keep-alive connections, {BATCH:,}-value batches)...",
                  flush=True)
            batches, seconds = preload(ts.port, QUERY_SYMBOL, prices, PRELOAD_CONNECTIONS)
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
                self.pair("POST /add_batch/", ingest, c, ts, limit, POST_TARGET)
            for k in ks if "get" in args.cases else ():
                load = get_load(QUERY_SYMBOL, [k])
                for c in args.connections:
                    self.pair(f"GET /stats/ k={k}", load, c, ts, limit, GET_STATS_TARGET,
                              P99_TARGET_MS if c == P99_TARGET_CONNECTIONS else None)
            if "mixed" in args.cases:
                self.run_mixed(ts, limit, ks)
        finally:
            for server in servers:
                server.stop()

    @staticmethod
    def read_worker_class(server: Server) -> str:
        match = re.search(r"Using worker: (\S+)", server.log_path.read_text(errors="replace"))
        return match.group(1) if match else "?"

    def run_mixed(self, ts: Server, limit: Server, ks: Sequence[int]) -> None:
        ingest = post_load(SYMBOLS, seed=100)
        queries = get_load(QUERY_SYMBOL, list(range(1, self.args.max_k + 1)))
        results = {}
        for server in (ts, limit):
            if self.args.warmup:
                self.concurrently(server, ingest, queries, self.args.warmup)
            meter = CpuMeter(server.pids)
            before = meter.snapshot()
            results[server.name] = self.concurrently(server, ingest, queries, self.args.duration)
            CpuMeter.attribute(before, meter.snapshot(), *results[server.name])
        (ts_post, ts_get), (lim_post, lim_get) = results[ts.name], results[limit.name]
        self.mixed = [("POST /add_batch/ (10 symbols)", ts_post, lim_post),
                      (f"GET /stats/ k=1..{self.args.max_k}", ts_get, lim_get)]
        print("mixed run: 4 connections POST into 10 symbols while 16 connections GET /stats/:")
        for what, t, lim in self.mixed:
            print(f"  {what}:")
            print(f"    tradestats {describe(t, per_request=False)}")
            print(f"    limit      {describe(lim, per_request=False)}")
            print(f"    ratio {t.rps / lim.rps if lim.rps else float('nan'):.2f}", flush=True)

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
                   threading.Thread(target=go, args=("get", queries, 16), daemon=True)]
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
            f"- worker class: {self.worker_class} ({self.args.workers} worker process(es) each, "
            "same gunicorn settings for both; tradestats on a file store)",
            f"- versions: Python {platform.python_version()}, falcon {package_version('falcon')}, "
            f"gunicorn {package_version('gunicorn')}, meinheld {package_version('meinheld')}, "
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
        misses = [c for c in self.cases if c.target != "ok"]
        noisy = [c for c in self.cases if max(c.ts.other_cores, c.limit.other_cores)
                 > NOISY_OTHER_CORES]
        lines += ["", f"Targets: GET /stats/ >= {GET_STATS_TARGET} x limit, POST >= {POST_TARGET}"
                      f" x limit, GET p99 at {P99_TARGET_CONNECTIONS} connections <= "
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
