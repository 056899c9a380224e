"""SymbolStats.envelope (envelope.pyx) against numpy over the same prices: every bucket's
bounds, minimum and maximum, in the heap and the file store, before and after the ring wraps,
as batches arrive between calls (the pyramid folded in step by step), and its refusals."""
from __future__ import annotations

import numpy as np
import pytest

from tradestats import NotEnoughDataError, Store
from tradestats.envelope import MAX_BUCKETS, _set_fold_budget


def reference(prices: np.ndarray, k: int, width: int, offset: int = 0):
    """(start, mins, maxs) of the last 10**k prices in buckets aligned to multiples of width;
    prices[0] is at position offset."""
    count = offset + len(prices)
    start = count - 10**k
    mins, maxs = [], []
    for b in range(start // width, (count - 1) // width + 1):
        part = prices[max(start, b * width) - offset:min(count, (b + 1) * width) - offset]
        mins.append(part.min())
        maxs.append(part.max())
    return start, mins, maxs


def whole_envelope(store, symbol, k, buckets, calls=200):
    """The envelope once this process's pyramid covers the window (a call folds in a bounded
    number of blocks)."""
    for _ in range(calls):
        got = store.envelope(symbol, k, buckets)
        if got.complete:
            return got
    raise AssertionError(f"not complete after {calls} calls")


def check(store, symbol, prices, k, buckets):
    got = whole_envelope(store, symbol, k, buckets)
    width = got.bucket_prices
    assert width * buckets >= 10**k and (width == 1 or width * buckets < 10**k * 5), width
    start, mins, maxs = reference(prices, k, width)
    assert (got.count, got.start) == (len(prices), start)
    assert got.min.tolist() == mins and got.max.tolist() == maxs, (k, buckets, width)


@pytest.fixture(params=["heap", "file"])
def store(request, tmp_path):
    if request.param == "heap":
        return Store(max_k=5)
    return Store(max_k=5, path=tmp_path, max_batch=5000)


def test_every_bucket_against_numpy_as_the_ring_wraps(store):
    rng = np.random.default_rng(4)
    prices = np.array([])
    # Past the ring (10**5 plus slack) twice, in batches of every size, checking between them.
    for round_ in range(30):
        batch = rng.normal(100, 5, int(rng.integers(1, 5000))).cumsum() / 50 + 100
        if round_ % 7 == 3:
            batch[:] = batch[0]   # flat stretches: ties everywhere
        for start in range(0, len(batch), 5000):
            store.add("S", batch[start:start + 5000])
        prices = np.concatenate([prices, batch])
        if round_ % 3 == 0:
            for k in range(1, 6):
                if len(prices) >= 10**k:
                    for buckets in (1, 7, 20, 50, 200, MAX_BUCKETS):
                        check(store, "S", prices, k, buckets)
    big = rng.normal(0, 1, 240_000).cumsum()
    for start in range(0, len(big), 5000):
        store.add("S", big[start:start + 5000])
    prices = np.concatenate([prices, big])
    for k in range(1, 6):
        for buckets in (3, 20, 50, 200, 999, MAX_BUCKETS):
            check(store, "S", prices, k, buckets)


def test_a_call_folds_a_bounded_number_of_blocks_newest_first(store):
    """With a budget of 7 blocks a call, a cold 100-block window comes whole in 15 calls; until
    then the newest buckets are exact and the oldest NaN, never a wrong number."""
    prices = np.random.default_rng(5).normal(0, 1, 100_000).cumsum()
    for start in range(0, len(prices), 5000):
        store.add("S", prices[start:start + 5000])
    previous = _set_fold_budget(7)
    try:
        for call in range(1, 16):
            got = store.envelope("S", 5, 20)   # 20 buckets of 5 blocks
            _, mins, maxs = reference(prices, 5, got.bucket_prices)
            known = [i for i, value in enumerate(got.min) if not np.isnan(value)]
            assert len(known) == min(20, (7 * call) // 5), call   # whole buckets folded
            assert known == list(range(20 - len(known), 20))      # the newest ones
            assert [got.min[i] for i in known] == mins[20 - len(known):]
            assert [got.max[i] for i in known] == maxs[20 - len(known):]
            assert got.complete is (len(known) == 20)
        assert got.complete
    finally:
        _set_fold_budget(previous)


def test_refusals(store):
    store.add("S", [1.0] * 50)
    with pytest.raises(NotEnoughDataError):
        store.envelope("S", 2)
    with pytest.raises(KeyError):
        store.envelope("NOPE", 1)
    for k, buckets in ((0, 10), (6, 10), (1, 0), (1, MAX_BUCKETS + 1), (True, 10), (1, 2.0)):
        with pytest.raises(ValueError):
            store.envelope("S", k, buckets)


WRITER = """
import sys, time
import numpy as np
from tradestats import Store
store = Store(max_k=5, path=sys.argv[1], max_batch=5000)
position, stop = len(store["S"]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < stop:
    p = np.arange(position, position + 5000)
    store.add("S", np.sin(p * 0.001) * 100 + (p * 7919 % 1000) / 10)
    position += 5000
"""


def stream(start: int, end: int) -> np.ndarray:
    p = np.arange(start, end)
    return np.sin(p * 0.001) * 100 + (p * 7919 % 1000) / 10


def test_envelopes_read_beside_a_writer_in_another_process(tmp_path):
    """Every answer, read while another process adds 5,000 prices at a time as fast as it can
    (the ring wraps every ~20 batches), is exactly the stream's over the window it names."""
    import subprocess
    import sys
    store = Store(max_k=5, path=tmp_path, max_batch=5000)
    store.add("S", stream(0, 5000))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "3"])
    answers = 0
    try:
        while writer.poll() is None:
            for k, buckets in ((5, 7), (5, 50), (4, 3), (5, 2000)):
                try:
                    got = store.envelope("S", k, buckets)
                except NotEnoughDataError:
                    continue
                if not got.complete:
                    continue
                count = got.count
                start, mins, maxs = reference(stream(count - 10**k, count), k,
                                              got.bucket_prices, offset=count - 10**k)
                answers += 1
                assert got.start == start
                assert got.min.tolist() == mins and got.max.tolist() == maxs, (k, buckets, count)
    finally:
        writer.kill()
        writer.wait()
    assert answers > 20


