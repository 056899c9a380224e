"""A ``/add_batch/`` body parsed straight to a float64 buffer, or the ordinary path when unusual.

orjson builds one Python float per price only for the engine to read it back. simdjson, a
maintained SIMD parser, copies the ``values`` array into one C buffer of doubles, which the
engine takes as it is (it checks every element itself). Two bindings of it, one chosen at import:

- ``libsimdjson`` (``tradestats.batchparse``, built where libsimdjson's header was found): parses
  with the GIL released, so the worker's other threads answer queries meanwhile. One parser per
  process, one parse at a time (the ingest lane serializes parses anyway), so its buffers stay
  one body's size rather than one per app thread.
- ``pysimdjson``: parses holding the GIL.

A fast path answers only bodies it reads exactly as the ordinary path does, and declines
(returns None) in every other case, which then goes through ``decode_json_body`` and
``parse_batch``, so every error keeps its status and text. Both decline when:

- the body has a nested array (simdjson's ``as_buffer`` flattens them; pysimdjson's path also
  declines any other ``[`` byte, in a string say, which only sends the body the slow way);
- the body does not begin, after JSON whitespace, with ``{`` (simdjson skips a UTF-8 BOM, which
  the ordinary path refuses; other top levels are the ordinary path's errors to report);
- simdjson refuses the body or a number in it: invalid JSON or UTF-8, NaN, 1e400, integers
  beyond 64 bits, lone surrogates, ``true``/``null``/strings among the values;
- a key is repeated (simdjson keeps the first, orjson and json the last);
- ``symbol`` is missing or not a string, or ``values`` is missing or not an array.

Integers come out as the nearest double, as the engine's ``float(int)`` makes them.
"""
from __future__ import annotations

import re
import threading
from typing import Any, Callable

import falcon
import simdjson

try:
    from tradestats.batchparse import BatchParser
except ImportError:  # built without libsimdjson's header: pysimdjson only
    BatchParser = None

from tradestats.web.inputs import check_batch_size, decode_json_body, parse_batch, validate_symbol

#: What pysimdjson raises for a body or value it will not turn into doubles.
_DECLINED = (ValueError, TypeError, RuntimeError, KeyError, IndexError, OverflowError)

_OBJECT_FIRST = re.compile(rb"[ \t\r\n]*\{")

# A Parser is not thread-safe, and a document lives only until the parser's next parse.
_per_thread = threading.local()


def _parser() -> simdjson.Parser:
    parser = getattr(_per_thread, "parser", None)
    if parser is None:
        parser = _per_thread.parser = simdjson.Parser()
    return parser


class _NoGilParser:
    """The libsimdjson binding: one parser, one parse at a time."""

    def __init__(self) -> None:
        self._parser = BatchParser()
        self._lock = threading.Lock()

    def __call__(self, body: bytes) -> tuple[str, memoryview] | None:
        if type(body) is not bytes:   # a WSGI stream that gave a bytearray: the ordinary path
            return None
        with self._lock:
            return self._parser.parse(body)


def parse_fast_holding_gil(body: bytes) -> tuple[str, memoryview] | None:
    """(symbol, values as a 1-D float64 memoryview) read with pysimdjson, or None to decline.

    The buffer is a copy owned by the memoryview: it outlives the parser's next parse. No
    proxy into the document (Object/Array) survives this call, or the next parse would fail.
    """
    first_bracket = body.find(b"[")   # find (memchr) rather than count: 1 us against 21 us
    if (first_bracket < 0 or body.find(b"[", first_bracket + 1) >= 0
            or _OBJECT_FIRST.match(body) is None):
        return None
    try:
        return _read(_parser().parse(body))
    except _DECLINED:
        return None


def _read(document: Any) -> tuple[str, memoryview] | None:
    if not isinstance(document, simdjson.Object):
        return None
    keys = list(document.keys())  # repeats included
    if len(set(keys)) != len(keys) or "symbol" not in keys or "values" not in keys:
        return None
    symbol = document["symbol"]
    values = document["values"]
    if type(symbol) is not str or not isinstance(values, simdjson.Array):
        return None
    return symbol, memoryview(values.as_buffer(of_type="d")).cast("d")


#: Every fast path this installation has, by the binding's name; tests run each.
FAST_PATHS: dict[str, Callable[[bytes], tuple[str, memoryview] | None]] = {
    "pysimdjson": parse_fast_holding_gil}
if BatchParser is not None:
    FAST_PATHS["libsimdjson"] = _NoGilParser()

#: The one /add_batch/ uses: the GIL-free one where it was built.
FAST_PATH_NAME = "libsimdjson" if "libsimdjson" in FAST_PATHS else "pysimdjson"
parse_fast = FAST_PATHS[FAST_PATH_NAME]


def parse_batch_body(req: falcon.Request, body: bytes, max_batch: int) -> tuple[str, Any]:
    """(symbol, values) with the same checks and errors as ``parse_batch(decode_json_body())``:
    values is a float64 memoryview from the fast path, else the list the ordinary path made."""
    fast = parse_fast(body)
    if fast is None:
        return parse_batch(decode_json_body(req, body), max_batch)
    symbol, values = fast
    validate_symbol(symbol)
    check_batch_size(len(values), max_batch)
    return symbol, values
