"""A Python client for tradestats-serve that mirrors the engine's Store.

Code written against an embedded ``Store`` runs against a server unchanged: the same methods
(``add``, ``stats``, ``symbols``, ``prices``, ``delete``, ``count_and_last``, ``in``, ``len``,
iteration, ``del client[symbol]``, ``client[symbol]``
with ``stats``, ``prices``, ``last`` and ``len``), the same results (``Stats``, ``array('d')``) and
the same exceptions for the same conditions (``InvalidPriceError`` with its index,
``TooManySymbolsError``, ``NotEnoughDataError``, ``KeyError`` for an unknown symbol,
``DiskFullError``, ``StorageSyncError``, ``MemoryError`` when the server is out of memory,
``ValueError`` for a bad ``k`` or ``n``). A batch is validated here first, by
the engine's own ``as_prices``, so a bad price never travels. Failures of the transport itself
are ``TransportError``.

One keep-alive connection is reused; one the server has closed is replaced before a request is
sent, so a batch is never sent twice by the client.
"""
from __future__ import annotations

import http.client
import re
import select
import socket
import ssl
from array import array
from typing import Iterator, Sequence, Union
from urllib.parse import urlencode, urlsplit

import orjson

from tradestats import messages
from tradestats.engine import (
    DiskFullError,
    NotEnoughDataError,
    Stats,
    StorageSyncError,
    TooManySymbolsError,
    _make_stats,
    as_prices,
)

#: What add takes: a sequence of numbers, or a 1-D float64 buffer (array('d'), numpy, memoryview).
Prices = Union[Sequence[float], memoryview, array]

_SYMBOL_LIMIT = re.compile(r"at most (\d+) symbols")
_SYMBOL_NOT_FOUND = re.compile(r"^Symbol (.*) not found$", re.DOTALL)


class TransportError(ConnectionError):
    """The server could not be reached, or its answer was not tradestats'."""


class Client:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", timeout: float = 10.0,
                 api_key: str | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        """``base_url``: http:// or https://, with a path prefix when the server sits under one
        behind a proxy (``https://example.com/tradestats``). ``api_key``: the server's key
        (tradestats-serve --api-key), sent with every request; a request the server refuses for
        want of it raises PermissionError. ``ssl_context``: for https, instead of the system's
        trusted certificates."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
                or parts.fragment:
            raise ValueError(f"base_url must be http[s]://host[:port][/path], not {base_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._ssl_context = ssl_context
        self._timeout = timeout
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._connection: http.client.HTTPConnection | None = None

    # -- the Store's API -----------------------------------------------------------------------

    def add(self, symbol: str, values: Prices) -> None:
        """Append prices, oldest first; all or nothing."""
        prices = as_prices(values)   # InvalidPriceError / TypeError here, as in the engine
        body = orjson.dumps({"symbol": symbol, "values": prices.tolist()})
        # ?symbol= lets a router send the batch to its node without reading the body.
        self._call("POST", "/add_batch/?" + urlencode({"symbol": symbol}), body)

    def stats(self, symbol: str, k: int) -> Stats:
        document = self._call("GET", "/stats/?" + urlencode({"symbol": symbol, "k": k}))
        return _make_stats(document["min"], document["max"], document["last"], document["avg"],
                           document["var"])

    def symbols(self) -> list[dict]:
        return self._call("GET", "/symbols")["symbols"]

    def prices(self, symbol: str, n: int) -> array:
        document = self._call("GET", "/prices/?" + urlencode({"symbol": symbol, "n": n}))
        return array("d", document["prices"])

    def count_and_last(self, symbol: str) -> tuple[int, float | None]:
        """(prices added, the most recent price or None); KeyError for an unknown symbol."""
        for row in self.symbols():
            if row["symbol"] == symbol:
                return row["count"], row["last"]
        raise KeyError(symbol)

    def delete(self, symbol: str) -> None:
        """Remove the symbol and its prices (its slot is free); KeyError if it has none."""
        self._call("DELETE", "/symbols/?" + urlencode({"symbol": symbol}))

    def __delitem__(self, symbol: str) -> None:
        self.delete(symbol)

    def health(self) -> bool:
        return self._call("GET", "/health") == {"status": messages.HEALTH_OK}

    def __contains__(self, symbol: object) -> bool:
        return any(row["symbol"] == symbol for row in self.symbols())

    def __len__(self) -> int:
        return len(self.symbols())

    def __iter__(self) -> Iterator[str]:
        return iter([row["symbol"] for row in self.symbols()])

    def __getitem__(self, symbol: str) -> "RemoteSymbol":
        """One symbol, as ``Store[symbol]`` gives it; KeyError if the server has no such symbol."""
        if symbol not in self:
            raise KeyError(symbol)
        return RemoteSymbol(self, symbol)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: bytes | None = None):
        connection = self._open_connection()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        headers.update(self._auth)
        try:
            connection.request(method, self._prefix + path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise TransportError(f"{method} {path}: {error}") from error
        if response.will_close:
            self.close()
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise TransportError(f"{method} {path}: answer {response.status} is not JSON") \
                from None
        if response.status == 200:
            return document
        raise self._error(response.status, document)

    def _open_connection(self) -> http.client.HTTPConnection:
        if self._connection is not None and self._closed_by_server(self._connection):
            self.close()
        if self._connection is None:
            if self._https:
                self._connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout,
                    context=self._ssl_context or ssl.create_default_context())
            else:
                self._connection = http.client.HTTPConnection(self._host, self._port,
                                                              timeout=self._timeout)
        return self._connection

    @staticmethod
    def _closed_by_server(connection: http.client.HTTPConnection) -> bool:
        """An idle keep-alive socket that is readable has been closed (or reset) by the server."""
        sock = connection.sock
        if sock is None:
            return False
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    @staticmethod
    def _error(status: int, document) -> Exception:
        detail = document.get("detail", "") if isinstance(document, dict) else ""
        if status == 507:
            return DiskFullError(detail)
        if status == 401:
            return PermissionError(detail)
        if status == 503 and detail == messages.OUT_OF_MEMORY:
            return MemoryError(detail)
        if status == 503 and detail == messages.SYNC_FAILED:
            return StorageSyncError(detail)
        if status != 400:
            return TransportError(f"HTTP {status}: {detail}")
        if detail == messages.NOT_ENOUGH_DATA:
            return NotEnoughDataError()
        found = _SYMBOL_NOT_FOUND.match(detail)
        if found:
            return KeyError(found.group(1))
        limit = _SYMBOL_LIMIT.search(detail)
        if limit and detail.startswith("Symbol limit reached"):
            return TooManySymbolsError(int(limit.group(1)))
        return ValueError(detail)


class RemoteSymbol:
    """``client[symbol]``: what ``Store[symbol]`` offers for one symbol, over the client."""

    def __init__(self, client: Client, symbol: str) -> None:
        self._client, self.symbol = client, symbol

    def add(self, values: Prices) -> None:
        self._client.add(self.symbol, values)

    def stats(self, k: int) -> Stats:
        return self._client.stats(self.symbol, k)

    def prices(self, n: int) -> array:
        return self._client.prices(self.symbol, n)

    def count_and_last(self) -> tuple[int, float | None]:
        return self._client.count_and_last(self.symbol)

    @property
    def last(self) -> float | None:
        return self.count_and_last()[1]

    def __len__(self) -> int:
        return self.count_and_last()[0]

    def __repr__(self) -> str:
        return f"RemoteSymbol({self.symbol!r})"
