"""A cluster node's view of the store (tradestats.cluster.placement): requests for a symbol this
node does not own are refused with 421 naming the owner, instead of starting a second copy of
it; writes to a moving symbol wait with 503 and Retry-After; GET /symbols lists the whole
cluster by asking every peer for its own (``?local=1``)."""
from __future__ import annotations

import contextlib
import http.client
from urllib.parse import urlsplit

import falcon
import orjson

from tradestats import limits
from tradestats.cluster.placement import PlacementFile, SymbolElsewhere, SymbolMoving

#: How long GET /symbols waits for a peer before listing without it.
PEER_TIMEOUT_SECONDS = 2.0


@contextlib.contextmanager
def placed(symbol: str):
    """The placement's refusals as HTTP answers."""
    try:
        yield
    except SymbolElsewhere as error:
        raise falcon.HTTPError(falcon.HTTP_421, description=str(error)) from None
    except SymbolMoving as error:
        raise falcon.HTTPServiceUnavailable(
            description=str(error), retry_after=limits.RETRY_AFTER_SECONDS) from None


class ClusteredStore:
    """The SerializedStore's interface, with every symbol checked against the placement first
    (one stat of the placement file: a move is seen by the next request on every worker)."""

    def __init__(self, store, placement: PlacementFile, api_key: str | None = None) -> None:
        self._store = store
        self._placement = placement
        self._api_key = api_key

    @property
    def max_k(self) -> int:
        return self._store.max_k

    def add(self, symbol: str, values) -> None:
        with placed(symbol):
            self._placement.check(symbol, write=True)
            self._store.add(symbol, values)   # the Store asks again before it creates (admit)

    def delete(self, symbol: str) -> None:
        with placed(symbol):
            self._placement.check(symbol, write=True)
            self._store.delete(symbol)

    def stats(self, symbol: str, k: int):
        return self._read(symbol, lambda: self._store.stats(symbol, k))

    def prices(self, symbol: str, n: int):
        return self._read(symbol, lambda: self._store.prices(symbol, n))

    def envelope(self, symbol: str, k: int, buckets: int):
        return self._read(symbol, lambda: self._store.envelope(symbol, k, buckets))

    def _read(self, symbol: str, read):
        with placed(symbol):
            moving = self._placement.check(symbol, write=False)
            try:
                return read()
            except KeyError:
                if moving:   # handed over already, the switch not yet made
                    raise SymbolMoving(symbol, self._placement.current().moving[symbol]) \
                        from None
                raise

    def summary(self, local: bool = False) -> tuple[list[dict], list[str]]:
        """Every symbol of the cluster (or of this node), and the nodes that did not answer."""
        rows, _ = self._store.summary()
        if local:
            return rows, []
        missing = []
        placement = self._placement.current()
        for name, url in placement.nodes:
            if name == self._placement.node:
                continue
            peer_rows = self._peer_symbols(url)
            if peer_rows is None:
                missing.append(name)
            else:
                rows += peer_rows
        return sorted(rows, key=lambda row: row["symbol"]), missing

    def _peer_symbols(self, url: str) -> list[dict] | None:
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port or 80,
                                                timeout=PEER_TIMEOUT_SECONDS)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            connection.request("GET", parts.path.rstrip("/") + "/symbols?local=1",
                               headers=headers)
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                return None
            return orjson.loads(body)["symbols"]
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            return None
        finally:
            connection.close()

