"""``tradestats-serve``: the HTTP service under gunicorn, in exactly one worker process."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Sequence

from gunicorn.app.base import BaseApplication

from tradestats import __version__, limits, messages
from tradestats.engine import WORST_CASE_BYTES_PER_PRICE

#: gunicorn's workers with tradestats' fixes (see workers/); the stock names are mapped to them.
MEINHELD_WORKER = "tradestats.workers.meinheld.MeinheldWorker"
STOCK_MEINHELD_WORKER = "meinheld.gmeinheld.MeinheldWorker"
FALLBACK_WORKER = "tradestats.workers.gthread.ThreadWorker"
STOCK_GTHREAD_WORKER = "gunicorn.workers.gthread.ThreadWorker"
WORKER_ALIASES = {
    "meinheld": MEINHELD_WORKER,
    STOCK_MEINHELD_WORKER: MEINHELD_WORKER,
    "gthread": FALLBACK_WORKER,
    STOCK_GTHREAD_WORKER: FALLBACK_WORKER,
}


#: gthread reads each request body on a pool thread; a few threads keep one slow uploader from
#: stalling everybody else (the engine itself is serialised by a lock in the web layer).
GTHREAD_THREADS = 4

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
    graceful_timeout: int = limits.SHUTDOWN_GRACE_SECONDS

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
    return MEINHELD_WORKER if meinheld_importable() else FALLBACK_WORKER


def worst_case_memory_bytes(max_k: int, max_symbols: int) -> int:
    return WORST_CASE_BYTES_PER_PRICE * 10**max_k * max_symbols


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
        bind=bind,
        max_k=settings.max_k,
        max_symbols=settings.max_symbols,
        max_batch=settings.max_batch,
        max_body_bytes=settings.max_body_bytes,
        worst_case=format_bytes(worst_case_memory_bytes(settings.max_k, settings.max_symbols)),
        bytes_per_price=WORST_CASE_BYTES_PER_PRICE,
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
        description="Serve the tradestats HTTP API (one gunicorn worker process).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=integer_in_range(0, 65535), default=8000)
    parser.add_argument(
        "--max-k", type=integer_in_range(1, limits.MAX_MAX_K), default=limits.DEFAULT_MAX_K,
        help="largest window is 10**max_k prices",
    )
    parser.add_argument(
        "--max-symbols", type=integer_in_range(1), default=limits.DEFAULT_MAX_SYMBOLS,
        help="symbols the server accepts before refusing new ones",
    )
    parser.add_argument(
        "--max-batch", type=integer_in_range(1), default=limits.DEFAULT_MAX_BATCH,
        help="most values in one /add_batch/ request",
    )
    parser.add_argument(
        "--max-body-bytes", type=integer_in_range(1), default=limits.DEFAULT_MAX_BODY_BYTES,
        help="largest /add_batch/ body accepted",
    )
    parser.add_argument(
        "--graceful-timeout", type=integer_in_range(0, 3600), default=limits.SHUTDOWN_GRACE_SECONDS,
        help="seconds a stop signal (SIGTERM, SIGINT) leaves requests in flight to finish (0..3600)",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    parser.add_argument(
        "--worker-class", default=None,
        help=f"gunicorn worker class (default: {MEINHELD_WORKER} when meinheld imports, "
        f"else {FALLBACK_WORKER}; 'meinheld' and {STOCK_MEINHELD_WORKER} mean the former, "
        f"'gthread' and {STOCK_GTHREAD_WORKER} the latter)",
    )
    parser.add_argument(
        "--workers", type=int, default=1,
        help="must be 1: the prices live in the one worker process's memory",
    )
    return parser


def parse_settings(argv: Sequence[str] | None = None) -> ServeSettings:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers != 1:
        parser.error(messages.WORKERS_REFUSED.format(workers=args.workers))  # exits with status 2
    worker_class = args.worker_class or default_worker_class()
    return ServeSettings(
        host=args.host,
        port=args.port,
        max_k=args.max_k,
        max_symbols=args.max_symbols,
        max_batch=args.max_batch,
        max_body_bytes=args.max_body_bytes,
        log_level=args.log_level,
        graceful_timeout=args.graceful_timeout,
        worker_class=WORKER_ALIASES.get(worker_class, worker_class),
    )


# --- gunicorn -------------------------------------------------------------------------------------

class TradestatsApplication(BaseApplication):
    """A gunicorn application whose WSGI app (and store) is built inside the worker process."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        super().__init__()

    def gunicorn_options(self) -> dict[str, Any]:
        settings = self.settings

        def when_ready(arbiter: Any) -> None:
            bound = ", ".join(str(listener) for listener in arbiter.LISTENERS) or settings.bind
            arbiter.log.info(startup_message(settings, bound))
            if settings.worker_class == FALLBACK_WORKER and not meinheld_importable():
                arbiter.log.info(messages.MEINHELD_FALLBACK.format(worker_class=FALLBACK_WORKER))

        return {
            "bind": settings.bind,
            "workers": 1,
            "worker_class": settings.worker_class,
            "threads": GTHREAD_THREADS,
            # A stop signal lets requests in flight finish for this long, then the master kills.
            "graceful_timeout": settings.graceful_timeout,
            "loglevel": settings.log_level,
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
        from tradestats.web import create_app

        settings = self.settings
        return create_app(
            max_k=settings.max_k,
            max_symbols=settings.max_symbols,
            max_batch=settings.max_batch,
            max_body_bytes=settings.max_body_bytes,
        )


def main(argv: Sequence[str] | None = None) -> None:
    TradestatsApplication(parse_settings(argv)).run()


if __name__ == "__main__":
    main()
