"""Flipped bits in a symbol file (issue #16): every byte of the header and a sample of the
prices, the deques and the block records, three patterns each, opened, read and written in a
child process so that a crash or a hang is seen, not suffered. What must hold: no signal, no
hang; a damaged header is refused with StoreFormatError naming the file; a damaged price the
engine reads into a sum, or a damaged record it merges, is refused the same way (checksums),
never added. (A damaged deque entry can still give a wrong minimum or maximum until verify()
or a roll-back: README, "What the store trusts".)"""
from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections import Counter

import pytest

from tradestats import NotEnoughDataError, Store, StoreFormatError
from tradestats.symbolfile import layout_of

PATTERNS = (0x01, 0x80, 0xFF)
#: Seconds one case may take before it counts as a hang (a case does a few O(1) calls).
CASE_SECONDS = 5


MAX_K, MAX_BATCH = 3, 100
LAYOUT = layout_of(MAX_K, MAX_BATCH)


def pristine_store(path, batches=12) -> bytes:
    store = Store(max_k=MAX_K, path=path, max_batch=MAX_BATCH)
    rng = random.Random(16)
    level = 100.0
    for _ in range(batches):  # at 12 batches the deques wrapped; at 60, the ring too
        batch = []
        for _ in range(rng.randint(20, 90)):
            level += rng.uniform(-1, 1)
            batch.append(level)
        store.add("A", batch)
    return (path / "symbols" / "A.sym").read_bytes()


def held_prices(pristine: bytes) -> int:
    """How many prices the pristine file's committed state holds."""
    generation = struct.unpack_from("<Q", pristine, LAYOUT["state_offsets"][0] - 32)[0]
    state = LAYOUT["state_offsets"][generation & 1]
    return struct.unpack_from("<q", pristine, state + 24)[0]


def exercise(path) -> None:
    store = Store(max_k=MAX_K, path=path, max_batch=MAX_BATCH)
    for k in (1, 2, 3):
        try:
            store.stats("A", k)
        except NotEnoughDataError:
            assert k == 3
    store.prices("A", 50)
    store.symbols()
    store.add("A", [100.0, 101.0, 99.5])
    store.stats("A", 1)


