"""tradestats' default gunicorn worker: one event loop per process that reads every request whole
before serving it and writes every response without blocking.

Built on gunicorn's gthread worker (its accept loop, keep-alive queue, graceful stop) and its
HTTP parser, with the thread pool taken out:

* **A request is served only once it has arrived whole.** The loop reads every connection
  without blocking and buffers its bytes until ``framing.RequestFraming`` says one request is
  complete; gunicorn's parser then reads it from memory (its source is sealed: it cannot touch
  the socket). A client that dribbles or stops costs a buffer, never a thread: hundreds of slow
  clients leave the others' latency alone. (gunicorn's gthread gives a connection to a pool
  thread at its first byte; four clients sending one byte each stalled a 4-thread worker.)
* **A response is written without blocking.** The app's response is collected in memory and
  sent as the socket accepts it; a client that stops reading holds its own buffer only.
* **Everything has a deadline.** A request must arrive within ``--request-timeout`` of its first
  byte (a new connection's: of the connect), else 408 ``{"detail"}``; a connection that never
  speaks is closed quietly; a response not taken within ``limits.SEND_TIMEOUT_SECONDS`` is
  dropped with its connection; a head longer than gunicorn accepts is answered 431 at once.
* **Out of descriptors is a 503, never an exit.** One descriptor is held in reserve; when
  ``accept`` fails with EMFILE/ENFILE the reserve is released, the waiting client is answered 503
  with Retry-After, and the reserve is taken back. (gunicorn's worker exits.)
* **No thread handoff per request.** gthread passes each request to a pool thread and back,
  which on the 2-core VM measured here cost ~300 µs of CPU per request for a hello-world app;
  serving in the loop, as meinheld does, removes it. One request at a time per process: start
  one worker per core (the default).
* **Stop signals never hang.** gunicorn's gthread ``handle_quit`` runs
  ``ThreadPoolExecutor.shutdown`` inside the signal handler, taking a lock the interrupted main
  thread may hold: the worker then waits for ever on itself. Here every stop signal only sets a
  flag and wakes the loop; requests in flight finish within the graceful timeout.
"""
from __future__ import annotations

import email.utils
import errno
import heapq
import itertools
import os
import selectors
import socket
import time
from datetime import datetime
from functools import partial

from gunicorn import http, util
from gunicorn.http import wsgi
from gunicorn.http.errors import NoMoreData
from gunicorn.workers import gthread

from tradestats import limits, messages
from tradestats.web.errors import OUT_OF_RESOURCES
from tradestats.workers import json_errors
from tradestats.workers.framing import RequestFraming
from tradestats.workers.lifecycle import die_with_master

#: One read from, or one write to, a client socket.
IO_BYTES = 256 * 1024

#: After a response that closes the connection, unread request bytes are drained this long (and
#: at most this much) so that closing does not reset the connection under the response.
CLOSE_LINGER_SECONDS = 2.0
CLOSE_DRAIN_BYTES = 64 * 1024

#: A worker that already holds connections lets an idle sibling take the next one: after each
#: accept it stops accepting for this long per connection it holds, at most ACCEPT_YIELD_MAX.
#: Without it, one worker could take 3 of a client's 4 keep-alive connections and leave a
#: core idle (measured: GET throughput 0.50 x the limit app in one run, 1.38 in the next).
ACCEPT_YIELD_PER_CONNECTION = 0.0002
ACCEPT_YIELD_MAX = 0.002

#: Requests served in a row from one connection's pipeline before the others get a turn.
PIPELINE_TURN = 32

#: After a failed accept with no reserve descriptor to release, accepting pauses this long
#: (the listening socket stays readable, so the loop would otherwise spin).
ACCEPT_PAUSE_SECONDS = 0.1

NOTHING_TO_ACCEPT = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ECONNABORTED})

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


_formatted_date = (0, "")


def cached_http_date(timestamp=None) -> str:
    """gunicorn's ``util.http_date`` for the Date header, formatted once per second, not once per
    response (email.utils.formatdate was 4 % of a GET)."""
    global _formatted_date
    if timestamp is not None:
        return email.utils.formatdate(timestamp, localtime=False, usegmt=True)
    second = int(time.time())
    if _formatted_date[0] != second:
        _formatted_date = (second, email.utils.formatdate(second, localtime=False, usegmt=True))
    return _formatted_date[1]


