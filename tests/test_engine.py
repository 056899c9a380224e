"""Tests of the stats engine (issue #2): every fast kernel checked against a slow reference.

The references live in tests/engine_reference.py; `check_stats` there is the one place that
states the promised accuracy (min, max, last exact; |avg - ref| <= 1e-12 * max|x|;
|var - ref| <= 1e-9 * ref + (1e-15 * max|x|)**2; var >= 0; a constant window exact).
"""
from __future__ import annotations

import array
import math
import pickle
import random
import statistics
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from engine_reference import check_all_windows, check_stats
from tradestats import (
    InvalidPriceError,
    NotEnoughDataError,
    Stats,
    Store,
    SymbolStats,
    TooManySymbolsError,
)


def snapshot(s: SymbolStats):
    """Everything observable about a SymbolStats: len, nbytes and stats(k) (or the error) per k."""
    per_k = []
    for k in range(1, s.max_k + 1):
        try:
            per_k.append(tuple(s.stats(k)))
        except NotEnoughDataError:
            per_k.append("not enough data")
    return len(s), s.nbytes, per_k


def feed(s: SymbolStats, values, rng: np.random.Generator, max_batch: int = 10_000):
    """Add `values` (a numpy array) in batches of random size 1..max_batch; yield after each."""
    i = 0
    n = len(values)
    while i < n:
        size = int(rng.integers(1, max_batch + 1))
        s.add(values[i:i + size])
        i = min(n, i + size)
        yield i


# =============================================================================================
# 1. Property-based: a state machine against a naive model holding the whole list.

def _magnitude(mantissa: float, exponent: int, negative: bool) -> float:
    return (-mantissa if negative else mantissa) * 10.0 ** exponent


def _generated_batch(kind: str, n: int, seed: int) -> list:
    """A larger batch drawn from a seed (keeps hypothesis' buffer small); `kind` sets its shape."""
    r = random.Random(seed)
    if kind == "wide":          # both signs, magnitudes 1e-6 .. 1e6
        return [_magnitude(r.uniform(1, 10), r.randint(-6, 5), r.random() < 0.5) for _ in range(n)]
    if kind == "calm":          # ~1e-3 noise around one price
        base = r.choice([100.0, 2000.0, 1e9, -5e5, 1e-3])
        return [base + r.uniform(-1e-3, 1e-3) for _ in range(n)]
    if kind == "ints":
        return [r.randint(-5, 5) for _ in range(n)]
    if kind == "repeat":
        return [r.choice([0.0, 7.0, 5.0, 100.0, -1e6, 1e17, 1e-6])] * n
    if kind == "few":           # repeated values from a tiny pool
        pool = [r.choice([0.0, -0.0, 1.0, 100.0, 100.0 + 1e-13, 1e6, -2.5, 1e-6]) for _ in range(3)]
        return [r.choice(pool) for _ in range(n)]
    if kind == "up" or kind == "down":
        start, step = r.uniform(-1e6, 1e6), r.uniform(1e-3, 1e3)
        sign = 1.0 if kind == "up" else -1.0
        return [start + sign * step * i for i in range(n)]
    if kind == "spiky":         # calm values with occasional huge spikes (up to 1e17)
        out = [2000.0 + r.uniform(-1.0, 1.0) for _ in range(n)]
        for _ in range(r.randint(1, 3)):
            if out:
                spike = _magnitude(r.uniform(1, 10), r.randint(12, 16), r.random() < 0.3)
                out[r.randrange(n)] = spike
        return out
    if kind == "huge":          # anywhere up to the 1e100 limit
        return [_magnitude(r.uniform(1, 10), r.randint(-6, 99), r.random() < 0.5) for _ in range(n)]
    raise AssertionError(kind)


BATCH_KINDS = ["wide", "calm", "ints", "repeat", "few", "up", "down", "spiky", "huge"]

finite_value = st.one_of(
    st.integers(-5, 5),
    st.builds(_magnitude, st.floats(1.0, 9.999), st.integers(-6, 5), st.booleans()),
    st.sampled_from([0.0, 1.0, 100.0, 100.0 + 1e-13, 2000.0, -2.5, 1e6]),
    st.integers(-10**17, 10**17),
    st.builds(_magnitude, st.floats(1.0, 9.999), st.integers(12, 16), st.booleans()),
    st.floats(min_value=-1e100, max_value=1e100, allow_nan=False, allow_infinity=False),
)

batches = st.one_of(
    st.lists(finite_value, max_size=12),                               # small, shrinks well
    st.builds(_generated_batch, st.sampled_from(BATCH_KINDS), st.integers(0, 300),
              st.integers(0, 2**32 - 1)),
    st.builds(lambda v, n: [v] * n, finite_value, st.integers(0, 300)),
)

