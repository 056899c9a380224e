"""Regenerate tests/data/store-v1: a store written by format version 1 (tradestats 36c74dd, the
last version before exact sums), for the migration tests (tests/test_migration.py).

    python tests/data/make_store_v1.py      # builds that version once (benchmarks/baseline.py)

Its symbols, their prices (v1_streams below, also imported by the tests) and one torn batch
(a writer killed in the middle of a batch) are fixed here; the tests compare the migrated
store with the prices themselves, never with this version's (inexact) answers.
"""
import multiprocessing
import random
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = HERE / "store-v1"
MAX_K, MAX_BATCH = 3, 100


def v1_streams():
    """symbol -> its batches, oldest first: a wrapped ring, a short one, a Unicode name."""
    rng = random.Random(1)
    walk, level = [], 1000.0
    for _ in range(2345):
        level += rng.gauss(0, 0.5)
        walk.append(level)
    spiky = [rng.choice([1e-300, 5e-324, 1e100, -1e100, 3.0]) for _ in range(1500)]
    return {
        "AAPL": [walk[i:i + 100] for i in range(0, len(walk), 100)],
        "short": [[1.5, 2.5, 3.5] * 10],
        "z\u00fcrich/\u6771": [spiky[i:i + 77] for i in range(0, len(spiky), 77)],
    }


#: The torn batch: TORN's stream, then a batch of TORN_BATCH whose writer dies mid-way.
TORN, TORN_BATCH = "torn", [7.0] * 100


def torn_writer(path):
    baseline = load()
    baseline.engine._crash_after_chunks(0)   # SIGKILL before the batch is published
    store = baseline.Store(max_k=MAX_K, path=path, max_batch=MAX_BATCH)
    store.add(TORN, TORN_BATCH)


def load():
    sys.path.insert(0, str(HERE.parent.parent / "benchmarks"))
    from baseline import load_baseline
    return load_baseline("36c74dd")


def main():
    baseline = load()
    shutil.rmtree(TARGET, ignore_errors=True)
    store = baseline.Store(max_symbols=10, max_k=MAX_K, path=TARGET, max_batch=MAX_BATCH)
    for symbol, batches in v1_streams().items():
        for batch in batches:
            store.add(symbol, batch)
    for start in (0, 100, 200):
        store.add(TORN, [float(i) for i in range(start, min(start + 100, 250))])
    child = multiprocessing.get_context("fork").Process(target=torn_writer, args=(TARGET,))
    child.start()
    child.join()
    assert child.exitcode == -9, child.exitcode
    for leftover in (TARGET / "tmp").iterdir():
        leftover.unlink()
    print(f"wrote {TARGET}: {sorted(store)}")


if __name__ == "__main__":
    main()
