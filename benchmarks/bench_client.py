"""tradestats.client against raw http.client, same requests, same server, same run.

Starts ``tradestats-serve --ephemeral --workers 1`` on 127.0.0.1, then for SECONDS each: the
Client's ``add`` of 10,000 values and ``stats(symbol, 3)``, and the same POST and GET sent by
hand over one keep-alive ``http.client.HTTPConnection`` (body built with orjson). Prints calls
per second and the ratio.

    python benchmarks/bench_client.py [--seconds 5]
"""
from __future__ import annotations

import argparse
import http.client
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson

from tradestats.client import Client


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rate(call, seconds: float) -> float:
    calls, deadline = 0, time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        call()
        calls += 1
    return calls / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    port = free_port()
    serve = shutil.which("tradestats-serve") or str(Path(sys.executable).with_name("tradestats-serve"))
    server = subprocess.Popen([serve, "--host", "127.0.0.1", "--port", str(port), "--ephemeral",
                               "--workers", "1", "--max-k", "3", "--log-level", "warning"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = Client(f"http://127.0.0.1:{port}")
        for _ in range(100):
            try:
                client.health()
                break
            except OSError:
                time.sleep(0.1)
        values = np.random.default_rng(1).normal(100, 1, 10_000)
        as_list = values.tolist()
        raw = None

        def raw_request(method, path, body=None):
            raw.request(method, path, body, {"Content-Type": "application/json"} if body else {})
            raw.getresponse().read()

        def raw_add():
            raw_request("POST", "/add_batch/", orjson.dumps({"symbol": "R", "values": as_list}))

        def raw_stats():
            raw_request("GET", "/stats/?symbol=R&k=3")

        rows = [("add 10,000 values", lambda: client.add("C", values), raw_add),
                ("stats(k=3)", lambda: client.stats("C", 3), raw_stats)]
        print(f"{'call':<18} {'client /s':>10} {'http.client /s':>15} {'ratio':>6}")
        for name, ours, theirs in rows:
            ours_rate = rate(ours, args.seconds)
            # A fresh keep-alive connection: the server closes one left idle meanwhile.
            raw = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            theirs_rate = rate(theirs, args.seconds)
            raw.close()
            print(f"{name:<18} {ours_rate:>10,.0f} {theirs_rate:>15,.0f} "
                  f"{ours_rate / theirs_rate:>6.2f}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
