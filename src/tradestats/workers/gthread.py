"""gunicorn's gthread worker, made safe against hostile clients and stop signals.

Guarantees (each has a test in ``tests/test_http_hostile.py`` or ``tests/test_shutdown.py``):

* **A pool thread never waits for a client.** The main thread reads every connection without
  blocking and buffers its bytes until ``framing.RequestFraming`` says one whole request has
  arrived; only then does a pool thread parse and serve it, from memory. The pool thread's parser
  cannot read the socket at all (its source is sealed), so a client that dribbles or stops
  holds a buffer, never a thread: hundreds of slow clients leave the others' latency alone.
  (gunicorn's own gthread worker gives a connection to a pool thread as soon as one byte
  arrives; four clients sending one byte each stall a 4-thread worker.)
* **A request must arrive in time.** ``limits.REQUEST_READ_SECONDS`` from its first byte (408
  ``{"detail"}`` and close), a new connection's first byte within the same time, a kept-alive
  connection's within the keep-alive timeout (closed quietly). A head longer than gunicorn
  accepts is answered 431 without waiting for its end.
* **Writes cannot hang for ever** either: ``SO_SNDTIMEO`` bounds each send to a client that
  stopped reading.
* **Running out of file descriptors refuses, never kills.** One descriptor is held in reserve;
  when ``accept`` fails with EMFILE/ENFILE the reserve is released, the waiting client is
  answered 503 with Retry-After, and the reserve is taken back. (gunicorn's worker exits.)
* **Stop signals never hang** (the original reason for this class). gunicorn's
  ``handle_quit`` runs ``ThreadPoolExecutor.shutdown`` inside the signal handler and takes the
  pool's non-reentrant lock, which the main thread may hold inside ``submit``: the worker then
  waits for ever on itself. Here every stop signal only sets flags and wakes the loop; requests
  in flight finish within the graceful timeout, and the worker exits without joining a pool
  thread that is still stuck (in a write to a client that stopped reading, say).
"""
from __future__ import annotations

import errno
import heapq
import itertools
import logging
import os
import selectors
import socket
import struct
import time
from functools import partial

from gunicorn.workers import gthread

from tradestats import limits, messages
from tradestats.workers import json_errors
from tradestats.workers.framing import RequestFraming
from tradestats.workers.lifecycle import die_with_master

#: After the graceful phase, how long pool threads still in a request may take to finish.
STRAGGLER_SECONDS = 1.0

#: One read from a client socket.
RECV_BYTES = 256 * 1024

#: After a failed accept with no reserve descriptor to release, accepting pauses this long
#: (the listening socket stays readable, so the loop would otherwise spin).
ACCEPT_PAUSE_SECONDS = 0.1

#: accept() errors that mean "this process or system is out of something": refuse, do not die.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
NOTHING_TO_ACCEPT = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED})


def _no_more_bytes(size_hint=None) -> bytes:
    """The sealed source of a pool thread's parser: everything it may read is already buffered."""
    return b""