def run_cases(path, pristine: bytes, cases, connection) -> None:
    """Child: one case after the other; says which it starts, then how it ended."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)   # an alarm kills: a hang is seen as a signal
    target = path / "symbols" / "A.sym"
    for index, (offset, pattern) in enumerate(cases):
        damaged = bytearray(pristine)
        damaged[offset] ^= pattern
        target.write_bytes(damaged)
        connection.send(("start", index))
        signal.alarm(CASE_SECONDS)
        try:
            exercise(path)
            outcome = "served"
        except StoreFormatError as error:
            outcome = "refused" if str(target) in str(error) else f"unnamed: {error}"
        except Exception as error:  # noqa: BLE001 - reported, judged by the test
            outcome = f"other: {type(error).__name__}: {error}"
        signal.alarm(0)
        connection.send(("done", index, outcome))
    connection.send(("finished",))


def run_all(path, pristine: bytes, cases) -> tuple[Counter, list]:
    """Every case, in child processes; a child killed by a signal is replaced after its case."""
    outcomes: Counter = Counter()
    deaths = []
    start = 0
    context = multiprocessing.get_context("fork")
    while start < len(cases):
        receiver, sender = context.Pipe(duplex=False)
        child = context.Process(target=run_cases, args=(path, pristine, cases[start:], sender))
        child.start()
        sender.close()
        current = None
        while True:
            try:
                message = receiver.recv()
            except EOFError:  # the child died in the middle of a case
                child.join(10)
                deaths.append((cases[start + current], child.exitcode))
                start += current + 1
                break
            if message[0] == "start":
                current = message[1]
            elif message[0] == "done":
                outcomes[message[2].split(":")[0]] += 1
                if message[2].startswith(("unnamed", "other")):
                    outcomes[message[2]] += 1
            else:
                child.join(10)
                start = len(cases)
                break
    return outcomes, deaths


def test_flipped_header_bytes_never_crash_or_hang(tmp_path):
    """Issue #16 found 6-7 crashes per pattern among the header's bytes (window sizes: SIGSEGV,
    SIGFPE, an endless loop; deque fronts). Before the checks at open this test saw 4 SIGSEGVs
    and 37 other errors (a bogus 'reserved', a window of the wrong size) in 12,288 flips."""
    pristine = pristine_store(tmp_path)
    header_bytes = struct.unpack_from("<I", pristine, 12)[0]
    cases = [(offset, pattern) for offset in range(header_bytes) for pattern in PATTERNS]
    started = time.monotonic()
    outcomes, deaths = run_all(tmp_path, pristine, cases)
    print(f"{len(cases)} header flips in {time.monotonic() - started:.0f} s: {dict(outcomes)}")
    assert deaths == [], f"signals (offset, pattern, exit code): {deaths[:20]}"
    assert outcomes["refused"] > 0
    assert not [key for key in outcomes if key.startswith(("unnamed", "other"))], outcomes


def test_flipped_price_bytes_are_refused_before_they_are_summed(tmp_path):
    """Issue #16 found 275 of 300 sampled price flips served as wrong answers. Every price the
    next batch sums (the newest 100 for the small windows, the block the 1,000-window's leaving
    prices come from) is checked against its block's CRC first."""
    pristine = pristine_store(tmp_path)
    assert held_prices(pristine) > 100
    ring = LAYOUT["ring_offset"]
    rng = random.Random(7)
    cases = [(offset, rng.choice(PATTERNS))
             for offset in rng.sample(range(ring, ring + 8 * held_prices(pristine)), 300)]
    outcomes, deaths = run_all(tmp_path, pristine, cases)
    assert deaths == [], deaths[:20]
    # Fewer than 1,000 prices: one open block, covered by the header's CRC of it, read by
    # every commit of a window below a block. Every flip is found.
    assert outcomes == Counter(refused=300), outcomes


def test_a_batch_is_refused_before_it_sums_a_flipped_price_it_did_not_bring(tmp_path):
    """A commit sums the newest 100 prices from the ring (the windows below a block). Those its
    batch brought were checksummed from the batch itself; the others are checked against their
    block's checksum first, so a flipped one refuses the batch by the file's name. The add is
    the first call after the open here: nothing else has read the prices."""
    pristine = pristine_store(tmp_path / "pristine")
    held = held_prices(pristine)
    assert 100 < held < LAYOUT["block_prices"]   # one open block, all of it checked
    rng = random.Random(18)
    for case, position in enumerate([held - 1, held - 99, 0, *rng.sample(range(held), 5)]):
        folder = shutil.copytree(tmp_path / "pristine", tmp_path / f"case-{case}")
        damaged = bytearray(pristine)
        damaged[LAYOUT["ring_offset"] + 8 * position + rng.randrange(8)] ^= rng.choice(PATTERNS)
        (folder / "symbols" / "A.sym").write_bytes(damaged)
        store = Store(max_k=MAX_K, path=folder, max_batch=MAX_BATCH)
        with pytest.raises(StoreFormatError, match="A.sym"):
            store.add("A", [100.0, 101.0])


def test_flipped_record_bytes_never_crash_or_hang(tmp_path):
    """Records hold the exact sums of complete blocks: the 1,000-window merges them as its
    prices leave; each is checked against its CRC before it is merged."""
    pristine = pristine_store(tmp_path, batches=60)   # about 3,300 prices: 3 complete blocks
    assert held_prices(pristine) > 3 * LAYOUT["block_prices"]
    start = LAYOUT["blocks_offset"]
    rng = random.Random(9)
    region = range(start, start + 3 * LAYOUT["record_bytes"])
    cases = [(offset, rng.choice(PATTERNS)) for offset in rng.sample(region, 300)]
    outcomes, deaths = run_all(tmp_path, pristine, cases)
    assert deaths == [], deaths[:20]
    assert not [key for key in outcomes if key.startswith(("unnamed", "other"))], outcomes
    assert outcomes["refused"] > 0, outcomes


