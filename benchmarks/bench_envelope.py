"""Envelope benchmark: the chart's min/max envelope of a full 10**8 window (issue #19: "O(buckets)
from a precomputed pyramid is the goal, not a 10**8 scan per refresh"), against the obvious
baseline in the same run: numpy's min and max over the window's prices, bucket by bucket.

A file store (the server's) gets PRICES prices of a random walk at max_k 8; then, timed:
  * the calls of a fresh process until its envelope is complete (each folds at most 1,000
    blocks into the symbol's pyramid, newest first): how many, and the slowest,
  * an envelope per refresh (the page asks about once a second), with and without a batch of
    10,000 prices added since the last one,
  * the baseline: the window copied out (SymbolStats.prices) and reduced by numpy per bucket.
Every envelope is checked equal to the baseline's.

    python benchmarks/bench_envelope.py                          # 1.2e8 prices, max_k 8
    python benchmarks/bench_envelope.py --prices 2e6 --max-k 6
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from tradestats import Store


def fill(store: Store, prices: int, batch: int = 10_000) -> None:
    rng = np.random.default_rng(23)
    level = 1000.0
    for start in range(0, prices, 1_000_000):
        walk = level + np.cumsum(rng.normal(0, 0.01, min(1_000_000, prices - start)))
        level = walk[-1]
        for i in range(0, len(walk), batch):
            store.add("AAPL", walk[i:i + batch])


def numpy_envelope(symbol, k: int, width: int):
    """The baseline: the window's prices copied out, then numpy per aligned bucket."""
    count = len(symbol)
    start = count - 10**k
    prices = np.frombuffer(symbol.prices(10**k), dtype=np.float64)
    edges = [start] + list(range((start // width + 1) * width, count, width)) + [count]
    lows = [prices[a - start:z - start].min() for a, z in zip(edges, edges[1:])]
    highs = [prices[a - start:z - start].max() for a, z in zip(edges, edges[1:])]
    return lows, highs


def best_of(runs: int, call):
    times, result = [], None
    for _ in range(runs):
        began = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - began)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prices", type=float, default=1.2e8)
    parser.add_argument("--max-k", type=int, default=8)
    parser.add_argument("--buckets", type=int, default=400)
    parser.add_argument("--dir", type=Path, default=None, help="default: a temporary directory")
    args = parser.parse_args()
    k, prices = args.max_k, int(args.prices)
    root = Path(args.dir or tempfile.mkdtemp(prefix="tradestats-envelope-"))
    try:
        began = time.perf_counter()
        fill(Store(max_k=k, path=root), prices)
        print(f"filled {prices:,} prices in {time.perf_counter() - began:.1f} s")
        store = Store(max_k=k, path=root)          # a fresh process's view: no pyramid yet
        symbol = store["AAPL"]
        building = []
        while True:
            began = time.perf_counter()
            got = symbol.envelope(k, args.buckets)
            building.append(time.perf_counter() - began)
            if got.complete:
                break
        again, got = best_of(5, lambda: symbol.envelope(k, args.buckets))
        batch = np.full(10_000, 1000.0)

        def after_a_batch():
            symbol.add(batch)
            return symbol.envelope(k, args.buckets)

        moved, got = best_of(5, after_a_batch)
        baseline, (lows, highs) = best_of(3, lambda: numpy_envelope(symbol, k, got.bucket_prices))
        assert got.min.tolist() == lows and got.max.tolist() == highs, "envelope != numpy"
        print(f"window 10^{k}, {len(got.min)} buckets of {got.bucket_prices:,} prices (equal to "
              "numpy's)")
        print(f"{'call':<44}{'ms':>10}{'numpy/it':>10}")
        print(f"a fresh process: complete after {len(building)} calls, "
              f"{sum(building):.3f} s in all")
        for name, seconds in ((f"slowest of those {len(building)} calls", max(building)),
                              ("envelope, nothing new", again),
                              ("envelope after a 10,000-price batch (+add)", moved),
                              ("numpy: copy window + min/max per bucket", baseline)):
            print(f"{name:<44}{seconds * 1e3:>10.3f}{baseline / seconds:>10.1f}")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
