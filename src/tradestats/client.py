"""A Python client for tradestats-serve that mirrors the engine's Store.

Code written against an embedded ``Store`` runs against a server unchanged: the same methods
(``add``, ``stats``, ``symbols``, ``prices``), the same results (``Stats``, ``array('d')``) and
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
from array import array
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

_SYMBOL_LIMIT = re.compile(r"at most (\d+) symbols")
_SYMBOL_NOT_FOUND = re.compile(r"^Symbol (.*) not found$", re.DOTALL)


class TransportError(ConnectionError):
    """The server could not be reached, or its answer was not tradestats'."""


class Client:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", timeout: float = 10.0,
                 api_key: str | None = None) -> None:
        """``api_key``: the server's key (tradestats-serve --api-key), sent with every request;
        a request the server refuses for want of it raises PermissionError."""
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"base_url must be http://host[:port], not {base_url!r}")
        self._host, self._port = parts.hostname, parts.port or 80
        self._timeout = timeout
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._connection: http.client.HTTPConnection | None = None

    # -- the Store's API -----------------------------------------------------------------------

    def add(self, symbol: str, values) -> None:
        """Append prices, oldest first; all or nothing."""
        prices = as_prices(values)   # InvalidPriceError / TypeError here, as in the engine
        body = orjson.dumps({"symbol": symbol, "values": prices.tolist()})
        self._call("POST", "/add_batch/", body)

    def stats(self, symbol: str, k: int) -> Stats:
        document = self._call("GET", "/stats/?" + urlencode({"symbol": symbol, "k": k}))
        return _make_stats(document["min"], document["max"], document["last"], document["avg"],
                           document["var"])

    def symbols(self) -> list[dict]:
        return self._call("GET", "/symbols")["symbols"]

    def prices(self, symbol: str, n: int) -> array:
        document = self._call("GET", "/prices/?" + urlencode({"symbol": symbol, "n": n}))
        return array("d", document["prices"])

    def health(self) -> bool:
        return self._call("GET", "/health") == {"status": messages.HEALTH_OK}

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
            connection.request(method, path, body=body, headers=headers)
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
