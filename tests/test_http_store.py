"""The server's shared store over real HTTP: every worker serves one dataset, kept across
restarts and worker kills, with a full disk answered 507 (issue #8)."""
from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

from conftest import ServerProcess, serve_command, stop_cleanly
from engine_reference import check_stats
from test_http import assert_added, assert_error, get_stats, post_batch
from tradestats.web.metrics import FLUSH_SECONDS
from tradestats import Stats, messages
from tradestats.engine import _make_stats

TWO_WORKERS = ("--workers", "2", "--max-k", "3", "--max-symbols", "100")


def unique_stream(start: int, end: int) -> list[float]:
    """Prices p + u, u in [0, 0.5): the last price of a window names how many came before."""
    p = np.arange(start, end)
    return (p + (p * 7919 % 1000) / 2000).tolist()


def stats_of(reply) -> Stats:
    body = reply.json()
    return _make_stats(body["min"], body["max"], body["last"], body["avg"], body["var"])


def stored_count(server, symbol) -> int:
    reply = get_stats(server, symbol, 1)
    return int(reply.json()["last"]) + 1 if reply.status == 200 else 0


def check_symbol(server, symbol, count):
    for k in (1, 2, 3):
        if count >= 10**k:
            reply = get_stats(server, symbol, k)
            assert reply.status == 200, reply.body
            check_stats(stats_of(reply), unique_stream(count - 10**k, count), f"k={k}")


def test_every_worker_reads_every_acknowledged_batch(server_kind, tmp_path):
    server = ServerProcess(server_kind, TWO_WORKERS, tmp_path / "serve.log")
    try:
        assert len(server.worker_pids()) == 2
        count = 0
        for n in range(150):   # fresh connections land on either worker
            size = 10 + n % 37
            assert_added(post_batch(server, "RYW", unique_stream(count, count + size)))
            count += size
            assert stored_count(server, "RYW") == count
        check_symbol(server, "RYW", count)
    finally:
        stop_cleanly(server)


def test_a_restart_keeps_every_symbol(server_kind, tmp_path):
    args = (*TWO_WORKERS, "--data-dir", str(tmp_path / "data"))
    server = ServerProcess(server_kind, args, tmp_path / "first.log")
    symbols = {f"S{n}/é": 1000 + 137 * n for n in range(5)}
    try:
        for symbol, count in symbols.items():
            for start in range(0, count, 400):
                assert_added(post_batch(server, symbol, unique_stream(start, min(count, start + 400))))
    finally:
        stop_cleanly(server)
    again = ServerProcess(server_kind, args, tmp_path / "second.log")
    try:
        assert f"5 symbols, {sum(symbols.values())} prices" in again.log
        for symbol, count in symbols.items():
            check_symbol(again, symbol, count)
    finally:
        stop_cleanly(again)


