"""Hostile HTTP over raw sockets: framing, smuggling, pipelining, protocol (issues #9 and #15).

Every finding of the attack reports is a test here, against every server offered without a
warning (granian): broken or hostile framing stores nothing and leaves the worker serving; a
request is answered once, in order, never mixed with the next; what the engine cannot parse
gets an empty 4xx, what the app sees gets {"detail"} JSON. Slow clients, floods and exhausted
resources are in test_http_floods.py.
"""
from __future__ import annotations

import json
import random
import socket
import time

import pytest

from hostile import (
    HARDENED_SERVERS,
    assert_json_error,
    assert_nothing_stored,
    assert_refused,
    batch,
    chunk,
    connect,
    get_request,
    open_fds,
    p99,
    post_head,
    post_request,
    probe_latencies,
    read_response,
    read_responses,
    send,
    send_and_close,
    start_hardened,
    stop_hardened,
    stored_prices,
)
from test_http import fresh_symbol
from tradestats import limits, messages


@pytest.fixture(scope="module", params=HARDENED_SERVERS)
def hardened_server(request, tmp_path_factory):
    server = start_hardened(request.param, tmp_path_factory.mktemp("hostile") / "serve.log")
    yield server
    stop_hardened(server)


# --- broken framing stores nothing ------------------------------------------------------------------

@pytest.mark.parametrize("size_line", [b"zz", b"-5", b"0x10", b"f" * 20])
def test_a_malformed_chunk_size_is_refused_and_stores_nothing(hardened_server, size_line):
    symbol = fresh_symbol("CHUNK")
    body = batch(symbol)
    raw = post_head(b"Transfer-Encoding: chunked\r\n") + size_line + b"\r\n" + body + \
        b"\r\n0\r\n\r\n"
    assert_refused(send(hardened_server, raw), {400})
    assert_nothing_stored(hardened_server, symbol)


def test_a_chunked_body_cut_short_inside_the_document_stores_nothing(hardened_server):
    symbol = fresh_symbol("CUT")
    body = batch(symbol)
    raw = post_head(b"Transfer-Encoding: chunked\r\n") + b"%x\r\n" % len(body) + body[:-5]
    status, _, _ = send_and_close(hardened_server, raw)
    assert status != 200
    assert_nothing_stored(hardened_server, symbol)


@pytest.mark.parametrize("cut", ["chunk-shorter-than-its-size", "no-last-chunk",
                                 "garbage-after-the-document"])
def test_framing_that_breaks_after_a_whole_document_stores_all_of_it_or_nothing(
        hardened_server, cut):
    """The whole JSON document arrived and then the chunked framing broke. granian hands the app
    a framing error as the end of the body, so the batch may be stored, and acknowledged (README,
    "Known limitations"). What holds: it is stored whole or not at all, and a 200 means stored."""
    symbol = fresh_symbol("CUT")
    values = list(range(10, 30))
    body = batch(symbol, values)
    framed = {
        "chunk-shorter-than-its-size": b"%x\r\n" % (len(body) + 50) + body,
        "no-last-chunk": chunk(body),
        "garbage-after-the-document": chunk(body) + b"zz\r\n\r\n",
    }[cut]
    status, _, _ = send_and_close(hardened_server, post_head(b"Transfer-Encoding: chunked\r\n")
                                  + framed)
    reply = hardened_server.request("GET", f"/prices/?symbol={symbol}&n=100")
    stored = reply.json()["prices"] if reply.status == 200 else []
    assert stored in ([], values)
    if status == 200:
        assert stored == values
    assert hardened_server.request("GET", "/health").status == 200


def test_a_body_shorter_than_its_content_length_stores_nothing(hardened_server):
    symbol = fresh_symbol("SHORT")
    body = batch(symbol)
    raw = post_head(b"Content-Length: %d\r\n" % (len(body) + 7)) + body
    status, _, _ = send_and_close(hardened_server, raw)
    assert status != 200
    assert_nothing_stored(hardened_server, symbol)


# --- what the engine cannot parse ---------------------------------------------------------------

