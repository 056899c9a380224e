"""The processes of benchmarks/bench_http.py: every child it starts (stopped on any exit), the
two servers under test, plain requests, and the preload of a symbol."""
from __future__ import annotations

import http.client
import math
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Optional


from http_load import BATCH, HOST, batch_bodies


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]

SERVER_START_TIMEOUT_S = 60
PRELOAD_CONNECTIONS = 4
PRELOAD_TIME_LIMIT_S = 1800


class Server:
    """A ``tradestats-serve``-like process on a free port; its worker pids are its children."""

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
            # granian says "Spawning worker-1 with PID: N", gunicorn "Booting worker with pid: N"
            worker = re.search(r"(?:Booting worker with pid|Spawning worker-\d+ with PID): (\d+)",
                               text)
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
        """The master and every worker (none is restarted during a run)."""
        return [self.proc.pid, *self.worker_pids()] if self.proc else []

    def _healthy(self) -> bool:
        try:
            return request(self.port, "GET", "/health")[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # the master: graceful stop of its workers
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


