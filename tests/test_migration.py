"""A store written by format version 1 is migrated to version 2 when opened (issues #16, #17):
nothing acknowledged is lost, the answers become the exact ones, and a kill at any point of the
migration loses nothing: the next open carries on. The version 1 store is tests/data/store-v1
(written by tradestats 36c74dd: tests/data/make_store_v1.py); the expected answers come from its
prices, with Fractions, never from the version that wrote it."""
from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
import struct
import sys
from pathlib import Path

import pytest

from tradestats import Store, StoreFormatError, SymbolStats, engine
from tradestats.storage import VERSION

from engine_reference import exact_window_stats

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_store_v1 import MAX_BATCH, MAX_K, TORN, v1_streams  # noqa: E402

FIXTURE = Path(__file__).parent / "data" / "store-v1"


def expected_prices() -> dict[str, list[float]]:
    """Every symbol's acknowledged prices: the torn batch was never acknowledged."""
    prices = {symbol: [x for batch in batches for x in batch]
              for symbol, batches in v1_streams().items()}
    prices[TORN] = [float(i) for i in range(250)]
    return prices


@pytest.fixture
def v1_store(tmp_path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(FIXTURE, copy)
    (copy / "tmp").mkdir(exist_ok=True)
    return copy


def meta_version(path: Path) -> int:
    return json.loads((path / "tradestats-store.json").read_text())["version"]


def assert_store_holds(store, prices: dict[str, list[float]]) -> None:
    assert sorted(store) == sorted(prices)
    for symbol, stream in prices.items():
        stats = store[symbol]
        assert len(stats) == len(stream), symbol
        assert list(stats.prices(10_000)) == stream[-10 ** MAX_K:], symbol
        heap = SymbolStats(MAX_K)
        heap.add(stream)
        for k in range(1, MAX_K + 1):
            if len(stream) < 10 ** k:
                continue
            got = tuple(stats.stats(k))
            want = exact_window_stats(stream, 10 ** k)
            assert struct.pack("5d", *got) == struct.pack("5d", *want), (symbol, k, got, want)
            assert tuple(heap.stats(k)) == got, (symbol, k)   # bit-identical to the heap
    assert store.verify() == {}


def test_a_version_1_store_is_migrated_and_exact(v1_store, caplog):
    assert meta_version(v1_store) == 1
    with caplog.at_level(logging.WARNING, logger="tradestats.storage"):
        store = Store(max_symbols=10, max_k=MAX_K, path=v1_store, max_batch=MAX_BATCH)
    assert meta_version(v1_store) == VERSION
    assert sum("migrated" in record.getMessage() for record in caplog.records) == 5
    prices = expected_prices()
    assert_store_holds(store, prices)
    for symbol in prices:                       # and it goes on, exactly
        batch = [100.0 + i / 8 for i in range(MAX_BATCH)]
        store.add(symbol, batch)
        prices[symbol] += batch
    assert_store_holds(store, prices)
    assert_store_holds(Store(max_symbols=10, max_k=MAX_K, path=v1_store), prices)


def open_and_die(path, chunks: int) -> None:
    engine._crash_after_chunks(chunks)
    Store(max_symbols=10, max_k=MAX_K, path=path, max_batch=MAX_BATCH)


@pytest.mark.parametrize("chunks", [0, 1, 2, 3, 5, 7])
def test_a_kill_during_migration_loses_nothing(v1_store, chunks):
    context = multiprocessing.get_context("fork")
    child = context.Process(target=open_and_die, args=(v1_store, chunks))
    child.start()
    child.join(60)
    assert child.exitcode == -9, "the migration should have been killed part-way"
    assert meta_version(v1_store) == 1
    store = Store(max_symbols=10, max_k=MAX_K, path=v1_store, max_batch=MAX_BATCH)
    assert meta_version(v1_store) == VERSION
    assert not any((v1_store / "tmp").iterdir())
    assert_store_holds(store, expected_prices())


def test_a_damaged_version_1_file_is_refused_by_name_and_left_alone(v1_store):
    target = v1_store / "symbols" / "short.sym"
    damaged = bytearray(target.read_bytes())
    ring_offset = struct.unpack_from("<q", damaged, 48)[0]   # version 1: ring_offset field
    struct.pack_into("<d", damaged, ring_offset + 8 * 3, float("nan"))
    target.write_bytes(damaged)
    with pytest.raises(StoreFormatError) as info:
        Store(max_symbols=10, max_k=MAX_K, path=v1_store, max_batch=MAX_BATCH)
    assert str(target) in str(info.value) and "position 3" in str(info.value)
    assert target.read_bytes() == damaged and meta_version(v1_store) == 1
