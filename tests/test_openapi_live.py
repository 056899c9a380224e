"""A live server never answers a status its own OpenAPI document does not list for that path and
method: good, bad and hostile requests over raw sockets, to a server without an API key and to
one with a key that protects reads too.

The document is the one the server serves (GET /openapi.json), read with its own rules: a
path's other spelling is named in ``x-aliases``; a method the path does not have must be 405
listed on the path; a path not described must be 404 (``components.responses.NotFound``); and
what the HTTP server answers before any routing (malformed requests, 414, 431...) must be
listed on every operation.
"""
from __future__ import annotations

import json
import re
import urllib.parse

import pytest
from conftest import ServerProcess, stop_cleanly
from hostile import connect, read_response

KEY = "live-test-key-0123456789"
BODY_LIMIT = 2000
OPERATION_METHODS = ("get", "head", "post", "put", "patch", "delete", "options", "trace")
SERVER_ARGS = ("--workers", "1", "--max-k", "2", "--max-symbols", "50",
               "--max-body-bytes", str(BODY_LIMIT), "--request-timeout", "2")


def raw_request(method: str, target: str, headers: dict | None = None, body: bytes = b"",
                version: str = "HTTP/1.1") -> bytes:
    fields = {"Host": "t", **(headers or {})}
    if body and "Content-Length" not in fields and "Transfer-Encoding" not in fields:
        fields["Content-Length"] = str(len(body))
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return f"{method} {target} {version}\r\n{head}\r\n".encode("latin-1") + body


def batch(symbol: str, values) -> bytes:
    return json.dumps({"symbol": symbol, "values": list(values)}).encode()