class ThreadWorker(gthread.ThreadWorker):
    def init_process(self) -> None:
        die_with_master(self.ppid)
        json_errors.install()
        self._waiting: dict = {}          # connection -> deadline while its request is buffered
        self._deadlines: list = []        # heap of (deadline, sequence, connection), lazily pruned
        self._sequence = itertools.count()
        self._reserve_fd = self._take_reserve()
        self._accept_paused_until = 0.0
        self._max_head = self._longest_head_gunicorn_accepts()
        # The app refuses larger bodies (413) from their Content-Length alone.
        settings = getattr(self.app, "settings", None)
        self._max_body = getattr(settings, "max_body_bytes", limits.DEFAULT_MAX_BODY_BYTES)
        self._request_seconds = getattr(settings, "request_timeout", limits.REQUEST_READ_SECONDS)
        super().init_process()

    # --- signals ------------------------------------------------------------------------------

    def handle_quit(self, sig, frame) -> None:
        # Not gunicorn's: no lock and no exception inside a signal handler (see the module doc).
        self.handle_exit(sig, frame)

    def run(self) -> None:
        super().run()
        self._leave_stragglers(time.monotonic() + STRAGGLER_SECONDS)

    def _leave_stragglers(self, deadline: float) -> None:
        """Exit now if a pool thread is still inside a request by ``deadline``.

        The interpreter's exit would join every pool thread, and a thread blocked writing to a
        client that stopped reading returns only at its send timeout.
        """
        for thread in list(getattr(self.tpool, "_threads", ())):
            thread.join(max(deadline - time.monotonic(), 0.0))
            if thread.is_alive():
                self.log.warning("worker %s: leaving a request still in flight at shutdown", self.pid)
                logging.shutdown()
                os._exit(0)

    # --- accepting ----------------------------------------------------------------------------

    def accept(self, listener) -> None:
        try:
            client, address = listener.accept()
        except OSError as error:
            if error.errno in OUT_OF_RESOURCES:
                self._refuse_one_connection(listener, error)
                return
            if error.errno in NOTHING_TO_ACCEPT:
                return
            raise
        self.nr_conns += 1
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                          struct.pack("ll", limits.SEND_TIMEOUT_SECONDS, 0))
        conn = gthread.TConn(self.cfg, client, address, listener.getsockname())
        conn.inbox = bytearray()
        conn.framing = RequestFraming(self._max_head, self._max_body)
        self._watch(conn, self._request_seconds)

    def _refuse_one_connection(self, listener, error: OSError) -> None:
        """Out of descriptors: free the reserve, answer one client 503, take the reserve back."""
        self.log.warning("worker %s: cannot accept a connection (%s): answering 503",
                         self.pid, os.strerror(error.errno))
        if self._reserve_fd is None:
            self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE_SECONDS
            self.set_accept_enabled(False)
            return
        os.close(self._reserve_fd)
        self._reserve_fd = None
        try:
            client, _ = listener.accept()
        except OSError:
            pass
        else:
            try:
                json_errors.write_json_error(client, 503, "Service Unavailable",
                                             messages.OUT_OF_CONNECTIONS,
                                             retry_after=limits.RETRY_AFTER_SECONDS)
            except OSError:
                pass
            client.close()
        self._reserve_fd = self._take_reserve()

    @staticmethod
    def _take_reserve() -> int | None:
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def set_accept_enabled(self, enabled: bool) -> None:
        if enabled and time.monotonic() < self._accept_paused_until:
            return
        super().set_accept_enabled(enabled)

    # --- buffering each request on the main thread ---------------------------------------------

    def _watch(self, conn, timeout: float) -> None:
        """Read ``conn`` from the loop until its request is whole, for at most ``timeout`` s."""
        conn.sock.setblocking(False)
        deadline = time.monotonic() + timeout
        self._waiting[conn] = deadline
        heapq.heappush(self._deadlines, (deadline, next(self._sequence), conn))
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_bytes, conn))

    def _unwatch(self, conn) -> None:
        if self._waiting.pop(conn, None) is not None:
            self.poller.unregister(conn.sock)

    def _on_bytes(self, conn, _sock=None) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            data = b""
        if data == b"":
            self._end_of_input(conn)
            return
        if data:
            conn.inbox += data
        self._serve_when_whole(conn)

    def _end_of_input(self, conn) -> None:
        """The client sent its last byte before its request was whole.

        Nothing of that request is stored. If it only half-closed and still reads, the parser
        tells it why (400, "incomplete"); that costs a pool thread no wait, as every byte is here.
        """
        if conn.inbox:
            self._serve_when_whole(conn, everything_arrived=True)
        else:
            self._close(conn)

    def _serve_when_whole(self, conn, everything_arrived: bool = False) -> None:
        if not everything_arrived and not conn.framing.complete(conn.inbox):
            if conn not in self._waiting:
                self._watch(conn, self._request_seconds)
            return
        self._unwatch(conn)
        if conn.framing.head_too_long(conn.inbox):
            self._answer_and_close(conn, 431, "Request Header Fields Too Large",
                                   messages.HEAD_TOO_LONG.format(limit=self._max_head))
            return
        conn.framing.reset()
        super().enqueue_req(conn)

    def _close(self, conn) -> None:
        self._unwatch(conn)
        self.nr_conns -= 1
        conn.close()

    def _answer_and_close(self, conn, status: int, reason: str, detail: str) -> None:
        try:
            json_errors.write_json_error(conn.sock, status, reason, detail)
        except OSError:
            pass
        self._close(conn)

    def enqueue_req(self, conn) -> None:
        """gunicorn calls this with a kept-alive connection whose next request was read ahead."""
        conn.inbox[:0] = conn.parser.unreader.take_buffered()
        conn.framing.reset()
        conn.sock.setblocking(False)
        self._serve_when_whole(conn)

    def on_client_socket_readable(self, conn, client) -> None:
        """A kept-alive connection has bytes: buffer them here, not on a pool thread."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._on_bytes(conn)

    def murder_pending(self) -> None:
        super().murder_pending()
        if not self.alive:
            # Stopping: connections that have not begun a request are closed now; one that has
            # may still finish within the graceful timeout.
            for conn in [conn for conn in self._waiting if not conn.inbox]:
                self._close(conn)
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, _, conn = heapq.heappop(self._deadlines)
            if self._waiting.get(conn) != deadline:
                continue  # stale: that request was served, or the connection closed
            if conn.inbox:
                self._answer_and_close(conn, 408, "Request Timeout",
                                       messages.REQUEST_TIMEOUT.format(seconds=self._request_seconds))
            else:
                self._close(conn)

    # --- serving, on a pool thread --------------------------------------------------------------

    def handle(self, conn):
        """Serve the buffered request from memory: the parser never reads the socket."""
        conn.init()
        unreader = conn.parser.unreader
        unreader.chunk = _no_more_bytes
        unreader.unread(bytes(conn.inbox))
        conn.inbox = bytearray()
        return super().handle(conn)

    # --- limits ---------------------------------------------------------------------------------

    def _longest_head_gunicorn_accepts(self) -> int:
        cfg = self.cfg
        fields = cfg.limit_request_fields or 100
        field_size = cfg.limit_request_field_size or 8190
        return cfg.limit_request_line + 2 + fields * (field_size + 2) + 4
