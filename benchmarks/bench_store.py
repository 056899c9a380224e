"""File store benchmark: Store(path=DIR) against the heap Store, in the same run.

1. add: the same random walk into a heap store and into a file store, both empty (a window's
   first fill), batch by batch alternately, for --rounds rounds (and with sync=True for a
   shorter stream): values/s and the ratio file / heap.
2. stats(k): ns per call, heap and file (the file store copies a published snapshot).
3. a reader process's stats(k) calls per second over one symbol, alone and while another
   process ingests into the same symbol: readers never wait for the writer.
4. open: Store(path=DIR) over SYMBOLS symbols with full 10**max_k windows, after a clean stop
   and after a torn batch in every symbol (a writer SIGKILLed mid-batch), with the time the
   next writer's roll-back takes per symbol.

    python benchmarks/bench_store.py                      # 10**8 prices, max_k 8, 10 symbols
    python benchmarks/bench_store.py --prices 1e7 --max-k 7 --symbols 2   # quicker

The data goes to --dir (default: a temporary directory on the disk under the current
directory, removed afterwards; 10 full 10**8 symbols take about 16 GB).
"""
from __future__ import annotations

import argparse
import multiprocessing
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from bench_engine import batches, stream_pieces, time_queries

from tradestats import Store


def random_walk_batches(total: int, batch: int, seed: int = 0):
    """A random walk around 1,000 (sigma 0.01), generated a block at a time."""
    return batches(stream_pieces("walk", total, 8, seed), batch)


def time_adds(target, batches_to_add) -> float:
    """Values per second of target.add over the batches (wall time inside add only)."""
    elapsed, count = 0.0, 0
    for values in batches_to_add:
        started = time.perf_counter()
        target.add(values)
        elapsed += time.perf_counter() - started
        count += len(values)
    return count / elapsed


def add_rate(store: Store, symbol: str, total: int, batch: int) -> float:
    class Target:
        def add(self, values):
            store.add(symbol, values)
    return time_adds(Target(), random_walk_batches(total, batch))


def interleaved_add_rates(heap: Store, files: Store, symbol: str, total: int, batch: int):
    """Values per second of heap.add and files.add given the same batches alternately, batch by
    batch. This VM's speed drifts by up to 2x within a minute (its host backs memory lazily):
    stores filled one after the other were compared under different conditions (0.48 in one
    round, 0.94 in the next); alternating puts both under the same."""
    heap_seconds = file_seconds = 0.0
    count = 0
    for values in random_walk_batches(total, batch):
        started = time.perf_counter()
        heap.add(symbol, values)
        middle = time.perf_counter()
        files.add(symbol, values)
        file_seconds += time.perf_counter() - middle
        heap_seconds += middle - started
        count += len(values)
    return count / heap_seconds, count / file_seconds


def read_loop(path, max_k, symbol, seconds, result):
    store = Store(max_k=max_k, path=path)
    stats = store[symbol].stats
    calls, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            stats(1)
        calls += 1000
    result.put(calls / seconds)


def write_loop(path, max_k, symbol, seconds, batch):
    store = Store(max_k=max_k, path=path)
    deadline = time.perf_counter() + seconds
    for values in random_walk_batches(10**12, batch, seed=9):
        store.add(symbol, values)
        if time.perf_counter() > deadline:
            return


def reader_rate(path, max_k, symbol, seconds, with_writer, batch) -> float:
    context = multiprocessing.get_context("fork")
    result = context.Queue()
    reader = context.Process(target=read_loop, args=(path, max_k, symbol, seconds, result))
    writer = context.Process(target=write_loop, args=(path, max_k, symbol, seconds + 0.5, batch))
    if with_writer:
        writer.start()
        time.sleep(0.3)
    reader.start()
    rate = result.get(timeout=seconds + 60)
    reader.join()
    if with_writer:
        writer.join()
    return rate


