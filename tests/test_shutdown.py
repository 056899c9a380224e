"""Stop signals stop the server, every time: a stress loop of start/signal cycles, CPU busy.

A race in gunicorn's gthread quick shutdown hung about one SIGINT in four on a busy machine
(README, "Limits"), so one clean stop proves nothing: each case here runs many cycles while
other processes keep both cores busy. ``TRADESTATS_STOP_CYCLES`` sets the cycles per
case (CI runs the default; run hundreds by hand after touching workers, signals or sockets).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ServerProcess
from tradestats import limits

CYCLES = int(os.environ.get("TRADESTATS_STOP_CYCLES", "4"))
GRACE = 1
#: A stop may wait out the graceful timeout for a request in flight, plus the master's reaping.
STOP_WITHIN = GRACE + 3.0
SERVER_ARGS = ("--max-k", "2", "--log-level", "warning", "--graceful-timeout", str(GRACE))
BATCH = b'{"symbol": "X", "values": [1.0, 2.0]}'


@pytest.fixture(scope="module")
def busy_cpu():
    """Both cores kept busy, as on a loaded machine: the window of a race grows with latency."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(os.cpu_count() or 2)]
    yield
    for burner in burners:
        burner.kill()
        burner.wait()


def is_running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def wait_until_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [pid for pid in pids if is_running(pid)]
        if not left:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if is_running(pid)]


def raw_post(port: int, body: bytes, declared: int | None = None) -> socket.socket:
    head = (b"POST /add_batch/ HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (len(body) if declared is None else declared))
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(head + body)
    return connection


def just_closed(server: ServerProcess) -> list[socket.socket]:
    """The original race: a client closes right before the signal, so the worker is busy
    handing the closed keep-alive connection to its pool when the signal lands."""
    connection = raw_post(server.port, BATCH)
    connection.recv(4096)
    connection.close()
    return []


def idle_keep_alive(server: ServerProcess) -> list[socket.socket]:
    connection = raw_post(server.port, BATCH)
    connection.recv(4096)
    return [connection]


def request_in_flight(server: ServerProcess) -> list[socket.socket]:
    """A body announced but only half sent: the request can never finish."""
    return [raw_post(server.port, BATCH[:10], declared=len(BATCH))]


SCENARIOS = {"just-closed": just_closed, "idle-keep-alive": idle_keep_alive,
             "in-flight": request_in_flight}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_stop_signals_stop_the_server_every_time(server_kind, busy_cpu, tmp_path, scenario,
                                                   signum):
    for cycle in range(CYCLES):
        server = ServerProcess(server_kind, SERVER_ARGS, tmp_path / f"serve-{cycle}.log")
        workers = server.worker_pids()
        assert workers, "the master has no worker process"
        open_connections = SCENARIOS[scenario](server)
        started = time.monotonic()
        try:
            status = server.stop(signum)
        finally:
            for connection in open_connections:
                connection.close()
        elapsed = time.monotonic() - started
        assert status == 0, f"cycle {cycle}: exit status {status}\n{server.log}"
        assert elapsed < STOP_WITHIN, f"cycle {cycle}: stopping took {elapsed:.1f}s\n{server.log}"
        assert not wait_until_gone(workers, 2.0), f"cycle {cycle}: a worker outlived its master"


def test_default_grace_is_a_few_seconds(server_kind, tmp_path):
    """The shipped default, with a request in flight: the stop still comes within seconds."""
    server = ServerProcess(server_kind, ("--max-k", "2"), tmp_path / "serve.log")
    connection = request_in_flight(server)[0]
    started = time.monotonic()
    try:
        assert server.stop(signal.SIGTERM) == 0, server.log
    finally:
        connection.close()
    assert time.monotonic() - started < limits.SHUTDOWN_GRACE_SECONDS + 3.0, server.log


def test_no_worker_outlives_a_killed_master(server_kind, tmp_path):
    server = ServerProcess(server_kind, SERVER_ARGS, tmp_path / "serve.log")
    workers = server.worker_pids()
    assert workers
    server.process.kill()
    server.process.wait()
    assert not wait_until_gone(workers, 5.0), "a worker outlived its SIGKILLed master"
