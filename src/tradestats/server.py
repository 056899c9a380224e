"""``tradestats-serve``: the command line, its settings, and what happens before HTTP starts.

The master process opens the data directory once (refusing one it cannot use, rolling back torn
batches, logging what it found), closes it, and hands over to the HTTP server (``servers/``):
granian by default, gunicorn on request. Each worker opens the same directory itself, so every
worker serves one dataset (see storage.py and layout.pxd).
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import logging.config
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from tradestats import Store, StoreFormatError, __version__, limits, logs, messages, scratch
from tradestats.engine import symbol_file_size
from tradestats.environment import HelpFormatter, OneLineErrors, apply_environment

log = logging.getLogger("tradestats.server")

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: What serves HTTP: ``granian`` (the default, see servers/granian.py) or ``gunicorn``.
SERVERS = ("granian", "gunicorn")
#: HTTP versions granian is asked to speak (``--http``).
HTTP_VERSIONS = ("1", "auto")
#: gunicorn's worker classes we offer under ``--server gunicorn``, and the default among them.
GUNICORN_WORKER_CLASSES = ("meinheld", "gthread")


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    host: str
    port: int
    max_k: int
    max_symbols: int
    max_batch: int
    max_body_bytes: int
    log_level: str
    workers: int
    data_dir: Path
    server: str = "granian"
    worker_class: str | None = None
    ephemeral: bool = False
    sync: bool = False
    graceful_timeout: int = limits.SHUTDOWN_GRACE_SECONDS
    request_timeout: int = limits.REQUEST_READ_SECONDS
    access_log: bool = False
    log_format: str = "text"
    http: str = "1"
    shared_group: bool = False
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    protect_reads: bool = False
    cluster: Path | None = None
    node: str | None = None

    def open_store(self) -> Store:
        return Store(max_symbols=self.max_symbols, max_k=self.max_k, path=self.data_dir,
                     max_batch=self.max_batch, sync=self.sync, shared_group=self.shared_group)

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_certfile else "http"

    @property
    def bind(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.bind}"

    def create_app(self):
        """The WSGI app over this process's own view of the data directory (call it in a
        worker, after the fork: a store's file locks must not be shared between processes)."""
        from tradestats.web import create_app

        return create_app(self.open_store(), max_batch=self.max_batch,
                          max_body_bytes=self.max_body_bytes, access_log=self.access_log,
                          api_key=self.api_key, protect_reads=self.protect_reads,
                          placement=self.placement())

    def placement(self):
        """A cluster node's view of the placement file, or None (not in a cluster)."""
        if self.cluster is None:
            return None
        from tradestats.cluster.placement import PlacementFile

        return PlacementFile(self.cluster, self.node)


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


def startup_message(settings: ServeSettings, server_name: str) -> str:
    return messages.STARTUP.format(
        version=__version__,
        server=server_name,
        workers=settings.workers,
        bind=settings.url,
        max_k=settings.max_k,
        max_symbols=settings.max_symbols,
        max_batch=settings.max_batch,
        max_body_bytes=settings.max_body_bytes,
        worst_case=format_bytes(
            worst_case_disk_bytes(settings.max_k, settings.max_symbols, settings.max_batch)),
        access=(messages.ACCESS_ALL if settings.protect_reads else messages.ACCESS_WRITES)
        if settings.api_key else messages.ACCESS_OPEN.format(
            host="every interface" if settings.host in ("0.0.0.0", "::") else settings.host),
    )


@dataclasses.dataclass(frozen=True)
class OpenedStore:
    symbols: int
    prices: int
    torn: list
    damaged: list
    seconds: float


def open_and_recover(settings: ServeSettings) -> OpenedStore:
    """Open the data directory in the master: refuse it now if unusable (migrating it first if
    an older version wrote it), roll back torn batches, and check every symbol's checksums,
    prices included. A symbol that fails is named in an ERROR line and refused on its own
    requests; the others are served.

    The store is closed again before the workers start: its file locks must not be shared.
    """
    started = time.monotonic()
    store = settings.open_store()
    torn, damaged, prices = [], [], 0
    for symbol in store:
        try:
            stats = store[symbol]
            if stats.recover():
                torn.append(symbol)
            stats.verify(recompute=False)
            prices += len(stats)
        except StoreFormatError as error:
            damaged.append(symbol)
            log.error(messages.SYMBOL_DAMAGED_LOG.format(path=error.path, reason=error.reason))
    return OpenedStore(len(store), prices, torn, damaged, time.monotonic() - started)


