"""``tradestats-serve``: the HTTP service under gunicorn.

The master opens the data directory once (refusing one it cannot use, rolling back torn
batches, logging what it found), closes it, and forks the workers; each worker opens the same
directory itself, so every worker serves one dataset (see storage.py and layout.pxd).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from gunicorn.app.base import BaseApplication

from tradestats import Store, StoreFormatError, __version__, limits, logs, messages
from tradestats.engine import symbol_file_size

#: gunicorn's workers with tradestats' fixes (see workers/); the stock names are mapped to them.
MEINHELD_WORKER = "tradestats.workers.meinheld.MeinheldWorker"
STOCK_MEINHELD_WORKER = "meinheld.gmeinheld.MeinheldWorker"
BUFFERED_WORKER = "tradestats.workers.buffered.BufferedWorker"
STOCK_GTHREAD_WORKER = "gunicorn.workers.gthread.ThreadWorker"
WORKER_ALIASES = {
    "buffered": BUFFERED_WORKER,
    "meinheld": MEINHELD_WORKER,
    STOCK_MEINHELD_WORKER: MEINHELD_WORKER,
    # gthread's loop is what the buffered worker is built on; its pool threads read requests
    # with no deadline, so a few slow clients stall it (README, "Worker classes").
    "gthread": BUFFERED_WORKER,
    STOCK_GTHREAD_WORKER: BUFFERED_WORKER,
}


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    host: str
    port: int
    max_k: int
    max_symbols: int
    max_batch: int
    max_body_bytes: int
    log_level: str
    worker_class: str
    workers: int
    data_dir: Path
    ephemeral: bool = False
    sync: bool = False
    graceful_timeout: int = limits.SHUTDOWN_GRACE_SECONDS
    request_timeout: int = limits.REQUEST_READ_SECONDS
    access_log: bool = False
    log_format: str = "text"

    def open_store(self) -> Store:
        return Store(max_symbols=self.max_symbols, max_k=self.max_k, path=self.data_dir,
                     max_batch=self.max_batch, sync=self.sync)

    @property
    def bind(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"


def meinheld_importable() -> bool:
    try:
        import meinheld  # noqa: F401
    except ImportError:
        return False
    return True


def default_worker_class() -> str:
    """The buffered worker: it passes every hostile-client test (README, "Worker classes")."""
    return BUFFERED_WORKER


def worst_case_disk_bytes(max_k: int, max_symbols: int, max_batch: int) -> int:
    return symbol_file_size(max_k, max_batch) * max_symbols


def format_bytes(count: int) -> str:
    """``17179869184`` -> ``'16.0 GiB'``: binary units, one decimal."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def startup_message(settings: ServeSettings, bind: str) -> str:
    return messages.STARTUP.format(
        version=__version__,
        worker_class=settings.worker_class,
        workers=settings.workers,
        bind=bind,
        max_k=settings.max_k,
        max_symbols=settings.max_symbols,
        max_batch=settings.max_batch,
        max_body_bytes=settings.max_body_bytes,
        worst_case=format_bytes(
            worst_case_disk_bytes(settings.max_k, settings.max_symbols, settings.max_batch)),
    )


@dataclasses.dataclass(frozen=True)
class OpenedStore:
    symbols: int
    prices: int
    torn: list
    seconds: float


def open_and_recover(settings: ServeSettings) -> OpenedStore:
    """Open the data directory in the master: refuse it now if unusable, roll back torn batches.

    The store is closed again before the workers fork: its file locks must not be shared.
    """
    started = time.monotonic()
    store = settings.open_store()
    torn = store.recover()
    prices = sum(len(store[symbol]) for symbol in store)
    return OpenedStore(len(store), prices, torn, time.monotonic() - started)


def store_message(settings: ServeSettings, opened: OpenedStore) -> str:
    return messages.STORE_OPENED.format(
        data_dir=settings.data_dir,
        kind=messages.STORE_EPHEMERAL if settings.ephemeral else messages.STORE_PERSISTENT,
        durability=messages.DURABILITY_SYNC if settings.sync else messages.DURABILITY_PROCESS,
        symbols=opened.symbols, prices=opened.prices, torn=len(opened.torn),
        seconds=opened.seconds,
    )


# --- command line ---------------------------------------------------------------------------------