def requests_to_try(auth: dict) -> list[tuple[str, bytes]]:
    """(name, raw request): the ordinary, the wrong and the hostile. ``auth`` is the header a
    client with the key sends ({} for none)."""
    json_type = {"Content-Type": "application/json"}
    good_batch = batch("LIVE", range(150))
    cases = {
        # the ordinary, with and without the key
        "post": raw_request("POST", "/add_batch/", {**json_type, **auth}, good_batch),
        "post-alias": raw_request("POST", "/add_batch", {**json_type, **auth}, good_batch),
        "post-no-key": raw_request("POST", "/add_batch/", json_type, good_batch),
        "post-wrong-key": raw_request("POST", "/add_batch/",
                                      {**json_type, "Authorization": "Bearer nope"}, good_batch),
        "stats": raw_request("GET", "/stats/?symbol=LIVE&k=2", auth),
        "stats-alias": raw_request("GET", "/stats?symbol=LIVE&k=1", auth),
        "stats-no-key": raw_request("GET", "/stats/?symbol=LIVE&k=1"),
        "stats-head": raw_request("HEAD", "/stats/?symbol=LIVE&k=1", auth),
        "prices": raw_request("GET", "/prices/?symbol=LIVE&n=5", auth),
        "envelope": raw_request("GET", "/envelope/?symbol=LIVE&k=2&buckets=9", auth),
        "envelope-alias": raw_request("GET", "/envelope?symbol=LIVE&k=1", auth),
        "envelope-bad-buckets": raw_request("GET", "/envelope/?symbol=LIVE&k=1&buckets=0",
                                            auth),
        "envelope-not-enough": raw_request("GET", "/envelope/?symbol=LIVE&k=3", auth),
        "symbols": raw_request("GET", "/symbols", auth),
        "symbols-slash": raw_request("GET", "/symbols/", auth),
        "health": raw_request("GET", "/health"),
        "health-head": raw_request("HEAD", "/health"),
        "metrics": raw_request("GET", "/metrics", auth),
        "openapi": raw_request("GET", "/openapi.json"),
        "docs": raw_request("GET", "/docs"),
        "page": raw_request("GET", "/?symbol=LIVE&k=1"),
        "options": raw_request("OPTIONS", "/stats/", auth),
        "options-no-key": raw_request("OPTIONS", "/add_batch/"),
        # DELETE /symbols/: a symbol that exists, one that does not, no symbol, no key
        "delete": raw_request("DELETE", "/symbols/?symbol=GONE", auth),
        "delete-again": raw_request("DELETE", "/symbols/?symbol=GONE", auth),
        "delete-missing-symbol": raw_request("DELETE", "/symbols/", auth),
        "delete-no-key": raw_request("DELETE", "/symbols/?symbol=LIVE"),
        "delete-alias": raw_request("DELETE", "/symbols?symbol=NEVER", auth),
        # wrong parameters
        "stats-bad-k": raw_request("GET", "/stats/?symbol=LIVE&k=-1", auth),
        "stats-k-too-big": raw_request("GET", "/stats/?symbol=LIVE&k=9", auth),
        "stats-no-symbol": raw_request("GET", "/stats/?k=1", auth),
        "stats-unknown": raw_request("GET", "/stats/?symbol=NOPE&k=1", auth),
        "stats-not-enough": raw_request("GET", "/stats/?symbol=LIVE&k=3", auth),
        "prices-bad-n": raw_request("GET", "/prices/?symbol=LIVE&n=0", auth),
        "control-symbol": raw_request("GET", "/stats/?symbol=%0A%1B&k=1", auth),
        # wrong methods and paths
        "put-stats": raw_request("PUT", "/stats/", auth),
        "patch-add": raw_request("PATCH", "/add_batch/", auth),
        "get-add": raw_request("GET", "/add_batch/", auth),
        "head-add": raw_request("HEAD", "/add_batch/", auth),
        "post-health": raw_request("POST", "/health", auth),
        "trace-health": raw_request("TRACE", "/health"),
        "delete-stats": raw_request("DELETE", "/stats/", auth),
        "unknown-method": raw_request("BREW", "/stats/", auth),
        "unknown-path": raw_request("GET", "/nowhere", auth),
        "unknown-path-post": raw_request("POST", "/nowhere", json_type, b"{}"),
        "double-slash": raw_request("GET", "//stats/?symbol=LIVE&k=1", auth),
        "encoded-slash": raw_request("GET", "/stats%2F?symbol=LIVE&k=1", auth),
        "dot-segments": raw_request("GET", "/docs/assets/../../../etc/passwd", auth),
        # bad bodies
        "not-json": raw_request("POST", "/add_batch/", {**json_type, **auth}, b"{nope"),
        "not-object": raw_request("POST", "/add_batch/", {**json_type, **auth}, b"[1, 2]"),
        "nan": raw_request("POST", "/add_batch/", {**json_type, **auth},
                           b'{"symbol": "LIVE", "values": [NaN]}'),
        "empty-body": raw_request("POST", "/add_batch/", {**json_type, **auth,
                                                          "Content-Length": "0"}),
        "oversized-body": raw_request("POST", "/add_batch/", {**json_type, **auth},
                                      batch("LIVE", range(1000))),
        "oversized-declared": raw_request("POST", "/add_batch/", {
            **json_type, **auth, "Content-Length": str(10 * BODY_LIMIT)}),
        "chunked": raw_request("POST", "/add_batch/", {
            **json_type, **auth, "Transfer-Encoding": "chunked"}, b"5\r\n{nope\r\n0\r\n\r\n"),
        "wrong-type": raw_request("POST", "/add_batch/", {**auth, "Content-Type": "text/plain"},
                                  good_batch),
        "form": raw_request("POST", "/add_batch/",
                            {**auth, "Content-Type": "application/x-www-form-urlencoded"},
                            b"symbol=LIVE&values=1"),
        "gzip-post": raw_request("POST", "/add_batch/",
                                 {**json_type, **auth, "Content-Encoding": "gzip"}, good_batch),
        "gzip-get": raw_request("GET", "/stats/?symbol=LIVE&k=1",
                                {**auth, "Content-Encoding": "gzip"}),
        "get-with-body": raw_request("GET", "/health", {}, b"x" * (4 * BODY_LIMIT)),
        # malformed and hostile HTTP
        "no-host": b"GET /health HTTP/1.1\r\n\r\n",
        "two-hosts": b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "http-1.0": raw_request("GET", "/health", version="HTTP/1.0"),
        "http-2.0-line": raw_request("GET", "/health", version="HTTP/2.0"),
        "http-9.9": raw_request("GET", "/health", version="HTTP/9.9"),
        "garbage": b"GARBAGE\r\n\r\n",
        "header-without-colon": b"GET /health HTTP/1.1\r\nHost: t\r\nNo colon\r\n\r\n",
        "long-path": raw_request("GET", "/" + "a" * 9000),
        "long-query": raw_request("GET", "/stats/?symbol=" + "a" * 70_000 + "&k=1", auth),
        "long-header": raw_request("GET", "/health", {"X-Big": "b" * 300_000}),
        "many-headers": raw_request("GET", "/health", {f"X-{n}": "y" for n in range(200)}),
        "long-header-post": raw_request("POST", "/add_batch/",
                                        {**json_type, **auth, "X-Big": "b" * 300_000},
                                        good_batch),
        "two-content-lengths": b"POST /add_batch/ HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                               b"Content-Length: 3\r\n\r\n{}x",
        "length-and-chunked": b"POST /add_batch/ HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "bad-chunk-size": raw_request("POST", "/add_batch/", {
            **json_type, **auth, "Transfer-Encoding": "chunked"}, b"zz\r\n{}\r\n0\r\n\r\n"),
        "gzip-transfer": raw_request("POST", "/add_batch/", {
            **json_type, **auth, "Transfer-Encoding": "gzip"}),
        "nul-in-header": b"GET /health HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
        "connect": b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n",
        "asterisk": b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n",
        "absolute-form": raw_request("GET", "http://t/health"),
        "slow-head": b"GET /health HTTP/1.1\r\nHost: t\r\n",   # never finished: timed out
    }
    return list(cases.items())