def store_message(settings: ServeSettings, opened: OpenedStore) -> str:
    return messages.STORE_OPENED.format(
        data_dir=settings.data_dir,
        kind=messages.STORE_EPHEMERAL if settings.ephemeral else messages.STORE_PERSISTENT,
        durability=messages.DURABILITY_SYNC if settings.sync else messages.DURABILITY_PROCESS,
        symbols=opened.symbols, prices=opened.prices, torn=len(opened.torn),
        damaged=len(opened.damaged), seconds=opened.seconds,
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


def readable_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(messages.FILE_UNREADABLE.format(path=text))
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="tradestats-serve",
        description="Serve the tradestats HTTP API: worker processes sharing one data directory.",
        formatter_class=HelpFormatter,
        epilog="Every option can also be set by its environment variable (shown with it); "
        "an option given here wins.",
    )
    parser.add_argument("--version", action="version", version=f"tradestats {__version__}")
    parser.add_argument("--host", default=limits.DEFAULT_HOST,
                        help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=integer_in_range(1, 65535), default=8000,
                        help="TCP port (1..65535)")
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
        "--request-timeout", type=integer_in_range(1, limits.MAX_REQUEST_READ_SECONDS),
        default=limits.REQUEST_READ_SECONDS,
        help="seconds a request head may take to arrive, and a kept-alive connection may stay "
        f"silent, before the connection is closed (1..{limits.MAX_REQUEST_READ_SECONDS})",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                        help="log level of the server's lines")
    parser.add_argument("--log-format", choices=logs.LOG_FORMATS, default="text",
                        help="text lines, or one JSON object per line")
    parser.add_argument("--access-log", action="store_true",
                        help="log one line per request, in the combined log format with the "
                        "latency in seconds last (off by default)")
    parser.add_argument(
        "--server", choices=SERVERS, default="granian",
        help="what serves HTTP: granian (hardened against hostile clients) or gunicorn (safe "
        "only behind a buffering proxy such as nginx; see the README)",
    )
    worker_class = parser.add_argument(
        "--worker-class", choices=GUNICORN_WORKER_CLASSES, default=None,
        help="with --server gunicorn only: meinheld or gthread",
    )
    worker_class.default_text = "meinheld when installed, else gthread"
    workers = parser.add_argument(
        "--workers", type=integer_in_range(1, limits.MAX_WORKERS), default=os.cpu_count() or 1,
        help=f"worker processes, all serving the same data (1..{limits.MAX_WORKERS})",
    )
    workers.default_text = "the number of CPUs"
    parser.add_argument(
        "--http", choices=HTTP_VERSIONS, default="1",
        help="1: HTTP/1.1 only; auto: also HTTP/2 (h2c with prior knowledge, h2 by ALPN over "
        "HTTPS). Under auto a connection that never sends a byte is held until the client "
        "leaves (no timer runs while the protocol is detected); under 1 it is closed after "
        "--request-timeout. granian only",
    )
    parser.add_argument("--ssl-certfile", type=readable_file, default=None,
                        help="serve HTTPS (and HTTP/2 by ALPN) with this PEM certificate chain")
    parser.add_argument("--ssl-keyfile", type=readable_file, default=None,
                        help="the certificate's private key (PEM, PKCS#8)")
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
        "--shared-group", action="store_true",
        help="make the files the server creates readable and writable by its group too (0660, "
        "directories 0770); by default they are its user's alone (0600, 0700)",
    )
    api_key = parser.add_argument(
        "--api-key", default=None, metavar="KEY",
        help="every write needs Authorization: Bearer KEY (401 otherwise); reads stay open unless "
        "--protect-reads. Prefer TRADESTATS_API_KEY or --api-key-file: a command line is "
        "visible to every user of the machine",
    )
    api_key.secret = True
    parser.add_argument(
        "--api-key-file", type=readable_file, default=None, metavar="PATH",
        help="read the API key from this file (its first line)",
    )
    parser.add_argument(
        "--protect-reads", action="store_true",
        help="with an API key, reads need it too (all but /health, /openapi.json, /docs and "
        "the pages' files)",
    )
    parser.add_argument(
        "--cluster", type=readable_file, default=None, metavar="PATH",
        help="this server is a node of a cluster (tradestats-cluster): the placement file that "
        "says which node owns each symbol; a symbol another node owns is refused with 421",
    )
    parser.add_argument(
        "--node", default=None, metavar="NAME",
        help="with --cluster: this node's name in the placement file",
    )
    parser.add_argument(
        "--sync", action="store_true",
        help="sync each batch to disk before acknowledging it (survives power loss; slower). "
        "Without it a batch survives any crash or kill of a process, not of the machine",
    )
    return parser


