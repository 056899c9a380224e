"""Deleting a symbol from a file store (Store.delete, DELETE /symbols/, tradestats-admin delete):
every process sees it gone at once, a kill leaves it whole or gone, and writers racing a
delete lose nothing they were told was stored after it. (The behaviour every implementation
shares, heap, file and client, is in test_client.py.)"""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import ServerProcess, stop_cleanly
from engine_reference import check_all_windows
from tradestats import Store, SymbolDeletedError

MAX_K = 3


def test_every_open_store_sees_a_delete_at_once(tmp_path):
    deleter = Store(max_symbols=3, max_k=MAX_K, path=tmp_path)
    other = Store(max_symbols=3, max_k=MAX_K, path=tmp_path)   # its own mapping and locks
    deleter.add("X", np.arange(50.0))
    deleter.add("Y", np.arange(20.0))
    held = other["X"]
    assert other.stats("X", 1).last == 49.0
    deleter.delete("X")
    with pytest.raises(KeyError):
        other.stats("X", 1)
    with pytest.raises(SymbolDeletedError):   # a SymbolStats kept from before says so
        len(held)
    with pytest.raises(SymbolDeletedError):
        held.add([1.0])
    assert "X" not in other and list(other) == ["Y"]
    assert not (tmp_path / "symbols" / "X.sym").exists()
    other.add("X", [5.0] * 10)   # made afresh, seen by the deleter's store too
    check_all_windows(deleter["X"], [5.0] * 10)


def test_a_long_symbols_nested_folders_go_with_it(tmp_path):
    store = Store(max_symbols=3, max_k=MAX_K, path=tmp_path)
    long_symbol = "Ż" * 64   # 64 * 6 escaped bytes: nested folders (storage.encode_symbol)
    store.add(long_symbol, [1.0, 2.0])
    store.add("A", [1.0])
    assert len(list((tmp_path / "symbols").iterdir())) == 2
    store.delete(long_symbol)
    assert [p.name for p in (tmp_path / "symbols").iterdir()] == ["A.sym"]


KILLED_DELETE = textwrap.dedent("""
    import os, signal, sys
    from tradestats import Store, engine, storage
    path, where = sys.argv[1], sys.argv[2]
    store = Store(max_symbols=3, max_k=3, path=path)
    if where == "before-commit":
        engine._crash_after_chunks(0)
    else:
        storage._after_delete_commit = lambda: os.kill(os.getpid(), signal.SIGKILL)
    store.delete("X")
    sys.exit(3)   # not reached if the kill came
""")


@pytest.mark.parametrize(("where", "whole"), [("before-commit", True), ("after-commit", False)])
def test_a_kill_mid_delete_leaves_the_symbol_whole_or_gone(tmp_path, where, whole):
    values = np.random.default_rng(3).normal(100, 2, 2500)
    store = Store(max_symbols=3, max_k=MAX_K, path=tmp_path)
    store.add("X", values)
    store.add("Y", [1.0])
    done = subprocess.run([sys.executable, "-c", KILLED_DELETE, str(tmp_path), where], timeout=60)
    assert done.returncode == -signal.SIGKILL
    # The store open before the kill and one opened after agree.
    for seen in (store, Store(max_symbols=3, max_k=MAX_K, path=tmp_path)):
        assert ("X" in seen) is whole and sorted(seen) == (["X", "Y"] if whole else ["Y"])
        if whole:
            check_all_windows(seen["X"], values)
            assert seen["X"].prices(3000).tolist() == values[-1000:].tolist()   # max_k 3
        else:
            with pytest.raises(KeyError):
                seen.stats("X", 1)
    assert (tmp_path / "symbols" / "X.sym").exists() is whole   # the new open finished it
    store.add("Z", [1.0])   # the symbol limit counts what is really there


# --- writers racing a deleter that is killed at random -----------------------------------------

WRITER = textwrap.dedent("""
    import os, sys, time
    from tradestats import Store
    path, writer, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    store = Store(max_symbols=4, max_k=6, path=path, max_batch=1000)
    ack = os.open(os.path.join(path, f"acks-{writer}"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    seq, stop = 0, time.monotonic() + seconds
    while time.monotonic() < stop:
        size = 1 + (seq * 37 + writer) % 50
        # Price = writer * 1e9 + seq * 1e3 + index: each batch recognisable in the ring.
        store.add("X", [writer * 1e9 + seq * 1e3 + i for i in range(size)])
        os.write(ack, b"%d\\n" % seq)
        seq += 1
        time.sleep(0.001)   # at most ~25,000 prices/s: all since the last delete fit the window
""")

DELETER = textwrap.dedent("""
    import random, sys, time
    from tradestats import Store
    path, seed = sys.argv[1], int(sys.argv[2])
    store = Store(max_symbols=4, max_k=6, path=path, max_batch=1000)
    rng = random.Random(seed)
    while True:
        time.sleep(rng.uniform(0, 0.01))
        try:
            store.delete("X")
        except KeyError:
            pass
""")


