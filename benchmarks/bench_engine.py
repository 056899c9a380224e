"""Engine benchmark: the current tradestats.SymbolStats against a previous version, in one run.

The previous version (the A/B baseline) is the engine of a git revision, built by baseline.py
as `tradestats_baseline` (default: the commit before the issue-17 rewrite; --baseline-ref REF).
For each stream, PRICES prices are fed in batches of BATCH to one SymbolStats(max_k) of each
implementation, alternately (batch by batch, the order swapped every batch), so both see the
same machine state. Each add is timed in CPU time (this thread's) and in wall time ("worst at":
the prices added when the slowest add ended). Then stats(k) is timed for every k that has
enough data. Streams (one seed, so reproducible):

  walk        a random walk around 1,000 (normal steps, sigma 0.01)
  spike1e9    the walk with one price of 1e9 at PRICES/12, which later leaves every window
  spike1e100  the same with 1e100
  crafted     bursts of normal noise (sigma 1e6 and 1e12 alternately, 10**(max_k-3) prices
              each) around the walk's level, between calm walk stretches of 2*10**(max_k-2)
              and 12*10**(max_k-2) prices, then calm: a period of 1.15*10**max_k, so windows
              10**(max_k-2)..10**max_k are filled with and emptied of volatility again and again
  drops       rising by 0.01 a price for 1.05*10**max_k prices, then one price below all of
              them, again: the minimum's deque holds a whole window and one price pops it all

The current engine runs as two copies (current, current-2) fed the same batches: on a VM a
thread's CPU time includes moments its vCPU was descheduled, so one add in thousands shows 10x
for no reason of its own, while work an add really does shows in both copies. The worst-add
goal is judged on "min of 2" (each add: the faster copy); one copy's figures are printed too.

The goals checked (issue 17): add on the walk at >= 0.9x the baseline's values/s (wall); for the
current engine the slowest add <= 8x the median add (CPU) on every stream; stats(k) < 1 us.
--numpy adds the older comparison on the walk: a numpy ring (write only) answering stats(k) by
slicing it (np.min/np.max/np.mean/np.var), which is slow at large k.

    python benchmarks/bench_engine.py                               # 1.2e8 prices, max_k 8
    python benchmarks/bench_engine.py --prices 2e5 --max-k 4        # a smoke run
    python benchmarks/bench_engine.py --streams walk --baseline-ref HEAD~1
"""
import argparse
import gc
import resource
import time
from pathlib import Path

import numpy as np

import tradestats

from baseline import DEFAULT_REF, cython_version, load_baseline, resolve

STREAMS = ("walk", "spike1e9", "spike1e100", "crafted", "drops")
WORST_OVER_MEDIAN, ADD_RATIO, STATS_NS = 8.0, 0.9, 1000.0


