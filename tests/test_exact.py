"""The exact statistics (issue: exact avg and var), checked bit for bit against exact arithmetic.

Promises: avg is float(Fraction(sum(x)) / n) and var is float((n*Σx² - (Σx)²) / n²) computed in
Fractions (correctly rounded, half-even, subnormals included); a constant window has var 0.0;
var is never negative; min, max, last are exact; the heap SymbolStats, a heap Store, a file Store
and every split of the same prices into batches answer the same bits; and nothing drifts once a
huge spike has left the window.

`exact_window_stats` (tests/engine_reference.py) is the slow, obvious Fraction reference.
`SlidingExact` is the fast one used along long streams: every finite double is an integer
multiple of 2**-1074, so it keeps the exact integer sums of x * 2**1074 and its square per window
and subtracts the prices that leave. Integer sums are exact, so it is still independent of the
engine; `test_sliding_reference_agrees_with_fraction_reference` checks it against the slow one.
"""
from __future__ import annotations

import math
import random
import struct
import tempfile
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine_reference import exact_window_stats
from tradestats import NotEnoughDataError, Store, SymbolStats

FIELDS = ("min", "max", "last", "avg", "var")
SCALE_BITS = 1074           # 2**-1074 is the smallest subnormal: every double is a multiple of it
FILE_MAX_BATCH = 1000       # small ring slack: the file's ring wraps every few batches


# ---------------------------------------------------------------------------------------------
# Exact reference along a stream.

def scaled(x: float) -> int:
    """x * 2**1074 as an exact integer (the denominator of a double is a power of two)."""
    num, den = float(x).as_integer_ratio()
    return num << (SCALE_BITS - (den.bit_length() - 1))


class SlidingExact:
    """Exact (min, max, last, avg, var) of the last 10**k prices, for k = 1..max_k."""

    def __init__(self, max_k: int) -> None:
        self.sizes = [10 ** k for k in range(1, max_k + 1)]
        self.prices: list[float] = []
        self.ints: list[int] = []
        self.s1 = [0] * max_k      # Σ x·2^1074 over each window
        self.s2 = [0] * max_k      # Σ (x·2^1074)² over each window

    def extend(self, values) -> None:
        for x in values:
            x = float(x)
            big = scaled(x)
            self.prices.append(x)
            self.ints.append(big)
            square = big * big
            for i, n in enumerate(self.sizes):
                self.s1[i] += big
                self.s2[i] += square
                if len(self.ints) > n:          # the price that just left this window
                    old = self.ints[-n - 1]
                    self.s1[i] -= old
                    self.s2[i] -= old * old

    def stats(self, k: int) -> tuple[float, float, float, float, float]:
        n = self.sizes[k - 1]
        window = self.prices[-n:]
        s1, s2 = self.s1[k - 1], self.s2[k - 1]
        avg = float(Fraction(s1, n << SCALE_BITS))
        var = float(Fraction(n * s2 - s1 * s1, (n * n) << (2 * SCALE_BITS)))
        return min(window), max(window), window[-1], avg, var


# ---------------------------------------------------------------------------------------------
# Comparisons: bytes, because 0.0 and -0.0 differ and "exact" means every bit.

def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def ulp_distance(a: float, b: float) -> int:
    """How many doubles lie between a and b (0.0 and -0.0 count as one point here)."""
    def ordered(x: float) -> int:
        i = struct.unpack("<q", struct.pack("<d", x))[0]
        return i if i >= 0 else -(i & 0x7FFF_FFFF_FFFF_FFFF)
    return abs(ordered(a) - ordered(b))


def assert_exact(got, ref, context: str) -> None:
    """The engine's Stats `got` against an exact reference tuple (min, max, last, avg, var)."""
    lo, hi, last, avg, var = ref
    msg = f"{context}: got {tuple(got)!r}, exact {ref!r}"
    # min/max by value: which zero a window of 0.0 and -0.0 reports is not part of the promise.
    assert got.min == lo and got.max == hi, "min/max differ; " + msg
    assert bits(got.last) == bits(last), "last differs; " + msg
    assert got.var >= 0.0 and math.copysign(1.0, got.var) > 0, "negative variance; " + msg
    if lo == hi:
        assert bits(got.var) == bits(0.0), "constant window must have var exactly 0.0; " + msg
    assert bits(got.avg) == bits(avg), (
        f"avg {got.avg!r} != exact {avg!r} ({ulp_distance(got.avg, avg)} ulp); " + msg)
    assert bits(got.var) == bits(var), (
        f"var {got.var!r} != exact {var!r} ({ulp_distance(got.var, var)} ulp); " + msg)


def stats_bits(stats) -> tuple[bytes, ...]:
    return tuple(bits(getattr(stats, f)) for f in FIELDS)


