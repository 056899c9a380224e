"""The Falcon WSGI layer: parse and validate HTTP requests, call the engine, shape JSON replies.

No statistics are computed here; every number comes from :class:`tradestats.Store`. The exact
status codes and ``detail`` texts are the contract in ../shared/API.md (texts: ``messages.py``).
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import re
import threading
from typing import Any, NoReturn

import falcon
import orjson
from falcon import media

from tradestats import (
    DiskFullError,
    InvalidPriceError,
    NotEnoughDataError,
    Store,
    TooManySymbolsError,
    limits,
    messages,
)

#: orjson parses and dumps a 10,000-number batch about 15 times faster than the stdlib json (see
#: the README); it also refuses NaN/Infinity when parsing and writes NaN as null, so every body we
#: send is RFC 8259 JSON.
JSON_HANDLER = media.JSONHandler(dumps=orjson.dumps, loads=orjson.loads)

# Unicode category Cc is exactly C0, DEL and C1. Unpaired surrogates (Cs) can only arrive through
# the stdlib fallback parser, and could not be encoded in a reply.
_FORBIDDEN_SYMBOL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


# --- errors ---------------------------------------------------------------------------------------

def bad_request(detail: str) -> NoReturn:
    raise falcon.HTTPBadRequest(description=detail)


def content_too_large(max_body_bytes: int) -> NoReturn:
    raise falcon.HTTPError(
        falcon.HTTP_413, description=messages.BODY_TOO_LARGE.format(max_body_bytes=max_body_bytes)
    )


def error_detail(req: falcon.Request, error: falcon.HTTPError) -> str:
    """Our own errors carry their detail; Falcon's routing errors get a message naming the path."""
    if error.description:
        return error.description
    if error.status_code == 404:
        return messages.NOT_FOUND.format(path=req.path)
    if error.status_code == 405:
        allowed = (error.headers or {}).get("Allow", "")
        return messages.METHOD_NOT_ALLOWED.format(method=req.method, path=req.path, allowed=allowed)
    if error.status_code >= 500:
        return messages.INTERNAL_ERROR
    return messages.HTTP_ERROR_FALLBACK.format(title=error.title)


def serialize_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """Every error is ``{"detail": ...}`` as JSON, whatever the client's Accept header says."""
    resp.content_type = falcon.MEDIA_JSON
    resp.media = {"detail": error_detail(req, error)}


# --- request body ---------------------------------------------------------------------------------

def require_json_content_type(req: falcon.Request) -> None:
    """No Content-Type is read as JSON (older clients omit it); any other media type is refused."""
    if not req.content_type:
        return
    media_type = req.content_type.split(";", 1)[0]  # parameters such as charset do not matter
    if media_type.strip().lower() != falcon.MEDIA_JSON:
        raise falcon.HTTPUnsupportedMediaType(
            description=messages.UNSUPPORTED_MEDIA_TYPE.format(content_type=req.content_type)
        )


def read_bounded_body(req: falcon.Request, max_body_bytes: int) -> bytes:
    """The body, never reading more than ``max_body_bytes + 1`` bytes of it."""
    declared_length = req.content_length
    if declared_length is not None:
        if declared_length > max_body_bytes:
            content_too_large(max_body_bytes)  # refused before a byte of it is read
        return req.bounded_stream.read()
    # Chunked or unannounced length: one byte past the limit proves the body too large.
    body = req.stream.read(max_body_bytes + 1)
    if len(body) > max_body_bytes:
        content_too_large(max_body_bytes)
    return body


class _NonFiniteNumber:
    """Stands in for NaN, Infinity or a number beyond float range in a leniently parsed body."""

    __slots__ = ()


def parse_leniently(raw: bytes) -> tuple[Any, int]:
    """Parse with the stdlib, turning NaN/Infinity/1e400 into markers; also count the markers.

    orjson rejects such numbers as a syntax error without saying where they are. The contract
    wants the error to name ``values``, so the rare failing body is parsed again this way.
    """
    markers = 0

    def non_finite(_token: str) -> _NonFiniteNumber:
        nonlocal markers
        markers += 1
        return _NonFiniteNumber()

    def finite_or_marker(token: str) -> float | _NonFiniteNumber:
        number = float(token)
        return number if math.isfinite(number) else non_finite(token)

    try:
        document = json.loads(
            raw.decode("utf-8"), parse_constant=non_finite, parse_float=finite_or_marker
        )
    except (ValueError, RecursionError):  # RecursionError: pathologically deep nesting
        bad_request(messages.BODY_NOT_JSON)
    return document, markers


def count_markers(values: Any) -> int:
    if not isinstance(values, list):
        return 0
    return sum(isinstance(value, _NonFiniteNumber) for value in values)


def decode_json_body(req: falcon.Request, raw: bytes) -> Any:
    handler = req.options.media_handlers[falcon.MEDIA_JSON]
    try:
        return handler.deserialize(io.BytesIO(raw), falcon.MEDIA_JSON, len(raw))
    except falcon.MediaNotFoundError:
        bad_request(messages.BODY_EMPTY)
    except falcon.MediaMalformedError:
        pass
    document, markers = parse_leniently(raw)
    if isinstance(document, dict) and markers != count_markers(document.get("values")):
        # Non-finite numbers anywhere else make the body invalid JSON, not a bad price.
        bad_request(messages.BODY_NON_FINITE_NUMBER)
    return document


