"""Where a POST /add_batch/ spends its time in tradestats' own code, stage by stage.

The bodies are bench_http.py's (10,000-value random walks with 2 decimals). Each stage runs on
the same bodies in one process, and the orjson parse that the limit app does (and that this
route did before it parsed with simdjson) is timed alongside as the baseline:

1. orjson.loads of the body to a list of floats: the limit app's whole work (baseline);
2. the route's parse, each fast path this installation has (web/batch_body.py: simdjson
   straight to a float64 buffer, GIL-free through libsimdjson or holding it through pysimdjson;
   the route uses the first);
3. the engine's validation of the buffer (as_prices: every price checked and copied);
4. Store.add into a heap store and into a file store, each holding a full 10**max_k window
   (the steady state of bench_http.py's POST case), the GIL released inside.

It prints microseconds per body for each (the median of --rounds rounds over all bodies) and
the ratio of the route's parse to orjson's. What the HTTP server, Falcon and the response cost
on top is bench_http.py's "CPU us/req" minus these.

    .venv/bin/python benchmarks/profile_ingest.py               # max_k 8: about 30 s
    .venv/bin/python benchmarks/profile_ingest.py --max-k 6     # quicker
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import orjson
from http_load import batch_bodies

from tradestats import Store
from tradestats.engine import as_prices
from tradestats.web.batch_body import FAST_PATH_NAME, FAST_PATHS, parse_fast

HERE = Path(__file__).resolve().parent


def per_body_us(function, items, rounds: int) -> float:
    """Median over rounds of the mean time of function(item) per item, in microseconds."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for item in items:
            function(item)
        samples.append((time.perf_counter() - started) / len(items) * 1e6)
    return statistics.median(samples)


def filled(store: Store, symbol: str, prices: int, bodies: list[bytes]) -> Store:
    """store with `prices` prices in symbol (cycling through the bodies' values)."""
    batches = [parse_fast(body)[1] for body in bodies]
    added = 0
    while added < prices:
        batch = batches[(added // len(batches[0])) % len(batches)]
        store.add(symbol, batch)
        added += len(batch)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-k", type=int, default=8)
    parser.add_argument("--bodies", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    bodies = batch_bodies("BENCH0", args.bodies, seed=1)
    buffers = [parse_fast(body)[1] for body in bodies]
    assert all(b is not None for b in buffers), "the fast path declined a benchmark body"

    orjson_us = per_body_us(orjson.loads, bodies, args.rounds)
    parse_us = {name: per_body_us(FAST_PATHS[name], bodies, args.rounds)
                for name in sorted(FAST_PATHS, key=lambda name: name != FAST_PATH_NAME)}
    validate_us = per_body_us(as_prices, buffers, args.rounds)
    window = 10 ** args.max_k
    heap = filled(Store(max_k=args.max_k), "BENCH0", window, bodies)
    heap_us = per_body_us(lambda b: heap.add("BENCH0", b), buffers, args.rounds)
    directory = tempfile.mkdtemp(prefix="profile_ingest-", dir=HERE.parent)
    try:
        disk = filled(Store(max_k=args.max_k, path=directory), "BENCH0", window, bodies)
        file_us = per_body_us(lambda b: disk.add("BENCH0", b), buffers, args.rounds)
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    size = sum(map(len, bodies)) / len(bodies)
    print(f"per 10,000-value body ({size:,.0f} bytes), median of {args.rounds} rounds over "
          f"{len(bodies)} bodies; stores hold a full 10**{args.max_k} window:")
    print(f"  orjson.loads to a list (the limit app; baseline)   {orjson_us:8.1f} us")
    for name, us in parse_us.items():
        role = "route parse" if name == FAST_PATH_NAME else "other parse"
        label = f"{role}: simdjson to doubles ({name})"
        print(f"  {label:51} {us:8.1f} us"
              f"   ratio to orjson {us / orjson_us:.2f}")
    print(f"  engine validation and copy (as_prices)             {validate_us:8.1f} us")
    print(f"  Store.add, heap (validation included)               {heap_us:8.1f} us")
    print(f"  Store.add, file (validation, commit, checksums)     {file_us:8.1f} us"
          f"   file/heap {file_us / heap_us:.2f}")


if __name__ == "__main__":
    main()
