"""gunicorn's gthread worker, fixed so that SIGINT and SIGQUIT always stop it.

gunicorn's ``ThreadWorker.handle_quit`` runs ``ThreadPoolExecutor.shutdown`` inside the signal
handler, and that takes the pool's (non-reentrant) lock. The handler runs on the main thread
between two bytecodes, and the main thread holds the same lock inside ``submit`` — for a long
moment when ``submit`` starts a new pool thread on a busy machine. A quick-shutdown signal landing
there makes the handler wait for a lock its own thread holds: the worker hangs in a futex wait
forever, and SIGTERM cannot help (its handler only sets a flag). It was seen as one SIGINT in four
hanging the server right after a client closed a connection.

Here every stop signal only sets flags and wakes the event loop (both safe in a signal handler);
the loop then stops accepting and finishes what is in flight within the graceful timeout. A pool
thread stuck in a request past that (a client that stopped sending mid-body) cannot hold the
process: the worker exits without waiting for it.
"""
from __future__ import annotations

import logging
import os
import time

from gunicorn.workers import gthread

from tradestats.workers import json_errors
from tradestats.workers.lifecycle import die_with_master

#: After the graceful phase, how long pool threads still in a request may take to finish.
STRAGGLER_SECONDS = 1.0


class ThreadWorker(gthread.ThreadWorker):
    def init_process(self) -> None:
        die_with_master(self.ppid)
        json_errors.install()
        super().init_process()

    def handle_quit(self, sig, frame) -> None:
        # Not gunicorn's: no lock and no exception inside a signal handler (see the module doc).
        self.handle_exit(sig, frame)

    def run(self) -> None:
        super().run()
        self._leave_stragglers(time.monotonic() + STRAGGLER_SECONDS)

    def _leave_stragglers(self, deadline: float) -> None:
        """Exit now if a pool thread is still inside a request by ``deadline``.

        The interpreter's exit would join every pool thread, and a thread blocked reading from a
        silent client never returns.
        """
        for thread in list(getattr(self.tpool, "_threads", ())):
            thread.join(max(deadline - time.monotonic(), 0.0))
            if thread.is_alive():
                self.log.warning("worker %s: leaving a request still in flight at shutdown", self.pid)
                logging.shutdown()
                os._exit(0)