def test_get_envelope_over_http_against_numpy_and_its_errors():
    from falcon import testing

    from tradestats.web.app import create_app
    client = testing.TestClient(create_app(max_k=4))
    prices = np.random.default_rng(9).normal(50, 3, 23_456).round(4)
    for start in range(0, len(prices), 10_000):
        body = {"symbol": "EUR/USD", "values": prices[start:start + 10_000].tolist()}
        assert client.simulate_post("/add_batch/", json=body).status_code == 200
    for k, buckets in ((4, None), (4, "7"), (3, "2000"), (1, "3")):
        params = {"symbol": "EUR/USD", "k": str(k)}
        if buckets is not None:
            params["buckets"] = buckets
        got = client.simulate_get("/envelope/", params=params).json
        start, mins, maxs = reference(prices, k, got["bucket_prices"])
        assert got == {"symbol": "EUR/USD", "k": k, "count": len(prices), "start": start,
                       "bucket_prices": got["bucket_prices"], "complete": True, "min": mins,
                       "max": maxs}
        assert len(mins) <= int(buckets or 200) + 1
    for params, detail in (({"symbol": "EUR/USD", "k": "5"}, "Invalid k value"),
                           ({"symbol": "EUR/USD", "k": "1", "buckets": "2001"},
                            "Invalid buckets value"),
                           ({"symbol": "EUR/USD", "k": "1", "buckets": "+3"},
                            "Invalid buckets value"),
                           ({"k": "1"}, "Missing symbol"),
                           ({"symbol": "X", "k": "1"}, "Symbol X not found")):
        reply = client.simulate_get("/envelope", params=params)
        assert (reply.status_code, reply.json) == (400, {"detail": detail})
    previous = _set_fold_budget(3)   # a cold symbol: the oldest buckets are null at first
    try:
        client.simulate_post("/add_batch/", json={"symbol": "COLD", "values": [2.0] * 10_000})
        partial = client.simulate_get("/envelope/",
                                      params={"symbol": "COLD", "k": "4", "buckets": "10"}).json
        assert partial["complete"] is False
        assert partial["min"] == [None] * 7 + [2.0] * 3 and partial["max"][:7] == [None] * 7
    finally:
        _set_fold_budget(previous)
    client.simulate_post("/add_batch/", json={"symbol": "FEW", "values": [1.0] * 99})
    reply = client.simulate_get("/envelope/", params={"symbol": "FEW", "k": "2"})
    assert (reply.status_code, reply.json) == (400, {"detail": "Not enough data points"})
