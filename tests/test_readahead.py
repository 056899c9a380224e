"""No readahead on page faults where no price has been written yet (symbolfile.advise_unwritten),
readahead kept where prices are (a cold read of a window stays sequential).

Read from the kernel's own account of the mapping: /proc/PID/smaps lists each part of a mapped
file with its flags, and "rr" is MADV_RANDOM. Each case opens the store in a fresh process, as a
restarted server would, so the advice follows the count committed at its open.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tradestats import Store
from tradestats.symbolfile import layout_of

MAX_K, MAX_BATCH = 6, 1000
PAGE = 4096
LAYOUT = layout_of(MAX_K, MAX_BATCH)

pytestmark = pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux only")

#: In a fresh process: open the store, then print which pages of the symbol's file mapping
#: carry MADV_RANDOM, as [start page, end page) ranges relative to the file's first byte.
OPEN_AND_REPORT = textwrap.dedent("""
    import json, os, re, sys
    from tradestats import Store
    store = Store(max_k={max_k}, max_batch={max_batch}, path=sys.argv[1])
    store.stats("A", 1)
    random_ranges, mapped = [], 0
    current = None
    for line in open("/proc/self/smaps"):
        head = re.match(r"([0-9a-f]+)-([0-9a-f]+) \\S+ ([0-9a-f]+) \\S+ \\d+ +(.*)", line)
        if head:
            start, end, offset, name = head.groups()
            current = (int(offset, 16), int(offset, 16) + int(end, 16) - int(start, 16),
                       name.endswith(".sym"))
        elif line.startswith("VmFlags") and current and current[2]:
            mapped += current[1] - current[0]
            if " rr" in line:
                random_ranges.append([current[0] // 4096, current[1] // 4096])
    print(json.dumps({{"random": random_ranges, "mapped": mapped}}))
""").format(max_k=MAX_K, max_batch=MAX_BATCH)


def pages_advised_random(directory: Path) -> tuple[set[int], int]:
    done = subprocess.run([sys.executable, "-c", OPEN_AND_REPORT, str(directory)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    return {page for start, end in report["random"] for page in range(start, end)}, \
        report["mapped"]


def arrays(count: int):
    """(name, first byte, element bytes, elements, elements written) of each array of the file."""
    capacity, ring, blocks = LAYOUT["capacity"], LAYOUT["ring_size"], LAYOUT["blocks"]
    block_prices = LAYOUT["block_prices"]
    return [
        ("ring", LAYOUT["ring_offset"], 8, ring, min(count, ring)),
        ("lows", LAYOUT["lows_offset"], 4, capacity, min(count, capacity)),
        ("highs", LAYOUT["highs_offset"], 4, capacity, min(count, capacity)),
        ("records", LAYOUT["blocks_offset"], LAYOUT["record_bytes"], blocks,
         min(-(-count // block_prices), blocks)),
    ]


@pytest.mark.parametrize("count", [10, 123_457, 1_000_000 + 34_567])
def test_only_pages_no_price_reached_are_advised_random(tmp_path, count: int) -> None:
    store = Store(max_k=MAX_K, max_batch=MAX_BATCH, path=tmp_path)
    added = 0
    while added < count:
        step = min(MAX_BATCH, count - added)
        store.add("A", [100.0 + (added + i) % 7 for i in range(step)])
        added += step
    del store

    random_pages, mapped = pages_advised_random(tmp_path)
    assert mapped == LAYOUT["file_size"]
    header_pages = range(0, LAYOUT["ring_offset"] // PAGE)
    assert not random_pages.intersection(header_pages)
    for name, first, size, total, written in arrays(count):
        end = first + total * size
        written_end = first + written * size
        # Pages holding written elements keep readahead...
        written_pages = set(range(first // PAGE, -(-written_end // PAGE)))
        assert not random_pages & written_pages, name
        # ...and every page wholly past them, inside this array, is advised random.
        unwritten_pages = set(range(-(-written_end // PAGE), end // PAGE))
        assert unwritten_pages <= random_pages, (name, len(unwritten_pages - random_pages))
    if count >= LAYOUT["ring_size"]:
        assert not random_pages
