"""Load for benchmarks/bench_http.py: request bodies, wrk and a Python load generator, the
CPU meter (server CPU per request, other processes' CPU meanwhile) and the results they give."""
from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from array import array
from pathlib import Path
from typing import Sequence


HOST = "127.0.0.1"  # the only address this benchmark ever talks to
BATCH = 10_000
LOAD_REQUEST_CAP = 50_000_000  # per load generator process: a second bound besides time
STALL_TIMEOUT_S = 20.0
BODY_VARIANTS = 4  # distinct 10,000-value bodies per symbol, sent in rotation


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
