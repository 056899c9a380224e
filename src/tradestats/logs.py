"""tradestats-serve's logs: gunicorn's, plus an access line per request, as text or JSON lines.

``Logger`` is gunicorn's logger class with two additions: with ``--log-format json`` every line
is one JSON object (``time``, ``level``, ``pid``, ``logger``, ``message`` and, for an access
line, its fields), and the ``tradestats.access`` logger (web/access_log.py) writes through
gunicorn's error-log handlers, so access lines go wherever gunicorn's lines go.
"""
from __future__ import annotations

import datetime
import logging

import orjson
from gunicorn import glogging

ACCESS_LOGGER = "tradestats.access"
LOG_FORMATS = ("text", "json")
#: The fields an access line carries (web/access_log.py), in this order.
ACCESS_FIELDS = ("method", "path", "status", "ms")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({field: getattr(record, field) for field in ACCESS_FIELDS
                     if hasattr(record, field)})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


class Logger(glogging.Logger):
    #: Set by the server before gunicorn starts (one of LOG_FORMATS); workers inherit it.
    log_format = "text"

    def setup(self, cfg) -> None:
        super().setup(cfg)
        if self.log_format == "json":
            for handler in self.error_log.handlers:
                handler.setFormatter(JsonFormatter())
        access = logging.getLogger(ACCESS_LOGGER)
        access.handlers = list(self.error_log.handlers)
        access.setLevel(logging.INFO)
        access.propagate = False
