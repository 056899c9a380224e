"""One access line per request (``--access-log``): Falcon middleware, off unless asked for.

The line is Apache's / gunicorn's combined format with the latency in seconds last, what log
tools (goaccess, awstats, fail2ban, gunicorn's ``%(L)s``) already read::

    127.0.0.1 - - [30/Nov/2026:18:30:00 +0000] "GET /stats/?symbol=A&k=1 HTTP/1.1" 200 83 "-" "curl/8.0" 0.000123

client address, user (always ``-``: the API key is a secret, never an identity to log), time
the request arrived (UTC), request line, status, body bytes (``-`` for none, as in CLF),
Referer, User-Agent, seconds the app took. Under ``--log-format json`` the same fields are keys
of the JSON line (logs.py). What a client sends is escaped as Apache does (``"`` and ``\\`` get a
backslash, any byte outside printable ASCII is ``\\xhh``), so a request is always one line and
cannot forge another (log injection). No other header is logged: ``Authorization`` never is.

The server's own access log is not used: it cannot see the latency the app measured, and
meinheld's worker never calls gunicorn's. A request the HTTP server refuses before the app sees
it (a malformed head, 414, 431) has no line.
"""
from __future__ import annotations

import logging
import time

import falcon

from tradestats.logs import ACCESS_LOGGER
from tradestats.web.metrics import STARTED as METRICS_STARTED

#: Where a request's start time waits for its response (the WSGI environ).
STARTED = "tradestats.access_started"
#: English month abbreviations whatever the locale (strftime's %b follows it).
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: granian spells HTTP/1.0 "HTTP/1" in SERVER_PROTOCOL.
PROTOCOL_SPELLINGS = {"HTTP/1": "HTTP/1.0"}
PRINTABLE = range(0x20, 0x7F)


def escape(text: str | None) -> str:
    """``text`` safe inside a quoted field of one log line: Apache's escaping, bytewise."""
    if not text:
        return "-"
    try:
        raw = text.encode("latin-1")   # WSGI strings carry the bytes received as latin-1
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape")   # a path Falcon decoded as UTF-8
    return "".join(_escape_byte(byte) for byte in raw)


def _escape_byte(byte: int) -> str:
    if byte in (0x22, 0x5C):   # " and \
        return "\\" + chr(byte)
    return chr(byte) if byte in PRINTABLE else f"\\x{byte:02x}"


def clf_time(seconds: float) -> str:
    """``30/Nov/2026:18:30:00 +0000``: the common log format's time, in UTC."""
    moment = time.gmtime(seconds)
    return (f"{moment.tm_mday:02d}/{MONTHS[moment.tm_mon - 1]}/{moment.tm_year}:"
            f"{moment.tm_hour:02d}:{moment.tm_min:02d}:{moment.tm_sec:02d} +0000")


def request_target(req: falcon.Request) -> str:
    """The path and query as the client sent them when the server says (gunicorn's RAW_URI),
    else as Falcon decoded them."""
    return req.env.get("RAW_URI") or req.env.get("REQUEST_URI") or req.relative_uri


def body_size(req: falcon.Request, resp: falcon.Response) -> int | None:
    """Bytes of the response body, None for none. Rendering the media here costs nothing
    extra: Falcon keeps the rendered body and sends that."""
    if req.method == "HEAD":
        return None
    if resp.stream is not None:
        return int(resp.content_length) if resp.content_length else None
    data = resp.render_body()
    return len(data) if data else None


def access_fields(req: falcon.Request, resp: falcon.Response, seconds: float) -> dict:
    protocol = req.env.get("SERVER_PROTOCOL", "HTTP/1.1")
    return {
        "remote": req.env.get("REMOTE_ADDR") or "-",
        "method": req.method,
        "path": request_target(req),
        "protocol": PROTOCOL_SPELLINGS.get(protocol, protocol),
        "status": resp.status_code,
        "size": body_size(req, resp),
        "referer": req.get_header("Referer"),
        "user_agent": req.get_header("User-Agent"),
        "ms": round(seconds * 1e3, 3),
    }


def combined_line(fields: dict, arrived: float, seconds: float) -> str:
    request_line = escape(f"{fields['method']} {fields['path']} {fields['protocol']}")
    size = fields["size"] if fields["size"] is not None else "-"
    return (f"{escape(fields['remote'])} - - [{clf_time(arrived)}] \"{request_line}\" "
            f"{fields['status']} {size} \"{escape(fields['referer'])}\" "
            f"\"{escape(fields['user_agent'])}\" {seconds:.6f}")


class AccessLog:
    def __init__(self) -> None:
        self._log = logging.getLogger(ACCESS_LOGGER)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.env[STARTED] = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource,
                         req_succeeded: bool) -> None:
        # A request refused by an earlier middleware (a missing API key, a bad Host) never
        # reached process_request above; the metrics middleware, always first, timed it.
        started = req.env.get(STARTED) or req.env.get(METRICS_STARTED) or time.perf_counter()
        seconds = time.perf_counter() - started
        fields = access_fields(req, resp, seconds)
        self._log.info(combined_line(fields, time.time() - seconds, seconds), extra=fields)
