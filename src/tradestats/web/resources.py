"""The Falcon resources: each receives its collaborators, parses with inputs.py, calls the store."""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Callable

import falcon

from tradestats import (
    DiskFullError,
    InvalidPriceError,
    NotEnoughDataError,
    StorageSyncError,
    Store,
    StoreFormatError,
    TooManySymbolsError,
    limits,
    messages,
)
from tradestats.envelope import MAX_BUCKETS
from tradestats.web.batch_body import parse_batch_body
from tradestats.web.errors import bad_request
from tradestats.web.inputs import (
    read_bounded_body,
    require_json_content_type,
    strict_integer,
    symbol_problem,
)

log = logging.getLogger("tradestats.web")


# --- the store, shared by the resources -----------------------------------------------------------

class SerializedStore:
    """A heap Store takes one writer at a time and a threaded WSGI server calls us from many
    threads, so its writes and listings take a lock; its stats and prices read a snapshot
    published with the GIL held, and never wait for an add (which runs without the GIL). A
    file store locks per symbol itself and its readers never wait: no lock here. (Under
    meinheld, greenlets on one thread, the lock is never contended.)
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        in_heap = getattr(store, "path", None) is None
        self._lock = threading.Lock() if in_heap else contextlib.nullcontext()

    @property
    def max_k(self) -> int:
        return self.store.max_k

    def add(self, symbol: str, values: list | memoryview) -> None:
        with self._lock, refused_if_damaged(symbol):
            self.store.add(symbol, values)

    def stats(self, symbol: str, k: int):
        with refused_if_damaged(symbol):
            return self.store.stats(symbol, k)

    def delete(self, symbol: str) -> None:
        with self._lock, refused_if_damaged(symbol):
            self.store.delete(symbol)

    def summary(self, local: bool = False) -> tuple[list[dict], list[str]]:
        """Every symbol with its count and last price, sorted by symbol (and no node missing:
        a cluster node's view lists its peers' too, web/cluster.py)."""
        with self._lock:
            return self.store.symbols(), []

    def prices(self, symbol: str, n: int) -> list[float]:
        with refused_if_damaged(symbol):
            return self.store.prices(symbol, n).tolist()

    def envelope(self, symbol: str, k: int, buckets: int):
        # In the heap an envelope reads the ring, where an add without the GIL may be writing.
        with self._lock, refused_if_damaged(symbol):
            return self.store.envelope(symbol, k, buckets)


@contextlib.contextmanager
def refused_if_damaged(symbol: str):
    """A symbol whose file fails a check is answered 500 naming it, never served; the other
    symbols are not affected."""
    try:
        yield
    except StoreFormatError as error:
        log.error(messages.SYMBOL_DAMAGED_LOG.format(path=error.path, reason=error.reason))
        raise falcon.HTTPInternalServerError(
            description=messages.SYMBOL_DAMAGED.format(symbol=symbol, reason=error.reason)
        ) from None


# --- resources ------------------------------------------------------------------------------------

class AddBatchResource:
    def __init__(self, store: SerializedStore, *, max_batch: int, max_body_bytes: int,
                 on_added: Callable[[int], None] = lambda count: None) -> None:
        self._store = store
        self._max_batch = max_batch
        self._max_body_bytes = max_body_bytes
        self._on_added = on_added
        # Ingest is one lane per worker, two stages: one body parsed at a time, and one batch
        # added at a time (the next body is parsed meanwhile). Both stages run without the GIL
        # where libsimdjson was built (web/batch_body.py); with pysimdjson the parse holds it,
        # and 16 app threads taking turns at it cost 1,129 us of CPU per 10,000-value POST
        # against 827 with the gate. The lane leaves the worker's other core(s) to queries:
        # with adds of different symbols in parallel, GET p99 under 4 POSTing connections was
        # 17-25 ms, with the lane 6.3 ms (3.9 ms with no POST at all; benchmarks/bench_http.py
        # --cases mixed). The body is read before either gate: a slow client never holds one.
        self._parse_gate = threading.Lock()
        self._add_gate = threading.Lock()

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        require_json_content_type(req)
        body = read_bounded_body(req, self._max_body_bytes)
        with self._parse_gate:
            symbol, values = parse_batch_body(req, body, self._max_batch)
        routed_by = req.params.get("symbol")
        if routed_by is not None and routed_by != symbol:
            # ?symbol= is what a router routes by: it must be the symbol stored.
            bad_request(messages.QUERY_SYMBOL_DIFFERS.format(query=routed_by, body=symbol))
        with self._add_gate:
            self._add(resp, symbol, values)

    def _add(self, resp: falcon.Response, symbol: str, values) -> None:
        try:
            self._store.add(symbol, values)
        except InvalidPriceError as error:
            bad_request(
                messages.VALUE_INVALID.format(index=error.index, max_abs=limits.MAX_ABS_PRICE)
            )
        except TooManySymbolsError as error:
            bad_request(messages.SYMBOL_LIMIT_REACHED.format(max_symbols=error.max_symbols))
        except DiskFullError:
            raise falcon.HTTPError(falcon.HTTP_507, description=messages.DISK_FULL) from None
        except StorageSyncError:
            raise falcon.HTTPServiceUnavailable(
                description=messages.SYNC_FAILED,
                retry_after=limits.RETRY_AFTER_SECONDS) from None
        self._on_added(len(values))
        resp.media = {"message": messages.BATCH_ADDED}


class StatsResource:
    def __init__(self, store: SerializedStore) -> None:
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        symbol = required_symbol(req)
        k = window_exponent(req, self._store.max_k)
        try:
            stats = self._store.stats(symbol, k)
        except KeyError:
            bad_request(messages.SYMBOL_NOT_FOUND.format(symbol=symbol))
        except NotEnoughDataError:
            bad_request(messages.NOT_ENOUGH_DATA)
        resp.media = {
            "symbol": symbol,
            "min": stats.min,
            "max": stats.max,
            "last": stats.last,
            "avg": stats.avg,
            "var": stats.var,
        }


def window_exponent(req: falcon.Request, max_k: int) -> int:
    """The k parameter of a window of 10**k prices, or the contract's 400."""
    k = strict_integer(req, "k", 1, max_k)
    if k is None:
        bad_request(messages.INVALID_K)
    return k


