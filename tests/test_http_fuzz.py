"""Fuzzing a live server (issue #9): a seeded raw-HTTP mutation fuzzer and a hypothesis body fuzzer.

Both hold the server to the same rules: no worker dies, nothing is a 5xx, every error is
``{"detail"}`` JSON, and the stored data is exactly what a model of the accepted batches says.
Bounded in time: ``TRADESTATS_FUZZ_REQUESTS`` mutated requests (default 1500) from the seed
``TRADESTATS_FUZZ_SEED``, and hypothesis' example budget.
"""
from __future__ import annotations

import json
import math
import os
import random
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concurrent.futures import ThreadPoolExecutor

from conftest import ServerProcess, stop_cleanly
from hostile import HARDENED_SERVERS

FUZZ_REQUESTS = int(os.environ.get("TRADESTATS_FUZZ_REQUESTS", "1500"))
FUZZ_SEED = int(os.environ.get("TRADESTATS_FUZZ_SEED", "20261125"))

MAX_K = 2
SERVER_ARGS = ("--max-k", str(MAX_K), "--max-symbols", "1000", "--workers", "2",
               "--max-body-bytes", "20000", "--request-timeout", "2")


@pytest.fixture(scope="module", params=HARDENED_SERVERS)
def fuzz_server(request, tmp_path_factory):
    log = tmp_path_factory.mktemp("fuzz") / "serve.log"
    server = ServerProcess(request.param, SERVER_ARGS, log)
    workers = server.worker_pids()
    yield server
    assert server.worker_pids() == workers, "a worker died or was replaced"
    stop_cleanly(server)
    for alarm in ("Traceback", "[ERROR]", "[CRITICAL]"):
        assert alarm not in server.log, server.log[-3000:]


def request_bytes(method: str, target: str, body: bytes = b"", chunked: bool = False) -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    if chunked:
        middle = len(body) // 2
        framed = b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                          for part in (body[:middle], body[middle:]) if part) + b"0\r\n\r\n"
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + framed
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


CORPUS = [
    request_bytes("POST", "/add_batch/", b'{"symbol": "FUZZ", "values": [1.5, 2, -3e4, 4]}'),
    request_bytes("POST", "/add_batch/", b'{"symbol": "FUZZ", "values": [5, 6]}', chunked=True),
    request_bytes("GET", "/stats/?symbol=FUZZ&k=1"),
    request_bytes("GET", "/prices/?symbol=FUZZ&n=5"),
    request_bytes("GET", "/symbols"),
    request_bytes("GET", "/health"),
    request_bytes("POST", "/add_batch/", b'{"symbol": "FUZZ", "values": [1, "x"]}'),
]
INTERESTING = [b"\r", b"\n", b"\r\n", b"\0", b" ", b"\t", b":", b"\xff", b"0", b"9" * 12, b"-",
               b";", b",", b"chunked", b"\r\n\r\n", b"Content-Length: 99999\r\n",
               b"Transfer-Encoding: chunked\r\n", b"HTTP/1.1\r\n", b"%00", b"%", b"[", b"{"]


def mutate(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(data) + 1)
        kind = rng.randrange(6)
        if kind == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[at:at] = rng.choice(INTERESTING)
        elif kind == 2:
            del data[at:at + rng.randint(1, 16)]
        elif kind == 3:
            end = min(len(data), at + rng.randint(1, 32))
            data[end:end] = data[at:end]
        elif kind == 4:
            del data[at:]
        else:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(data)


#: A reply is complete when the server closes or has said nothing for this long (a mutated
#: request may be unfinished: the server then waits for the rest, up to --request-timeout).
QUIET_SECONDS = 0.25
#: Mutated requests in flight at once.
FUZZ_CONNECTIONS = 16


