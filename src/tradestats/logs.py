"""tradestats-serve's logs: the HTTP server's lines and ours, as text or as JSON lines.

With ``--log-format json`` every line is one JSON object (``time``, ``level``, ``pid``,
``logger``, ``message`` and, for an access line of ``web/access_log.py``, its fields). Whatever
serves HTTP (servers/), its lines and ours go to the same place in the same format. As text, an
access line is the combined log format alone, as gunicorn writes it: no prefix, so that log
tools read it as it is.
"""
from __future__ import annotations

import datetime
import logging
from typing import Any

import orjson

ACCESS_LOGGER = "tradestats.access"
LOG_FORMATS = ("text", "json")
#: The fields an access line carries (web/access_log.py), in this order.
ACCESS_FIELDS = ("remote", "method", "path", "protocol", "status", "size", "referer",
                 "user_agent", "ms")
#: gunicorn's own text layout, which the README's examples and existing log parsers know.
TEXT_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
TEXT_DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"


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


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` for every line but access lines, which are already whole lines in the
    combined log format (web/access_log.py)."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == ACCESS_LOGGER:
            return record.getMessage()
        return super().format(record)


class DropMessages(logging.Filter):
    """Drops records whose message starts with one of ``prefixes``: a server's advice about a
    setting tradestats chose on purpose would alert operators on every start."""

    def __init__(self, prefixes: list[str]) -> None:
        super().__init__()
        self._prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self._prefixes)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return TextFormatter(TEXT_FORMAT, TEXT_DATE_FORMAT)


def dict_config(log_format: str, level: str, server_loggers: tuple[str, ...] = (),
                dropped: tuple[str, ...] = ()) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` document: ours and the server's loggers (``server_loggers``)
    on stderr in one format, without the messages starting with ``dropped``; access lines at
    INFO whatever ``level`` says (asking for them with --access-log is the decision)."""
    text = {"()": "tradestats.logs.TextFormatter", "fmt": TEXT_FORMAT, "datefmt": TEXT_DATE_FORMAT}
    chosen = {"()": "tradestats.logs.JsonFormatter"} if log_format == "json" else text
    handler = {"class": "logging.StreamHandler", "formatter": "chosen", "stream": "ext://sys.stderr",
               "filters": ["dropped"]}
    loggers = {name: {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
               for name in ("tradestats", *server_loggers)}
    loggers[ACCESS_LOGGER] = {"handlers": ["stderr"], "level": "INFO", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"chosen": chosen},
        "filters": {"dropped": {"()": "tradestats.logs.DropMessages", "prefixes": list(dropped)}},
        "handlers": {"stderr": handler},
        "loggers": loggers,
    }
