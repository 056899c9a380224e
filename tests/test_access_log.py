"""--access-log against a live server: one combined-format line per request (client address,
time, request line, status, body bytes, Referer, User-Agent, latency), what a client sends
escaped so that one request is always one line, and the API key never written anywhere.

The lines are read back with a parser of this file's own (Apache's escaping undone by hand) and
compared with what the client sent and received.
"""
from __future__ import annotations

import calendar
import json
import os
import re
import time

import pytest
from conftest import ServerProcess, stop_cleanly
from hostile import connect, read_response

KEY = "access-log-secret-7f3a9c"
QUOTED = r'"((?:[^"\\]|\\.)*)"'
COMBINED_LINE = re.compile(
    r"(?P<remote>\S+) - - \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000)\] "
    rf"{QUOTED} (?P<status>\d{{3}}) (?P<size>\d+|-) {QUOTED} {QUOTED} (?P<seconds>\d+\.\d{{6}})")
#: The start of any access line: how a forged one would be recognised.
LINE_START = re.compile(r"^\S+ - - \[\d{2}/")


def unescape(field: str) -> bytes:
    r"""Apache's escaping undone: \" \\ and \xhh back to the bytes sent."""
    out, index = bytearray(), 0
    while index < len(field):
        if field[index] == "\\":
            if field[index + 1] == "x":
                out.append(int(field[index + 2:index + 4], 16))
                index += 4
                continue
            out.append(ord(field[index + 1]))
            index += 2
            continue
        out.append(ord(field[index]))
        index += 1
    return bytes(out)


def access_lines(server: ServerProcess) -> list[re.Match]:
    """Every access line of the log (the others are the server's own, with a [time] prefix)."""
    lines = [line for line in server.log.splitlines() if LINE_START.match(line)]
    parsed = [COMBINED_LINE.fullmatch(line) for line in lines]
    assert all(parsed), [line for line, match in zip(lines, parsed) if not match]
    return parsed


def exchange(server: ServerProcess, raw: bytes) -> tuple[int, bytes, float]:
    """Send one raw request; (status, body, seconds from send to whole reply)."""
    method = raw.split(b" ", 1)[0].decode()
    with connect(server) as connection:
        started = time.perf_counter()
        connection.sendall(raw)
        status, _, body = read_response(connection, method)
        return status, body, time.perf_counter() - started


def request(method: str, target: str, headers: dict[str, bytes] | None = None,
            body: bytes = b"") -> bytes:
    fields = {"Host": b"t", **(headers or {})}
    if body:
        fields["Content-Length"] = str(len(body)).encode()
    head = b"".join(name.encode() + b": " + value + b"\r\n" for name, value in fields.items())
    return f"{method} {target} HTTP/1.1\r\n".encode() + head + b"\r\n" + body


def wait_for_lines(server: ServerProcess, count: int, timeout: float = 5.0) -> list[re.Match]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = access_lines(server)
        if len(lines) >= count:
            return lines
        time.sleep(0.05)
    return access_lines(server)


@pytest.fixture(scope="module")
def logged_server(tmp_path_factory):
    """granian, one worker, --access-log, the key from the environment as operators set it."""
    log_path = tmp_path_factory.mktemp("access") / "serve.log"
    server = ServerProcess("granian", ("--workers", "1", "--max-k", "1", "--access-log"),
                           log_path, env={**os.environ, "TRADESTATS_API_KEY": KEY})
    yield server
    stop_cleanly(server)


def test_one_combined_line_per_request_with_what_was_sent_and_answered(logged_server):
    auth = {"Authorization": f"Bearer {KEY}".encode()}
    batch = json.dumps({"symbol": "LOGGED", "values": list(range(12))}).encode()
    sent = [
        ("POST", "/add_batch/", {**auth, "Content-Type": b"application/json",
                                 "User-Agent": b"ingest/1.0"}, batch),
        ("GET", "/stats/?symbol=LOGGED&k=1", {"User-Agent": b"curl/8.0",
                                              "Referer": b"http://example.test/page"}, b""),
        ("HEAD", "/health", {}, b""),
        ("GET", "/no/such/path", {"User-Agent": b"scanner"}, b""),
        ("POST", "/add_batch/", {"Content-Type": b"application/json"}, batch),   # no key: 401
        ("GET", "/stats?symbol=%C5%BBABKA&k=1", {}, b""),   # UTF-8 in the query, as sent
    ]
    before = len(access_lines(logged_server))
    wall_before = time.time()
    answers = [exchange(logged_server, request(*one)) for one in sent]
    wall_after = time.time()
    lines = wait_for_lines(logged_server, before + len(sent))[before:]
    assert len(lines) == len(sent), [line.group(0) for line in lines]
    for (method, target, headers, _), (status, body, round_trip), line in zip(sent, answers,
                                                                               lines):
        remote, arrived, request_line, status_text, size, referer, agent, seconds = line.groups()
        assert remote == "127.0.0.1"
        arrived_at = calendar.timegm(time.strptime(arrived, "%d/%b/%Y:%H:%M:%S +0000"))
        assert int(wall_before) - 1 <= arrived_at <= wall_after + 1, arrived
        assert unescape(request_line) == f"{method} {target} HTTP/1.1".encode()
        assert int(status_text) == status
        assert size == (str(len(body)) if body else "-")
        assert unescape(referer) == headers.get("Referer", b"-")
        assert unescape(agent) == headers.get("User-Agent", b"-")
        assert 0 < float(seconds) < round_trip
    assert [int(line.group("status")) for line in lines] == [200, 200, 200, 404, 401, 400]


