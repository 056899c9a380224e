"""RequestFraming (workers/framing.py) against gunicorn's own parser.

The worker hands a connection to a pool thread when ``complete()`` says so, and the pool thread's
parser can read nothing more. So for every valid request, split anywhere: ``complete`` must say
no on every proper prefix, yes on the whole request, and gunicorn's parser must then find that
exact request (head and body) in those bytes. For broken framing it must say yes at once, and the
parser must refuse from those bytes alone.
"""
from __future__ import annotations

import io

import pytest
from gunicorn.config import Config
from gunicorn.http.errors import NoMoreData, ParseException
from gunicorn.http.message import RFC9110_6_5_1_FORBIDDEN_TRAILER
from gunicorn.http.parser import RequestParser
from hypothesis import given, settings
from hypothesis import strategies as st

from tradestats.workers.framing import RequestFraming

MAX_HEAD = 64 * 1024
MAX_BODY = 4096


class BytesSocket:
    """A socket whose recv returns the given bytes, then end of input."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def recv(self, size: int) -> bytes:
        return self._data.read(min(size, 7))  # short reads, as a network gives


def parse_all(data: bytes) -> list[tuple[str, str, bytes]]:
    """(method, path, body) of every request gunicorn's parser finds in ``data``."""
    found = []
    for request in RequestParser(Config(), BytesSocket(data), ("127.0.0.1", 1)):
        found.append((request.method, request.path, request.body.read()))
    return found


def framing() -> RequestFraming:
    return RequestFraming(MAX_HEAD, MAX_BODY)


def completes_exactly_at(raw: bytes, following: bytes = b"") -> None:
    frame = framing()
    buffer = bytearray()
    for index, byte in enumerate(raw):
        assert not frame.complete(buffer), f"complete after {index} of {len(raw)} bytes"
        buffer.append(byte)
    buffer += following
    assert frame.complete(buffer)


# --- valid requests -------------------------------------------------------------------------------

tokens = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)
header_values = st.text("abcdefghijklmnopqrstuvwxyz0123456789 ;=/,.", max_size=20).map(str.strip)
extra_headers = st.lists(st.tuples(tokens.filter(
    lambda name: name not in {"content-length", "transfer-encoding", "host", "connection",
                              "expect", "upgrade", "te", "trailer"}), header_values), max_size=4)
bodies = st.binary(max_size=MAX_BODY)


@st.composite
def requests(draw) -> tuple[bytes, str, str, bytes]:
    """One valid request: (raw bytes, method, path, body), framed every way the RFC allows."""
    body = draw(bodies)
    framing_kind = draw(st.sampled_from(["none", "length", "chunked"]))
    if framing_kind == "none":
        body = b""
    method = "GET" if framing_kind == "none" and draw(st.booleans()) else "POST"
    path = "/" + draw(tokens)
    lines = [f"{method} {path} HTTP/1.1", "Host: t"]
    lines += [f"{name}: {value}" for name, value in draw(extra_headers)]
    if framing_kind == "length":
        name = draw(st.sampled_from(["Content-Length", "content-length", "CONTENT-LENGTH"]))
        lines.append(f"{name}: {len(body)}")
    elif framing_kind == "chunked":
        lines.append("Transfer-Encoding: chunked")
    head = ("\r\n" * draw(st.integers(0, 1)) + "\r\n".join(lines) + "\r\n\r\n").encode()
    if framing_kind != "chunked":
        return head + body, method, path, body
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=5)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)]) if b > a]
    framed = b""
    for piece in pieces:
        extension = draw(st.sampled_from([b"", b";x=1", b";name"]))
        size = draw(st.sampled_from(["%x", "%X", "%04x"])) % len(piece)
        framed += size.encode() + extension + b"\r\n" + piece + b"\r\n"
    # RFC 9110 section 6.5.1 forbids some fields in trailers (gunicorn refuses them).
    trailers = draw(st.lists(st.tuples(tokens.filter(
        lambda name: name.upper() not in RFC9110_6_5_1_FORBIDDEN_TRAILER), header_values),
        max_size=2))
    framed += b"0\r\n" + b"".join(f"{n}: {v}\r\n".encode() for n, v in trailers) + b"\r\n"
    return head + framed, method, path, body


@settings(max_examples=300, deadline=None)
@given(requests(), requests())
def test_complete_exactly_when_gunicorn_has_the_whole_request(first, second):
    raw, method, path, body = first
    completes_exactly_at(raw, following=second[0][:5])
    assert parse_all(raw) == [(method, path, body)]
    # Pipelined: the first request ends where the parser says, and the second parses after it.
    assert parse_all(raw + second[0]) == [(method, path, body), second[1:]]


@settings(max_examples=100, deadline=None)
@given(requests(), st.data())
def test_bytes_arriving_in_any_pieces_complete_at_the_same_point(request, data):
    raw = request[0]
    cuts = sorted(data.draw(st.lists(st.integers(1, max(len(raw) - 1, 1)), max_size=8)))
    frame, buffer = framing(), bytearray()
    for end in [*cuts, len(raw)]:
        buffer += raw[len(buffer):end]
        assert frame.complete(buffer) == (len(buffer) == len(raw))


def test_reset_starts_the_next_request():
    frame = framing()
    first = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
    assert frame.complete(bytearray(first))
    frame.reset()
    second = b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nab"
    assert not frame.complete(bytearray(second))
    assert frame.complete(bytearray(second + b"c"))


# --- broken framing: hand over at once, and the parser refuses without more bytes -----------------

BROKEN = {
    "bad-length": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n",
    "negative-length": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
    "two-lengths": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    "length-and-chunked": (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n"),
    "unknown-coding": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
    "chunk-size-zz": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "chunk-size-hex-prefix": (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"0x10\r\n"),
    "chunk-size-huge": (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + b"f" * 20 + b"\r\n"),
    "chunk-without-crlf": (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"3\r\nabcXY"),
    "bare-lf": b"GET / HTTP/1.1\nHost: t\n\n",
}


@pytest.mark.parametrize("raw", BROKEN.values(), ids=BROKEN.keys())
def test_broken_framing_is_handed_over_and_refused_from_what_arrived(raw):
    assert framing().complete(bytearray(raw))
    # NoMoreData: the parser wanted bytes that will never come; the app answers it 400.
    with pytest.raises((ParseException, ValueError, NoMoreData)):
        parse_all(raw)


def test_a_body_over_the_limit_is_handed_over_at_the_end_of_its_head():
    head = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1)
    assert framing().complete(bytearray(head))
    chunked = (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"%x\r\n" % (MAX_BODY + 1))
    assert framing().complete(bytearray(chunked))


def test_a_head_that_never_ends_is_too_long_past_the_limit_only():
    frame = framing()
    buffer = bytearray(b"GET /" + b"a" * (MAX_HEAD - 5))
    assert not frame.complete(buffer) and not frame.head_too_long(buffer)
    buffer += b"aa"
    assert frame.complete(buffer) and frame.head_too_long(buffer)


def test_dribbling_costs_constant_work_per_byte():
    """Each call scans only new bytes: a 1-byte-at-a-time head of 60 KiB stays fast."""
    frame, buffer = framing(), bytearray(b"GET / HTTP/1.1\r\nX: ")
    for _ in range(60_000):
        buffer.append(0x61)
        frame.complete(buffer)
    assert frame._scanned == len(buffer)