# --- validation of a batch ------------------------------------------------------------------------

def validate_symbol(symbol: Any) -> str:
    if not isinstance(symbol, str):
        bad_request(messages.SYMBOL_NOT_STRING)
    if not symbol:
        bad_request(messages.SYMBOL_EMPTY)
    if len(symbol) > limits.MAX_SYMBOL_LENGTH:
        bad_request(messages.SYMBOL_TOO_LONG.format(max_length=limits.MAX_SYMBOL_LENGTH))
    if _FORBIDDEN_SYMBOL_CHARACTERS.search(symbol):
        bad_request(messages.SYMBOL_CONTROL_CHARACTERS)
    return symbol


def validate_values(values: Any, max_batch: int) -> list:
    """Only the shape: whether each element is a usable price is the engine's call."""
    if not isinstance(values, list):
        bad_request(messages.VALUES_NOT_ARRAY)
    if len(values) > max_batch:
        bad_request(messages.VALUES_OVER_BATCH_LIMIT.format(count=len(values), max_batch=max_batch))
    return values


def parse_batch(document: Any, max_batch: int) -> tuple[str, list]:
    if not isinstance(document, dict):
        bad_request(messages.BODY_NOT_OBJECT)
    if "symbol" not in document:
        bad_request(messages.SYMBOL_MISSING)
    if "values" not in document:
        bad_request(messages.VALUES_MISSING)
    return validate_symbol(document["symbol"]), validate_values(document["values"], max_batch)


# --- query parameters ----------------------------------------------------------------------------

_ASCII_DIGITS = re.compile(r"[0-9]{1,9}")


def strict_integer(req: falcon.Request, name: str, low: int, high: int) -> int | None:
    """The parameter as an integer in low..high, or None. ASCII digits only: Python's int() (and
    so Falcon's) also takes a sign, spaces, underscores and non-ASCII digits, which a client
    sending them almost certainly did not mean. A repeated parameter is ambiguous: None."""
    values = req.get_param_as_list(name)
    if not values or len(values) != 1 or not _ASCII_DIGITS.fullmatch(values[0]):
        return None
    value = int(values[0])
    return value if low <= value <= high else None


# --- the store, shared by the resources -----------------------------------------------------------

class SerializedStore:
    """A heap Store is not thread-safe and gunicorn's gthread worker calls us from threads, so
    calls into it take a lock. A file store locks per symbol itself and its readers never wait:
    no lock here. (Under meinheld, greenlets on one thread, the lock is never contended.)
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        in_heap = getattr(store, "path", None) is None
        self._lock = threading.Lock() if in_heap else contextlib.nullcontext()

    @property
    def max_k(self) -> int:
        return self.store.max_k

    def add(self, symbol: str, values: list) -> None:
        with self._lock:
            self.store.add(symbol, values)

    def stats(self, symbol: str, k: int):
        with self._lock:
            return self.store.stats(symbol, k)


# --- resources ------------------------------------------------------------------------------------

class AddBatchResource:
    def __init__(self, store: SerializedStore, *, max_batch: int, max_body_bytes: int) -> None:
        self._store = store
        self._max_batch = max_batch
        self._max_body_bytes = max_body_bytes

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        require_json_content_type(req)
        document = decode_json_body(req, read_bounded_body(req, self._max_body_bytes))
        symbol, values = parse_batch(document, self._max_batch)
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
        resp.media = {"message": messages.BATCH_ADDED}


class StatsResource:
    def __init__(self, store: SerializedStore) -> None:
        self._store = store

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        symbol = req.get_param("symbol")
        if not symbol:
            bad_request(messages.MISSING_SYMBOL)
        k = self._window_exponent(req)
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

    def _window_exponent(self, req: falcon.Request) -> int:
        k = strict_integer(req, "k", 1, self._store.max_k)
        if k is None:
            bad_request(messages.INVALID_K)
        return k


class HealthResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": messages.HEALTH_OK}


# --- the application ------------------------------------------------------------------------------

def create_app(
    store: Store | None = None,
    *,
    max_k: int = limits.DEFAULT_MAX_K,
    max_symbols: int = limits.DEFAULT_MAX_SYMBOLS,
    max_batch: int = limits.DEFAULT_MAX_BATCH,
    max_body_bytes: int = limits.DEFAULT_MAX_BODY_BYTES,
) -> falcon.App:
    """The WSGI application over ``store``.

    ``max_k`` and ``max_symbols`` build a new Store when none is given; a given store keeps its own
    limits, and its ``max_k`` bounds the ``k`` parameter either way.
    """
    if store is None:
        store = Store(max_symbols=max_symbols, max_k=max_k)
    shared_store = SerializedStore(store)

    app = falcon.App(media_type=falcon.MEDIA_JSON)
    app.req_options.media_handlers[falcon.MEDIA_JSON] = JSON_HANDLER
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = JSON_HANDLER
    app.set_error_serializer(serialize_error)

    add_batch = AddBatchResource(shared_store, max_batch=max_batch, max_body_bytes=max_body_bytes)
    stats = StatsResource(shared_store)
    # Existing clients call both spellings; both must stay the same endpoint.
    for path in ("/add_batch/", "/add_batch"):
        app.add_route(path, add_batch)
    for path in ("/stats/", "/stats"):
        app.add_route(path, stats)
    app.add_route("/health", HealthResource())
    return app