MALFORMED_REQUESTS = {
    "garbage": (b"GARBAGE\r\n\r\n", {400}),
    "header-without-colon": (b"GET /health HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n", {400}),
    "long-uri": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", {404, 414}),
    "long-header": (b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 300_000 + b"\r\n\r\n",
                    {400, 431}),
    "unknown-transfer-coding": (b"POST /add_batch/ HTTP/1.1\r\nHost: t\r\n"
                                b"Transfer-Encoding: gzip\r\n\r\n", {400}),
    "content-length-and-chunked": (b"POST /add_batch/ HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {400}),
    "two-content-lengths": (b"POST /add_batch/ HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                            b"Content-Length: 3\r\n\r\n{}x", {400}),
}


@pytest.mark.parametrize("name", MALFORMED_REQUESTS)
def test_what_cannot_be_parsed_is_an_empty_or_json_4xx(hardened_server, name):
    raw, statuses = MALFORMED_REQUESTS[name]
    assert_refused(send(hardened_server, raw), statuses)
    assert hardened_server.request("GET", "/health").status == 200


MALFORMED_HEADERS = {
    "nul-in-a-header-value": b"Content-Type: application/json\0x\r\n",
    "header-without-colon": b"No colon here\r\n",
    "obs-fold": b"X-Folded: a\r\n  b\r\n",
    "duplicate-host": b"Host: other\r\n",
    "space-before-colon": b"X-Name : v\r\n",
}


@pytest.mark.parametrize("extra", MALFORMED_HEADERS.values(), ids=MALFORMED_HEADERS.keys())
def test_malformed_headers_are_refused_and_store_nothing(hardened_server, extra):
    symbol = fresh_symbol("MAL")
    assert_refused(send(hardened_server, post_request(symbol, extra=extra)), {400})
    assert_nothing_stored(hardened_server, symbol)


@pytest.mark.parametrize("version", [b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.10"])
def test_unsupported_http_versions_are_refused_and_store_nothing(hardened_server, version):
    symbol = fresh_symbol("VER")
    assert_refused(send(hardened_server, post_request(symbol, version=version)), {400, 505})
    assert_nothing_stored(hardened_server, symbol)


def test_an_http11_request_without_host_is_refused(hardened_server):
    detail = assert_json_error(send(hardened_server, b"GET /health HTTP/1.1\r\n\r\n"), {400})
    assert detail == messages.HOST_MISSING
    status, _, _ = send(hardened_server, b"GET /health HTTP/1.0\r\n\r\n")
    assert status == 200


@pytest.mark.parametrize("raw", [b"CONNECT x HTTP/1.1\r\n\r\n",
                                 b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n"])
def test_connect_is_refused_and_leaves_the_next_request_alone(hardened_server, raw):
    assert_refused(send(hardened_server, raw), set(range(400, 500)))
    symbol = fresh_symbol("NEXT")
    status, _, body = send(hardened_server, post_request(symbol))
    assert status == 200, body
    assert stored_prices(hardened_server, symbol) == list(range(10))


# --- chunked bodies that are valid are stored exactly -------------------------------------------

def test_a_trailer_after_the_last_chunk_is_accepted(hardened_server):
    raw = (b"GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"0\r\nX-T: 1\r\n\r\n")
    status, _, body = send(hardened_server, raw)
    assert status == 200 and json.loads(body) == {"status": "ok"}


def test_chunked_batches_in_any_segmentation_with_extensions_and_trailers_are_stored_whole(
        hardened_server):
    rng = random.Random(15)
    for case in range(12):
        symbol = fresh_symbol("SEG")
        values = [rng.uniform(-1e6, 1e6) for _ in range(rng.randint(1, 400))]
        body = batch(symbol, values)
        cuts = sorted(rng.sample(range(1, len(body)), rng.randint(0, 20)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]
        framed = b"".join(chunk(piece, b";ext=%d" % n if n % 3 == 0 else b"")
                          for n, piece in enumerate(pieces))
        framed += b"0\r\nX-Trailer: %d\r\n\r\n" % case if case % 2 else b"0\r\n\r\n"
        raw = post_head(b"Transfer-Encoding: chunked\r\n") + framed
        with connect(hardened_server) as connection:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            position = 0
            while position < len(raw):  # random TCP segments, some split mid-line
                step = rng.randint(1, 4096)
                connection.sendall(raw[position:position + step])
                position += step
                if rng.random() < 0.2:
                    time.sleep(0.002)
            status, _, reply = read_response(connection)
        assert status == 200, reply
        assert stored_prices(hardened_server, symbol) == values


def test_a_body_in_one_byte_chunks_costs_linear_time_and_nobody_else_waits(hardened_server):
    """469 KiB of one-byte chunks once cost a worker ~30 s of CPU (quadratic framing), and the
    worker timeout then killed it with every connection on it. Now each chunk costs the same
    (granian hands the app one chunk at a time: ~30 us each here), and other clients are served
    meanwhile."""
    symbol = fresh_symbol("BYTES")
    values = [float(n) + 0.5 for n in range(2_000)]
    body = batch(symbol, values)
    raw = post_head(b"Transfer-Encoding: chunked\r\n") + \
        b"".join(b"1\r\n%c\r\n" % byte for byte in body) + b"0\r\n\r\n"
    alone = p99(probe_latencies(hardened_server, 200))
    with connect(hardened_server, timeout=60) as connection:
        started = time.monotonic()
        connection.sendall(raw)
        loaded = p99(probe_latencies(hardened_server, 200))
        status, _, reply = read_response(connection)
        elapsed = time.monotonic() - started
    assert status == 200, reply
    assert stored_prices(hardened_server, symbol) == values
    # The machine's noise floor: the worse of the probes before and after.
    alone = max(alone, p99(probe_latencies(hardened_server, 200)))
    per_chunk = elapsed / len(body)
    print(f"{len(body)} one-byte chunks: {elapsed:.2f} s ({per_chunk * 1e6:.0f} us each); "
          f"probe p99 {alone * 1e3:.2f} ms alone, {loaded * 1e3:.2f} ms meanwhile")
    assert per_chunk < 200e-6
    assert loaded < alone + 0.010


# --- no smuggling: one request, one response --------------------------------------------------------

def test_an_oversize_body_is_refused_once_and_its_tail_is_never_a_request(hardened_server):
    """The body of a refused request ends in a well-formed request. It must not be run: after the
    413 the connection is closed (or the body skipped), never read as the next request."""
    symbol = fresh_symbol("SMUGGLED")
    hidden = post_request(symbol)
    body = b" " * (limits.DEFAULT_MAX_BODY_BYTES + 1000 - len(hidden)) + hidden
    raw = post_head(b"Content-Length: %d\r\n" % len(body)) + body + get_request("/health")
    with connect(hardened_server) as connection:
        try:
            connection.sendall(raw)
        except OSError:
            pass  # refused and closed before everything was written
        status, _, reply = read_response(connection)
        assert status == 413, reply
        assert json.loads(reply)["detail"] == messages.BODY_TOO_LARGE.format(
            max_body_bytes=limits.DEFAULT_MAX_BODY_BYTES)
        connection.settimeout(3)
        try:
            rest = connection.recv(65536)
        except (ConnectionResetError, socket.timeout):
            rest = b""
        # Nothing but, at most, the answer to the GET that truly followed the body.
        assert rest == b"" or (rest.startswith(b"HTTP/1.1 200") and rest.count(b"HTTP/1.1") == 1)
    assert_nothing_stored(hardened_server, symbol)


def test_expect_100_continue_is_answered_once_and_never_before_a_refusal(hardened_server):
    symbol = fresh_symbol("EXPECT")
    body = batch(symbol)
    oversize = post_head(b"Expect: 100-continue\r\nContent-Length: %d\r\n"
                         % (limits.DEFAULT_MAX_BODY_BYTES + 1))
    with connect(hardened_server) as connection:
        connection.sendall(oversize)
        assert read_response(connection)[0] == 413  # not 100 Continue first
    with connect(hardened_server) as connection:
        connection.sendall(post_head(b"Expect: 100-continue\r\nContent-Length: %d\r\n" % len(body)))
        interim = connection.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
        connection.sendall(body)
        status, _, reply = read_response(connection)
        assert status == 200 and b"100 Continue" not in reply
    with connect(hardened_server) as connection:  # HTTP/1.0 knows no 100 Continue
        other = fresh_symbol("EXPECT")
        raw = post_head(b"Expect: 100-continue\r\nContent-Length: %d\r\n" % len(batch(other)),
                        version=b"HTTP/1.0") + batch(other)
        connection.sendall(raw)
        everything = b""
        while chunk_ := connection.recv(65536):
            everything += chunk_
        assert everything.startswith(b"HTTP/1.0 200 ") and b" 100 " not in everything
    assert stored_prices(hardened_server, symbol) == list(range(10))


# --- pipelining -----------------------------------------------------------------------------------

def test_pipelined_posts_behind_many_gets_are_stored_and_answered_in_order(hardened_server):
    """POSTs [1], [2], [3] pipelined behind 100 GETs were once stored as [3, 1, 2]."""
    symbol = fresh_symbol("PIPE")
    first = fresh_symbol("PIPE")
    assert send(hardened_server, post_request(first))[0] == 200
    gets = get_request(f"/stats/?symbol={first}&k=1") * 100
    posts = b"".join(post_request(symbol, [value]) for value in (1, 2, 3))
    with connect(hardened_server) as connection:
        connection.sendall(gets + posts + get_request(f"/prices/?symbol={symbol}&n=10"))
        replies = read_responses(connection, 104)
    assert all(status == 200 and reply["last"] == 9 for status, reply in replies[:100])
    assert replies[100:103] == [(200, {"message": messages.BATCH_ADDED})] * 3
    assert replies[103] == (200, {"symbol": symbol, "prices": [1, 2, 3]})


def test_pipelined_requests_in_one_segment_are_all_served_in_order(hardened_server):
    symbol = fresh_symbol("PIPE")
    batches = [range(i * 10, i * 10 + 10) for i in range(4)]
    raw = b"".join(post_request(symbol, values) for values in batches)
    raw += get_request(f"/stats/?symbol={symbol}&k=1")
    with connect(hardened_server) as connection:
        connection.sendall(raw)  # one write: the requests share TCP segments
        replies = read_responses(connection, len(batches) + 1)
    assert replies[:-1] == [(200, {"message": messages.BATCH_ADDED})] * len(batches)
    status, stats = replies[-1]
    assert status == 200 and (stats["min"], stats["max"], stats["last"]) == (30, 39, 39)


# --- descriptors ----------------------------------------------------------------------------------

def test_abandoned_half_requests_leak_no_descriptors(hardened_server):
    (worker,) = hardened_server.worker_pids()
    before = open_fds(worker)
    for _ in range(3):
        clients = []
        for _ in range(1500):
            client = connect(hardened_server)
            client.sendall(b"GET /hea")
            clients.append(client)
        for client in clients:
            client.close()
    deadline = time.monotonic() + 10
    while open_fds(worker) > before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_fds(worker) <= before + 2, (before, open_fds(worker))
    assert hardened_server.request("GET", "/health").status == 200
