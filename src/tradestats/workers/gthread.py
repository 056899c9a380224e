"""gunicorn's gthread worker for ``--server gunicorn --worker-class gthread``: the stock worker,
which also dies with its master and writes gunicorn's own errors as JSON."""
from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker as StockThreadWorker

from tradestats.servers.lifecycle import die_with_master
from tradestats.workers import json_errors


class ThreadWorker(StockThreadWorker):
    def init_process(self) -> None:
        die_with_master(self.ppid)
        json_errors.install()
        super().init_process()
