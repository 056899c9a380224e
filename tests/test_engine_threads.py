"""Threads and the GIL: ``add`` appends without the GIL, so a thread reading the same symbol
meanwhile must still see whole batches only, in the heap store and in the file store."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tradestats import Store

BATCH = 4096          # at or above the heap store's threshold for releasing the GIL
BATCHES = 1000


def batch_values(b: int) -> np.ndarray:
    """Batch b: every price equals b + 1, so a window's min, max and mean name the batches in it
    and a torn read shows as a mix that no whole-batch state has."""
    return np.full(BATCH, float(b + 1))


@pytest.mark.parametrize("kind", ["heap", "file"])
def test_readers_in_other_threads_see_whole_batches_only(kind, tmp_path):
    # max_k 4: prices() returns up to 10**4 prices, more than a batch and a bit.
    store = Store(max_k=4) if kind == "heap" else Store(max_k=4, path=tmp_path / "store")
    store.add("S", batch_values(0))
    symbol = store["S"]
    problems: list[str] = []
    done = threading.Event()

    def read_until_done() -> None:
        try:
            check_until_done()
        except Exception as error:   # a reader's failure must fail the test, not end a thread
            problems.append(repr(error))

    def check_until_done() -> None:
        reads = 0
        while not done.is_set() or reads < 100:
            count, last = symbol.count_and_last()
            if count % BATCH:
                problems.append(f"count {count} is not whole batches")
            if last != count // BATCH:
                problems.append(f"last {last} is not batch {count // BATCH}'s")
            stats = store.stats("S", 3)   # the last 1,000 prices: all of the newest batch
            if not stats.min == stats.max == stats.avg == last or stats.var != 0.0:
                if symbol.count_and_last()[0] == count:   # same commit: a torn snapshot
                    problems.append(f"window of batch {last}: {stats}")
            tail = symbol.prices(BATCH + 10).tolist()
            newest = tail[-1]
            if tail[-BATCH:] != [newest] * BATCH or (len(tail) > BATCH and tail[0] != newest - 1):
                problems.append(f"prices mix batches: {sorted(set(tail))[:5]}")
            reads += 1

    readers = [threading.Thread(target=read_until_done) for _ in range(2)]
    for reader in readers:
        reader.start()
    started = time.monotonic()
    for b in range(1, BATCHES):
        store.add("S", batch_values(b))
    done.set()
    for reader in readers:
        reader.join(timeout=60)
    assert not any(reader.is_alive() for reader in readers)
    assert not problems, problems[:5]
    assert len(symbol) == BATCHES * BATCH and time.monotonic() - started < 60
