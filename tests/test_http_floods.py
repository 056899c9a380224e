"""Hostile HTTP over raw sockets: slow clients, floods and exhausted resources (issues #9, #15).

A client that dribbles, stops reading or floods costs a connection slot and a bounded buffer,
never another client's time: while it runs, an honest client's p99 is measured against its p99
alone. Running out of descriptors or memory leaves the worker serving.
"""
from __future__ import annotations

import os
import resource
import select
import socket
import statistics
import threading
import time

import pytest

from conftest import ServerProcess, stop_cleanly
from hostile import (
    HARDENED_SERVERS,
    assert_nothing_stored,
    batch,
    connect,
    cpu_ticks,
    get_request,
    p99,
    post_head,
    post_request,
    probe_latencies,
    start_hardened,
    stop_hardened,
    wait_until_idle,
)
from test_http import get_stats, fresh_symbol, post_batch
from tradestats import limits, messages

#: An honest client may be this much slower (p99) while the attack runs than alone.
SLOWER_BY_AT_MOST = 0.010


@pytest.fixture(scope="module", params=HARDENED_SERVERS)
def hardened_server(request, tmp_path_factory):
    server = start_hardened(request.param, tmp_path_factory.mktemp("floods") / "serve.log")
    yield server
    stop_hardened(server)