def batches_held(prices: list[float]) -> dict[int, list[int]]:
    """{writer: [seq, ...]} of the batches in prices (everything since the symbol was made,
    oldest first), each checked whole."""
    held: dict[int, list[int]] = {}
    i = 0
    while i < len(prices):
        writer, rest = divmod(int(prices[i]), 10**9)
        seq, index = divmod(rest, 1000)
        size = 1 + (seq * 37 + writer) % 50
        expected = [writer * 1e9 + seq * 1e3 + j for j in range(size)]
        assert index == 0, f"batch {writer}/{seq} starts at its price {index}"
        assert prices[i:i + len(expected)] == expected, f"batch {writer}/{seq} not whole"
        held.setdefault(writer, []).append(seq)
        i += len(expected)
    return held


def test_writers_racing_a_killed_deleter_lose_nothing_acknowledged_after_it(tmp_path):
    """Two writers add to X while a deleter deletes it every few ms and is SIGKILLed at random
    moments (and restarted), 12 times. Then: every batch held is whole, at most once, in each
    writer's order, and each writer's batches form one unbroken run up to its last
    acknowledged batch (a delete takes everything before it, never a batch in the middle)."""
    rng = random.Random(19)
    Store(max_symbols=4, max_k=6, path=tmp_path, max_batch=1000)
    seconds = 6.0
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w),
                                 str(seconds)]) for w in (1, 2)]
    try:
        deadline = time.monotonic() + seconds - 1
        kills = 0
        while time.monotonic() < deadline and kills < 12:
            deleter = subprocess.Popen([sys.executable, "-c", DELETER, str(tmp_path),
                                        str(kills)])
            time.sleep(rng.uniform(0.15, 0.35))
            deleter.kill()
            assert deleter.wait() == -signal.SIGKILL
            kills += 1
        for writer in writers:
            assert writer.wait(timeout=60) == 0
    finally:
        for process in writers:
            if process.poll() is None:
                process.kill()
    assert kills >= 6
    store = Store(max_symbols=4, max_k=6, path=tmp_path, max_batch=1000)
    prices = store.prices("X", 10**6).tolist()
    assert len(prices) == len(store["X"])   # everything since the last delete, to check it all
    held = batches_held(prices)
    assert sorted(held) == [1, 2]   # both wrote for a second after the last delete
    for writer, seqs in held.items():
        acked = [int(line) for line in (tmp_path / f"acks-{writer}").read_text().split()]
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"writer {writer}: a gap"
        assert seqs[-1] == acked[-1], f"writer {writer}: its last acknowledged batch is lost"
    store["X"].verify()
    assert list((tmp_path / "tmp").iterdir()) == []


# --- over HTTP and from the command line ------------------------------------------------------

def test_delete_over_http_is_seen_by_every_worker(tmp_path):
    server = ServerProcess(None, ("--workers", "2", "--max-symbols", "2"), tmp_path / "serve.log")
    try:
        body = b'{"symbol": "EUR/USD", "values": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}'
        assert server.request("POST", "/add_batch/", body).status == 200
        assert server.request("GET", "/stats/?symbol=EUR/USD&k=1").status == 200
        reply = server.request("DELETE", "/symbols/?symbol=EUR%2FUSD")
        assert (reply.status, reply.json()) == (200, {"message": "Symbol EUR/USD deleted"})
        # New connections land on either worker: none may still answer from its mapping.
        for _ in range(40):
            reply = server.request("GET", "/stats/?symbol=EUR/USD&k=1")
            assert (reply.status, reply.json()) == (400, {"detail": "Symbol EUR/USD not found"})
        assert server.request("GET", "/symbols").json() == {"symbols": []}
        again = server.request("DELETE", "/symbols?symbol=EUR%2FUSD")
        assert (again.status, again.json()) == (400, {"detail": "Symbol EUR/USD not found"})
        missing = server.request("DELETE", "/symbols/")
        assert (missing.status, missing.json()) == (400, {"detail": "Missing symbol"})
    finally:
        stop_cleanly(server)


def test_admin_delete_while_a_server_runs(tmp_path):
    data = tmp_path / "data"
    server = ServerProcess(None, ("--workers", "2", "--max-k", str(MAX_K), "--data-dir",
                                  str(data)), tmp_path / "serve.log")
    try:
        for symbol in ("A", "B"):
            body = ('{"symbol": "%s", "values": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}' % symbol).encode()
            assert server.request("POST", "/add_batch/", body).status == 200
        admin = [sys.executable, "-m", "tradestats.admin", "delete", str(data)]
        done = subprocess.run([*admin, "A"], capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stdout) == (0, "deleted 'A'\n"), done.stderr
        assert server.request("GET", "/stats/?symbol=A&k=1").status == 400
        assert [row["symbol"] for row in server.request("GET", "/symbols").json()["symbols"]] \
            == ["B"]
        gone = subprocess.run([*admin, "A"], capture_output=True, text=True, timeout=60)
        assert gone.returncode == 1 and "no symbol 'A'" in gone.stderr
    finally:
        stop_cleanly(server)