TEAR = textwrap.dedent("""
    import sys
    import numpy as np
    from tradestats import Store, engine
    store = Store(max_symbols=int(sys.argv[3]), max_k=int(sys.argv[2]), path=sys.argv[1])
    engine._crash_after_chunks(1)
    store.add(sys.argv[4], np.full(10_000, 5.0))
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prices", type=float, default=1e8)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--max-k", type=int, default=8)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3, help="first fills of each store")
    args = parser.parse_args()
    total, max_k, batch = int(args.prices), args.max_k, args.batch
    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-store-", dir="."))
    path = root / "store"
    try:
        # The first fill of a window, heap and file batch by batch alternately; each round
        # starts from empty stores.
        heap_rates, file_rates = [], []
        for round_ in range(args.rounds):
            heap = Store(max_k=max_k)
            files = Store(max_symbols=args.symbols, max_k=max_k, path=path)
            heap_rate, file_rate = interleaved_add_rates(heap, files, "S0", total, batch)
            heap_rates.append(heap_rate)
            file_rates.append(file_rate)
            if round_ < args.rounds - 1:
                del heap, files
                shutil.rmtree(path)
        ratios = [f / h for f, h in zip(file_rates, heap_rates)]
        print(f"add, heap store:  {max(heap_rates) / 1e6:7.2f} M values/s "
              f"({total:,} prices in batches of {batch:,}, {max_k} windows, first fill; best of "
              f"{args.rounds}: " + ", ".join(f"{r / 1e6:.1f}" for r in heap_rates) + ")")
        print(f"add, file store:  {max(file_rates) / 1e6:7.2f} M values/s   (" +
              ", ".join(f"{r / 1e6:.1f}" for r in file_rates) + ")")
        print("ratio file/heap, round by round: " + ", ".join(f"{r:.2f}" for r in ratios)
              + f"; median {sorted(ratios)[len(ratios) // 2]:.2f}; best/best "
              f"{max(file_rates) / max(heap_rates):.2f}")
        synced = Store(max_symbols=1, max_k=max_k, path=root / "synced", sync=True)
        sync_total = min(total, 2_000_000)
        sync_rate = add_rate(synced, "S", sync_total, batch)
        plain = Store(max_symbols=1, max_k=max_k, path=root / "plain")
        plain_rate = add_rate(plain, "S", sync_total, batch)
        print(f"add, sync=True:   {sync_rate / 1e6:7.2f} M values/s  "
              f"({sync_rate / batch:,.0f} batches/s; without sync on the same "
              f"{sync_total:,} prices: {plain_rate / 1e6:.2f} M values/s)")
        del synced, plain
        print()
        print(f"{'k':>2} {'heap ns/call':>13} {'file ns/call':>13}")
        for k in range(1, max_k + 1):
            if total < 10**k:
                break
            print(f"{k:>2} {time_queries(heap['S0'].stats, k):>13.0f} "
                  f"{time_queries(files['S0'].stats, k):>13.0f}")
        del heap
        alone = reader_rate(path, max_k, "S0", 3.0, False, batch)
        busy = reader_rate(path, max_k, "S0", 3.0, True, batch)
        print(f"\nreader process stats(1): {alone / 1e6:.2f} M calls/s alone, "
              f"{busy / 1e6:.2f} M calls/s while another process ingests (ratio {busy / alone:.2f})")

        for n in range(1, args.symbols):
            add_rate(files, f"S{n}", total, batch)
        del files
        started = time.perf_counter()
        reopened = Store(max_symbols=args.symbols, max_k=max_k, path=path)
        counts = [len(reopened[symbol]) for symbol in reopened]
        clean = time.perf_counter() - started
        print(f"\nopen after a clean stop: {clean * 1e3:.1f} ms for {len(counts)} symbols "
              f"holding {sum(counts):,} prices")
        del reopened
        for n in range(args.symbols):
            result = subprocess.run([sys.executable, "-c", TEAR, str(path), str(max_k),
                                     str(args.symbols), f"S{n}"])
            assert result.returncode == -signal.SIGKILL
        started = time.perf_counter()
        reopened = Store(max_symbols=args.symbols, max_k=max_k, path=path)
        opened = time.perf_counter() - started
        per_symbol = []
        for symbol in reopened:
            started = time.perf_counter()
            assert reopened[symbol].recover()
            per_symbol.append(time.perf_counter() - started)
        print(f"open after a torn batch in every symbol: {opened * 1e3:.1f} ms; roll-back by "
              f"the next writer: {min(per_symbol):.2f}-{max(per_symbol):.2f} s per symbol "
              f"(10**{max_k} window)")
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