def integer_in_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                messages.ARGUMENT_OUT_OF_RANGE.format(
                    low=low, high="any size" if high is None else high, value=text
                )
            )
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradestats-serve",
        description="Serve the tradestats HTTP API: gunicorn workers sharing one data directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tradestats {__version__}")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=integer_in_range(0, 65535), default=8000,
                        help="TCP port (0..65535; 0 picks a free one)")
    parser.add_argument(
        "--max-k", type=integer_in_range(1, limits.MAX_MAX_K), default=limits.DEFAULT_MAX_K,
        help=f"largest window is 10**max_k prices (1..{limits.MAX_MAX_K})",
    )
    parser.add_argument(
        "--max-symbols", type=integer_in_range(1), default=limits.DEFAULT_MAX_SYMBOLS,
        help="symbols the server accepts before refusing new ones (1 or more)",
    )
    parser.add_argument(
        "--max-batch", type=integer_in_range(1), default=limits.DEFAULT_MAX_BATCH,
        help="most values in one /add_batch/ request (1 or more; a data directory keeps the "
        "value it was created with as its ceiling)",
    )
    parser.add_argument(
        "--max-body-bytes", type=integer_in_range(1), default=limits.DEFAULT_MAX_BODY_BYTES,
        help="largest /add_batch/ body accepted, in bytes (1 or more)",
    )
    parser.add_argument(
        "--graceful-timeout", type=integer_in_range(0, 3600), default=limits.SHUTDOWN_GRACE_SECONDS,
        help="seconds a stop signal (SIGTERM, SIGINT) leaves requests in flight to finish (0..3600)",
    )
    parser.add_argument(
        "--request-timeout", type=integer_in_range(1, 3600), default=limits.REQUEST_READ_SECONDS,
        help="seconds a request may take to arrive whole, from its first byte (a new "
        f"connection's: from the connect), else 408 (1..3600, default {limits.REQUEST_READ_SECONDS};"
        " buffered worker only)",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                        help="gunicorn's log level")
    parser.add_argument("--log-format", choices=logs.LOG_FORMATS, default="text",
                        help="text lines, or one JSON object per line")
    parser.add_argument("--access-log", action="store_true",
                        help="log one line per request with its latency (off by default)")
    parser.add_argument(
        "--worker-class", default=None,
        help=f"gunicorn worker class (default: 'buffered', i.e. {BUFFERED_WORKER}, also chosen by "
        f"'gthread' and {STOCK_GTHREAD_WORKER}; 'meinheld' or {STOCK_MEINHELD_WORKER} choose "
        f"{MEINHELD_WORKER}: NOT safe against hostile clients, see the README)",
    )
    parser.add_argument(
        "--workers", type=integer_in_range(1, limits.MAX_WORKERS), default=os.cpu_count() or 1,
        help=f"worker processes, all serving the same data (1..{limits.MAX_WORKERS}; "
        "default: the number of CPUs)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--data-dir", type=Path, default=Path(limits.DEFAULT_DATA_DIR),
        help="directory holding the prices, created if missing; kept across restarts",
    )
    where.add_argument(
        "--ephemeral", action="store_true",
        help="keep the prices in a throwaway directory (in /dev/shm when present), removed "
        "when the server stops",
    )
    parser.add_argument(
        "--sync", action="store_true",
        help="sync each batch to disk before acknowledging it (survives power loss; slower). "
        "Without it a batch survives any crash or kill of a process, not of the machine",
    )
    return parser


def refuse_unusable_worker_class(worker_class: str) -> None:
    """An unknown or unimportable worker class is one line on stderr and exit status 2, before
    gunicorn starts (gunicorn itself would print a traceback per worker, then give up)."""
    from gunicorn.util import load_class

    try:
        load_class(worker_class)
    except BaseException as error:  # load_class raises RuntimeError, ImportError, SystemExit...
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = lines[0].rstrip(":") if lines else type(error).__name__
        print(messages.WORKER_CLASS_REFUSED.format(worker_class=worker_class, reason=reason),
              file=sys.stderr)
        sys.exit(2)


