"""Hostile HTTP over raw sockets (issue #9), so far for the gthread worker: broken chunked
framing, bodies cut short, and errors gunicorn writes itself are JSON 4xx/5xx that store
nothing and leave the worker serving. (The meinheld findings are still open.)"""
from __future__ import annotations

import http.client
import json
import socket

import pytest

from conftest import ServerProcess, stop_cleanly
from test_http import assert_error, fresh_symbol, get_stats
from tradestats import messages
from tradestats.server import FALLBACK_WORKER


@pytest.fixture(scope="module")
def gthread_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("hostile") / "serve.log"
    server = ServerProcess(FALLBACK_WORKER, ("--max-k", "1", "--max-symbols", "1000"), log)
    yield server
    stop_cleanly(server)


def send(server: ServerProcess, raw: bytes) -> tuple:
    """Open a connection, write the bytes, half-close, read the whole reply."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(raw)
        connection.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(connection, method="POST")
        response.begin()
        return response.status, response.headers, response.read()


def assert_json_error(reply, statuses) -> str:
    status, headers, body = reply
    assert status in statuses, (status, body)
    assert headers.get("Content-Type", "").startswith("application/json"), body
    document = json.loads(body)
    assert set(document) == {"detail"} and document["detail"]
    return document["detail"]


def post_head(symbol_body: bytes, framing: bytes) -> bytes:
    return (b"POST /add_batch/ HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + framing + b"\r\n")


def batch(symbol: str) -> bytes:
    return json.dumps({"symbol": symbol, "values": list(range(10))}).encode()


def assert_nothing_stored(server, symbol):
    assert_error(get_stats(server, symbol, 1), 400, f"Symbol {symbol} not found")
    assert server.request("GET", "/health").status == 200


@pytest.mark.parametrize("size_line", [b"zz", b"-5", b"0x10", b"f" * 20])
def test_a_malformed_chunk_size_is_400_and_stores_nothing(gthread_server, size_line):
    symbol = fresh_symbol("CHUNK")
    body = batch(symbol)
    raw = post_head(body, b"Transfer-Encoding: chunked\r\n") + size_line + b"\r\n" + body + \
        b"\r\n0\r\n\r\n"
    assert_json_error(send(gthread_server, raw), {400})
    assert_nothing_stored(gthread_server, symbol)


@pytest.mark.parametrize("cut", ["chunk-shorter-than-its-size", "no-last-chunk"])
def test_a_chunked_body_cut_short_is_400_and_stores_nothing(gthread_server, cut):
    symbol = fresh_symbol("CUT")
    body = batch(symbol)
    if cut == "chunk-shorter-than-its-size":
        framed = b"%x\r\n" % (len(body) + 50) + body
    else:
        framed = b"%x\r\n" % len(body) + body + b"\r\n"
    raw = post_head(body, b"Transfer-Encoding: chunked\r\n") + framed
    assert_json_error(send(gthread_server, raw), {400})
    assert_nothing_stored(gthread_server, symbol)


def test_a_body_shorter_than_its_content_length_is_400_and_stores_nothing(gthread_server):
    symbol = fresh_symbol("SHORT")
    body = batch(symbol)
    raw = post_head(body, b"Content-Length: %d\r\n" % (len(body) + 7)) + body
    detail = assert_json_error(send(gthread_server, raw), {400})
    assert "incomplete" in detail
    assert_nothing_stored(gthread_server, symbol)


@pytest.mark.parametrize(("raw", "statuses"), [
    (b"GARBAGE\r\n\r\n", {400}),
    (b"GET /health HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n", {400}),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", {414}),
    (b"GET /health HTTP/1.1\r\nHost: t\r\n" + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n", {400, 431}),
    (b"POST /add_batch/ HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", {400, 501}),
])
def test_errors_written_below_the_app_are_json(gthread_server, raw, statuses):
    assert_json_error(send(gthread_server, raw), statuses)
    assert gthread_server.request("GET", "/health").status == 200


def test_the_server_still_stores_whole_batches_afterwards(gthread_server):
    symbol = fresh_symbol("AFTER")
    raw = post_head(batch(symbol), b"Content-Length: %d\r\n" % len(batch(symbol))) + batch(symbol)
    status, _, body = send(gthread_server, raw)
    assert status == 200 and json.loads(body) == {"message": messages.BATCH_ADDED}
    assert get_stats(gthread_server, symbol, 1).status == 200