def exchange(port: int, raw: bytes) -> bytes:
    """Send, keep the connection open for writing (a client that half-closes gets no reply from
    granian), read until the server closes or falls quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        try:
            connection.sendall(raw)
        except OSError:
            pass  # the server may refuse and close before reading everything
        connection.settimeout(QUIET_SECONDS)
        reply = b""
        try:
            while chunk := connection.recv(65536):
                reply += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        return reply


def check_reply(raw: bytes, reply: bytes) -> None:
    """Every response in the reply is below 500, and every error among them is JSON detail."""
    while reply:
        head, separator, rest = reply.partition(b"\r\n\r\n")
        assert separator and head.startswith(b"HTTP/1."), (raw, reply)
        status = int(head[9:12])
        fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
        length = int(fields.get(b"content-length", b"0"))
        body, reply = rest[:length], rest[length:]
        assert status < 500, (raw, head, body)
        if status == 100:
            continue
        # An empty 4xx is the engine refusing what it could not parse (the contract allows it).
        if status >= 400 and body:
            assert fields[b"content-type"].startswith(b"application/json"), (raw, head, body)
            assert set(json.loads(body)) == {"detail"}, (raw, body)


def stored(server: ServerProcess, symbol: str) -> list:
    reply = server.request("GET", f"/prices/?symbol={symbol}&n=10000")
    return reply.json()["prices"] if reply.status == 200 else []


def test_mutated_raw_requests_never_hurt_the_server(fuzz_server):
    sentinel = [float(value) for value in range(100, 130)]
    assert fuzz_server.request("POST", "/add_batch/", json.dumps(
        {"symbol": "KEEP", "values": sentinel}).encode(),
        {"Content-Type": "application/json"}).status == 200
    rng = random.Random(FUZZ_SEED)
    requests = [mutate(rng.choice(CORPUS), rng) for _ in range(FUZZ_REQUESTS)]

    def fuzz(raw: bytes) -> None:
        check_reply(raw, exchange(fuzz_server.port, raw))

    with ThreadPoolExecutor(FUZZ_CONNECTIONS) as pool:
        list(pool.map(fuzz, requests))
    assert stored(fuzz_server, "KEEP") == sentinel
    assert fuzz_server.request("GET", "/health").status == 200


# --- the hypothesis body fuzzer, against a model of what was accepted -----------------------------

SYMBOLS = ["HA", "HB", "HC"]
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**120), max_value=10**120),
    st.sampled_from([0, -0.0, 1e100, -1e100, 1.0000000000000002e100, 5e-324]),
)
json_leaves = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=5))
json_values = st.recursive(json_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=10)
batches = st.fixed_dictionaries(
    {"symbol": st.one_of(st.sampled_from(SYMBOLS), st.sampled_from(["", "x" * 65, "A\x00"]),
                         json_values.filter(lambda value: not isinstance(value, str))),
     "values": st.one_of(st.lists(numbers, min_size=1, max_size=30), json_values)},
    optional={"extra": json_values})


def encode(document) -> bytes:
    # Python's json writes NaN, Infinity and big integers, which a hostile client may send too.
    return json.dumps(document).encode()


bodies = st.one_of(batches.map(encode), json_values.map(encode), st.binary(max_size=64),
                   batches.map(encode).map(lambda body: body[: len(body) // 2]))


def usable_price(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        price = float(value)
    except OverflowError:
        return False
    return math.isfinite(price) and abs(price) <= 1e100


def finite_json(value) -> bool:
    """No NaN, Infinity or overflowing number: those are not JSON (RFC 8259)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(finite_json(item) for item in value)
    if isinstance(value, dict):
        return all(finite_json(item) for item in value.values())
    return True


def acceptable(document) -> bool:
    """The contract's rule for a batch that must be stored (API.md; limits.py): a JSON object
    (a non-finite number is a bad price inside 'values', invalid JSON anywhere else)."""
    if not isinstance(document, dict) or document.get("symbol") not in SYMBOLS:
        return False
    values = document.get("values")
    rest = {key: value for key, value in document.items() if key != "values"}
    return (isinstance(values, list) and finite_json(rest)
            and all(usable_price(value) for value in values))


@pytest.fixture(scope="module")
def model():
    return {symbol: [] for symbol in SYMBOLS}


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_any_body_is_stored_exactly_when_valid(fuzz_server, model, body):
    # Start from what is stored, so that each example is judged alone (hypothesis replays and
    # shrinks examples; one failure must not poison the model for the next).
    for symbol in SYMBOLS:
        model[symbol] = stored(fuzz_server, symbol)
    connection = fuzz_server.connection()
    try:
        connection.request("POST", "/add_batch/", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        reply = response.read()
    finally:
        connection.close()
    assert response.status in (200, 400, 413), reply
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if response.status == 200:
        assert acceptable(document), body
        model[document["symbol"]].extend(float(value) for value in document["values"])
    else:
        assert set(json.loads(reply)) == {"detail"}
        assert not acceptable(document), (body, reply)
    for symbol in SYMBOLS:
        # The server guarantees the last 10**max_k prices (it may hold more, up to its slack).
        held = stored(fuzz_server, symbol)
        assert len(held) >= min(len(model[symbol]), 10**MAX_K)
        assert held == model[symbol][len(model[symbol]) - len(held):]