def parse_settings(argv: Sequence[str] | None = None) -> ServeSettings:
    parser = build_parser()
    args = parser.parse_args(argv)
    worker_class = WORKER_ALIASES.get(args.worker_class, args.worker_class) \
        or default_worker_class()
    refuse_unusable_worker_class(worker_class)
    data_dir = args.data_dir
    if args.ephemeral:
        shm = Path("/dev/shm")
        data_dir = Path(tempfile.mkdtemp(prefix="tradestats-", dir=shm if shm.is_dir() else None))
    # Every other setting is the command-line option of the same name.
    from_options = {field.name: getattr(args, field.name)
                    for field in dataclasses.fields(ServeSettings)
                    if field.name not in ("data_dir", "worker_class")}
    return ServeSettings(**from_options, data_dir=data_dir, worker_class=worker_class)


# --- gunicorn -------------------------------------------------------------------------------------

class TradestatsApplication(BaseApplication):
    """A gunicorn application whose WSGI app (and store) is built inside the worker process."""

    def __init__(self, settings: ServeSettings, opened: OpenedStore) -> None:
        self.settings = settings
        self.opened = opened
        super().__init__()

    def gunicorn_options(self) -> dict[str, Any]:
        settings, opened = self.settings, self.opened

        def when_ready(arbiter: Any) -> None:
            bound = ", ".join(str(listener) for listener in arbiter.LISTENERS) or settings.bind
            # Shown at any --log-level: operators want the configuration even when warnings only.
            level = max(logging.INFO, logging.getLevelName(settings.log_level.upper()))
            arbiter.log.log(level, startup_message(settings, bound))
            arbiter.log.log(level, store_message(settings, opened))
            if settings.worker_class == MEINHELD_WORKER:
                arbiter.log.warning(messages.MEINHELD_RISKS)

        return {
            "bind": settings.bind,
            "workers": settings.workers,
            "worker_class": settings.worker_class,
            "worker_connections": limits.MAX_CONNECTIONS_PER_WORKER,
            # tradestats reads no forwarding header: with none configured, trusting every peer
            # trusts nothing, and spares gunicorn parsing the peer's address on every request.
            "forwarded_allow_ips": "*",
            "secure_scheme_headers": {},
            "forwarder_headers": "",
            # A stop signal lets requests in flight finish for this long, then the master kills.
            "graceful_timeout": settings.graceful_timeout,
            "loglevel": settings.log_level,
            "logger_class": "tradestats.logs.Logger",
            "proc_name": "tradestats",
            "when_ready": when_ready,
            "child_exit": forget_dead_worker_gauges,
            # gunicorn >= 25.1 opens a control socket by default; it could add workers at run time
            # (and two servers would fight over its one path).
            "control_socket_disable": True,
        }

    def load_config(self) -> None:
        for key, value in self.gunicorn_options().items():
            if key in self.cfg.settings:  # older gunicorn versions lack some settings
                self.cfg.set(key, value)

    def load(self) -> Any:
        from tradestats.web import create_app

        settings = self.settings
        return create_app(
            settings.open_store(),
            max_batch=settings.max_batch,
            max_body_bytes=settings.max_body_bytes,
            access_log=settings.access_log,
        )


METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def forget_dead_worker_gauges(arbiter: Any, worker: Any) -> None:
    """gunicorn's child_exit hook: a dead worker's live gauges must not be summed any more
    (its counters stay, so nothing it counted is lost)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def metrics_directory() -> tuple[Path, bool]:
    """Where the workers' metrics live (prometheus_client's multiprocess mode), set before any
    worker imports prometheus_client; True if it is ours to remove at exit."""
    given = os.environ.get(METRICS_DIR_VARIABLE)
    if given:
        return Path(given), False
    shm = Path("/dev/shm")
    made = Path(tempfile.mkdtemp(prefix="tradestats-metrics-", dir=shm if shm.is_dir() else None))
    os.environ[METRICS_DIR_VARIABLE] = str(made)
    return made, True


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_settings(argv)
    logs.Logger.log_format = settings.log_format  # the workers inherit it at fork
    metrics_dir, own_metrics_dir = metrics_directory()
    master_pid = os.getpid()
    try:
        try:
            opened = open_and_recover(settings)
        except (StoreFormatError, OSError) as error:
            print(messages.STORE_REFUSED.format(error=error), file=sys.stderr)
            sys.exit(2)
        TradestatsApplication(settings, opened).run()
    finally:
        # Workers are forks of this call and unwind through it when they exit: only the
        # master, once every worker is gone, may remove what they all share.
        if os.getpid() == master_pid:
            if settings.ephemeral:
                shutil.rmtree(settings.data_dir, ignore_errors=True)
            if own_metrics_dir:
                shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