#: Header values granian passes to the app (hyper refuses control bytes in a header with 400;
#: granian drops a value outside ASCII; the path below carries those instead).
HOSTILE_VALUES = [
    b'a"quote',                            # would end the quoted field early
    b'x" 200 1 "-" "forged" 0.1',          # a whole forged tail of a line
    b"back\\slash\\x41",                   # a backslash, and one that looks like an escape
    b"tab\there",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES, ids=range(len(HOSTILE_VALUES)))
def test_what_a_client_sends_is_escaped_and_stays_on_one_line(logged_server, value):
    """In the User-Agent and Referer; a percent-encoded newline, escape sequence, bell, DEL
    and carriage return in the path (which the app sees decoded), forging a line after it, and
    UTF-8 with a Unicode line separator."""
    before = len(access_lines(logged_server))
    raw_before = logged_server.log.count("\n")
    forged = "%0A127.0.0.1%20-%20-%20%5Bforged%1B[31m%07%7F%0D%C5%BB%E2%80%A8"
    status, _, _ = exchange(logged_server, request(
        "GET", f"/health/{forged}", {"User-Agent": value, "Referer": value}))
    assert status == 404
    lines = wait_for_lines(logged_server, before + 1)[before:]
    assert len(lines) == 1 and logged_server.log.count("\n") == raw_before + 1
    line = lines[0].group(0)
    assert all(32 <= ord(char) < 127 for char in line), line   # printable ASCII only
    _, _, request_line, _, _, referer, agent, _ = lines[0].groups()
    assert unescape(agent) == value and unescape(referer) == value
    assert unescape(request_line) == (b"GET /health/\n127.0.0.1 - - [forged\x1b[31m\x07\x7f\r\xc5\xbb\xe2\x80\xa8"
                                      b" HTTP/1.1")


def test_the_api_key_is_never_logged(logged_server):
    """Not from a right key, a wrong one that differs by a letter, nor the environment."""
    batch = json.dumps({"symbol": "KEYED", "values": [1.0]}).encode()
    for token in (KEY, KEY[:-1] + "X", KEY + KEY):
        exchange(logged_server, request("POST", "/add_batch/", {
            "Authorization": f"Bearer {token}".encode(), "Content-Type": b"application/json"},
            batch))
    wait_for_lines(logged_server, 3)
    log = logged_server.log
    assert access_lines(logged_server) and KEY not in log and KEY[:-1] not in log


def test_json_access_lines_carry_the_same_fields(tmp_path):
    server = ServerProcess("granian", ("--workers", "1", "--access-log", "--log-format", "json"),
                           tmp_path / "serve.log")
    try:
        status, body, _ = exchange(server, request(
            "GET", "/health", {"User-Agent": b'say "hi"\tthere', "Referer": b"http://r.test/"}))
    finally:
        stop_cleanly(server)
    records = [json.loads(line) for line in server.log.splitlines() if line.strip()]
    access = [record for record in records if record["logger"] == "tradestats.access"
              and record["referer"]]   # not the start-up probe's
    assert len(access) == 1, access
    record = access[0]
    assert {key: record[key] for key in ("remote", "method", "path", "protocol", "status",
                                         "size", "referer", "user_agent")} == {
        "remote": "127.0.0.1", "method": "GET", "path": "/health", "protocol": "HTTP/1.1",
        "status": status, "size": len(body), "referer": "http://r.test/",
        "user_agent": 'say "hi"\tthere'}
    assert 0 <= record["ms"] < 1000
    assert COMBINED_LINE.fullmatch(record["message"]), record["message"]


def test_no_access_line_unless_asked(tmp_path):
    server = ServerProcess("granian", ("--workers", "1"), tmp_path / "serve.log")
    try:
        assert server.request("GET", "/health").status == 200
        assert server.request("GET", "/nowhere").status == 404
    finally:
        stop_cleanly(server)
    assert not [line for line in server.log.splitlines() if LINE_START.match(line)], server.log
