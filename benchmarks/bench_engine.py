"""Engine benchmark: tradestats.SymbolStats against a numpy ring sliced per query.

Streams PRICES prices (a random walk) in batches of BATCH into one SymbolStats with all windows
10**1..10**max_k maintained, then times stats(k) for every k. In the same run a numpy baseline
keeps the same ring (np.ndarray, written with slice assignment) and answers the same queries
by slicing it (np.min / np.max / np.mean / np.var). Prints both and the ratios.

    python benchmarks/bench_engine.py                # 10**8 prices, max_k 8 (about 2 minutes)
    python benchmarks/bench_engine.py --prices 2e7   # quicker
"""
import argparse
import resource
import time

import numpy as np

from tradestats import SymbolStats


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_walk_batches(total, batch, seed=0, block=1_000_000):
    """Yield float64 batches of a random walk, generated a block at a time."""
    rng = np.random.default_rng(seed)
    level = 1000.0
    for start in range(0, total, block):
        steps = rng.normal(0.0, 0.01, min(block, total - start))
        walk = level + np.cumsum(steps)
        level = walk[-1]
        for i in range(0, len(walk), batch):
            yield walk[i:i + batch]


class NumpyRing:
    """The baseline: the same ring of the last `capacity` prices, queried by slicing."""

    def __init__(self, capacity):
        self.ring = np.empty(capacity)
        self.capacity = capacity
        self.count = 0

    def add(self, values):
        n = len(values)
        at = self.count % self.capacity
        first = min(n, self.capacity - at)
        self.ring[at:at + first] = values[:first]
        self.ring[:n - first] = values[first:]
        self.count += n

    def window(self, size):
        end = self.count % self.capacity
        if end >= size:
            return self.ring[end - size:end]
        return np.concatenate((self.ring[self.capacity - (size - end):], self.ring[:end]))

    def stats(self, k):
        w = self.window(10 ** k)
        return float(np.min(w)), float(np.max(w)), float(w[-1]), float(np.mean(w)), float(np.var(w))


def time_adds(target, batches):
    elapsed = 0.0
    count = 0
    for batch in batches:
        t0 = time.perf_counter()
        target.add(batch)
        elapsed += time.perf_counter() - t0
        count += len(batch)
    return count / elapsed


def time_queries(query, k, budget=0.5, max_calls=200_000):
    """Mean seconds per call of query(k), calling it for about `budget` seconds."""
    calls, elapsed = 0, 0.0
    while elapsed < budget and calls < max_calls:
        n = max(1, min(1000, calls or 1))
        t0 = time.perf_counter()
        for _ in range(n):
            query(k)
        elapsed += time.perf_counter() - t0
        calls += n
    return elapsed / calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prices", type=float, default=1e8)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--max-k", type=int, default=8)
    args = parser.parse_args()
    total, max_k = int(args.prices), args.max_k

    engine = SymbolStats(max_k)
    engine_rate = time_adds(engine, random_walk_batches(total, args.batch))
    engine_rss = peak_rss_mib()
    print(f"tradestats add: {engine_rate / 1e6:8.2f} M values/s   "
          f"({total:,} prices in batches of {args.batch:,}, {max_k} windows)")
    print(f"tradestats memory: {engine.nbytes / 2**20:.1f} MiB held "
          f"({engine.nbytes / min(total, 10 ** max_k):.2f} bytes per stored price), "
          f"peak RSS {engine_rss:.0f} MiB")

    baseline = NumpyRing(10 ** max_k)
    baseline_rate = time_adds(baseline, random_walk_batches(total, args.batch))
    print(f"numpy ring add: {baseline_rate / 1e6:8.2f} M values/s (ring write only, no statistics)")
    print(f"add ratio tradestats / numpy-ring-write: {engine_rate / baseline_rate:.2f}")
    print()
    print(f"{'k':>2} {'tradestats ns/call':>19} {'numpy ns/call':>15} {'speed-up':>10}")
    for k in range(1, max_k + 1):
        if total < 10 ** k:
            break
        ours = time_queries(engine.stats, k)
        theirs = time_queries(baseline.stats, k, budget=1.0, max_calls=20_000)
        print(f"{k:>2} {ours * 1e9:>19.0f} {theirs * 1e9:>15.0f} {theirs / ours:>9.0f}x")
    print(f"peak RSS with baseline: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
