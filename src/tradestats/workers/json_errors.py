"""Errors that gunicorn itself writes (a malformed request line or header, a URI or headers too
long, a bad chunk size, an unsupported transfer coding), as ``{"detail": ...}`` JSON.

gunicorn's workers answer them through ``gunicorn.util.write_error``, which writes an HTML page;
the contract says every response body is JSON. ``install()`` replaces that one function in the
worker process that calls it (gunicorn's workers look it up at call time), keeping gunicorn's
status codes and messages.
"""
from __future__ import annotations

import orjson
from gunicorn import util

from tradestats import messages


def write_json_error(sock, status_int: int, reason: str, mesg: str, *,
                     retry_after: int | None = None) -> None:
    if status_int == 501:
        # gunicorn's answer to an unknown Transfer-Encoding. The request is what is wrong, and
        # a 5xx would tell monitoring (and retrying clients) that the server is.
        status_int, reason = 400, "Bad Request"
    detail = mesg or (messages.INTERNAL_ERROR if status_int >= 500 else reason)
    body = orjson.dumps({"detail": detail})
    retry = f"Retry-After: {retry_after}\r\n" if retry_after is not None else ""
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n{retry}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


def install() -> None:
    util.write_error = write_json_error