def parse_settings(argv: Sequence[str] | None = None,
                   environ: Mapping[str, str] | None = None) -> ServeSettings:
    """Settings from the command line, each flag defaulting to its TRADESTATS_<FLAG> variable."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    apply_environment(parser, os.environ if environ is None else environ, argv)
    args = parser.parse_args(argv)
    if args.ephemeral and args.data_dir != Path(limits.DEFAULT_DATA_DIR):
        parser.error(messages.EPHEMERAL_AND_DATA_DIR)
    if args.worker_class and args.server != "gunicorn":
        parser.error(messages.WORKER_CLASS_NEEDS_GUNICORN)
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        parser.error(messages.SSL_NEEDS_BOTH)
    if (args.ssl_certfile or args.http != "1") and args.server != "granian":
        parser.error(messages.SSL_NEEDS_GRANIAN)
    api_key = read_api_key(parser, args)
    check_cluster(parser, args)
    data_dir = args.data_dir
    if args.ephemeral:
        data_dir = scratch.make_owned_directory("")
    # Every other setting is the command-line option of the same name.
    from_options = {field.name: getattr(args, field.name)
                    for field in dataclasses.fields(ServeSettings)
                    if field.name not in ("data_dir", "api_key")}
    return ServeSettings(**from_options, data_dir=data_dir, api_key=api_key)


def check_cluster(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--cluster and --node go together, and the node must be in the placement file."""
    if (args.cluster is None) != (args.node is None):
        parser.error(messages.CLUSTER_NEEDS_NODE)
    if args.cluster is None:
        return
    from tradestats.cluster.placement import PlacementFile

    try:
        PlacementFile(args.cluster, args.node)
    except (ValueError, KeyError, TypeError) as error:
        parser.error(f"--cluster {args.cluster}: {error}")


def read_api_key(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The key from --api-key or the first line of --api-key-file (one of them), or None."""
    if args.api_key is not None and args.api_key_file is not None:
        parser.error(messages.API_KEY_TWICE)
    key = args.api_key
    if args.api_key_file is not None:
        lines = args.api_key_file.read_text(encoding="utf-8").splitlines()
        key = lines[0].strip() if lines else ""
        if not key:
            parser.error(messages.API_KEY_FILE_EMPTY.format(path=args.api_key_file))
    if key is not None:
        key = key.strip()   # a header's token is read stripped: so is the key
        if not key:
            parser.error(messages.API_KEY_EMPTY)
        if not (key.isascii() and key.isprintable()) or " " in key:
            parser.error(messages.API_KEY_CHARACTERS)
    if args.protect_reads and not key:
        parser.error(messages.PROTECT_READS_NEEDS_KEY)
    return key


METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def metrics_directory() -> tuple[Path, bool]:
    """Where the workers' metrics live (prometheus_client's multiprocess mode), set before any
    worker imports prometheus_client; True if it is ours to remove at exit."""
    given = os.environ.get(METRICS_DIR_VARIABLE)
    if given:
        return Path(given), False
    made = scratch.make_owned_directory("metrics-")
    os.environ[METRICS_DIR_VARIABLE] = str(made)
    return made, True


def run_server(settings: ServeSettings, announce: Callable[[str], list[str]],
               load_app: Callable[[ServeSettings], Any] = ServeSettings.create_app) -> None:
    """Serve ``load_app(settings)`` (called in each worker) on the chosen server until a stop
    signal; once listening, log ``announce(name of the server)``."""
    try:
        if settings.server == "gunicorn":
            from tradestats.servers import gunicorn as chosen
            chosen.require_worker_class(settings)
        else:
            from tradestats.servers import granian as chosen
    except ImportError as error:
        print(messages.SERVER_UNAVAILABLE.format(
            what=f"--server {settings.server}", reason=error,
            hint=f'pip install "tradestats[{settings.server}]"' if settings.server == "gunicorn"
            else "reinstall tradestats"), file=sys.stderr)
        sys.exit(2)
    chosen.serve(settings, announce, load_app)


def port_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port now (in use, not allowed...), or None. Asked
    before anything starts, so that a busy port is one line and status 2, not a server that
    retries and fails."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return str(error)
    family, kind, protocol, _, address = addresses[0]
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind(address)
        except OSError as error:
            return ("already in use (another server?)" if error.errno == errno.EADDRINUSE
                    else error.strerror or str(error))
    return None


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_settings(argv)
    problem = port_problem(settings.host, settings.port)
    if problem is not None:
        print(messages.PORT_UNAVAILABLE.format(bind=settings.bind, reason=problem),
              file=sys.stderr)
        sys.exit(2)
    metrics_dir, own_metrics_dir = metrics_directory()
    master_pid = os.getpid()
    # The master's own lines (a migration's progress, damaged symbols) in the server's format.
    logging.config.dictConfig(logs.dict_config(settings.log_format, settings.log_level))
    for removed in scratch.remove_abandoned():
        log.warning(messages.ABANDONED_REMOVED.format(path=removed))
    try:
        try:
            opened = open_and_recover(settings)
        except (StoreFormatError, OSError) as error:
            print(messages.STORE_REFUSED.format(error=error), file=sys.stderr)
            sys.exit(2)
        run_server(settings, lambda server_name: [startup_message(settings, server_name),
                                                  store_message(settings, opened)])
    finally:
        # A forked worker may unwind through this call when it exits: only the master, once
        # every worker is gone, may remove what they all share.
        if os.getpid() == master_pid:
            if settings.ephemeral:
                shutil.rmtree(settings.data_dir, ignore_errors=True)
            if own_metrics_dir:
                shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