def _no_more_bytes(size_hint=None) -> bytes:
    """The sealed source of a connection's parser: everything it may read is already buffered."""
    return b""


class Outbox:
    """Stands in for the client socket while a response is produced: it only collects bytes,
    which the loop then sends as the real socket accepts them."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = bytearray()

    def sendall(self, data) -> None:
        self.data += data

    def send(self, data) -> int:
        self.data += data
        return len(data)

    def gettimeout(self) -> float:
        return 0.0  # gunicorn's write_nonblock then writes without touching blocking modes


class BufferedWorker(gthread.ThreadWorker):
    # --- life cycle ---------------------------------------------------------------------------

    def init_process(self) -> None:
        die_with_master(self.ppid)
        json_errors.install()
        util.http_date = cached_http_date
        self._deadlines: list = []          # heap of (deadline, sequence, connection)
        self._sequence = itertools.count()
        self._timed: dict = {}              # connection -> (state, deadline) while it has one
        self._reserve_fd = self._take_reserve()
        self._accept_paused_until = 0.0
        self._idle = 0                      # connections kept alive between requests
        self._next_notify = 0.0
        self._max_head = self._longest_head_gunicorn_accepts()
        settings = getattr(self.app, "settings", None)
        # The app refuses larger bodies (413) from their Content-Length alone.
        self._max_body = getattr(settings, "max_body_bytes", limits.DEFAULT_MAX_BODY_BYTES)
        self._request_seconds = getattr(settings, "request_timeout", limits.REQUEST_READ_SECONDS)
        super().init_process()

    def get_thread_pool(self):
        # gthread's run() shuts a pool down at the end; this one never gets work (no threads).
        from concurrent.futures import ThreadPoolExecutor
        return ThreadPoolExecutor(max_workers=1)

    def notify(self) -> None:
        # gunicorn calls this every turn of the loop, i.e. about once per request; it is a
        # syscall (the arbiter's liveness file), and the arbiter only needs it every few seconds.
        now = time.monotonic()
        if now >= self._next_notify:
            self._next_notify = now + 1.0
            super().notify()

    def handle_quit(self, sig, frame) -> None:
        # Not gunicorn's: no lock and no exception inside a signal handler (see the module doc).
        self.handle_exit(sig, frame)

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
        if self.cfg.workers > 1:
            self._pause_accepting(min(self.nr_conns * ACCEPT_YIELD_PER_CONNECTION,
                                      ACCEPT_YIELD_MAX))
        conn = gthread.TConn(self.cfg, client, address, listener.getsockname())
        conn.inbox = bytearray()
        conn.framing = RequestFraming(self._max_head, self._max_body)
        conn.outbox = Outbox()
        conn.sent = 0
        conn.keep_after_write = False
        conn.registered = None  # (events, callback) while registered with the poller
        conn.closed = False
        conn.continued = False
        conn.initialized = True
        conn.parser = http.get_parser(self.cfg, client, address)
        conn.parser.unreader.chunk = _no_more_bytes
        # Without a socket to bound, the parser's body drain skips two fcntl calls per request.
        conn.parser.unreader.sock = None
        self._expect_bytes(conn, self._request_seconds)

    def _refuse_one_connection(self, listener, error: OSError) -> None:
        """Out of descriptors: free the reserve, answer one client 503, take the reserve back."""
        self.log.warning("worker %s: cannot accept a connection (%s): answering 503",
                         self.pid, os.strerror(error.errno))
        if self._reserve_fd is None:
            self._pause_accepting(ACCEPT_PAUSE_SECONDS)
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

    def _pause_accepting(self, seconds: float) -> None:
        self._accept_paused_until = time.monotonic() + seconds
        self.set_accept_enabled(False)

    def set_accept_enabled(self, enabled: bool) -> None:
        if enabled and time.monotonic() < self._accept_paused_until:
            return
        super().set_accept_enabled(enabled)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        # While accepting is paused, wake up in time to resume it (only then: accepting is also
        # off while stopping or at worker_connections, and the loop must not spin).
        pause_left = self._accept_paused_until - time.monotonic()
        if self.alive and not self._accepting and pause_left > 0:
            timeout = min(timeout, pause_left)
        super().wait_for_and_dispatch_events(timeout)

    # --- registration and deadlines -------------------------------------------------------------

    def _listen(self, conn, events: int, callback) -> None:
        if conn.registered == (events, callback):
            return  # already so: no syscall
        handler = partial(self._guarded, callback, conn)
        if conn.registered:
            self.poller.modify(conn.sock, events, handler)
        else:
            conn.sock.setblocking(False)
            self.poller.register(conn.sock, events, handler)
        conn.registered = (events, callback)

    def _unlisten(self, conn) -> None:
        if conn.registered:
            self.poller.unregister(conn.sock)
            conn.registered = None

    def _set_deadline(self, conn, state: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        if self._timed.get(conn, ("",))[0] == "idle":
            self._idle -= 1
        if state == "idle":
            self._idle += 1
        self._timed[conn] = (state, deadline)
        heapq.heappush(self._deadlines, (deadline, next(self._sequence), conn))

    def _guarded(self, callback, conn, _fileobj=None) -> None:
        """A failure on one connection closes that connection, never the worker."""
        try:
            callback(conn)
        except Exception:
            self.log.exception("worker %s: closing a connection after an error", self.pid)
            self._close(conn)

    def _untime(self, conn) -> None:
        state, _ = self._timed.pop(conn, ("", None))
        if state == "idle":
            self._idle -= 1

    def _close(self, conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._untime(conn)
        self._unlisten(conn)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        if not self.alive:
            # Stopping: close what has not begun a request, and lingering closes; a request
            # already begun may still arrive and be served within the graceful timeout.
            for conn, (state, _) in list(self._timed.items()):
                if state in ("draining", "idle") or (state == "reading" and not conn.inbox):
                    self._close(conn)
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, _, conn = heapq.heappop(self._deadlines)
            state, current = self._timed.get(conn, (None, None))
            if current != deadline:
                continue  # stale: the connection moved on since
            if state == "reading" and conn.inbox:
                self._reply_and_close(conn, 408, "Request Timeout",
                                      messages.REQUEST_TIMEOUT.format(seconds=self._request_seconds))
            else:
                self._close(conn)

    # --- reading requests -----------------------------------------------------------------------

    def _expect_bytes(self, conn, seconds: float | None = None) -> None:
        if seconds is not None or conn not in self._timed:
            self._set_deadline(conn, "reading", seconds or self._request_seconds)
        self._listen(conn, selectors.EVENT_READ, self._on_readable)

    @staticmethod
    def _receive(conn) -> bytes | None:
        """What the socket has now: None if nothing yet, b"" at its end (or when it failed)."""
        try:
            return conn.sock.recv(IO_BYTES)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""

    def _on_readable(self, conn) -> None:
        data = self._receive(conn)
        if data is None:
            return
        if not data:
            # The client sent its last byte. Nothing of an unfinished request is stored; if it
            # only half-closed, the parser tells it why (400) from what did arrive.
            if conn.inbox:
                self._serve_buffered(conn, end_of_input=True)
            else:
                self._close(conn)
            return
        if self._timed.get(conn, ("",))[0] == "idle":
            self._untime(conn)  # a new request begins: its deadline is set if it needs one
        conn.inbox += data
        self._serve_buffered(conn)

    def _serve_buffered(self, conn, end_of_input: bool = False) -> None:
        """Serve the whole requests buffered on ``conn``, then wait for more or for the send.

        At most ``PIPELINE_TURN`` in a row: a client that pipelines thousands of requests in one
        write then waits its turn behind the other connections, like everybody else.
        """
        if conn.closed:
            return
        for _ in range(PIPELINE_TURN):
            if not end_of_input and not conn.framing.complete(conn.inbox):
                if conn.framing.expects_continue and not conn.continued:
                    conn.continued = True
                    self._send_now(conn, CONTINUE)
                self._expect_bytes(conn)
                return
            if conn.framing.head_too_long(conn.inbox):
                self._reply_and_close(conn, 431, "Request Header Fields Too Large",
                                      messages.HEAD_TOO_LONG.format(limit=self._max_head))
                return
            conn.framing.reset()
            conn.continued = False
            conn.keep_after_write = self._serve_one(conn) and not end_of_input
            self._untime(conn)
            if not self._flush(conn):
                self._set_deadline(conn, "writing", limits.SEND_TIMEOUT_SECONDS)
                self._listen(conn, selectors.EVENT_WRITE, self._on_writable)
                return
            if not self._next_request(conn):
                return
        self._listen(conn, selectors.EVENT_READ, self._on_readable)
        self.method_queue.defer(self._guarded, self._serve_buffered, conn)

    def _next_request(self, conn) -> bool:
        """After a response went out: True if a pipelined request is already buffered; else the
        connection is closed or kept alive to wait for one."""
        if not conn.keep_after_write:
            self._close_gracefully(conn)
            return False
        conn.inbox = bytearray(conn.parser.unreader.take_buffered())
        if not conn.inbox:
            self._keep_alive(conn)
            return False
        # A pipelined request was read ahead: it has the request deadline from now.
        self._set_deadline(conn, "reading", self._request_seconds)
        return True

    def _keep_alive(self, conn) -> None:
        """Idle until the next request, for gunicorn's keep-alive timeout; the connection stays
        registered (no epoll_ctl per request)."""
        self._set_deadline(conn, "idle", self.cfg.keepalive)
        self._listen(conn, selectors.EVENT_READ, self._on_readable)

    # --- serving --------------------------------------------------------------------------------

    def _serve_one(self, conn) -> bool:
        """Parse one request from the buffer, run the app, collect the response in the outbox.
        True when the connection may carry another request."""
        conn.parser.unreader.unread(bytes(conn.inbox))
        conn.inbox = bytearray()
        req = None
        try:
            req = next(conn.parser)
            if not req:
                return False
            return self._respond(req, conn) and conn.parser.finish_body()
        except (NoMoreData, StopIteration):
            return False
        except Exception as error:
            conn.outbox.data.clear()  # nothing of it was sent: the error replaces it whole
            self.handle_error(req, conn.outbox, conn.client, error)
            return False

    def _respond(self, req, conn) -> bool:
        environ, resp = {}, None
        try:
            self.cfg.pre_request(self, req)
            started = datetime.now()
            resp, environ = wsgi.create(req, conn.outbox, conn.client, conn.server, self.cfg)
            self.nr += 1
            if self.nr >= self.max_requests:
                if self.alive:
                    self.log.info("Autorestarting worker after current request.")
                    self.alive = False
            if not self.alive or not self.cfg.keepalive or self._idle >= self.max_keepalived:
                resp.force_close()
            body = self.wsgi(environ, resp.start_response)
            try:
                for piece in body:
                    resp.write(piece)
                resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.now() - started)
                if hasattr(body, "close"):
                    body.close()
            return not resp.should_close()
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")

    # --- writing responses ----------------------------------------------------------------------

    def _flush(self, conn) -> bool:
        """Send what the socket takes now; True once the outbox is empty, or the peer is gone
        (then ``keep_after_write`` is cleared: the connection is closed after)."""
        data = conn.outbox.data
        with memoryview(data) as view:
            while conn.sent < len(data):
                try:
                    conn.sent += conn.sock.send(view[conn.sent:conn.sent + IO_BYTES])
                except (BlockingIOError, InterruptedError):
                    return False
                except OSError:
                    conn.keep_after_write = False
                    break
        data.clear()
        conn.sent = 0
        return True

    def _on_writable(self, conn) -> None:
        if not self._flush(conn):
            return
        self._untime(conn)
        if self._next_request(conn):
            self._listen(conn, selectors.EVENT_READ, self._on_readable)
            self._serve_buffered(conn)

    def _send_now(self, conn, data: bytes) -> None:
        try:
            conn.sock.send(data)
        except OSError:
            pass

    def _reply_and_close(self, conn, status: int, reason: str, detail: str) -> None:
        try:
            json_errors.write_json_error(conn.sock, status, reason, detail)
        except OSError:
            pass
        self._close_gracefully(conn)

    def _close_gracefully(self, conn) -> None:
        """RFC 9112 section 9.6: half-close, drain what the client still sends, then close (a close
        with unread bytes would reset the connection and could destroy the response)."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.drained = 0
        self._set_deadline(conn, "draining", CLOSE_LINGER_SECONDS)
        self._listen(conn, selectors.EVENT_READ, self._on_drain)

    def _on_drain(self, conn) -> None:
        data = self._receive(conn)
        if data is None:
            return
        conn.drained += len(data)
        if not data or conn.drained > CLOSE_DRAIN_BYTES:
            self._close(conn)

    # --- limits ---------------------------------------------------------------------------------

    def _longest_head_gunicorn_accepts(self) -> int:
        cfg = self.cfg
        fields = cfg.limit_request_fields or 100
        field_size = cfg.limit_request_field_size or 8190
        return cfg.limit_request_line + 2 + fields * (field_size + 2) + 4