def test_killed_workers_lose_only_unacknowledged_batches(server_kind, tmp_path):
    """A client posts without pause while workers are SIGKILLed and restarted by gunicorn."""
    server = ServerProcess(server_kind, TWO_WORKERS, tmp_path / "serve.log")
    acked = [0]
    stop = threading.Event()
    failures = []

    def post_forever():
        count = 0
        while not stop.is_set():
            size = 1 + count % 500
            try:
                reply = post_batch(server, "KILL", unique_stream(count, count + size))
            except (OSError, http.client.HTTPException):
                # No answer: the batch may or may not be stored. Ask, then go on from there.
                time.sleep(0.05)
                try:
                    count = stored_count(server, "KILL")
                except (OSError, http.client.HTTPException):
                    pass
                continue
            if reply.status != 200:
                failures.append(reply.body)
                return
            count += size
            acked[0] = count

    client = threading.Thread(target=post_forever)
    client.start()
    try:
        rng = random.Random(3)
        for _ in range(6):
            time.sleep(rng.uniform(0.2, 0.5))
            victims = server.worker_pids()
            if victims:
                try:
                    os.kill(rng.choice(victims), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(1.0)
    finally:
        stop.set()
        client.join(30)
    try:
        assert not failures, failures[:3]
        final = stored_count(server, "KILL")
        assert final == acked[0]   # the client resumed from what was stored: nothing lost or doubled
        assert final > 1000
        check_symbol(server, "KILL", final)
    finally:
        stop_cleanly(server)


def test_a_full_disk_is_507_and_reads_go_on(server_kind, small_disk):
    args = ("--workers", "2", "--max-k", "4", "--max-symbols", "100",
            "--data-dir", str(small_disk / "data"))
    server = ServerProcess(server_kind, args, small_disk.parent / "serve.log")
    try:
        filled, refused = [], None
        for n in range(100):
            symbol = f"D{n}"
            replies = [post_batch(server, symbol, unique_stream(start, start + 5000))
                       for start in range(0, 20_000, 5000)]
            if all(reply.status == 200 for reply in replies):
                filled.append(symbol)
                continue
            refused = next(reply for reply in replies if reply.status != 200)
            break
        assert refused is not None and len(filled) >= 3
        assert_error(refused, 507, messages.DISK_FULL)
        for symbol in filled:
            check_symbol(server, symbol, 20_000)
        assert server.request("GET", "/health").status == 200
    finally:
        stop_cleanly(server)


def test_reopening_with_another_max_k_is_refused_in_one_line(tmp_path):
    data = tmp_path / "data"
    server = ServerProcess(None, ("--max-k", "3", "--data-dir", str(data)), tmp_path / "a.log")
    try:
        assert_added(post_batch(server, "A", [1.0] * 10))
    finally:
        stop_cleanly(server)
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file() and p.suffix != ".lock"}
    result = subprocess.run([*serve_command(), "--port", "1", "--max-k", "4",
                             "--data-dir", str(data)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "tradestats-store.json" in result.stderr and "max_k=3" in result.stderr
    assert {p: p.read_bytes() for p in before} == before


def test_an_ephemeral_store_is_removed_at_stop(tmp_path):
    server = ServerProcess(None, ("--ephemeral", "--max-k", "1"), tmp_path / "serve.log")
    try:
        assert_added(post_batch(server, "E", [2.0] * 10))
        line = next(l for l in server.log.splitlines() if "data directory" in l)
        data_dir = line.split("data directory ", 1)[1].split(" (", 1)[0]
        assert "ephemeral" in line and json.loads(
            get_stats(server, "E", 1).body)["var"] == 0.0
        assert Path(data_dir).is_dir()
    finally:
        stop_cleanly(server)
    assert not Path(data_dir).exists()


def scrape(server) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    reply = server.request("GET", "/metrics")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(reply.body.decode())
            for sample in family.samples}


def test_metrics_count_every_worker_once_and_survive_a_worker_kill(server_kind, tmp_path):
    server = ServerProcess(server_kind, TWO_WORKERS, tmp_path / "serve.log")
    try:
        sizes = [1 + (n * 37) % 400 for n in range(40)]
        count = 0
        for size in sizes:
            assert_added(post_batch(server, "M", unique_stream(count, count + size)))
            count += size
        for _ in range(7):
            assert_error(get_stats(server, "NOPE", 1), 400, "Symbol NOPE not found")
        post_route = (("method", "POST"), ("route", "/add_batch/"), ("status", "200"))
        expected = {
            ("tradestats_batches_ingested_total", ()): len(sizes),
            ("tradestats_prices_ingested_total", ()): count,
            ("tradestats_http_requests_total", post_route): len(sizes),
            ("tradestats_http_requests_total",
             (("method", "GET"), ("route", "/stats/"), ("status", "400"))): 7,
            ("tradestats_http_request_duration_seconds_count",
             (("method", "POST"), ("route", "/add_batch/"))): len(sizes),
            ("tradestats_symbols", ()): 1,
            ("tradestats_prices_held", ()): min(count, 1000),
            ("tradestats_prices_received_total", ()): count,
        }
        # Each worker moves its request counts to the shared files within FLUSH_SECONDS.
        deadline = time.monotonic() + 10 * FLUSH_SECONDS
        while (first := scrape(server)) and time.monotonic() < deadline and \
                {key: first.get(key) for key in expected} != expected:
            time.sleep(FLUSH_SECONDS / 4)
        assert {key: first.get(key) for key in expected} == expected
        os.kill(server.worker_pids()[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
                len(server.worker_pids()) == 2 and server.all_workers_up()):
            time.sleep(0.1)
        time.sleep(1.0)   # the replacement worker boots
        for _ in range(4):  # whichever worker answers, the counts are the same
            again = scrape(server)
            assert {key: again.get(key) for key in expected} == expected
    finally:
        stop_cleanly(server)


def test_a_worker_that_exits_leaves_the_shared_directories_alone(server_kind, tmp_path):
    """A worker unwinds through tradestats-serve's main() when it exits: it must not remove the
    ephemeral data or the metrics directory that the other workers still use."""
    server = ServerProcess(server_kind, ("--ephemeral", *TWO_WORKERS), tmp_path / "serve.log")
    try:
        assert_added(post_batch(server, "E", unique_stream(0, 100)))
        before = set(server.worker_pids())
        os.kill(sorted(before)[0], signal.SIGTERM)   # a graceful exit of one worker
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
                set(server.worker_pids()) & before == before or len(server.worker_pids()) < 2):
            time.sleep(0.1)
        time.sleep(0.5)
        posts = ("tradestats_http_requests_total",
                 (("method", "POST"), ("route", "/add_batch/"), ("status", "200")))
        for _ in range(6):   # both workers, old and new, still read the data and count
            check_symbol(server, "E", 100)
            counted = scrape(server)
            assert counted[("tradestats_batches_ingested_total", ())] == 1
            assert counted[posts] == 1  # the stopped worker moved its request counts first
        assert_added(post_batch(server, "E", unique_stream(100, 110)))
        check_symbol(server, "E", 110)
    finally:
        stop_cleanly(server)


def test_a_damaged_symbol_is_refused_by_name_and_the_others_served(tmp_path):
    """Issue #16: a symbol file truncated from outside killed workers with SIGBUS, and a restart
    refused the whole directory. Now that symbol answers 500 naming it, on every worker, the
    others go on, and a restart serves the others and names the damaged file."""
    args = (*TWO_WORKERS, "--data-dir", str(tmp_path / "data"))
    server = ServerProcess("granian", args, tmp_path / "first.log")
    damaged = tmp_path / "data" / "symbols" / "BAD.sym"
    try:
        for symbol in ("BAD", "GOOD"):
            assert_added(post_batch(server, symbol, unique_stream(0, 1500)))
        os.truncate(damaged, 4096)
        workers = sorted(server.worker_pids())
        for _ in range(6):   # fresh connections: both workers
            for path in ("/stats/?symbol=BAD&k=1", "/prices/?symbol=BAD&n=5"):
                reply = server.request("GET", path)
                assert reply.status == 500, reply.body
                assert "Symbol BAD is not served" in reply.json()["detail"]
                assert "truncated" in reply.json()["detail"]
            reply = post_batch(server, "BAD", [1.0])
            assert reply.status == 500 and "Symbol BAD" in reply.json()["detail"]
            check_symbol(server, "GOOD", 1500)
        assert_added(post_batch(server, "GOOD", unique_stream(1500, 1600)))
        check_symbol(server, "GOOD", 1600)
        assert sorted(server.worker_pids()) == workers   # no worker died
        listed = server.request("GET", "/symbols").json()["symbols"]
        assert [entry["symbol"] for entry in listed] == ["GOOD"]
    finally:
        stop_cleanly(server)
    again = ServerProcess("granian", args, tmp_path / "second.log")
    try:
        assert f"{damaged}: refused: truncated" in again.log
        assert "1 damaged" in again.log
        check_symbol(again, "GOOD", 1600)
        assert get_stats(again, "BAD", 1).status == 500
    finally:
        stop_cleanly(again)
