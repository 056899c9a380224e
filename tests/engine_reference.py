"""Slow, obvious references for the engine's window statistics, and the one accuracy check.

The reference for a window x_1..x_n:

* min, max, last: exact, straight from the data;
* avg = math.fsum(x) / n: fsum is the correctly rounded sum, so avg is within about one ulp of
  the true mean;
* var = (fsum(d**2) - fsum(d)**2 / n) / n with d = x - avg computed in float64: the textbook
  two-pass formula on deviations from the fsum mean, plus the (tiny) correction term of the
  "corrected two-pass" algorithm (Chan, Golub & LeVeque) that removes the n*delta**2 bias left by
  the rounding delta of the mean. Each d carries a relative rounding error of at most 2**-53, so
  each d**2 is within 2**-51 (relative) of the exact squared deviation, and all squares are
  non-negative: the reference variance is within a few 1e-16 (relative) of the true one, far
  inside the 1e-9 the engine promises.

For windows above ``EXACT_SUM_LIMIT`` values the mean still comes from math.fsum (fed chunk by
chunk, so no 10**8-element list is ever built), while the sums of d and d**2 are taken with numpy
per chunk of 2**20 values (numpy sums a contiguous float64 array pairwise: relative error below
~40 * 2**-53 for a chunk, and below that for a sum of non-negative squares) and the chunk sums are
added exactly with fsum. Every term of the d**2 sum is non-negative, so a relative error of 1e-14
per chunk is a relative error of 1e-14 of the whole: still five orders of magnitude inside the
promised 1e-9. The correction term fsum(d)**2/n is at most ~(n * ulp(mean))**2 / n and its own
error is negligible.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

#: The promised accuracy (issue #2): |avg - ref| <= AVG_REL * max|x|,
#: |var - ref| <= VAR_REL * ref + (VAR_ABS * max|x|)**2, with max|x| taken over the window.
AVG_REL = 1e-12
VAR_REL = 1e-9
VAR_ABS = 1e-15

#: Windows up to this many values are summed entirely with math.fsum.
EXACT_SUM_LIMIT = 1 << 20
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Reference:
    n: int
    min: float
    max: float
    last: float
    avg: float
    var: float
    max_abs: float


def _chunks(w: np.ndarray):
    for start in range(0, len(w), _CHUNK):
        yield w[start:start + _CHUNK]


def exact_mean(w: np.ndarray) -> float:
    """math.fsum(w) / len(w), without materialising a list of the whole window."""
    if len(w) <= EXACT_SUM_LIMIT:
        return math.fsum(w.tolist()) / len(w)
    return math.fsum(itertools.chain.from_iterable(c.tolist() for c in _chunks(w))) / len(w)


def reference(window) -> Reference:
    """The reference statistics of one window (a sequence of floats or a 1-D numpy array)."""
    w = np.ascontiguousarray(window, dtype=np.float64)
    n = len(w)
    if n == 0:
        raise ValueError("empty window")
    if not np.all(np.isfinite(w)):
        raise ValueError("the reference only handles finite windows")
    lo, hi = float(w.min()), float(w.max())
    avg = exact_mean(w)
    if n <= EXACT_SUM_LIMIT:
        d = w - avg
        s1 = math.fsum(d.tolist())
        s2 = math.fsum((d * d).tolist())
    else:
        s1_parts, s2_parts = [], []
        for c in _chunks(w):
            d = c - avg
            s1_parts.append(float(np.sum(d)))
            s2_parts.append(float(np.sum(d * d)))
        s1 = math.fsum(s1_parts)
        s2 = math.fsum(s2_parts)
    var = max(s2 - s1 * s1 / n, 0.0) / n
    max_abs = max(abs(lo), abs(hi))
    return Reference(n, lo, hi, float(w[-1]), avg, var, max_abs)


def describe_mismatch(got, ref: Reference) -> str:
    return (f"window of {ref.n}: got {got!r}, reference min={ref.min!r} max={ref.max!r} "
            f"last={ref.last!r} avg={ref.avg!r} var={ref.var!r} (max|x|={ref.max_abs!r})")


def check_stats(got, window, context: str = "") -> Reference:
    """Assert that the engine's Stats `got` matches the reference of `window` within the promise.

    min, max, last exact; |avg - ref| <= 1e-12 * max|x|; |var - ref| <= 1e-9 * ref
    + (1e-15 * max|x|)**2; var >= 0; a constant window has var exactly 0.0 and avg exactly
    its price. Returns the reference (handy for further checks).
    """
    ref = window if isinstance(window, Reference) else reference(window)
    where = f"{context}: " if context else ""
    msg = where + describe_mismatch(got, ref)
    assert got.min == ref.min, "min differs; " + msg
    assert got.max == ref.max, "max differs; " + msg
    assert got.last == ref.last, "last differs; " + msg
    assert math.isfinite(got.avg) and math.isfinite(got.var), "non-finite result; " + msg
    assert got.var >= 0.0, "negative variance; " + msg
    if ref.min == ref.max:
        assert got.var == 0.0, "constant window must have var exactly 0.0; " + msg
        assert got.avg == ref.min, "constant window must have avg exactly its price; " + msg
    avg_error = abs(got.avg - ref.avg)
    assert avg_error <= AVG_REL * ref.max_abs, (
        f"avg error {avg_error:.3g} > {AVG_REL:g} * max|x|; " + msg)
    var_error = abs(got.var - ref.var)
    var_bound = VAR_REL * ref.var + (VAR_ABS * ref.max_abs) ** 2
    assert var_error <= var_bound, (
        f"var error {var_error:.3g} > bound {var_bound:.3g}; " + msg)
    return ref


def check_all_windows(s, stream, context: str = "", ks=None) -> None:
    """Check s.stats(k) for every k (or those in `ks`) against the tail of `stream`.

    `stream` is everything added so far (a list or a 1-D numpy array). Windows not yet full
    must raise NotEnoughDataError.
    """
    from tradestats import NotEnoughDataError

    n = len(stream)
    for k in (range(1, s.max_k + 1) if ks is None else ks):
        size = 10 ** k
        if n < size:
            try:
                s.stats(k)
            except NotEnoughDataError:
                continue
            raise AssertionError(f"{context}: stats({k}) with {n} prices must raise "
                                 f"NotEnoughDataError")
        check_stats(s.stats(k), stream[n - size:], f"{context} k={k} n={n}")


def exact_window_stats(prices, n: int) -> tuple[float, float, float, float, float]:
    """(min, max, last, avg, var) of the last n prices, avg and var computed exactly.

    The exact promise (issue: exact statistics): avg = float(Fraction(sum(x)) / n) and
    var = float((n*sum(x**2) - sum(x)**2) / n**2), both in Fractions of the prices and rounded
    once by float(Fraction), which rounds half-even, into the subnormal range too. Slow and
    obvious on purpose: it shares nothing with the engine.
    """
    from fractions import Fraction

    window = [float(x) for x in prices[len(prices) - n:]]
    if n <= 0 or len(window) != n:
        raise ValueError(f"need {n} prices, have {len(prices)}")
    exact = [Fraction(x) for x in window]
    s1 = sum(exact, Fraction(0))
    s2 = sum((x * x for x in exact), Fraction(0))
    return (min(window), max(window), window[-1],
            float(s1 / n), float((n * s2 - s1 * s1) / (n * n)))
