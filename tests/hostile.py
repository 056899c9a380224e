"""Raw-socket helpers for the hostile-client suites (test_http_hostile.py, test_http_floods.py)."""
from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import time

import pytest

from conftest import ServerProcess, stop_cleanly
from test_http import assert_error, get_stats

#: The servers tradestats offers without a warning: all must pass every hostile test.
HARDENED_SERVERS = [pytest.param("granian", id="granian")]
SERVER_ARGS = ("--max-k", "4", "--max-symbols", "1000", "--workers", "1")


def start_hardened(kind: str, log_path, *extra: str, **options) -> ServerProcess:
    server = ServerProcess(kind, (*SERVER_ARGS, *extra), log_path, **options)
    server.initial_workers = server.worker_pids()
    return server


def stop_hardened(server: ServerProcess) -> None:
    assert server.worker_pids() == server.initial_workers, "a worker died or was replaced"
    stop_cleanly(server)


def connect(server: ServerProcess, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def read_response(connection: socket.socket, method: str = "POST") -> tuple:
    """(status, headers, body) of the next response; (None, None, b"") if the server closed the
    connection without one."""
    response = http.client.HTTPResponse(connection, method=method)
    try:
        response.begin()
    except http.client.RemoteDisconnected:
        return None, None, b""
    return response.status, response.headers, response.read()


def send(server: ServerProcess, raw: bytes, timeout: float = 10) -> tuple:
    """Open a connection, write the bytes, read one whole reply (the connection stays open for
    writing: granian, like hyper's default, drops the replies of a client that half-closes)."""
    with connect(server, timeout) as connection:
        connection.sendall(raw)
        return read_response(connection)


def send_and_close(server: ServerProcess, raw: bytes) -> tuple:
    """Write the bytes, half-close (the client is gone), read whatever comes back."""
    with connect(server) as connection:
        connection.sendall(raw)
        connection.shutdown(socket.SHUT_WR)
        return read_response(connection)


def assert_json_error(reply, statuses) -> str:
    status, headers, body = reply
    assert status in statuses, (status, body)
    assert headers.get("Content-Type", "").startswith("application/json"), body
    document = json.loads(body)
    assert set(document) == {"detail"} and document["detail"]
    return document["detail"]


def assert_refused(reply, statuses) -> None:
    """A 4xx the app wrote ({"detail"} JSON) or, for a request the HTTP engine could not parse at
    all, an empty 4xx from the engine (the contract allows both; never HTML, never a 5xx)."""
    status, headers, body = reply
    assert status in statuses, (status, body)
    if body:
        assert_json_error(reply, statuses)


def post_head(framing: bytes, path: bytes = b"/add_batch/", version: bytes = b"HTTP/1.1") -> bytes:
    return (b"POST " + path + b" " + version + b"\r\nHost: t\r\nContent-Type: application/json\r\n"
            + framing + b"\r\n")


def batch(symbol: str, values=range(10)) -> bytes:
    return json.dumps({"symbol": symbol, "values": list(values)}).encode()


def post_request(symbol: str, values=range(10), version: bytes = b"HTTP/1.1",
                 extra: bytes = b"") -> bytes:
    body = batch(symbol, values)
    return (b"POST /add_batch/ " + version + b"\r\nHost: t\r\nContent-Type: application/json\r\n"
            + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def get_request(path: str) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode()


def chunk(data: bytes, extension: bytes = b"") -> bytes:
    return b"%x%s\r\n%s\r\n" % (len(data), extension, data)


def assert_nothing_stored(server, symbol):
    assert_error(get_stats(server, symbol, 1), 400, f"Symbol {symbol} not found")
    assert server.request("GET", "/health").status == 200


def stored_prices(server, symbol) -> list:
    reply = server.request("GET", f"/prices/?symbol={symbol}&n=10000")
    assert reply.status == 200, reply.body
    return reply.json()["prices"]


def read_responses(connection: socket.socket, count: int) -> list[tuple[int, object]]:
    """(status, JSON body) of ``count`` responses in a row, from one buffered reader (one
    http.client.HTTPResponse per response would each read ahead and lose the next one)."""
    reader = connection.makefile("rb")
    replies = []
    for _ in range(count):
        status = int(reader.readline().split()[1])
        headers = {}
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        replies.append((status, json.loads(reader.read(int(headers["content-length"])))))
    return replies


def cpu_ticks(pid: int) -> int:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wait_until_idle(pid: int, timeout: float = 10.0) -> None:
    """Until the process has used no CPU for 0.3 s (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    before = cpu_ticks(pid)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = cpu_ticks(pid)
        if now == before:
            return
        before = now


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def probe_latencies(server: ServerProcess, count: int) -> list[float]:
    connection = server.connection()
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        connection.request("GET", "/health")
        response = connection.getresponse()
        response.read()
        latencies.append(time.perf_counter() - started)
        assert response.status == 200
    connection.close()
    return latencies


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98]
