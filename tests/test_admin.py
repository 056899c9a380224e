"""tradestats-admin verify (issue #16: "verified ... by a verify command"): every symbol file of
a data directory checked, each damaged one named, the exit status saying which; and list."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import time

from conftest import ServerProcess, stop_cleanly

from tradestats import Store
from tradestats.server import format_bytes
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


def test_list_names_every_symbol_with_its_prices_and_real_disk(tmp_path):
    store = filled_store(tmp_path)
    store.add("EMPTYISH", [5.5])
    done = admin("list", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[1:-1]}
    assert set(rows) == {"'A'", "'B'", "'EUR/USD'", "'EMPTYISH'"}
    assert rows["'A'"][1] == "12,000" and rows["'EMPTYISH'"][1:3] == ["1", "5.5"]
    last_a = store["A"].last
    assert rows["'A'"][2] == repr(last_a)
    assert done.stdout.splitlines()[-1].startswith("4 symbols, 36,001 prices, ")
    # A large window's file is sparse: the disk column is what it really takes.
    big = Store(max_k=7, path=tmp_path / "big")
    big.add("X", [1.0] * 10)
    status = os.stat(big["X"].path)
    assert 0 < status.st_blocks * 512 < status.st_size / 100
    row = " ".join(admin("list", tmp_path / "big").stdout.splitlines()[1].split())
    assert row == (f"'X' 10 1.0 {format_bytes(status.st_blocks * 512)} "
                   f"{format_bytes(status.st_size)}")


def test_list_names_a_damaged_symbol_and_says_so(tmp_path):
    filled_store(tmp_path)
    os.truncate(tmp_path / "symbols" / "B.sym", 4096)
    done = admin("list", tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert any(line.startswith("'B'") and "DAMAGED" in line for line in done.stdout.splitlines())
    assert done.stdout.splitlines()[-1].endswith("; 1 damaged")
    assert admin("list", tmp_path / "nothing").returncode == 2


WRITER = """
import sys, time
from tradestats import Store
store = Store(max_k=5, path=sys.argv[1], max_batch=1000)
position = {"A": 0, "B": 0}
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    for symbol in ("A", "B"):
        start = position[symbol]
        store.add(symbol, [float(i % 9973) for i in range(start, start + 1000)])
        position[symbol] = start + 1000
print(position["A"], position["B"])
"""


def test_backup_while_a_process_ingests_then_a_server_on_the_copy(tmp_path):
    source, copy = tmp_path / "live", tmp_path / "copy"
    Store(max_k=5, path=source, max_batch=1000).add("A", [float(i) for i in range(1000)])
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(source), "4"],
                              stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)   # mid-ingest
        done = admin("backup", source, copy)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        final = writer.communicate(timeout=60)[0].split()
    assert writer.returncode == 0 and int(final[0]) > 0
    backed_up = Store(max_k=5, path=copy)
    assert sorted(backed_up) == ["A", "B"]
    for symbol in ("A", "B"):
        stats = backed_up[symbol]
        stats.verify()   # checksums and every window recomputed: a committed state
        count = len(stats)
        assert count > 0 and count % 1000 == 0   # whole batches only
        written = int(final[0 if symbol == "A" else 1]) + (1000 if symbol == "A" else 0)
        assert count < written   # the copy was taken mid-ingest
        first = count - min(count, 10**5)
        # A's first batch (0..999) came before the writer, whose A then starts again at 0.
        shift = 1000 if symbol == "A" else 0
        expected = [float(i) if i < shift else float((i - shift) % 9973)
                    for i in range(first, count)]
        assert stats.prices(count).tolist() == expected
        original = os.stat(Store(max_k=5, path=source)[symbol].path)
        assert os.stat(stats.path).st_blocks <= original.st_blocks + 8   # sparse, like it
    assert admin("backup", source, copy).returncode == 2   # never over an existing directory
    del backed_up
    server = ServerProcess(None, ("--max-k", "5", "--max-batch", "1000", "--workers", "1",
                                  "--data-dir", str(copy)),
                           tmp_path / "serve.log")
    try:
        reply = server.request("GET", "/stats/?symbol=B&k=3")
        assert reply.status == 200 and reply.json()["symbol"] == "B"
    finally:
        stop_cleanly(server)
