"""meinheld's gunicorn worker, fixed for tradestats-serve (imported only when it is chosen).

The stock ``meinheld.gmeinheld.MeinheldWorker`` has three problems here:

* its constructor replaces ``gunicorn.glogging.Logger.error`` and ``.access`` *on the class* with
  meinheld's signatures; gunicorn builds a worker object in the master before forking, so the
  master's own error logging then crashes (seen when it reaps a killed worker, which turns a
  SIGINT shutdown into a traceback and exit status 1);
* SIGQUIT, which the master sends its worker on SIGINT, never reaches the worker's Python
  handler, so a Ctrl-C takes the whole graceful timeout (30 s) and ends in a SIGKILL;
* meinheld buffers a whole request body before the app runs, up to its own 16 MiB default, so
  the app's body limit cannot refuse a body unread.
"""
from __future__ import annotations

import traceback
from typing import Any

from gunicorn.workers.base import Worker
from meinheld import server as meinheld_server
from meinheld.gmeinheld import MeinheldWorker as StockMeinheldWorker

from tradestats.servers.lifecycle import die_with_master


class MeinheldErrorLog:
    """meinheld reports an exception as ``error(type, value, traceback)``; gunicorn's log wants a
    message."""

    def __init__(self, log: Any) -> None:
        self._log = log

    def error(self, exc_type, value, tb) -> None:
        self._log.error("".join(traceback.format_exception(exc_type, value, tb)))


class MeinheldWorker(StockMeinheldWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        Worker.__init__(self, *args, **kwargs)  # not the stock one: it patches gunicorn's Logger

    def init_process(self) -> None:
        die_with_master(self.ppid)
        super().init_process()

    def run(self) -> None:
        # Only meinheld itself can refuse an oversized body unread; its 413 page is HTML.
        meinheld_server.set_max_content_length(self.app.settings.max_body_bytes)
        meinheld_server.set_access_logger(None)
        meinheld_server.set_error_logger(MeinheldErrorLog(self.log))
        meinheld_server.set_keepalive(self.cfg.keepalive)
        meinheld_server.set_picoev_max_fd(self.cfg.worker_connections)
        # meinheld's C loop catches SIGINT and SIGTERM itself, but gunicorn's Python handler for
        # SIGQUIT (the master's quick shutdown) only runs when the loop calls into Python: the
        # Python watchdog (gunicorn's heartbeat) does that once a second, the stock C one never.
        meinheld_server.set_watchdog(self.watchdog)
        meinheld_server.set_listen_socket([sock.fileno() for sock in self.sockets])
        try:
            meinheld_server.run(self.wsgi)
        except KeyboardInterrupt:  # meinheld's own report of a SIGINT it has already handled
            pass

    def handle_quit(self, sig, frame) -> None:
        # Called from the watchdog, inside meinheld's loop: stop the loop, do not raise out of it.
        self.alive = False
        meinheld_server.stop()
