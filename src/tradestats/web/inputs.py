"""Parsing and validating requests: bodies, batches, query parameters. No maths, no store."""
from __future__ import annotations

import io
import json
import math
import re
from typing import Any

import falcon

from tradestats import limits, messages
from tradestats.web.errors import bad_request, content_too_large

try:  # gunicorn's framing errors, raised while the body is read
    from gunicorn.http.errors import NoMoreData, ParseException
    BODY_READ_ERRORS: tuple = (ParseException, NoMoreData, OSError, ValueError)
except ImportError:  # not under gunicorn
    BODY_READ_ERRORS = (OSError, ValueError)

# Unicode category Cc is exactly C0, DEL and C1. Unpaired surrogates (Cs) can only arrive through
# the stdlib fallback parser, and could not be encoded in a reply.
_FORBIDDEN_SYMBOL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


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
    """The whole body, never reading more than ``max_body_bytes + 1`` bytes of it.

    A body that ends before its declared length (the client went away) or whose chunked framing
    is broken is a 400: a batch is stored only when all of it arrived.
    """
    declared_length = req.content_length
    if declared_length is not None and declared_length > max_body_bytes:
        content_too_large(max_body_bytes)  # refused before a byte of it is read
    try:
        if declared_length is not None:
            body = read_until_end(req.stream, declared_length)
        else:
            # Chunked or unannounced length: one byte past the limit proves the body too large.
            body = read_until_end(req.stream, max_body_bytes + 1)
    except BODY_READ_ERRORS as error:
        bad_request(messages.BODY_INCOMPLETE.format(reason=error.__class__.__name__))
    if declared_length is not None and len(body) != declared_length:
        bad_request(messages.BODY_INCOMPLETE.format(
            reason=f"{len(body)} of {declared_length} bytes arrived"))
    if len(body) > max_body_bytes:
        content_too_large(max_body_bytes)
    return body


def read_until_end(stream, limit: int) -> bytes:
    """At most ``limit`` bytes, reading until the body ends: a WSGI server's ``read(n)`` may
    return less than ``n`` before the end (granian returns what has arrived)."""
    parts = []
    remaining = limit
    while remaining > 0:
        part = stream.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


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

def symbol_problem(symbol: str) -> str | None:
    """Why a non-empty string cannot be a symbol, or None. A query naming such a string names no
    symbol and must never reach the store (a 1,400-character name is longer than a file name
    may be)."""
    if len(symbol) > limits.MAX_SYMBOL_LENGTH:
        return messages.SYMBOL_TOO_LONG.format(max_length=limits.MAX_SYMBOL_LENGTH)
    if _FORBIDDEN_SYMBOL_CHARACTERS.search(symbol):
        return messages.SYMBOL_CONTROL_CHARACTERS
    return None


def validate_symbol(symbol: Any) -> str:
    if not isinstance(symbol, str):
        bad_request(messages.SYMBOL_NOT_STRING)
    if not symbol:
        bad_request(messages.SYMBOL_EMPTY)
    problem = symbol_problem(symbol)
    if problem is not None:
        bad_request(problem)
    return symbol


def validate_values(values: Any, max_batch: int) -> list:
    """Only the shape: whether each element is a usable price is the engine's call."""
    if not isinstance(values, list):
        bad_request(messages.VALUES_NOT_ARRAY)
    check_batch_size(len(values), max_batch)
    return values


def check_batch_size(count: int, max_batch: int) -> None:
    if count > max_batch:
        bad_request(messages.VALUES_OVER_BATCH_LIMIT.format(count=count, max_batch=max_batch))


def parse_batch(document: Any, max_batch: int) -> tuple[str, list]:
    if not isinstance(document, dict):
        bad_request(messages.BODY_NOT_OBJECT)
    if "symbol" not in document:
        bad_request(messages.SYMBOL_MISSING)
    if "values" not in document:
        bad_request(messages.VALUES_MISSING)
    return validate_symbol(document["symbol"]), validate_values(document["values"], max_batch)


# --- query parameters ----------------------------------------------------------------------------

def strict_integer(req: falcon.Request, name: str, low: int, high: int) -> int | None:
    """The parameter as an integer in low..high, or None. ASCII digits only: Python's int() (and
    so Falcon's) also takes a sign, spaces, underscores and non-ASCII digits, which a client
    sending them almost certainly did not mean. A repeated parameter is ambiguous: None."""
    text = req.params.get(name)  # a list when the parameter is repeated
    if not isinstance(text, str) or len(text) > 9 or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if low <= value <= high else None