def status_bytes(pid: int, field: str) -> int:
    """A size from /proc/PID/status: VmRSS (resident) or VmSize (address space)."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def test_hundreds_of_dribbling_clients_leave_other_clients_fast(hardened_server):
    """300 slowloris connections (150 dribbling heads, 150 dribbling bodies of declared batches):
    another client's p99 stays within a few ms of its p99 alone, and no half-sent batch is
    stored."""
    alone = p99(probe_latencies(hardened_server, 400))
    symbol = fresh_symbol("SLOW")
    body = batch(symbol)
    slow_head = post_request(symbol)[:40]
    slow_body = post_head(b"Content-Length: %d\r\n" % len(body))
    clients = []
    for index in range(300):
        client = connect(hardened_server)
        client.sendall(slow_head[:1] if index % 2 else slow_body)
        clients.append(client)
    stop = threading.Event()

    def dribble():
        offset = 1
        while not stop.wait(0.05):
            for index, client in enumerate(clients):
                piece = slow_head[offset:offset + 1] if index % 2 else body[offset:offset + 1]
                if piece:
                    client.send(piece)
            offset += 1

    dribbler = threading.Thread(target=dribble)
    dribbler.start()
    try:
        time.sleep(0.3)
        loaded = p99(probe_latencies(hardened_server, 400))
    finally:
        stop.set()
        dribbler.join()
        for client in clients:
            client.close()
    # The machine's noise floor: the worse of the probes before and after the load.
    alone = max(alone, p99(probe_latencies(hardened_server, 400)))
    print(f"slowloris: p99 alone {alone * 1e3:.2f} ms, with 300 dribblers {loaded * 1e3:.2f} ms")
    assert loaded < alone + SLOWER_BY_AT_MOST
    assert_nothing_stored(hardened_server, symbol)


def test_clients_that_stop_reading_leave_other_clients_fast(hardened_server):
    """20 clients pipeline large responses (GET /prices/, 10,000 prices each) and never read."""
    symbol = fresh_symbol("BIG")
    assert post_batch(hardened_server, symbol, [float(i) for i in range(10_000)]).status == 200
    alone = p99(probe_latencies(hardened_server, 300))
    request = get_request(f"/prices/?symbol={symbol}&n=10000")
    readers = []
    for _ in range(20):
        client = connect(hardened_server)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.sendall(request * 50)
        readers.append(client)
    try:
        # Until the socket buffers are full the worker is still producing responses for them;
        # the case under test begins when they are stalled and it has nothing left to do.
        wait_until_idle(hardened_server.worker_pids()[0])
        loaded = p99(probe_latencies(hardened_server, 300))
    finally:
        for client in readers:
            client.close()
    alone = max(alone, p99(probe_latencies(hardened_server, 300)))
    print(f"stalled readers: p99 alone {alone * 1e3:.2f} ms, with 20 {loaded * 1e3:.2f} ms")
    assert loaded < alone + SLOWER_BY_AT_MOST


def flood_while_probing(server: ServerProcess, start_flood, seconds: float = 3.0) -> list[float]:
    """Honest probes, one at a time, while ``start_flood(stop_event)`` runs in threads."""
    stop = threading.Event()
    threads = start_flood(stop)
    try:
        time.sleep(0.5)
        latencies = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            latencies.extend(probe_latencies(server, 20))
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    return latencies


def test_a_flood_of_empty_lines_leaves_honest_probes_answered(hardened_server):
    """32 connections send 800 KB of CRLF each, then 2 bytes every 2 ms: once, no honest probe
    was answered in 15 s."""

    def start_flood(stop):
        def flood():
            try:
                with connect(hardened_server) as connection:
                    connection.sendall(b"\r\n" * 400_000)
                    while not stop.wait(0.002):
                        connection.send(b"\r\n")
            except OSError:
                pass  # refused and closed: what should happen
        threads = [threading.Thread(target=flood) for _ in range(32)]
        for thread in threads:
            thread.start()
        return threads

    latencies = flood_while_probing(hardened_server, start_flood)
    print(f"CRLF flood: {len(latencies)} probes, max {max(latencies) * 1e3:.1f} ms")
    assert max(latencies) < 1.0


def test_connections_streaming_pipelined_requests_leave_honest_probes_answered(hardened_server):
    """Four connections stream pipelined requests while reading the answers: once, one probe in
    seven was answered in 40 s."""
    symbol = fresh_symbol("STREAM")
    assert post_batch(hardened_server, symbol, list(range(10))).status == 200
    burst = (get_request(f"/stats/?symbol={symbol}&k=1") + post_request(symbol)) * 50

    def start_flood(stop):
        def stream():
            try:
                with connect(hardened_server) as connection:
                    connection.setblocking(False)
                    while not stop.is_set():
                        _, writable, _ = select.select([], [connection], [], 0.05)
                        if writable:
                            try:
                                connection.send(burst)
                            except BlockingIOError:
                                pass
                        try:
                            while connection.recv(1 << 20):
                                pass
                        except BlockingIOError:
                            pass
            except OSError:
                pass
        threads = [threading.Thread(target=stream) for _ in range(4)]
        for thread in threads:
            thread.start()
        return threads

    latencies = flood_while_probing(hardened_server, start_flood)
    print(f"pipelining flood: {len(latencies)} probes, p50 "
          f"{statistics.median(latencies) * 1e3:.1f} ms, max {max(latencies) * 1e3:.1f} ms")
    assert max(latencies) < 1.0


def test_memory_per_connection_is_bounded(hardened_server):
    """1,000 connections each send 60 KB of a head and stop: the worker holds at most one read
    buffer each (limits.HTTP1_BUFFER_BYTES). Once, 3,000 such heads of 800 KB took 1.26 GB."""
    (worker,) = hardened_server.worker_pids()
    before = status_bytes(worker, "VmRSS")
    clients = []
    head = b"GET /health HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"p" * 60_000
    try:
        for _ in range(1000):
            client = connect(hardened_server)
            client.sendall(head)
            clients.append(client)
        time.sleep(1.0)
        grown = status_bytes(worker, "VmRSS") - before
        assert hardened_server.request("GET", "/health").status == 200
    finally:
        for client in clients:
            client.close()
    print(f"1,000 unfinished 60 KB heads: worker RSS grew {grown / 2**20:.1f} MiB")
    assert grown < 1000 * limits.HTTP1_BUFFER_BYTES * 1.5


def test_heads_that_do_not_arrive_in_time_close_their_connections(tmp_path):
    """A dribbled head, a connection that never speaks, a kept-alive one that falls silent: each
    is closed quietly after --request-timeout (the app never saw a request to answer)."""
    server = start_hardened("granian", tmp_path / "serve.log", "--request-timeout", "1")
    try:
        started = time.monotonic()
        with connect(server) as slow, connect(server) as silent, connect(server) as idle:
            idle.sendall(get_request("/health"))
            assert idle.recv(4096).startswith(b"HTTP/1.1 200 ")
            slow.sendall(b"GET /health HTTP/1.1\r\nHo")
            for connection in (slow, silent, idle):
                assert connection.recv(4096) == b""
        assert time.monotonic() - started < 1 + 1.5
        assert server.request("GET", "/health").status == 200
    finally:
        stop_hardened(server)


def test_a_head_longer_than_any_accepted_is_431_without_waiting_for_its_end(hardened_server):
    with connect(hardened_server) as connection:
        try:
            connection.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 1_000_000)
        except OSError:
            pass  # the server may answer and close before it has read everything
        reply = connection.recv(4096)
    assert reply.startswith(b"HTTP/1.1 431 "), reply


FD_LIMIT = 128


def limit_descriptors():
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def test_out_of_descriptors_queues_connections_and_keeps_serving(tmp_path):
    """With 128 descriptors the worker takes fewer connections than it has descriptors for;
    the rest wait in the listen backlog. It never meets EMFILE (on which granian would retry
    accept in a busy loop), keeps serving what it accepted, and serves the waiting ones as
    descriptors free up."""
    server = start_hardened("granian", tmp_path / "serve.log", "--max-symbols", "10",
                            preexec_fn=limit_descriptors)
    try:
        (worker,) = server.worker_pids()
        kept = server.connection()
        kept.request("GET", "/health")
        assert kept.getresponse().read()
        flood = []
        for index in range(2 * FD_LIMIT):
            client = connect(server)
            client.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")  # never finished
            flood.append(client)
            if index % 16 == 15:
                kept.request("GET", "/health")
                reply = kept.getresponse()
                assert (reply.status, reply.read()) == (200, b'{"status":"ok"}')
        busy_before = cpu_ticks(worker)
        time.sleep(1.0)
        spent = cpu_ticks(worker) - busy_before
        assert spent < 0.5 * os.sysconf("SC_CLK_TCK"), f"worker busy {spent} ticks while waiting"
        waiting = connect(server)
        waiting.sendall(get_request("/health"))
        for client in flood:
            client.close()
        waiting.settimeout(10)
        assert waiting.recv(4096).startswith(b"HTTP/1.1 200 ")
        waiting.close()
        kept.close()
        assert server.request("GET", "/health").status == 200
        assert "Too many open files" not in server.log
    finally:
        stop_hardened(server)


def test_out_of_memory_is_503_and_leaves_every_symbol_usable(tmp_path):
    """An address-space limit with room for one symbol's mapping and not two: the second symbol's
    first batch is a 503 with Retry-After, nothing of it is stored, the first symbol keeps working,
    and once memory is back (a restart without the limit) the second symbol works too."""
    from tradestats.engine import symbol_file_size

    args = ("--max-k", "8", "--max-symbols", "10", "--workers", "1")
    data = ("--data-dir", str(tmp_path / "data"))
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    probe = ServerProcess("granian", (*args, "--ephemeral"), tmp_path / "probe.log", env=env)
    try:
        assert probe.request("GET", "/health").status == 200
        baseline = status_bytes(probe.worker_pids()[0], "VmSize")
    finally:
        stop_cleanly(probe)
    one_symbol = symbol_file_size(8, limits.DEFAULT_MAX_BATCH)
    room = baseline + int(1.6 * one_symbol)

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (room, resource.RLIM_INFINITY))

    server = ServerProcess("granian", (*args, *data), tmp_path / "limited.log", env=env,
                           preexec_fn=limit_memory)
    try:
        assert post_batch(server, "FIRST", [1.0, 2.0]).status == 200
        for _ in range(2):
            refused = post_batch(server, "SECOND", [3.0])
            assert refused.status == 503, refused.body
            assert refused.headers["Retry-After"] == str(limits.RETRY_AFTER_SECONDS)
            assert refused.json() == {"detail": messages.OUT_OF_MEMORY}
        assert post_batch(server, "FIRST", [3.0] * 9).status == 200
        window = ([1.0, 2.0] + [3.0] * 9)[-10:]
        stats = get_stats(server, "FIRST", 1).json()
        assert (stats["min"], stats["max"], stats["last"]) == (min(window), max(window), 3.0)
        # Reading SECOND needs its mapping too: unknown, or out of memory; never a 500.
        assert get_stats(server, "SECOND", 1).status in (400, 503)
    finally:
        stop_cleanly(server)
    restarted = ServerProcess("granian", (*args, *data), tmp_path / "restarted.log", env=env)
    try:
        assert post_batch(restarted, "SECOND", list(range(10))).status == 200
        prices = restarted.request("GET", "/prices/?symbol=SECOND&n=100").json()["prices"]
        assert prices == list(range(10))  # nothing of the refused batches
        assert get_stats(restarted, "FIRST", 1).json()["avg"] == pytest.approx(
            statistics.fmean(window))
    finally:
        stop_cleanly(restarted)
