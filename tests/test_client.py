"""One behavioural suite for every implementation of the Store interface: the heap Store, the
file Store and tradestats.client.Client against a real server. They cannot drift apart."""
from __future__ import annotations

import math
import socket
import threading
from array import array

import numpy as np
import pytest

from conftest import ServerProcess, stop_cleanly
from engine_reference import check_stats
from tradestats import (
    DiskFullError,
    InvalidPriceError,
    NotEnoughDataError,
    Store,
    TooManySymbolsError,
)
from tradestats import messages
from tradestats.client import Client, TransportError


@pytest.fixture(params=["heap", "file", "client"])
def make(request, tmp_path):
    """make(max_symbols, max_k) -> a fresh, empty implementation."""
    servers = []

    def build(max_symbols: int, max_k: int):
        if request.param == "heap":
            return Store(max_symbols=max_symbols, max_k=max_k)
        if request.param == "file":
            return Store(max_symbols=max_symbols, max_k=max_k, path=tmp_path / "store")
        server = ServerProcess(None, ("--max-symbols", str(max_symbols), "--max-k", str(max_k),
                                      "--workers", "2"), tmp_path / f"serve-{len(servers)}.log")
        servers.append(server)
        return Client(f"http://127.0.0.1:{server.port}")

    yield build
    for server in servers:
        stop_cleanly(server)


def test_add_and_stats_against_the_reference(make):
    store = make(max_symbols=5, max_k=3)
    rng = np.random.default_rng(8)
    stream = rng.normal(250, 7, 2345)
    for start in range(0, len(stream), 500):
        store.add("AAPL", stream[start:start + 500])            # numpy arrays are batches
    store.add("AAPL", array("d", [251.0, 252.0]))                # and so are array('d')
    store.add("AAPL", [253, 254.5])                              # and lists of numbers
    stream = np.concatenate([stream, [251.0, 252.0, 253.0, 254.5]])
    for k in (1, 2, 3):
        check_stats(store.stats("AAPL", k), stream[-(10**k):])
    with pytest.raises(KeyError):
        store.stats("MSFT", 1)
    store.add("MSFT", [1.0] * 9)
    with pytest.raises(NotEnoughDataError):
        store.stats("MSFT", 1)
    for bad_k in (0, 4, True, 1.5):
        with pytest.raises(ValueError) as info:
            store.stats("AAPL", bad_k)
        assert not isinstance(info.value, NotEnoughDataError)


def test_a_bad_price_names_its_index_and_stores_nothing(make):
    store = make(max_symbols=5, max_k=1)
    store.add("A", [float(n) for n in range(10)])
    before = store.stats("A", 1)
    for bad, index in ((math.nan, 2), (math.inf, 0), (1e101, 4), (True, 1), ("1", 3)):
        batch = [5.0] * 6
        batch[index] = bad
        with pytest.raises(InvalidPriceError) as info:
            store.add("A", batch)
        assert info.value.index == index
    assert store.stats("A", 1) == before


def test_the_symbol_limit(make):
    store = make(max_symbols=2, max_k=1)
    store.add("A", [1.0])
    store.add("B", [])
    with pytest.raises(TooManySymbolsError) as info:
        store.add("C", [1.0])
    assert info.value.max_symbols == 2
    store.add("A", [2.0] * 9)                     # existing symbols still accept
    check_stats(store.stats("A", 1), [1.0] + [2.0] * 9)


def test_symbols_and_prices(make):
    store = make(max_symbols=5, max_k=2)
    model = {"ZED": [3.0, 4.0], "EUR/USD": [float(n) / 4 for n in range(130)], "EMPTY": []}
    for symbol, values in model.items():
        store.add(symbol, values)
    assert store.symbols() == [
        {"symbol": symbol, "count": len(model[symbol]),
         "last": model[symbol][-1] if model[symbol] else None} for symbol in sorted(model)]
    for n in (1, 5, 100, 101, 10_000):
        got = store.prices("EUR/USD", n)
        assert isinstance(got, array) and got.tolist() == model["EUR/USD"][-min(n, 100):]
    assert store.prices("EMPTY", 3).tolist() == []
    with pytest.raises(KeyError):
        store.prices("NOPE", 3)
    with pytest.raises(ValueError):
        store.prices("ZED", 0)