def target_of(raw: bytes) -> tuple[str, str] | None:
    """(method, path) of a request line, or None if it has none to speak of."""
    match = re.match(rb"([A-Za-z]+) (\S+) HTTP/", raw)
    if not match:
        return None
    target = match.group(2).decode("latin-1")
    if not target.startswith("/"):   # absolute form (origin form "//x" is a path, not a host)
        target = urllib.parse.urlsplit(target).path or target
    return match.group(1).decode().lower(), target.split("?", 1)[0]


class Documented:
    """Which statuses a document lists for a request."""

    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self.aliases = {alias: path for path, item in doc["paths"].items()
                        for alias in item.get("x-aliases", ())}
        every = [set(operation["responses"]) for _, operation in self.operations()]
        #: What the server answers before routing: listed on every operation.
        self.before_routing = {int(s) for s in set.intersection(*every)}
        keyed = "securitySchemes" in doc["components"]
        self.refused_for_key = {401} if keyed else set()

    def operations(self):
        for item in self.doc["paths"].values():
            for method in OPERATION_METHODS:
                if method in item:
                    yield method, item[method]

    def statuses(self, method: str | None, path: str | None) -> set[int]:
        if method is None:
            return self.before_routing
        item = self.doc["paths"].get(self.aliases.get(path, path))
        if item is None:
            assert "NotFound" in self.doc["components"]["responses"]
            return {404} | self.before_routing | self.refused_for_key
        if method in item:
            return {int(status) for status in item[method]["responses"]}
        on_path = {int(status) for m in OPERATION_METHODS if m in item
                   for status in item[m]["responses"]}
        assert 405 in on_path, path
        return {405} | self.before_routing | (self.refused_for_key & on_path)


def start(tmp_path, *extra: str) -> ServerProcess:
    return ServerProcess("granian", (*SERVER_ARGS, *extra), tmp_path / "serve.log")


def answer(server: ServerProcess, raw: bytes) -> int | None:
    method = (target_of(raw) or ("get", ""))[0].upper()
    with connect(server, timeout=15) as connection:
        connection.sendall(raw)
        return read_response(connection, method)[0]


def seed(server: ServerProcess, auth: dict) -> None:
    """LIVE has 150 prices (k=2 answers, k=3 is not enough); GONE exists to be deleted."""
    for symbol in ("LIVE", "GONE"):
        status = answer(server, raw_request("POST", "/add_batch/", {
            "Content-Type": "application/json", **auth}, batch(symbol, range(150))))
        assert status == 200


@pytest.mark.parametrize("keyed", [False, True], ids=["open", "api-key-protect-reads"])
def test_every_status_a_live_server_answers_is_documented(tmp_path, keyed):
    """Includes DELETE /symbols/ (delete, delete-again, delete-missing-symbol, delete-no-key,
    delete-alias)."""
    extra = ("--api-key", KEY, "--protect-reads") if keyed else ()
    auth = {"Authorization": f"Bearer {KEY}"} if keyed else {}
    server = start(tmp_path, *extra)
    try:
        documented = Documented(server.request("GET", "/openapi.json").json())
        seed(server, auth)
        answered, undocumented = {}, []
        for name, raw in requests_to_try(auth):
            status = answer(server, raw)
            answered[name] = status
            if status is None:   # closed without an answer: nothing to document
                continue
            allowed = documented.statuses(*(target_of(raw) or (None, None)))
            if status not in allowed:
                undocumented.append(f"{name}: {status} not among {sorted(allowed)}")
        assert not undocumented, "\n".join(undocumented)
        # The requests did what they were meant to (else this test would prove little).
        expected = {"post": 200, "stats": 200, "get-add": 405, "unknown-path": 404,
                    "long-query": 414, "long-header": 431, "oversized-body": 413,
                    "wrong-type": 415, "gzip-get": 415, "delete": 200, "delete-again": 400,
                    "delete-missing-symbol": 400, "delete-alias": 400, "no-host": 400,
                    "stats-not-enough": 400, "options": 200, "slow-head": None,
                    "delete-no-key": 401 if keyed else 200,
                    "stats-no-key": 401 if keyed else 200,
                    "post-no-key": 401 if keyed else 200}
        assert {name: answered[name] for name in expected} == expected
    finally:
        stop_cleanly(server)