def required_symbol(req: falcon.Request) -> str:
    symbol = req.get_param("symbol")
    if not symbol:
        bad_request(messages.MISSING_SYMBOL)
    if symbol_problem(symbol) is not None:
        bad_request(messages.SYMBOL_NOT_FOUND.format(symbol=symbol))
    return symbol


class SymbolsResource:
    def __init__(self, store: SerializedStore) -> None:
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        rows, missing = self._store.summary(local=req.get_param("local") == "1")
        if missing:   # a cluster's listing without the nodes that did not answer
            resp.set_header("X-Tradestats-Missing-Nodes", ",".join(missing))
        resp.media = {"symbols": rows}

    def on_delete(self, req: falcon.Request, resp: falcon.Response) -> None:
        symbol = required_symbol(req)
        try:
            self._store.delete(symbol)
        except KeyError:
            bad_request(messages.SYMBOL_NOT_FOUND.format(symbol=symbol))
        resp.media = {"message": messages.SYMBOL_DELETED.format(symbol=symbol)}


class PricesResource:
    def __init__(self, store: SerializedStore) -> None:
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        symbol = required_symbol(req)
        n = strict_integer(req, "n", 1, limits.MAX_PRICES_PER_REQUEST)
        if n is None:
            bad_request(messages.INVALID_N)
        try:
            prices = self._store.prices(symbol, n)
        except KeyError:
            bad_request(messages.SYMBOL_NOT_FOUND.format(symbol=symbol))
        resp.media = {"symbol": symbol, "prices": prices}


class EnvelopeResource:
    """The chart's view of a whole window: min and max per bucket (SymbolStats.envelope)."""

    def __init__(self, store: SerializedStore) -> None:
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        symbol = required_symbol(req)
        k = window_exponent(req, self._store.max_k)
        buckets = limits.DEFAULT_ENVELOPE_BUCKETS if "buckets" not in req.params else \
            strict_integer(req, "buckets", 1, MAX_BUCKETS)
        if buckets is None:
            bad_request(messages.INVALID_BUCKETS)
        try:
            envelope = self._store.envelope(symbol, k, buckets)
        except KeyError:
            bad_request(messages.SYMBOL_NOT_FOUND.format(symbol=symbol))
        except NotEnoughDataError:
            bad_request(messages.NOT_ENOUGH_DATA)
        resp.media = {"symbol": symbol, "k": k, "count": envelope.count, "start": envelope.start,
                      "bucket_prices": envelope.bucket_prices, "complete": envelope.complete,
                      # orjson writes NaN (a bucket the pyramid does not reach yet) as null
                      "min": envelope.min.tolist(), "max": envelope.max.tolist()}


class HealthResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": messages.HEALTH_OK}
