"""One access line per request, with its latency: Falcon middleware (off unless asked for).

The server's own access log is not used: it cannot see the latency the app measured, and
meinheld's worker never calls gunicorn's.
"""
from __future__ import annotations

import logging
import time

import falcon

from tradestats import messages
from tradestats.logs import ACCESS_LOGGER


class AccessLog:
    def __init__(self) -> None:
        self._log = logging.getLogger(ACCESS_LOGGER)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource,
                         req_succeeded: bool) -> None:
        started = getattr(req.context, "started", None)
        elapsed_ms = round((time.perf_counter() - started) * 1e3, 3) if started else None
        fields = {"method": req.method, "path": req.relative_uri, "status": resp.status_code,
                  "ms": elapsed_ms}
        self._log.info(messages.ACCESS_LINE.format(**fields), extra=fields)
