"""tradestats-admin verify (issue #16: "verified ... by a verify command"): every symbol file of
a data directory checked, each damaged one named, the exit status saying which."""
from __future__ import annotations

import os
import struct
import subprocess
import sys

from tradestats import Store
from tradestats.symbolfile import layout_of

MAX_K, MAX_BATCH = 4, 1000


def admin(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tradestats.admin", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def filled_store(path):
    store = Store(max_k=MAX_K, path=path, max_batch=MAX_BATCH)
    for symbol in ("A", "B", "EUR/USD"):
        for start in range(0, 12_000, MAX_BATCH):
            store.add(symbol, [100.0 + (i * 7919 % 1000) / 100 for i in range(start, start + MAX_BATCH)])
    return store


def test_a_whole_store_verifies(tmp_path):
    filled_store(tmp_path)
    done = admin("verify", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 of 3 symbols whole" in done.stdout and "'EUR/USD': 12000 prices" in done.stdout


def test_each_damaged_symbol_is_named_and_the_status_is_1(tmp_path):
    filled_store(tmp_path)
    layout = layout_of(MAX_K, MAX_BATCH)
    price_file = tmp_path / "symbols" / "A.sym"   # a price deep in a complete block
    data = bytearray(price_file.read_bytes())
    struct.pack_into("<d", data, layout["ring_offset"] + 8 * 5_555, 1234.5)
    price_file.write_bytes(data)
    os.truncate(tmp_path / "symbols" / "EUR%2FUSD.sym", 8192)
    done = admin("verify", tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("DAMAGED 'A'") and "positions 5000..5999" in line for line in lines)
    assert any(line.startswith("DAMAGED 'EUR/USD'") and "truncated" in line for line in lines)
    assert any(line.startswith("ok      'B'") for line in lines)
    assert "1 of 3 symbols whole, 2 damaged" in done.stdout


def test_a_directory_that_is_no_store_is_status_2(tmp_path):
    done = admin("verify", tmp_path / "nothing")
    assert done.returncode == 2 and "not a tradestats data directory" in done.stderr