class Trio:
    """The same prices in a heap SymbolStats, a heap Store and a file Store."""

    def __init__(self, max_k: int, directory, max_batch: int = FILE_MAX_BATCH) -> None:
        self.max_k = max_k
        self.symbol = SymbolStats(max_k)
        self.heap = Store(max_symbols=1, max_k=max_k)
        self.file = Store(max_symbols=1, max_k=max_k, path=directory, max_batch=max_batch)

    def add(self, values) -> None:
        self.symbol.add(values)
        self.heap.add("S", values)
        self.file.add("S", values)

    def all_stats(self, k: int) -> dict:
        return {"symbol": self.symbol.stats(k), "heap": self.heap.stats("S", k),
                "file": self.file.stats("S", k)}

    def check(self, ref: SlidingExact, context: str) -> None:
        """Every full window: exact against `ref`, and the same bits in all three."""
        count = len(ref.prices)
        assert len(self.symbol) == count
        for k in range(1, self.max_k + 1):
            if count < 10 ** k:
                with pytest.raises(NotEnoughDataError):
                    self.symbol.stats(k)
                continue
            got = self.symbol.stats(k)
            where = f"{context} k={k} after {count} prices"
            assert_exact(got, ref.stats(k), where)
            assert stats_bits(self.heap.stats("S", k)) == stats_bits(got), "heap Store; " + where
            assert stats_bits(self.file.stats("S", k)) == stats_bits(got), "file Store; " + where


def random_splits(total: int, rng: random.Random, largest: int = FILE_MAX_BATCH) -> list[int]:
    sizes = []
    while total > 0:
        sizes.append(min(total, rng.randint(1, largest)))
        total -= sizes[-1]
    return sizes


def feed_and_check(trio: Trio, stream: list[float], sizes: list[int], context: str) -> None:
    """Add `stream` in batches of `sizes`, checking every full window after each batch."""
    ref = SlidingExact(trio.max_k)
    start = 0
    for size in sizes:
        batch = stream[start:start + size]
        trio.add(batch)
        ref.extend(batch)
        start += size
        trio.check(ref, context)
    assert start == len(stream)


# ---------------------------------------------------------------------------------------------
# Deterministic streams.

def stream(kind: str, n: int, seed: int) -> list[float]:
    r = random.Random(seed)
    if kind == "walk":          # random walk around 1000, σ 0.01: the everyday case
        out, x = [], 1000.0
        for _ in range(n):
            x += r.gauss(0.0, 0.01)
            out.append(x)
        return out
    if kind == "alternating":   # ±1e15: exact mean 0, exact var 1e30; cancellation galore
        return [1e15 if i % 2 == 0 else -1e15 for i in range(n)]
    if kind == "tiny":          # around 1e-300: squares underflow in float64
        return [1e-300 * (1.0 + r.gauss(0.0, 1e-3)) for _ in range(n)]
    if kind == "subnormal":     # multiples of 5e-324: the mean rounds into the subnormal range
        return [r.randint(-1000, 1000) * 5e-324 for _ in range(n)]
    if kind == "huge":          # around 1e99: squares overflow in float64
        return [1e99 * (1.0 + r.gauss(0.0, 1e-3)) * r.choice((1.0, -1.0)) for _ in range(n)]
    if kind == "equal":         # constant: var exactly 0.0, avg exactly the price
        return [r.choice((1234.5678, 0.1, -7e-5, 3e88))] * n
    if kind == "exponents":     # every exponent from 1e-300 to 1e100, both signs
        return [min(10.0 ** r.uniform(-300, 100), 1e100) * r.choice((1.0, -1.0)) for _ in range(n)]
    if kind == "spike":         # one huge value, then the calm walk (callers append more)
        return [r.choice((1e100, -1e100, 1e9))] * min(n, 1)
    if kind == "mixture":       # segments of every kind back to back
        out: list[float] = []
        while len(out) < n:
            out += stream(r.choice(MIXED_KINDS), r.randint(1, 400), r.randrange(2**32))
        return out[:n]
    raise AssertionError(kind)


MIXED_KINDS = ["walk", "alternating", "tiny", "subnormal", "huge", "equal", "exponents", "spike"]
STREAM_KINDS = MIXED_KINDS[:-1] + ["mixture"]


def test_sliding_reference_agrees_with_fraction_reference():
    """The fast integer reference is the slow Fraction one (so the tests below lean on it)."""
    prices = stream("mixture", 2500, 7) + stream("spike", 1, 8) + stream("subnormal", 150, 9)
    ref = SlidingExact(3)
    for start in range(0, len(prices), 350):
        ref.extend(prices[start:start + 350])
        for k in range(1, 4):
            if len(ref.prices) >= 10 ** k:
                expected = exact_window_stats(ref.prices, 10 ** k)
                assert tuple(map(bits, ref.stats(k))) == tuple(map(bits, expected)), k