CONTAINERS = ["list", "tuple", "numpy", "numpy-strided", "array", "memoryview"]


def _wrap(values: list, container: str):
    if container == "list":
        return list(values)
    if container == "tuple":
        return tuple(values)
    if container == "numpy":
        return np.array(values, dtype=np.float64)
    if container == "numpy-strided":
        wide = np.full(2 * len(values) + 1, np.nan)   # NaN between: a stride bug would show
        wide[1::2] = values
        return wide[1::2]
    if container == "array":
        return array.array("d", values)
    if container == "memoryview":
        return memoryview(array.array("d", values))
    raise AssertionError(container)


BAD_ELEMENTS = [
    math.nan, math.inf, -math.inf, 1e101, -1e101, 2e100, True, False, None, "1.0", "abc",
    [1.0], (1.0,), {}, {"a": 1.0}, 10**400, -(10**400), complex(1.0, 0.0),
    np.float64("nan"), np.float32("inf"),
]
FLOAT_BAD = [math.nan, math.inf, -math.inf, 1e101, -1e101, 2e100]


class EngineMachine(RuleBasedStateMachine):
    """Random interleavings of add, invalid add, len and stats(k) against a Python list."""

    def __init__(self):
        super().__init__()
        self.s = None
        self.model: list[float] = []

    @initialize(max_k=st.integers(1, 4))
    def create(self, max_k):
        self.s = SymbolStats(max_k)
        assert self.s.max_k == max_k
        assert len(self.s) == 0

    @rule(batch=batches, container=st.sampled_from(CONTAINERS))
    def add(self, batch, container):
        self.s.add(_wrap(batch, container))
        self.model.extend(float(x) for x in batch)

    @rule(kinds=st.lists(st.sampled_from(BATCH_KINDS), min_size=1, max_size=3),
          count=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
    def add_several(self, kinds, count, seed):
        """Up to 40 batches of 0..300 prices in one step (so 10**4 windows fill and roll too),
        every window checked after each batch."""
        r = random.Random(seed)
        for _ in range(count):
            batch = _generated_batch(r.choice(kinds), r.randint(0, 300), r.getrandbits(32))
            self.add(batch, r.choice(CONTAINERS))
            check_all_windows(self.s, self.model, "add_several")

    @rule(batch=st.lists(finite_value, min_size=0, max_size=30), data=st.data())
    def add_invalid(self, batch, data):
        bad = data.draw(st.sampled_from(BAD_ELEMENTS), label="bad")
        index = data.draw(st.integers(0, len(batch)), label="index")
        values = batch[:index] + [bad] + batch[index:]
        containers = ["list", "tuple"]
        if any(bad is b for b in FLOAT_BAD):
            containers += ["numpy", "numpy-strided", "array"]
        wrapped = _wrap(values, data.draw(st.sampled_from(containers), label="container"))
        before = snapshot(self.s)
        try:
            self.s.add(wrapped)
        except InvalidPriceError as exc:
            assert isinstance(exc, ValueError)
            assert exc.index == index, (exc.index, index, bad)
        else:
            raise AssertionError(f"{bad!r} at index {index} was accepted")
        assert snapshot(self.s) == before

    @rule()
    def length(self):
        assert len(self.s) == len(self.model)

    @rule(k=st.integers(1, 4))
    def query(self, k):
        if k > self.s.max_k:
            with pytest.raises(ValueError) as info:
                self.s.stats(k)
            assert not isinstance(info.value, NotEnoughDataError)
        else:
            check_all_windows(self.s, self.model, "query", ks=[k])

    @invariant()
    def every_window_matches(self):
        if self.s is not None:
            assert len(self.s) == len(self.model)
            check_all_windows(self.s, self.model, "invariant")


EngineMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestEngineMachine = EngineMachine.TestCase


# =============================================================================================
# 2. Streams against fsum references, windows up to 10**6.

STREAM_MAX_K = 6
STREAM_LENGTH = 2_300_000       # fills the 10**6 window and rolls it 1.3 million further


def _stream_near_1e9(rng):
    return 1e9 + rng.uniform(-1e-3, 1e-3, STREAM_LENGTH)


def _stream_increasing(rng):
    values = rng.uniform(-1e6, 1e6) + np.cumsum(rng.uniform(1e-3, 10.0, STREAM_LENGTH))
    assert np.all(np.diff(values) > 0)
    return values


def _stream_decreasing(rng):
    values = 1e6 - np.cumsum(rng.uniform(1e-3, 10.0, STREAM_LENGTH))   # crosses zero
    assert np.all(np.diff(values) < 0)
    return values


def _stream_monotone_runs(rng):
    """Strictly increasing and strictly decreasing runs of random lengths up to 3e5."""
    steps = np.empty(STREAM_LENGTH)
    i, up = 0, True
    while i < STREAM_LENGTH:
        run = int(rng.integers(1, 300_000))
        steps[i:i + run] = rng.uniform(1e-2, 1.0, min(run, STREAM_LENGTH - i)) * (1 if up else -1)
        i += run
        up = not up
    return 5e3 + np.cumsum(steps)


def _stream_mixed_magnitudes(rng):
    signs = rng.choice([-1.0, 1.0], STREAM_LENGTH)
    return signs * 10.0 ** rng.uniform(-6, 6, STREAM_LENGTH)


def _stream_random_walk(rng):
    return 100.0 + np.cumsum(rng.standard_normal(STREAM_LENGTH))


def _stream_volatile_then_constant(rng):
    volatile = rng.standard_normal(1_100_003) * 1e6
    volatile[rng.integers(0, len(volatile), 20)] = 1e15      # a few spikes too
    return np.concatenate([volatile, np.full(STREAM_LENGTH - len(volatile), 123.456)])


STREAMS = {
    "near-1e9-noise-1e-3": _stream_near_1e9,
    "strictly-increasing": _stream_increasing,
    "strictly-decreasing": _stream_decreasing,
    "monotone-runs": _stream_monotone_runs,
    "mixed-signs-magnitudes": _stream_mixed_magnitudes,
    "random-walk": _stream_random_walk,
    "volatile-then-constant": _stream_volatile_then_constant,
}


EVERY_NTH_BATCH = {4: 2, 5: 8, 6: 32}


def _check_stream(values: np.ndarray, seed: int) -> list[tuple[int, int]]:
    """Feed `values` in random batches and check every k at many points; return (k, n) checked.

    Windows up to 10**3 are checked after every batch, 10**4 after every 2nd, 10**5 after every
    8th and 10**6 after every 32nd batch (and all at the end): the fsum reference of a 10**6
    window costs ~0.1 s, so the whole stream costs a couple of seconds.
    """
    rng = np.random.default_rng(seed)
    s = SymbolStats(STREAM_MAX_K)
    checked = []
    batch = 0
    for n in feed(s, values, rng):
        batch += 1
        last = n == len(values)
        ks = [k for k in range(1, STREAM_MAX_K + 1)
              if k <= 3 or last or batch % EVERY_NTH_BATCH[k] == 0]
        check_all_windows(s, values[:n], f"batch {batch}", ks=ks)
        checked.extend((k, n) for k in ks if n >= 10 ** k)
    assert len(s) == len(values)
    return checked


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_stream_against_fsum_reference(name):
    seed = sorted(STREAMS).index(name) + 1000
    values = STREAMS[name](np.random.default_rng(seed))
    checked = _check_stream(values, seed)
    # The biggest window was checked repeatedly while it rolled, not only at the end.
    assert sum(1 for k, _ in checked if k == STREAM_MAX_K) >= 5
    if name == "volatile-then-constant":
        start = len(values) - np.argmax(values[::-1] != values[-1])   # first of the constant run
        for k in range(1, STREAM_MAX_K + 1):
            inside = [n for kk, n in checked if kk == k and n - 10 ** k >= start]
            assert inside, f"no check of k={k} with its window inside the constant run"


# =============================================================================================
# 3. Regression vectors and nasty streams (expected values from the fsum reference).

@pytest.mark.parametrize("one_by_one", [False, True])
def test_sevens_then_fives(one_by_one):
    values = [7.0] * 10 + [5.0] * 10
    s = SymbolStats(2)
    for i in range(len(values)) if one_by_one else [None]:
        s.add(values[i:i + 1] if one_by_one else values)
        if one_by_one:
            check_all_windows(s, values[:i + 1], f"step {i}")
    got = s.stats(1)
    assert got.var == 0.0
    assert got.avg == 5.0
    check_stats(got, values[-10:])


@pytest.mark.parametrize("one_by_one", [False, True])
def test_one_thousand_then_zeros(one_by_one):
    values = [1000.0] + [0.0] * 10_009
    s = SymbolStats(4)
    if one_by_one:
        for x in values:
            s.add([x])
    else:
        s.add(values)
    for k in range(1, 5):
        got = s.stats(k)
        assert got.var == 0.0, (k, got)
        assert got.avg == 0.0, (k, got)
        check_stats(got, values[-10 ** k:], f"k={k}")


@pytest.mark.parametrize("max_k", [1, 2, 3])
@pytest.mark.parametrize("one_by_one", [False, True])
def test_spikes_then_prices_near_2000(max_k, one_by_one):
    rng = random.Random(max_k)
    values = [1.2e3, 1.3e17, 1.5e17, 1.995e3, 1.990e3]
    values += [2e3 + rng.uniform(-5, 5) for _ in range(10)]
    s = SymbolStats(max_k)
    if one_by_one:
        for i, x in enumerate(values):
            s.add([x])
            check_all_windows(s, values[:i + 1], f"step {i}")
    else:
        s.add(values)
    ref = check_stats(s.stats(1), values[-10:])
    assert ref.max < 3e3      # the spikes have left the window: var is that of the calm prices


def test_volatile_then_calm_every_step():
    """Values ~1e6 alternating in sign, then ~1e-3 noise around 100, one price at a time.

    Windows 10..10**3 are checked after every price of the calm part. The 10**4 window (its fsum
    reference costs ~0.7 ms) after every 7th price while it still holds volatile prices, and after
    every price from 300 before the last volatile price leaves it until the end.
    """
    rng = np.random.default_rng(42)
    n_volatile = 23_457                  # not a multiple of any window
    volatile = rng.uniform(0.5e6, 1.5e6, n_volatile) * np.where(np.arange(n_volatile) % 2, 1, -1)
    calm = 100.0 + rng.uniform(-1e-3, 1e-3, 12_500)
    values = np.concatenate([volatile, calm])
    s = SymbolStats(4)
    for n in feed(s, volatile, rng, max_batch=5_000):
        pass
    for j in range(len(calm)):
        s.add(calm[j:j + 1])
        n = n_volatile + j + 1
        ks = [1, 2, 3]
        if j % 7 == 0 or j >= 10_000 - 300:
            ks.append(4)
        check_all_windows(s, values[:n], f"calm step {j}", ks=ks)
    for k in range(1, 5):    # in the end every window is calm: a tiny, accurate variance
        assert s.stats(k).var < 1e-6


@pytest.mark.parametrize("spike", [1.3e17, -1e17, 1e100])
@pytest.mark.parametrize("position", [15_000, 15_007])   # block-aligned for k<=3, and not
def test_single_huge_spike_leaving(spike, position):
    rng = np.random.default_rng(7)
    values = 2000.0 + rng.uniform(-1.0, 1.0, position + 10_100)
    values[position] = spike
    s = SymbolStats(4)
    s.add(values[:position - 5])
    for n in range(position - 5, len(values)):
        s.add(values[n:n + 1])
        # Around the moments the spike leaves each window: every step there, sparser elsewhere.
        ks = [k for k in range(1, 5)
              if abs(n - position - 10 ** k) < 30 or (n - position) % 97 == 0]
        check_all_windows(s, values[:n + 1], f"n={n + 1}", ks=ks)
    for k in range(1, 5):
        assert s.stats(k).max < 3e3


def test_plus_minus_1e100_alternating():
    values = [1e100, -1e100] * 5_000
    s = SymbolStats(4)
    for n in feed(s, np.array(values), np.random.default_rng(3), max_batch=777):
        check_all_windows(s, values[:n], f"n={n}")
    for k in range(1, 5):
        got = s.stats(k)
        assert (got.min, got.max, got.last) == (-1e100, 1e100, -1e100)
        assert got.var == pytest.approx(1e200, rel=1e-9)
    s.add([1e100] * 10_000)        # then constant at the limit: exact again
    for k in range(1, 5):
        assert tuple(s.stats(k)) == (1e100, 1e100, 1e100, 1e100, 0.0)
    s.add([-1e100] * 10)
    assert tuple(s.stats(1)) == (-1e100, -1e100, -1e100, -1e100, 0.0)
    check_all_windows(s, values + [1e100] * 10_000 + [-1e100] * 10)


def _odd_one_cases():
    for base in [0.0, 1.0, -1e-6, 1e9, 123.456, -7e5, 1e100, -1e100]:
        for delta in ["ulp", "-ulp", 1e-3, -1.0, 1e6, 1e17]:
            odd = (math.nextafter(base, math.inf) if delta == "ulp"
                   else math.nextafter(base, -math.inf) if delta == "-ulp" else base + delta)
            if odd != base and abs(odd) <= 1e100:
                yield pytest.param(base, odd, id=f"{base!r}-{delta!r}")


@pytest.mark.parametrize("base, odd", list(_odd_one_cases()))
@pytest.mark.parametrize("odd_one", ["last", "first"])
def test_all_equal_except_one(base, odd, odd_one):
    for k in range(1, 5):
        size = 10 ** k
        window = [base] * (size - 1)
        window = window + [odd] if odd_one == "last" else [odd] + window
        s = SymbolStats(4)
        s.add([base] * 50 + window)        # a constant prefix, then the window
        check_stats(s.stats(k), window, f"k={k}")


# =============================================================================================
# 4. The paper example.

def test_paper_example():
    prices = [float(p) for p in range(150, 160)]
    s = SymbolStats(3)
    s.add(prices)
    got = s.stats(1)
    assert (got.min, got.max, got.last) == (150.0, 159.0, 159.0)
    assert got.avg == 154.5 == statistics.fmean(prices) == float(np.mean(prices))
    assert got.var == 8.25 == statistics.pvariance(prices) == float(np.var(prices))
    check_stats(got, prices)
    assert got.as_dict() == {"min": 150.0, "max": 159.0, "last": 159.0, "avg": 154.5, "var": 8.25}


# =============================================================================================
# 5. Bad input: an error and nothing stored.

def _filled(max_k=2, n=137, seed=0) -> tuple[SymbolStats, list[float]]:
    rng = random.Random(seed)
    values = [rng.uniform(-100, 100) for _ in range(n)]
    s = SymbolStats(max_k)
    s.add(values)
    return s, values


@pytest.mark.parametrize("bad", BAD_ELEMENTS, ids=repr)
@pytest.mark.parametrize("index", [0, 4, 9])
@pytest.mark.parametrize("filled", [False, True])
def test_bad_element_rejected_nothing_stored(bad, index, filled):
    s, values = _filled() if filled else (SymbolStats(2), [])
    before = snapshot(s)
    batch = [1.5] * 10
    batch[index] = bad
    for container in (list, tuple):
        with pytest.raises(InvalidPriceError) as info:
            s.add(container(batch))
        assert isinstance(info.value, ValueError)
        assert info.value.index == index
        assert snapshot(s) == before
    if filled:
        check_all_windows(s, values)


@pytest.mark.parametrize("bad", FLOAT_BAD, ids=repr)
@pytest.mark.parametrize("container", ["numpy", "numpy-strided", "array", "memoryview"])
def test_bad_value_in_buffer_rejected(bad, container):
    s, values = _filled()
    before = snapshot(s)
    batch = [2.5] * 20
    batch[13] = bad
    with pytest.raises(InvalidPriceError) as info:
        s.add(_wrap(batch, container))
    assert info.value.index == 13
    assert snapshot(s) == before
    check_all_windows(s, values)


def test_nested_sequence_rejected():
    s, values = _filled()
    before = snapshot(s)
    for batch in ([[1.0, 2.0]], [1.0, [2.0]], [1.0, 2.0, np.array([3.0])]):
        with pytest.raises(InvalidPriceError) as info:
            s.add(batch)
        assert info.value.index == len(batch) - 1
        assert snapshot(s) == before


@pytest.mark.parametrize("batch", [
    np.array([1, 2, 3], dtype=np.int64),
    np.array([1.0, 2.0], dtype=np.float32),
    np.zeros((2, 5)),
    np.array(1.0),                            # 0-d
    np.float64(1.0),                          # a scalar, not a batch
    array.array("i", [1, 2, 3]),
    array.array("f", [1.0, 2.0]),
    "1.0, 2.0",
    "",
    b"\x00" * 16,
    bytearray(16),
    {"a": 1.0},
    None,
    1.0,
    7,
    (x for x in [1.0, 2.0]),
], ids=lambda b: type(b).__name__ + (f"-{b.dtype}-{b.ndim}d" if isinstance(b, np.ndarray) else
                                     f"-{b.typecode}" if isinstance(b, array.array) else ""))
def test_wrong_batch_type_rejected(batch):
    s, values = _filled()
    before = snapshot(s)
    with pytest.raises(TypeError):
        s.add(batch)
    assert snapshot(s) == before
    check_all_windows(s, values)


def _valid_batches():
    base = np.arange(40, dtype=np.float64) * 1.25 - 3.0
    readonly = base[:10].copy()
    readonly.flags.writeable = False
    return {
        "list": (list(base[:10]), base[:10]),
        "tuple": (tuple(base[:10]), base[:10]),
        "array-d": (array.array("d", base[:10]), base[:10]),
        "memoryview": (memoryview(array.array("d", base[:10])), base[:10]),
        "numpy": (base[:10].copy(), base[:10]),
        "numpy-strided": (base[::4], base[::4]),
        "numpy-reversed": (base[9::-1], base[9::-1]),
        "numpy-readonly": (readonly, base[:10]),
        "numpy-column": (np.ascontiguousarray(np.c_[base, base])[:10, 1], base[:10]),
        "ints": ([3, -4, 0, 10**17, 2**60, 1, 2, 3, 4, -(10**15)],
                 [float(x) for x in [3, -4, 0, 10**17, 2**60, 1, 2, 3, 4, -(10**15)]]),
        "numpy-scalars": ([np.float64(1.5), np.float32(0.25), np.int64(7), np.float16(2.0),
                           1.0, 2, np.float64(-3e99), np.int32(-1), np.uint8(200), 0.5],
                          [1.5, 0.25, 7.0, 2.0, 1.0, 2.0, -3e99, -1.0, 200.0, 0.5]),
        "limits": ([1e100, -1e100, 10**100, -(10**100), 5e-324, -0.0, 0.0, 1e-300, 1.0, 2.0],
                   [1e100, -1e100, 1e100, -1e100, 5e-324, -0.0, 0.0, 1e-300, 1.0, 2.0]),
    }


@pytest.mark.parametrize("name", sorted(_valid_batches()))
def test_valid_batch_types(name):
    batch, expected = _valid_batches()[name]
    expected = [float(x) for x in expected]
    assert len(expected) == 10
    s = SymbolStats(1)
    s.add(batch)
    assert len(s) == 10
    check_stats(s.stats(1), expected)
    s.add(batch)          # and again: the ring wraps
    assert len(s) == 20
    check_stats(s.stats(1), expected)


def test_empty_batches_store_nothing():
    s, values = _filled()
    before = snapshot(s)
    for empty in ([], (), np.array([], dtype=np.float64), array.array("d")):
        s.add(empty)
        assert snapshot(s) == before


# =============================================================================================
# 6. API.

@pytest.mark.parametrize("k", [0, -1, 3, 1.5, 1.0, True, False, "1", None, 10**20])
def test_stats_k_out_of_range(k):
    s, _ = _filled(max_k=2, n=500)
    with pytest.raises(ValueError) as info:
        s.stats(k)
    assert not isinstance(info.value, NotEnoughDataError)


def test_stats_k_accepts_integers():
    s, values = _filled(max_k=2, n=500)
    assert s.stats(np.int64(2)) == s.stats(2)
    check_stats(s.stats(np.int64(1)), values[-10:])


def test_not_enough_data():
    assert issubclass(NotEnoughDataError, ValueError)
    s = SymbolStats(3)
    for n, full_ks in [(0, []), (9, []), (10, [1]), (99, [1]), (100, [1, 2]), (999, [1, 2])]:
        s.add([1.0] * (n - len(s)))
        for k in range(1, 4):
            if k in full_ks:
                assert tuple(s.stats(k)) == (1.0, 1.0, 1.0, 1.0, 0.0)
            else:
                with pytest.raises(NotEnoughDataError) as info:
                    s.stats(k)
                assert str(info.value) == "Not enough data points"
                assert info.value.args == ("Not enough data points",)


@pytest.mark.parametrize("max_k", [0, -1, 10, 100])
def test_max_k_out_of_range(max_k):
    with pytest.raises(ValueError):
        SymbolStats(max_k)
    with pytest.raises(ValueError):
        Store(max_k=max_k)


@pytest.mark.parametrize("make", [
    lambda v: SymbolStats(v),
    lambda v: Store(max_k=v),
    lambda v: Store(max_symbols=v),
], ids=["SymbolStats-max_k", "Store-max_k", "Store-max_symbols"])
@pytest.mark.parametrize("value", [2.9, 1.5, True], ids=repr)
def test_constructor_rejects_non_integer_sizes(make, value):
    with pytest.raises((TypeError, ValueError)):
        make(value)


#: An empty symbol holds its header: two copies of its state, each with the exact sums of every
#: window (about 8 KB), and two snapshots.
EMPTY_SYMBOL_BYTES = 32 * 1024


def test_max_k_bounds_and_default():
    assert SymbolStats().max_k == 8
    assert Store().max_k == 8
    assert Store().max_symbols == 10
    assert SymbolStats(1).max_k == 1
    assert SymbolStats(9).max_k == 9      # allowed; memory is only taken as prices arrive
    assert SymbolStats(9).nbytes < EMPTY_SYMBOL_BYTES


def test_len_counts_every_price_ever_added():
    s = SymbolStats(1)
    assert len(s) == 0
    s.add([1.0] * 7)
    assert len(s) == 7
    s.add(np.ones(25))
    assert len(s) == 32         # more than the ring holds


def test_stats_object():
    s, values = _filled(max_k=2, n=300, seed=5)
    got = s.stats(1)
    assert isinstance(got, Stats)
    ref = check_stats(got, values[-10:])
    assert tuple(got) == (got.min, got.max, got.last, got.avg, got.var)
    assert list(got) == [ref.min, ref.max, ref.last, got.avg, got.var]
    assert got.as_dict() == dict(zip(["min", "max", "last", "avg", "var"], tuple(got)))
    for name in ["min", "max", "last", "avg", "var"]:
        with pytest.raises(AttributeError):
            setattr(got, name, 1.0)
        with pytest.raises(AttributeError):
            delattr(got, name)
    with pytest.raises(AttributeError):
        got.extra = 1
    assert tuple(got) == tuple(s.stats(1))                 # unchanged by the attempts
    # Equality: same window contents compare equal (and hash equal); others do not.
    twin = SymbolStats(2)
    twin.add(values)
    assert twin.stats(1) == got and hash(twin.stats(1)) == hash(got)
    assert s.stats(2) != got
    assert got != tuple(got)
    twin.add([values[-1] + 1.0])
    assert twin.stats(1) != got
    assert pickle.loads(pickle.dumps(got)) == got
    # A Stats is a snapshot: later adds do not change it.
    frozen = tuple(got)
    s.add([1e6] * 10)
    assert tuple(got) == frozen


def test_nbytes_grows_with_data():
    s = SymbolStats(8)
    empty = s.nbytes
    assert 0 < empty < EMPTY_SYMBOL_BYTES
    s.add([float(i % 7) for i in range(10)])
    ten = s.nbytes
    assert ten < EMPTY_SYMBOL_BYTES, f"a symbol with ten prices holds {ten} bytes"
    sizes = [ten]
    for n in (1_000, 100_000, 1_000_000):
        s.add(np.random.default_rng(n).standard_normal(n - len(s)))
        sizes.append(s.nbytes)
        # Proportional to the data: ring + both deques at most doubled, 8 + 2*4 bytes each.
        assert s.nbytes <= 2 * 16 * n + EMPTY_SYMBOL_BYTES, (n, s.nbytes)
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
    assert sizes[-1] >= 8 * 1_000_000          # the ring alone


@pytest.fixture(params=["heap", "file"])
def make_store(request, tmp_path):
    """The same behavioural tests run against both stores: in the heap and in files."""
    def make(max_symbols, max_k):
        if request.param == "heap":
            return Store(max_symbols=max_symbols, max_k=max_k)
        # A small batch limit is a small ring slack: the file's ring wraps every few batches.
        return Store(max_symbols=max_symbols, max_k=max_k, path=tmp_path / "store", max_batch=50)
    return make


def test_store_basics(make_store):
    store = make_store(max_symbols=3, max_k=2)
    assert (store.max_symbols, store.max_k) == (3, 2)
    assert len(store) == 0 and list(store) == [] and "A" not in store
    with pytest.raises(KeyError):
        store["A"]
    with pytest.raises(KeyError):
        store.stats("A", 1)
    a = [float(i) for i in range(25)]
    store.add("A", a)
    assert "A" in store and len(store) == 1 and list(store) == ["A"]
    assert isinstance(store["A"], SymbolStats)
    assert store["A"].max_k == 2
    assert len(store["A"]) == 25
    check_stats(store.stats("A", 1), a[-10:])
    assert store.stats("A", 1) == store["A"].stats(1)
    with pytest.raises(NotEnoughDataError):
        store.stats("A", 2)
    with pytest.raises(ValueError):
        store.stats("A", 3)
    store.add("B", (1.0, 2.0))
    store.add("C", np.arange(3.0))
    assert sorted(store) == ["A", "B", "C"] and len(store) == 3
    assert store.nbytes == sum(store[sym].nbytes for sym in store)
    # The store is full: a new symbol is refused, existing ones keep accepting adds.
    with pytest.raises(TooManySymbolsError) as info:
        store.add("D", [1.0] * 10)
    assert isinstance(info.value, ValueError)
    assert info.value.max_symbols == 3
    assert "D" not in store and len(store) == 3
    with pytest.raises(KeyError):
        store["D"]
    store.add("A", [100.0] * 10)
    store.add("B", [5.0] * 8)
    assert len(store["A"]) == 35 and len(store["B"]) == 10
    assert tuple(store.stats("A", 1)) == (100.0, 100.0, 100.0, 100.0, 0.0)
    check_stats(store.stats("B", 1), [1.0, 2.0] + [5.0] * 8)
    # Symbols are independent.
    assert len(store["C"]) == 3
    with pytest.raises(NotEnoughDataError):
        store.stats("C", 1)


def test_store_bad_batch_for_new_symbol_creates_nothing(make_store):
    store = make_store(max_symbols=2, max_k=1)
    store.add("A", [1.0] * 10)
    before = (len(store), list(store), store.nbytes, snapshot(store["A"]))
    for symbol, batch, error in [("N", [1.0, math.nan], InvalidPriceError),
                                 ("N", [True] * 3, InvalidPriceError),
                                 ("N", np.array([1, 2]), TypeError),
                                 ("N", "1.0", TypeError),
                                 ("A", [1.0] * 5 + [None], InvalidPriceError)]:
        with pytest.raises(error):
            store.add(symbol, batch)
        assert "N" not in store
        assert (len(store), list(store), store.nbytes, snapshot(store["A"])) == before
    store.add("N", [2.0] * 10)      # the slot is still free
    assert len(store) == 2 and tuple(store.stats("N", 1))[-1] == 0.0


def test_store_full_rejects_before_or_after_validation_without_side_effects(make_store):
    store = make_store(max_symbols=1, max_k=1)
    store.add("A", [1.0])
    with pytest.raises(ValueError):          # either TooManySymbolsError or InvalidPriceError
        store.add("B", [math.inf])
    assert list(store) == ["A"] and len(store["A"]) == 1


def test_engine_imports_without_falcon():
    code = textwrap.dedent("""
        import sys
        sys.modules["falcon"] = None          # any "import falcon" now fails
        from tradestats import SymbolStats, Store
        s = SymbolStats(1)
        s.add([150.0 + i for i in range(10)])
        print(s.stats(1).var)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "8.25"


# =============================================================================================
# 7. The full 10**8 window (slow; CI runs it).

BATCH = 10_000


@pytest.mark.slow
def test_full_1e8_window_random_walk_rolled_1e7():
    full, roll = 10**8, 10**7
    rng = np.random.default_rng(20260101)
    values = rng.standard_normal(full + roll)
    np.cumsum(values, out=values)
    values += 1e4
    s = SymbolStats(8)

    def check(n, ks):
        for k in ks:
            w = values[n - 10 ** k:n]
            check_stats(s.stats(k), w, f"k={k} n={n}")

    for start in range(0, full + roll, BATCH):
        s.add(values[start:start + BATCH])
        n = start + BATCH
        batch = n // BATCH
        if batch % 1000 == 0:
            check(n, [1, 2, 3, 4, 5])
        if n in (full // 2, full + roll // 2):
            check(n, [6, 7])
        if n in (full, full + roll):
            check(n, range(1, 9))
    assert len(s) == full + roll
    print(f"\nrandom walk, full 10**8 window: {s.nbytes} bytes = "
          f"{s.nbytes / full:.3f} bytes per stored price")
    assert s.nbytes / full <= 17


def _monotone_batches(direction: str, total: int):
    """Yield batches of BATCH exact, strictly monotone prices (no per-value Python loop)."""
    step = np.arange(BATCH, dtype=np.float64)
    for start in range(0, total, BATCH):
        if direction == "up":
            yield start, -5e7 + start + step
        elif direction == "down":
            yield start, 5e7 - start - step
        else:   # "down-up": down for the first half, then up: both deques at their largest
            half = total // 2
            if start < half:
                yield start, 5e7 - start - step
            else:
                yield start, 5e7 - 2 * half + (start - half) + step


def _monotone_window(direction: str, total: int, n: int, size: int) -> np.ndarray:
    """The last `size` of the first `n` prices of _monotone_batches (built in place: one array)."""
    w = np.arange(n - size, n, dtype=np.float64)          # positions, exact below 2**53
    if direction == "up":
        w += -5e7
    elif direction == "down":
        np.subtract(5e7, w, out=w)
    else:
        half = total // 2
        down = w[:max(0, min(size, half - (n - size)))]
        up = w[len(down):]
        np.subtract(5e7, down, out=down)
        up += 5e7 - 3 * half
    return w


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["up", "down", "down-up"])
def test_memory_per_price_monotone_1e8(direction):
    full = 10**8
    total = 2 * full if direction == "down-up" else full
    s = SymbolStats(8)
    for start, batch in _monotone_batches(direction, total):
        s.add(batch)
    assert len(s) == total
    per_price = s.nbytes / full
    print(f"\n{direction} stream of {total} prices, full 10**8 window: {s.nbytes} bytes = "
          f"{per_price:.3f} bytes per stored price")
    assert per_price <= 17
    for k in range(1, 9):
        check_stats(s.stats(k), _monotone_window(direction, total, total, 10 ** k), f"k={k}")


def test_prices_and_last_match_the_stream(make_store):
    """prices(n) copies out of the ring (in a file store, across its wrap and slack)."""
    store = make_store(max_symbols=1, max_k=2)
    store.add("A", [])
    assert store["A"].last is None and len(store["A"].prices(5)) == 0
    rng = np.random.default_rng(4)
    stream: list[float] = []
    for _ in range(60):
        batch = rng.normal(100, 5, int(rng.integers(1, 40))).tolist()
        store.add("A", batch)
        stream.extend(batch)
        for n in (1, 3, 99, 100, 101, 10_000):
            got = store["A"].prices(n)
            assert isinstance(got, array.array) and got.typecode == "d"
            assert got.tolist() == stream[-min(n, len(stream), 100):]
        assert store["A"].last == stream[-1]
    with pytest.raises(ValueError):
        store["A"].prices(0)
