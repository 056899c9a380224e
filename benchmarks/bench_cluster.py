"""The cluster's cost and gain, in one run: requests through HAProxy against the same node direct,
and one node against two behind the front.

1. ``tradestats-cluster up --nodes 1``: GET /stats/ and POST /add_batch/ (10,000 values) against
   the node's own port and through HAProxy, alternately, same load: the proxy's cost as the
   ratio front / direct. POSTs twice through the front: the symbol only in the body (HAProxy
   waits for the body and reads it) and also in the URL (``?symbol=``, what tradestats.client
   sends: streamed through).
2. ``tradestats-cluster up --nodes 2``: the same loads through the front, over symbols of which
   each node owns half: what a second node adds, as the ratio 2 nodes / 1 node.

Each node has one worker (``up``'s default), max_k 5. The load comes from ``wrk`` when it is
installed, else from the Python generator of http_load.py, in processes of their own; on a
2-core machine the load generator, HAProxy and the nodes share the cores, so the ratios say more
than the rates. Everything it starts is stopped at the end, also on an error or Ctrl-C.

    .venv/bin/python benchmarks/bench_cluster.py                 # 5 s per case, about 2 minutes
    .venv/bin/python benchmarks/bench_cluster.py --seconds 1     # smoke run
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from http_load import (
    BATCH,
    HOST,
    Children,
    Load,
    PythonDriver,
    Result,
    WrkDriver,
    background_load,
    batch_bodies,
    stats_path,
)

from tradestats.cluster.placement import rule_owner

CONNECTIONS = 8
MAX_K = 5
START_TIMEOUT = 60.0


def symbols_spread(count_per_node: int, nodes: list[str]) -> list[str]:
    """Symbols of which each node owns count_per_node under the placement rule."""
    chosen: dict[str, list[str]] = {name: [] for name in nodes}
    for i in range(10_000):
        symbol = f"BENCH{i}"
        owner = rule_owner(symbol, nodes)
        if len(chosen[owner]) < count_per_node:
            chosen[owner].append(symbol)
        if all(len(found) == count_per_node for found in chosen.values()):
            break
    return [symbol for found in zip(*chosen.values()) for symbol in found]


SYMBOLS = symbols_spread(2, ["node1", "node2"])  # 4 symbols, 2 per node of the 2-node cluster


def get_load(symbols: list[str]) -> Load:
    return Load("GET", tuple(stats_path(symbol, k) for k in range(1, 4) for symbol in symbols))


def post_load(symbols: list[str], symbol_in_url: bool) -> Load:
    paths, bodies = [], []
    for n, symbol in enumerate(symbols):
        for body in batch_bodies(symbol, 2, seed=n):
            paths.append(f"/add_batch/?symbol={symbol}" if symbol_in_url else "/add_batch/")
            bodies.append(body)
    return Load("POST", tuple(paths), tuple(bodies), BATCH)


def free_port_run(count: int) -> int:
    """P..P+count-1 free, below the ephemeral range (a connection's local end may take one)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        base = random.randrange(10000, low - count)
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind((HOST, port))
        except OSError:
            continue
        return base
    raise RuntimeError("no run of free ports")


def request(port: int, method: str, path: str, body: bytes | None = None) -> int:
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        connection.request(method, path, body=body,
                           headers={"Content-Type": "application/json"} if body else {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


class LocalCluster:
    """``tradestats-cluster up`` in a directory of its own; stop() ends it with SIGTERM."""

    def __init__(self, nodes: int, workdir: Path, children: Children) -> None:
        self.directory = workdir / f"cluster-{nodes}"
        self.port = free_port_run(nodes + 1)
        self.log = workdir / f"up-{nodes}.log"
        with open(self.log, "wb") as log:
            self.process = children.popen(
                [sys.executable, "-m", "tradestats.cluster.cli", "up", "--nodes", str(nodes),
                 "--port", str(self.port), "--data-dir", str(self.directory), "--max-k",
                 str(MAX_K), "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while "Ctrl-C stops the cluster." not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not start:\n{self.log.read_text()}")
            time.sleep(0.1)
        state = json.loads((self.directory / "cluster.json").read_text())
        self.node_ports = {name: int(node["url"].rsplit(":", 1)[1])
                           for name, node in state["nodes"].items()}

    def preload(self, symbols: list[str]) -> None:
        """One batch per symbol: enough prices for every k of the GET load."""
        for n, symbol in enumerate(symbols):
            status = request(self.port, "POST", "/add_batch/", batch_bodies(symbol, 1, n)[0])
            if status != 200:
                raise RuntimeError(f"preloading {symbol} through the front: {status}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def measure(driver, port: int, load: Load, seconds: int) -> Result:
    result = driver.run(port, load, CONNECTIONS, seconds)
    if result.errors:
        raise RuntimeError(f"{result.errors} errors on port {port} ({load.method} {load.paths[0]})")
    return result


def rate_line(label: str, first: Result, second: Result) -> str:
    ratio = second.rps / first.rps if first.rps else float("nan")
    return (f"{label:<34}{first.rps:>12,.0f}{second.rps:>12,.0f}{ratio:>8.2f}"
            f"{first.p99_ms:>9.2f}{second.p99_ms:>9.2f}")


def header(first: str, second: str) -> str:
    return (f"{'load (' + str(CONNECTIONS) + ' connections)':<34}{first + ' /s':>12}"
            f"{second + ' /s':>12}{'ratio':>8}{'p99 ms':>9}{'p99 ms':>9}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="per case (default 5)")
    args = parser.parse_args()
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        print("haproxy is not installed (apt-get install haproxy)", file=sys.stderr)
        return 2
    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    driver = WrkDriver(workdir, children) if shutil.which("wrk") else PythonDriver(children)
    print(f"load: {driver.version()}; other load before the run: {background_load():.2f} cores")
    loads = {"GET /stats/ k=1..3": get_load(SYMBOLS),
             "POST 10,000 values, symbol in body": post_load(SYMBOLS, symbol_in_url=False),
             "POST 10,000 values, symbol in URL": post_load(SYMBOLS, symbol_in_url=True)}
    try:
        one = LocalCluster(1, workdir, children)
        try:
            one.preload(SYMBOLS)
            direct_port = one.node_ports["node1"]
            through_one = {}
            print("\n1. HAProxy's cost: one node, direct and through the front")
            print(header("direct", "front"))
            for label, load in loads.items():
                direct = measure(driver, direct_port, load, args.seconds)
                through_one[label] = measure(driver, one.port, load, args.seconds)
                print(rate_line(label, direct, through_one[label]), flush=True)
        finally:
            one.stop()
        two = LocalCluster(2, workdir, children)
        try:
            two.preload(SYMBOLS)
            print("\n2. A second node: through the front, 1 node and 2 nodes "
                  "(symbols half on each)")
            print(header("1 node", "2 nodes"))
            for label, load in loads.items():
                print(rate_line(label, through_one[label],
                                measure(driver, two.port, load, args.seconds)), flush=True)
        finally:
            two.stop()
    finally:
        children.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
