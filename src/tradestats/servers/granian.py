"""tradestats-serve on granian: the default HTTP server.

granian (Rust, hyper) parses HTTP/1.1 and HTTP/2, buffers and frames requests, runs TLS, and
keeps worker processes alive; the WSGI app runs on its blocking threads. What is ours here is
configuration, chosen for hostile clients (README, "HTTP server"):

* one connection slot per accepted connection (``backpressure``), at most
  ``limits.MAX_CONNECTIONS_PER_WORKER`` per worker: beyond it connections wait in the kernel's
  backlog instead of costing memory; each costs at most ``limits.HTTP1_BUFFER_BYTES`` of buffer;
* as many app threads as connection slots, so a client that sends its body slowly holds one
  thread and never delays anyone else (threads start on demand and end when idle);
* ``--request-timeout`` is hyper's deadline for a request head (and a kept-alive connection's
  silence): a client that dribbles its head loses its connection.
"""
from __future__ import annotations

import logging
import os
import resource
import signal
import sys
from functools import partial
from typing import Callable

from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server import Server

from tradestats import limits, messages
from tradestats.logs import dict_config
from tradestats.server import ServeSettings
from tradestats.servers.lifecycle import die_with_master

#: granian's own loggers (its Rust core logs as ``_granian``).
GRANIAN_LOGGERS = ("_granian", "granian", "granian.access")
#: granian's advice against more app threads than cores: the threads are deliberate (above).
GRANIAN_ADVICE_DROPPED = ("Configuration allows spawning up to",)
log = logging.getLogger("tradestats.server")


#: Deaths that come from outside the worker (an operator, the OOM killer, a stray signal).
KILLED_FROM_OUTSIDE = frozenset({-signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT, -signal.SIGQUIT})


class WorkerRespawningServer(Server):
    """granian's server, which replaces a killed worker however soon after the previous kill.

    granian stops the whole server when a worker dies within 5.5 s of the previous respawn of the
    same slot: a crash loop at start-up must not spin forever. A worker killed from outside
    (SIGKILL from the OOM killer or an operator) is not a crash loop; its slot's respawn time is
    forgotten, so it is always replaced. A worker that exits or crashes by itself keeps
    granian's judgement. (This overrides a private method: granian is pinned to 2.8.)
    """

    def _respawn_workers(self, workers, spawn_target, target_loader, delay: float = 0):
        killed = {idx for idx in workers if self.wrks[idx].inner.exitcode in KILLED_FROM_OUTSIDE}
        super()._respawn_workers(workers, spawn_target, target_loader, delay)
        for idx in killed:
            self.respawned_wrks.pop(idx, None)


def load_app_in_worker(settings: ServeSettings, load_app: Callable, master_pid: int):
    """granian's target loader, called in each worker process after it started."""
    die_with_master(master_pid)
    return load_app(settings)


def connection_slots(max_symbols: int) -> int:
    """Connections one worker may hold: ``limits.MAX_CONNECTIONS_PER_WORKER``, fewer if the
    descriptor limit (raised to its hard ceiling first) could not hold them besides the symbol
    files and the worker's own descriptors.

    Below that cap granian never meets EMFILE on accept (where it would retry at once, in a busy
    loop); connections beyond it wait in the listen backlog.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.MAX_CONNECTIONS_PER_WORKER + limits.RESERVED_DESCRIPTORS + max_symbols
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        soft = raised
    if soft == resource.RLIM_INFINITY:
        return limits.MAX_CONNECTIONS_PER_WORKER
    return min(limits.MAX_CONNECTIONS_PER_WORKER,
               soft - limits.RESERVED_DESCRIPTORS - max_symbols)


def granian_server(settings: ServeSettings) -> Server:
    connections = connection_slots(settings.max_symbols)
    if connections < limits.MIN_CONNECTIONS_PER_WORKER:
        print(messages.DESCRIPTORS_TOO_FEW.format(
            needed=limits.MIN_CONNECTIONS_PER_WORKER + limits.RESERVED_DESCRIPTORS
            + settings.max_symbols, max_symbols=settings.max_symbols), file=sys.stderr)
        sys.exit(2)
    return WorkerRespawningServer(
        "tradestats.web:create_app",  # only a label here: the loader below builds the app
        address=settings.host,
        port=settings.port,
        interface=Interfaces.WSGI,
        workers=settings.workers,
        blocking_threads=connections,
        blocking_threads_idle_timeout=limits.IDLE_THREAD_SECONDS,
        backpressure=connections,
        backlog=limits.LISTEN_BACKLOG,
        http=HTTPModes(settings.http),
        websockets=False,
        http1_settings=HTTP1Settings(
            header_read_timeout=settings.request_timeout * 1000,
            keep_alive=True,
            max_buffer_size=limits.HTTP1_BUFFER_BYTES,
        ),
        log_enabled=True,
        log_level=LogLevels(settings.log_level),
        log_dictconfig=dict_config(settings.log_format, settings.log_level, GRANIAN_LOGGERS,
                                   GRANIAN_ADVICE_DROPPED),
        log_access=False,  # web/access_log.py writes ours, with the latency the app measured
        ssl_cert=settings.ssl_certfile,
        ssl_key=settings.ssl_keyfile,
        respawn_failed_workers=True,
        # A stop signal lets requests in flight finish for this long, then workers are killed.
        workers_kill_timeout=max(settings.graceful_timeout, limits.MIN_KILL_TIMEOUT_SECONDS),
    )


def serve(settings: ServeSettings, announce: Callable[[str], list[str]], load_app: Callable) -> None:
    server = granian_server(settings)

    @server.on_startup
    def log_start_up_lines() -> None:
        for line in announce("granian"):   # INFO: a restart is no warning
            log.info(line)

    server.serve(target_loader=partial(load_app_in_worker, settings, load_app, os.getpid()),
                 wrap_loader=False)