def stream_segments(name, total, max_k):
    """The stream as segments: ("walk", n), ("price", x) or ("noise", n, sigma)."""
    if name == "walk":
        yield ("walk", total)
    elif name.startswith("spike"):
        at = total // 12
        yield from (("walk", at), ("price", float(name[len("spike"):])), ("walk", total))
    elif name == "crafted":
        big = 10 ** max_k
        burst, short, long_ = max(1, big // 1000), max(1, big // 50), max(1, big * 12 // 100)
        while True:
            used = 0
            for i, calm in enumerate((short, short, short, long_)):
                yield ("noise", burst, 1e6 if i % 2 == 0 else 1e12)
                yield ("walk", calm)
                used += burst + calm
            yield ("walk", max(1, big * 115 // 100 - used))
    elif name == "drops":
        # Rising for a whole largest window, then one price below everything: the minimum's
        # deque holds the whole window and that one price pops all of it.
        while True:
            yield ("ramp", 10 ** max_k + 5 * 10 ** (max_k - 2))
            yield ("drop", 1)
    else:
        raise ValueError(f"unknown stream {name!r}")


def stream_pieces(name, total, max_k, seed, block=1_000_000):
    """Yield the stream's first `total` prices as float64 arrays of at most `block`."""
    rng = np.random.default_rng(seed)
    level, left = 1000.0, total
    lowest = level
    for segment in stream_segments(name, total, max_k):
        kind, todo = segment[0], (1 if segment[0] in ("price", "drop") else segment[1])
        while todo and left:
            n = min(todo, left, block)
            if kind == "walk":
                piece = level + np.cumsum(rng.normal(0.0, 0.01, n))
                level = piece[-1]
            elif kind == "noise":
                piece = level + rng.normal(0.0, segment[2], n)
            elif kind == "ramp":
                piece = level + 0.01 * np.arange(1, n + 1)
                level = piece[-1]
            elif kind == "drop":
                level = lowest = lowest - 1.0
                piece = np.array([level])
            else:
                piece = np.array([segment[1]])
            todo, left = todo - n, left - n
            yield piece
        if not left:
            return


def batches(pieces, batch):
    """Regroup arrays into batches of exactly `batch` (the last may be shorter)."""
    buf, fill = np.empty(batch), 0
    for piece in pieces:
        at = 0
        while at < len(piece):
            take = min(batch - fill, len(piece) - at)
            buf[fill:fill + take] = piece[at:at + take]
            fill, at = fill + take, at + take
            if fill == batch:
                yield buf
                fill = 0
    if fill:
        yield buf[:fill].copy()


class NumpyRing:
    """The older baseline: the same ring of the last `capacity` prices, queried by slicing."""

    def __init__(self, max_k):
        self.capacity, self.count = 10 ** max_k, 0
        self.ring = np.empty(self.capacity)

    def add(self, values):
        n, at = len(values), self.count % self.capacity
        first = min(n, self.capacity - at)
        self.ring[at:at + first] = values[:first]
        self.ring[:n - first] = values[first:]
        self.count += n

    def stats(self, k):
        size, end = 10 ** k, self.count % self.capacity
        w = (self.ring[end - size:end] if end >= size else
             np.concatenate((self.ring[self.capacity - (size - end):], self.ring[:end])))
        return float(np.min(w)), float(np.max(w)), float(w[-1]), float(np.mean(w)), float(np.var(w))


def feed(engines, pieces, batch):
    """Add every batch to every engine, rotating the order; per-add CPU ns and wall ns."""
    cpu = {name: [] for name in engines}
    wall = dict.fromkeys(engines, 0)
    order = list(engines)
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for b in batches(pieces, batch):
        for name in order:
            add = engines[name].add
            c0, w0 = cpu_clock(), clock()
            add(b)
            w1, c1 = clock(), cpu_clock()
            wall[name] += w1 - w0
            if len(b) == batch:
                cpu[name].append(c1 - c0)
        order.append(order.pop(0))
    return {name: np.array(cpu[name], dtype=np.float64) for name in engines}, wall


def add_summary(cpu_ns, wall_ns, total, batch):
    median = float(np.median(cpu_ns)) / 1e3
    return {"rate": total / (wall_ns / 1e9), "cpu_rate": total / (cpu_ns.sum() / 1e9),
            "median": median, "p99": float(np.percentile(cpu_ns, 99)) / 1e3,
            "worst": float(cpu_ns.max()) / 1e3, "ratio": float(cpu_ns.max()) / 1e3 / median,
            "worst_at": (int(cpu_ns.argmax()) + 1) * batch}


def time_queries(query, k, budget=0.1, max_calls=200_000):
    """Mean ns per call of query(k), calling it for about `budget` seconds."""
    calls, elapsed = 0, 0
    while elapsed < budget * 1e9 and calls < max_calls:
        n = max(1, min(1000, calls))
        t0 = time.perf_counter_ns()
        for _ in range(n):
            query(k)
        elapsed += time.perf_counter_ns() - t0
        calls += n
    return elapsed / calls


def rebuilds(engine):
    counts = getattr(engine, "rebuilds", None)
    return "-" if counts is None else str(sum(counts))


def run_stream(stream, impls, args):
    """Feed one stream to every implementation; print its table; return the summaries."""
    total, max_k = int(args.prices), args.max_k
    engines = {name: make(max_k) for name, make in impls.items()}
    cpu, wall = feed(engines, stream_pieces(stream, total, max_k, args.seed), args.batch)
    summary = {name: add_summary(cpu[name], wall[name], total, args.batch) for name in engines}
    if "current-2" in cpu:
        # A VM counts the time its vCPU was descheduled as the running thread's CPU time, so one
        # add in thousands takes 10x for no reason of its own. Work an add really does shows in
        # both copies of the engine on the same batch; such an interruption almost never does.
        both = np.minimum(cpu["current"], cpu["current-2"])
        summary["both"] = add_summary(both, wall["current"], total, args.batch)
    base = summary.get("baseline")
    print(f"\n== {stream}: {total:,} prices in batches of {args.batch:,}, max_k {max_k}, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"  {'':10} {'Mvals/s':>8} {'CPU Mv/s':>8} {'median us':>10} {'p99 us':>9} "
          f"{'worst us':>10} {'worst/med':>9} {'worst at':>12} {'vs base':>8} {'rebuilds':>9}")
    for name, s in summary.items():
        vs = f"{s['rate'] / base['rate']:.3f}" if base else "-"
        if name == "both":
            print(f"  {'min of 2':10} {'':8} {'':8} {s['median']:10.1f} {s['p99']:9.1f} "
                  f"{s['worst']:10.1f} {s['ratio']:9.2f} {s['worst_at']:>12,}   (each add: the "
                  "faster of the two copies of the current engine)")
            continue
        print(f"  {name:10} {s['rate'] / 1e6:8.2f} {s['cpu_rate'] / 1e6:8.2f} {s['median']:10.1f} "
              f"{s['p99']:9.1f} {s['worst']:10.1f} {s['ratio']:9.2f} {s['worst_at']:>12,} {vs:>8} "
              f"{rebuilds(engines[name]) if name in engines else '-':>9}")
    queries = {name: {} for name in engines}
    ks = [k for k in range(1, max_k + 1) if 10 ** k <= total]
    print(f"  {'k':>3} " + " ".join(f"{name + ' ns':>14}" for name in engines))
    for k in ks:
        for name, engine in engines.items():
            slow = isinstance(engine, NumpyRing)
            queries[name][k] = time_queries(engine.stats, k, *((1.0, 20) if slow else ()))
        print(f"  {k:>3} " + " ".join(f"{queries[name][k]:>14.0f}" for name in engines))
    engines.clear()
    gc.collect()
    return summary, queries


def describe_current():
    pkg = Path(tradestats.__file__).parent
    text = f"current: tradestats from {pkg} ({cython_version(tradestats)})"
    built = min((p.stat().st_mtime for p in pkg.glob("engine*.so")), default=0)
    sources = [p for p in pkg.glob("*.p[xy][xd]") if p.stat().st_mtime > built]
    if sources:
        text += f"\n  WARNING: {', '.join(p.name for p in sources)} newer than the built engine"
    return text


def verdicts(results, max_k, total):
    """One line per goal of issue 17, for the current engine."""
    lines = []
    walk = results.get("walk")
    if walk and "baseline" in walk[0]:
        ratio = walk[0]["current"]["rate"] / walk[0]["baseline"]["rate"]
        cpu = walk[0]["current"]["cpu_rate"] / walk[0]["baseline"]["cpu_rate"]
        lines.append(f"{'PASS' if ratio >= ADD_RATIO else 'FAIL'}  add on the walk: "
                     f"{ratio:.3f}x the baseline's values/s, wall ({cpu:.3f}x in CPU time; goal >= {ADD_RATIO})")
    steady = {stream: r[0].get("both", r[0]["current"])["ratio"] for stream, r in results.items()}
    raw = {stream: r[0]["current"]["ratio"] for stream, r in results.items()}
    bad = [s for s, r in steady.items() if r > WORST_OVER_MEDIAN]
    lines.append(f"{'FAIL' if bad else 'PASS'}  slowest add / median add (CPU) <= "
                 f"{WORST_OVER_MEDIAN:g} on every stream (each add: the faster of two copies): "
                 + ", ".join(f"{s} {r:.1f}" for s, r in steady.items())
                 + "; one copy alone: " + ", ".join(f"{s} {r:.1f}" for s, r in raw.items()))
    ns = [q for r in results.values() for q in r[1]["current"].values()]
    if ns:
        spread = max(max(r[1]["current"].values()) / min(r[1]["current"].values())
                     for r in results.values())
        lines.append(f"{'PASS' if max(ns) < STATS_NS else 'FAIL'}  stats(k) < 1 us: slowest "
                     f"{max(ns):.0f} ns (Python call included); slowest/fastest k on one stream "
                     f"{spread:.2f} (O(1): no growth with 10**k)")
    if total < 10 ** max_k * 115 // 100:
        lines.append(f"NOTE  {total:,} prices: the window 10**{max_k} does not roll past the "
                     "spike and the crafted bursts; run the default --prices for the full check")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prices", type=float, default=1.2e8)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--max-k", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--streams", default=",".join(STREAMS), help="comma-separated subset")
    parser.add_argument("--baseline-ref", default=DEFAULT_REF, help="git revision of the baseline")
    parser.add_argument("--no-baseline", action="store_true", help="the current engine only")
    parser.add_argument("--numpy", action="store_true", help="also a numpy ring, on the walk")
    args = parser.parse_args()
    streams = [s for s in args.streams.split(",") if s]
    for s in streams:
        if s not in STREAMS:
            parser.error(f"unknown stream {s!r} (choose from {', '.join(STREAMS)})")

    impls = {"current": tradestats.SymbolStats, "current-2": tradestats.SymbolStats}
    print(describe_current())
    if not args.no_baseline:
        base = load_baseline(args.baseline_ref)
        impls["baseline"] = base.SymbolStats
        print(f"baseline: {args.baseline_ref} = {resolve(args.baseline_ref)[:12]} "
              f"({cython_version(base)}) from {Path(base.__file__).parent}")
    results = {}
    for stream in streams:
        extra = {"numpy-ring": NumpyRing} if args.numpy and stream == "walk" else {}
        results[stream] = run_stream(stream, {**impls, **extra}, args)
    print()
    for line in verdicts(results, args.max_k, int(args.prices)):
        print(line)


if __name__ == "__main__":
    main()