def test_exact_reference_rounds_like_fraction():
    """Hand-checked values of the reference itself: half-even ties and subnormal means."""
    assert exact_window_stats([0.0] * 9 + [5e-324], 10)[3] == 0.0       # 0.1 ulp rounds down
    assert exact_window_stats([5e-324] * 9 + [0.0], 10)[3] == 5e-324     # 0.9 ulp rounds up
    assert exact_window_stats([1e15, -1e15] * 5, 10)[3:] == (0.0, 1e30)
    assert exact_window_stats([2.5] * 10, 10)[3:] == (2.5, 0.0)


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_stream_is_exact_after_every_batch(kind, tmp_path):
    prices = stream(kind, 3000, seed=len(kind))
    sizes = random_splits(len(prices), random.Random(kind), largest=400)
    feed_and_check(Trio(3, tmp_path), prices, sizes, kind)


def test_nothing_drifts_after_spikes_leave(tmp_path):
    """1e100, 1e9 and -1e100 pass through every window (k up to 4); then the calm windows are
    again exactly the Fraction reference, checked after every batch on the way."""
    calm = stream("walk", 30_000, 11)
    prices = calm[:12_000] + [1e100] + calm[12_000:12_500] + [1e9] + calm[12_500:12_800] \
        + [-1e100] + calm[12_800:23_000]
    sizes = random_splits(len(prices), random.Random(12))
    trio = Trio(4, tmp_path)
    feed_and_check(trio, prices, sizes, "spikes")
    # Every window is calm at the end (the last spike is more than 10**4 prices back).
    assert max(abs(x) for x in prices[-10_000:]) < 2000
    for k in range(1, 5):
        assert_exact(trio.symbol.stats(k), exact_window_stats(prices, 10 ** k), f"calm k={k}")


def test_all_equal_windows_have_zero_variance(tmp_path):
    trio = Trio(2, tmp_path)
    for price in (1234.5678, 0.1, 1e100, -1e100, 5e-324, 1e-300, 7.0):
        trio.add([price] * 100)
        for k in (1, 2):
            got = trio.symbol.stats(k)
            assert bits(got.var) == bits(0.0), (price, k, tuple(got))
            assert bits(got.avg) == bits(price), (price, k, tuple(got))
            assert got.min == got.max == got.last == price


def test_negative_zero_window_mean_is_positive_zero():
    """float(Fraction(0)) is +0.0: the promise is the reference's bits, even for -0.0 prices."""
    s = SymbolStats(1)
    s.add([-0.0] * 10)
    assert_exact(s.stats(1), exact_window_stats([-0.0] * 10, 10), "all -0.0")


def test_batch_splits_give_identical_bits(tmp_path):
    """One price at a time, random splits, one big batch (and numpy input): the same bits for
    every k at the end, in every store; then exactly the reference."""
    prices = stream("mixture", 3000, 21)
    rng = random.Random(22)
    splits = {
        "one-at-a-time": [1] * len(prices),
        "random": random_splits(len(prices), rng, largest=700),
        "one-big": [len(prices)],
        "numpy-random": random_splits(len(prices), rng, largest=3000),
    }
    answers = {}
    for name, sizes in splits.items():
        trio = Trio(3, tmp_path / name, max_batch=len(prices))
        start = 0
        for size in sizes:
            batch = prices[start:start + size]
            trio.add(np.array(batch, dtype=np.float64) if name.startswith("numpy") else batch)
            start += size
        for k in (1, 2, 3):
            for where, got in trio.all_stats(k).items():
                answers[(name, where, k)] = stats_bits(got)
    for k in (1, 2, 3):
        per_k = {key: value for key, value in answers.items() if key[2] == k}
        assert len(set(per_k.values())) == 1, f"k={k}: the bits differ: {per_k}"
    last = Trio(3, tmp_path / "last")
    last.add(prices[:1000])
    last.add(prices[1000:2000])
    last.add(prices[2000:])
    for k in (1, 2, 3):
        assert_exact(last.symbol.stats(k), exact_window_stats(prices, 10 ** k), f"k={k}")


# ---------------------------------------------------------------------------------------------
# Property-based: streams from a mix of the distributions above, split at random.

segments = st.lists(
    st.tuples(st.sampled_from(MIXED_KINDS), st.integers(1, 600), st.integers(0, 2**32 - 1)),
    min_size=1, max_size=5)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(segments=segments, max_k=st.sampled_from([2, 3]), split_seed=st.integers(0, 2**32 - 1),
       largest=st.sampled_from([5, 60, 400, FILE_MAX_BATCH]))
def test_random_streams_are_exact_and_identical(segments, max_k, split_seed, largest):
    prices = [x for kind, n, seed in segments for x in stream(kind, n, seed)]
    sizes = random_splits(len(prices), random.Random(split_seed), largest)
    # A fresh directory per example (tmp_path is one per test, not per hypothesis example).
    with tempfile.TemporaryDirectory() as directory:
        trio = Trio(max_k, directory)
        feed_and_check(trio, prices, sizes, f"segments={segments}")