def test_flipped_deque_bytes_never_crash_or_hang(tmp_path):
    """The deques' entries are ring slots, not checked at open (that would read them all): an
    entry out of the ring reads slot 0, a wrong number, never a signal."""
    pristine = pristine_store(tmp_path)
    lows_offset, highs_offset = LAYOUT["lows_offset"], LAYOUT["highs_offset"]
    rng = random.Random(11)
    used = 4 * 200  # bytes of the deques' first 200 entries in each: where this data lives
    region = [*range(lows_offset, lows_offset + used), *range(highs_offset, highs_offset + used)]
    cases = [(offset, rng.choice(PATTERNS)) for offset in rng.sample(region, 400)]
    outcomes, deaths = run_all(tmp_path, pristine, cases)
    assert deaths == [], deaths[:20]
    assert not [key for key in outcomes if key.startswith(("unnamed", "other"))], outcomes


TRUNCATION_CHILD = """
import os, sys
from tradestats import Store, StoreCorruptionError
path, size = sys.argv[1], int(sys.argv[2])
store = Store(max_k=3, path=path, max_batch=100)
for start in range(0, 1500, 100):
    store.add("BAD", [float(i) for i in range(start, start + 100)])
store.add("GOOD", [1.0, 2.0] * 50)
published = (store.stats("BAD", 1), len(store["BAD"]))
os.truncate(os.path.join(path, "symbols", "BAD.sym"), size)
# Reads of the published snapshot either fail by name or, if its page is still there, give the
# published answer (checksummed); everything that would read past the end is refused.
for read, answer in ((lambda: store.stats("BAD", 1), published[0]),
                     (lambda: len(store["BAD"]), published[1])):
    try:
        assert read() == answer
    except StoreCorruptionError as error:
        assert "BAD.sym" in str(error) and "truncated" in str(error), error
calls = [lambda: store.prices("BAD", 5), lambda: store.add("BAD", [1.0]),
         lambda: store["BAD"].recover(), lambda: store["BAD"].verify()]
for call in calls:
    try:
        call()
    except StoreCorruptionError as error:
        assert "BAD.sym" in str(error) and "truncated" in str(error), error
    else:
        raise AssertionError("served a truncated file")
assert "truncated" in store.verify()["BAD"] and list(store.verify()) == ["BAD"]
store.add("GOOD", [3.0] * 10)
assert store.stats("GOOD", 1).avg == 3.0
print("ok")
"""


