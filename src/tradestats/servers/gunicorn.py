"""tradestats-serve on gunicorn (``--server gunicorn``), as the design first named it.

meinheld's worker (``--worker-class meinheld``, the default here when it is installed) or
gunicorn's own gthread worker. Neither is hardened against hostile clients (the start-up log
says so, and the README lists the faults): run them only behind a proxy that buffers and
normalises requests, such as nginx. ``pip install "tradestats[gunicorn]"`` installs gunicorn.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from tradestats import logs, messages
from tradestats.server import ServeSettings

MEINHELD_WORKER = "tradestats.workers.meinheld.MeinheldWorker"
GTHREAD_WORKER = "tradestats.workers.gthread.ThreadWorker"
WORKER_CLASSES = {"meinheld": MEINHELD_WORKER, "gthread": GTHREAD_WORKER}
FAULTS = {"meinheld": messages.MEINHELD_FAULTS, "gthread": messages.GTHREAD_FAULTS}
#: gthread's threads per worker (its own default is 1).
GTHREAD_THREADS = 4


def meinheld_importable() -> bool:
    try:
        import meinheld  # noqa: F401
    except ImportError:
        return False
    return True


def chosen_worker_class(settings: ServeSettings) -> str:
    """``--worker-class``, else meinheld when installed, else gthread (the short name)."""
    return settings.worker_class or ("meinheld" if meinheld_importable() else "gthread")


def require_worker_class(settings: ServeSettings) -> None:
    """ImportError now, in one line, rather than a traceback from every worker gunicorn forks."""
    if chosen_worker_class(settings) == "meinheld" and not meinheld_importable():
        raise ImportError('meinheld; pip install "greenlet>=3" && pip install --no-deps meinheld')


class Logger(glogging.Logger):
    """gunicorn's logger in tradestats' format (logs.py), also carrying our access lines."""

    #: Set by ``serve`` before gunicorn starts (one of logs.LOG_FORMATS); workers inherit it.
    log_format = "text"

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(logs.formatter(self.log_format))
        for name in ("tradestats", logs.ACCESS_LOGGER):
            ours = logging.getLogger(name)
            ours.handlers = list(self.error_log.handlers)
            ours.propagate = False
        logging.getLogger(logs.ACCESS_LOGGER).setLevel(logging.INFO)
        logging.getLogger("tradestats").setLevel(self.error_log.level)


class TradestatsApplication(BaseApplication):
    """A gunicorn application whose WSGI app (and store) is built inside the worker process."""

    def __init__(self, settings: ServeSettings, announce: Callable[[str], list[str]],
                 load_app: Callable) -> None:
        self.settings = settings
        self.announce = announce
        self.load_app = load_app
        self.worker_name = chosen_worker_class(settings)
        super().__init__()

    def gunicorn_options(self) -> dict[str, Any]:
        settings, announce, worker_name = self.settings, self.announce, self.worker_name

        def when_ready(arbiter: Any) -> None:
            for line in announce(f"gunicorn ({worker_name} workers)"):  # INFO: no warning
                arbiter.log.info(line)
            arbiter.log.warning(messages.GUNICORN_RISKS.format(worker_class=worker_name,
                                                               faults=FAULTS[worker_name]))

        return {
            "bind": settings.bind,
            "workers": settings.workers,
            "worker_class": WORKER_CLASSES[worker_name],
            "threads": GTHREAD_THREADS,
            # tradestats reads no forwarding header: with none configured, trusting every peer
            # trusts nothing, and spares gunicorn parsing the peer's address on every request.
            "forwarded_allow_ips": "*",
            "secure_scheme_headers": {},
            "forwarder_headers": "",
            # A stop signal lets requests in flight finish for this long, then the master kills.
            "graceful_timeout": settings.graceful_timeout,
            "timeout": max(30, settings.request_timeout),
            "loglevel": settings.log_level,
            "logger_class": "tradestats.servers.gunicorn.Logger",
            "proc_name": "tradestats",
            "when_ready": when_ready,
            # gunicorn >= 25.1 opens a control socket by default; it could add workers at run time
            # (and two servers would fight over its one path).
            "control_socket_disable": True,
        }

    def load_config(self) -> None:
        for key, value in self.gunicorn_options().items():
            if key in self.cfg.settings:  # older gunicorn versions lack some settings
                self.cfg.set(key, value)

    def load(self) -> Any:
        return self.load_app(self.settings)


def serve(settings: ServeSettings, announce: Callable[[str], list[str]], load_app: Callable) -> None:
    Logger.log_format = settings.log_format
    TradestatsApplication(settings, announce, load_app).run()
