"""Rounding benchmark: how often avg and var differ from the exact answer, this engine against
the previous one (benchmarks/baseline.py), on the streams where the previous one was measured
to miss (issue #17), and whether the same prices in other batches give the same bits.

The reference is exact: every double is an integer multiple of 2**-1074, so a window's sums of
x * 2**1074 and of its square are Python integers, kept by adding each price and subtracting
each leaver; avg and var are those Fractions rounded once by float().

    python benchmarks/bench_exactness.py               # about a minute
    python benchmarks/bench_exactness.py --prices 20000
"""
from __future__ import annotations

import argparse
import random
from fractions import Fraction

from baseline import load_baseline

import tradestats

SCALE = 1074
MAX_K = 3
BATCHES = (1, 7, 100, 1000)


def walk(rng, n):
    level, out = 1000.0, []
    for _ in range(n):
        level += rng.gauss(0, 0.01)
        out.append(level)
    return out


def streams(n, seed=3):
    rng = random.Random(seed)
    spikes = walk(rng, n)
    for at in range(n // 5, n, n // 3):
        spikes[at] = rng.choice([1e100, -1e100, 1e9])
    return {
        "walk ~1000": walk(rng, n),
        "walk + 1e100/1e9 spikes": spikes,
        "alternating +-1e15": [rng.choice([1e15, -1e15]) + rng.choice([0.0, 0.125]) for _ in range(n)],
        "tiny ~1e-300": [1e-300 * rng.uniform(0.5, 2.0) for _ in range(n)],
        "exponents 1e-300..1e100": [rng.choice([-1, 1]) * 10 ** rng.uniform(-300, 100)
                                    for _ in range(n)],
    }


class Exact:
    """Sliding exact sums of one window of `size` prices."""

    def __init__(self, size):
        self.size, self.s1, self.s2, self.prices = size, 0, 0, []

    def add(self, x):
        scaled = int(Fraction(x) * 2 ** SCALE)
        self.prices.append(scaled)
        self.s1 += scaled
        self.s2 += scaled * scaled
        if len(self.prices) > self.size:
            gone = self.prices[-self.size - 1]
            self.s1 -= gone
            self.s2 -= gone * gone

    def answer(self):
        n = self.size
        avg = float(Fraction(self.s1, n * 2 ** SCALE))
        var = float(Fraction(n * self.s2 - self.s1 * self.s1, n * n * 2 ** (2 * SCALE)))
        return avg, var


def ulps(a, b):
    import math
    if a == b:
        return 0
    return abs(a - b) / math.ulp(max(abs(a), abs(b)))


def measure(engine_module, prices, batch):
    """(windows checked, avg misses, var misses, worst ulps)."""
    engine = engine_module.SymbolStats(MAX_K)
    exact = [Exact(10 ** k) for k in range(1, MAX_K + 1)]
    checked = avg_misses = var_misses = 0
    worst = 0.0
    for start in range(0, len(prices), batch):
        chunk = prices[start:start + batch]
        engine.add(chunk)
        for x in chunk:
            for window in exact:
                window.add(x)
        count = start + len(chunk)
        for k, window in enumerate(exact, 1):
            if count < 10 ** k:
                continue
            stats = engine.stats(k)
            avg, var = window.answer()
            checked += 1
            avg_misses += stats.avg != avg
            var_misses += stats.var != var
            worst = max(worst, ulps(stats.avg, avg), ulps(stats.var, var))
    return checked, avg_misses, var_misses, worst


def final_stats(engine_module, prices, batch):
    """Every window's stats after all prices went in, in batches of `batch`."""
    engine = engine_module.SymbolStats(MAX_K)
    for start in range(0, len(prices), batch):
        engine.add(prices[start:start + batch])
    return tuple(tuple(engine.stats(k)) for k in range(1, MAX_K + 1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prices", type=int, default=12_000)
    args = parser.parse_args()
    engines = {"current": tradestats, "baseline": load_baseline()}
    print(f"{args.prices:,} prices per stream, max_k {MAX_K}, checked after every batch of 100")
    print(f"{'stream':<26} {'engine':<9} {'windows':>8} {'avg wrong':>10} {'var wrong':>10} "
          f"{'worst ulps':>11} {'same bits for batches ' + str(BATCHES):>34}")
    for name, prices in streams(args.prices).items():
        for label, module in engines.items():
            checked, avg_bad, var_bad, worst = measure(module, prices, 100)
            splits = {final_stats(module, prices, b) for b in BATCHES}
            print(f"{name:<26} {label:<9} {checked:>8,} {avg_bad / checked:>10.2%} "
                  f"{var_bad / checked:>10.2%} {worst:>11.3g} {'yes' if len(splits) == 1 else 'NO':>34}")


if __name__ == "__main__":
    main()