def test_the_client_keeps_one_connection_and_replaces_a_closed_one(tmp_path):
    args = ("--max-k", "1", "--workers", "1", "--data-dir", str(tmp_path / "data"))
    server = ServerProcess(None, args, tmp_path / "first.log")
    client = Client(f"http://127.0.0.1:{server.port}")
    try:
        assert client.health()
        first = client._connection.sock
        for n in range(20):
            client.add("K", [float(n)])
        assert client._connection.sock is first               # one keep-alive connection
    finally:
        stop_cleanly(server)                                  # closes that connection
    server = ServerProcess(None, args, tmp_path / "second.log", port=server.port)
    try:
        client.add("K", [20.0] * 9)                            # reconnected, sent once
        assert client._connection.sock is not first
        assert client.prices("K", 100).tolist() == ([float(n) for n in range(20)] + [20.0] * 9)[-10:]
    finally:
        stop_cleanly(server)
    with pytest.raises(TransportError):
        client.health()


@pytest.mark.parametrize(("status", "detail", "expected"), [
    (503, messages.OUT_OF_MEMORY, MemoryError),        # as the engine raises when out of memory
    (503, messages.OUT_OF_CONNECTIONS, TransportError),
    (507, messages.DISK_FULL, DiskFullError),
    (500, messages.INTERNAL_ERROR, TransportError),
])
def test_server_errors_map_to_the_engines_exceptions(status, detail, expected):
    error = Client._error(status, {"detail": detail})
    assert type(error) is expected and detail in str(error)


def test_membership_length_iteration_and_one_symbol(make):
    store = make(max_symbols=5, max_k=1)
    assert len(store) == 0 and "A" not in store and list(store) == []
    store.add("A", [float(n) for n in range(12)])
    store.add("EUR/USD", [2.5])
    assert "A" in store and "EUR/USD" in store and "B" not in store
    assert len(store) == 2 and sorted(store) == ["A", "EUR/USD"]
    one = store["A"]
    assert len(one) == 12 and one.last == 11.0 and one.count_and_last() == (12, 11.0)
    assert one.stats(1) == store.stats("A", 1)
    assert one.prices(3).tolist() == [9.0, 10.0, 11.0]
    one.add([12.0])
    assert len(store["A"]) == 13 and store.prices("A", 1).tolist() == [12.0]
    with pytest.raises(KeyError):
        store["B"]


def test_the_client_sends_every_request_under_its_base_path():
    """A server behind a proxy under a path prefix: every request carries the prefix."""
    seen = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer_twice():
            for _ in range(2):
                connection, _ = listener.accept()
                with connection:
                    seen.append(connection.recv(65536).split(b"\r\n", 1)[0])
                    body = b'{"status": "ok"}' if b"/health" in seen[-1] else b'{"symbols": []}'
                    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                       b"Connection: close\r\nContent-Length: "
                                       + str(len(body)).encode() + b"\r\n\r\n" + body)

        thread = threading.Thread(target=answer_twice, daemon=True)
        thread.start()
        with Client(f"http://127.0.0.1:{port}/trading/stats/") as client:
            assert client.health()
            assert len(client) == 0
        thread.join(timeout=10)
    assert seen == [b"GET /trading/stats/health HTTP/1.1", b"GET /trading/stats/symbols HTTP/1.1"]
    with pytest.raises(ValueError):
        Client("ftp://127.0.0.1:21")


def test_delete_forgets_the_prices_and_frees_the_slot(make):
    store = make(max_symbols=2, max_k=1)
    store.add("A", [float(n) for n in range(12)])
    store.add("EUR/USD", [2.5])
    store.delete("A")
    assert "A" not in store and list(store) == ["EUR/USD"] and len(store) == 1
    for read in (lambda: store.stats("A", 1), lambda: store.prices("A", 3),
                 lambda: store["A"], lambda: store.delete("A")):
        with pytest.raises(KeyError):
            read()
    store.add("B", [7.0])                            # the slot is free
    with pytest.raises(TooManySymbolsError):
        store.add("A", [1.0])
    del store["B"]
    fresh = [100.0 + n for n in range(10)]
    store.add("A", fresh)                            # A again: only its new prices
    assert store.count_and_last("A") == (10, 109.0)
    check_stats(store.stats("A", 1), fresh)
    assert store.symbols() == [{"symbol": "A", "count": 10, "last": 109.0},
                               {"symbol": "EUR/USD", "count": 1, "last": 2.5}]
    assert store.prices("EUR/USD", 5).tolist() == [2.5]   # the other symbol untouched