def test_a_file_truncated_while_mapped_is_refused_by_name_not_a_sigbus(tmp_path):
    """Issue #16: truncating a mapped file from outside killed the process touching it
    (SIGBUS). Writers and prices() check the size first (one fstat), a reader's snapshot copy
    runs under a SIGBUS guard (guard.h): the symbol is refused by name, the others go on. In a
    child process: a SIGBUS would show as its exit status."""
    for size in (0, 4096, LAYOUT["file_size"] - 4096):
        folder = tmp_path / f"store-{size}"
        done = subprocess.run([sys.executable, "-c", TRUNCATION_CHILD, str(folder), str(size)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout.strip() == "ok", (size, done.stderr[-2000:])


def test_verify_finds_what_the_checks_in_use_do_not(tmp_path):
    """A flipped deque entry gives a wrong minimum that no checksum covers (the deques change in
    place); verify() recomputes every window from the checksummed prices and names it."""
    store = Store(max_k=MAX_K, path=tmp_path, max_batch=MAX_BATCH)
    for start in range(0, 1200, 100):
        store.add("A", [1000.0 + (i * 37 % 101) for i in range(start, start + 100)])
    assert store.verify() == {}
    target = tmp_path / "symbols" / "A.sym"
    data = bytearray(target.read_bytes())
    stats_before = store.stats("A", 3)
    # Point every minimum-deque entry at slot 0: the next commit's minimum is wrong.
    for entry in range(LAYOUT["capacity"]):
        struct.pack_into("<I", data, LAYOUT["lows_offset"] + 4 * entry, 0)
    target.write_bytes(data)
    reopened = Store(max_k=MAX_K, path=tmp_path)
    reopened.add("A", [1050.0])
    assert "statistics of window" in reopened.verify()["A"]
    assert stats_before.min == min(1000.0 + (i * 37 % 101) for i in range(200, 1200))


def test_checksum_h_is_the_crc32c_package_bit_for_bit():
    """Writers and readers checksum with checksum.h (ISA-L, or the crc32 instruction), and fall
    back to the crc32c package where neither runs: the same CRC32C, or a file written on one
    machine would be refused on another. Every length up to 300 (ISA-L switches method by
    length), pages, and a CRC extended piece by piece from random cuts."""
    import crc32c
    from tradestats.filestore import _crc32c_without_gil
    rng = random.Random(5)
    for length in [*range(0, 300), 1023, 1024, 1025, 4096, 8000, 65_537]:
        data = rng.randbytes(length)
        got = _crc32c_without_gil(data)
        assert got is None or got == crc32c.crc32c(data), length
    for _ in range(200):
        data = rng.randbytes(rng.randrange(1, 5000))
        cut = sorted(rng.randrange(len(data) + 1) for _ in range(2))
        crc = 0
        for piece in (data[:cut[0]], data[cut[0]:cut[1]], data[cut[1]:]):
            crc = _crc32c_without_gil(piece, crc)
            if crc is None:
                return
        assert crc == crc32c.crc32c(data)


@pytest.mark.skipif(not os.environ.get("CI"), reason="CI installs libisal-dev (.ci/run)")
def test_ci_builds_the_checksums_with_isa_l():
    """.ci/run installs libisal-dev: there the engine must have found it (setup.py)."""
    from tradestats import symbolfile
    assert symbolfile.CRC32C_IMPLEMENTATION == "isa-l"


def _read_until_refused(path, seconds, results):
    store = Store(max_k=MAX_K, path=path, max_batch=MAX_BATCH)
    try:
        stats = store["A"]
    except StoreFormatError as error:   # a slow start: truncated before this reader opened it
        assert "A.sym" in str(error), error
        results.put(1)
        return
    refused = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for call in (lambda: stats.stats(1), lambda: len(stats), lambda: stats.prices(50)):
            try:
                call()
            except StoreFormatError as error:
                assert "A.sym" in str(error), error
                refused += 1
    results.put(refused)


def test_readers_survive_a_truncation_in_the_middle_of_their_reads(tmp_path):
    """The race the per-call fstat leaves open (a truncation between the check and the copy):
    readers copy under the SIGBUS guard (guard.h), so they see an error, never a signal. Three
    reader processes read while the file is truncated under them, 8 times at random moments;
    measured before the guard's compiler barriers: a reader killed in 1 of 40 such rounds."""
    context = multiprocessing.get_context("fork")
    rng = random.Random(3)
    for round_ in range(8):
        folder = tmp_path / f"round-{round_}"
        store = Store(max_k=MAX_K, path=folder, max_batch=MAX_BATCH)
        for start in range(0, 3000, MAX_BATCH):
            store.add("A", [100.0 + i for i in range(start, start + MAX_BATCH)])
        results = context.Queue()
        readers = [context.Process(target=_read_until_refused, args=(folder, 0.6, results))
                   for _ in range(3)]
        for reader in readers:
            reader.start()
        time.sleep(rng.uniform(0.05, 0.3))
        os.truncate(folder / "symbols" / "A.sym", rng.choice([0, 4096, LAYOUT["ring_offset"],
                                                               LAYOUT["file_size"] - 4096]))
        for reader in readers:
            reader.join(30)
        assert [reader.exitcode for reader in readers] == [0, 0, 0]
        assert all(results.get(timeout=5) > 0 for _ in readers)
