"""Migration benchmark: a file store of format version 1 with a full window, opened by this
version (which migrates it: issue #17), against the time the old version took to write it.

The version 1 store is written by the engine before the rewrite (benchmarks/baseline.py builds
it), PRICES prices of a random walk at max_k, into --dir; then Store(path=DIR) of this version
migrates it, timed, and the migrated symbol is checked: same count, same last prices, and
verify() (every window recomputed from the prices) passes.

    python benchmarks/bench_migration.py                      # 1.2e8 prices, max_k 8 (~3.2 GB)
    python benchmarks/bench_migration.py --prices 2e6 --max-k 6
"""
from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from baseline import load_baseline

from tradestats import Store


def write_v1_store(path: Path, prices: int, max_k: int, batch: int = 10_000):
    old = load_baseline()
    store = old.Store(max_k=max_k, path=path, max_batch=batch)
    rng = np.random.default_rng(17)
    level, started = 1000.0, time.perf_counter()
    for start in range(0, prices, 1_000_000):
        walk = level + np.cumsum(rng.normal(0, 0.01, min(1_000_000, prices - start)))
        level = walk[-1]
        for i in range(0, len(walk), batch):
            store.add("AAPL", walk[i:i + batch])
    elapsed = time.perf_counter() - started
    tail = old.Store(max_k=max_k, path=path)["AAPL"].prices(1000)
    return elapsed, tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prices", type=float, default=1.2e8)
    parser.add_argument("--max-k", type=int, default=8)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the store goes (default: a temporary directory here)")
    args = parser.parse_args()
    prices = int(args.prices)
    root = args.dir or Path(tempfile.mkdtemp(prefix="tradestats-migration-", dir="."))
    logging.basicConfig(level=logging.WARNING, format="  log: %(message)s")
    try:
        path = root / "store"
        written, tail = write_v1_store(path, prices, args.max_k)
        print(f"version 1 store written: {prices:,} prices at max_k {args.max_k} in "
              f"{written:.2f} s ({prices / written / 1e6:.1f} M prices/s)")
        started = time.perf_counter()
        store = Store(max_k=args.max_k, path=path)
        migrated = time.perf_counter() - started
        stats = store["AAPL"]
        window = min(prices, 10 ** args.max_k)
        print(f"migrated in {migrated:.2f} s: a window of {window:,} prices, "
              f"{window / migrated / 1e6:.1f} M prices/s "
              f"({migrated / written:.2f}x the time the old version took to write them)")
        assert len(stats) == prices and list(stats.prices(1000)) == list(tail)
        started = time.perf_counter()
        stats.verify(recompute=False)
        print(f"verify(recompute=False) (what the server checks at start-up: checksums of the "
              f"header, snapshot and every price): {time.perf_counter() - started:.3f} s")
        started = time.perf_counter()
        stats.verify()
        print(f"verify() after the migration: passed in {time.perf_counter() - started:.2f} s "
              "(every window recomputed from the prices)")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
