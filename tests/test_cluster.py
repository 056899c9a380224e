"""tradestats-cluster (issue 20): three nodes behind HAProxy on loopback, started by ``up`` as a
user would, stopped with SIGTERM (exit 0, nothing left running).

Through the front with plain http.client: 60 symbols (POST with the symbol only in the body), each
stored on exactly the node the placement rule names, with the stats a single node fed the same
batches gives; GET /symbols lists them all; a node refuses a symbol it does not own (421 naming
the owner); ``move`` under load loses and doubles nothing; a node killed with SIGKILL answers a
JSON 503 for its symbols within about 2 s while the others answer, and is restarted with its
data; ``up`` again on the same directory keeps every price and every move. Every wait is
bounded. Needs haproxy: skipped without it, except under CI. HAProxy's own errors:
test_cluster_haproxy.py.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote_plus

import pytest
from conftest import ServerProcess, stop_cleanly

from tradestats.cluster import local
from tradestats.cluster.haproxy import server_states
from tradestats.cluster.placement import Placement
from tradestats.storage import SUFFIX, SYMBOLS_DIR, encode_symbol

HAPROXY = local.find_haproxy()
if HAPROXY is None and os.environ.get("CI"):
    raise RuntimeError("CI needs haproxy for the cluster tests (see .ci/run)")
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")

NODES = ["node1", "node2", "node3"]
MAX_K = 3
START_TIMEOUT = 40.0
#: 60 symbols: plain, with spaces, '+', '#', '/', '%', quotes, and non-ASCII sent as raw UTF-8.
SYMBOLS = [f"S{i:02d}" for i in range(40)] + [
    "a b", "q+r", "x#y", "S/1", "p%41", "it's", 'say "hi"', "é€", "株式", "ü1", "BRK.B",
    "^GSPC", "EUR/USD", "café au lait", "_-_", "z" * 64, "Ω", "1", "$USD", "semi;colon"]


def cluster_command(*args) -> list[str]:
    return [sys.executable, "-m", "tradestats.cluster.cli", *map(str, args)]


def free_port_run(count: int) -> int:
    """A port P with P..P+count-1 all free now (the front and the nodes after it), below the
    ephemeral range: there, any connection's local end may take one before a node binds it."""
    low, _ = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(200):
        base = random.randrange(10000, low - count)
        if all(local.port_is_free("127.0.0.1", base + i) for i in range(count)):
            return base
    raise AssertionError("no run of free ports")


class Reply:
    def __init__(self, status: int, headers, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        assert self.headers.get("Content-Type", "").startswith("application/json"), \
            (self.status, self.headers, self.body)
        return json.loads(self.body)


def request(port: int, method: str, path: str, body: bytes | None = None, headers=None) -> Reply:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def raw_request(port: int, data: bytes) -> Reply:
    """The answer to bytes sent as they are (what http.client would not send)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)
        response = http.client.HTTPResponse(connection)
        response.begin()
        return Reply(response.status, response.headers, response.read())


def post_batch(port: int, symbol: str, values: list[float]) -> Reply:
    """The symbol in the body only, as raw UTF-8: what a plain client of the contract sends."""
    body = json.dumps({"symbol": symbol, "values": values}, ensure_ascii=False).encode()
    return request(port, "POST", "/add_batch/", body, {"Content-Type": "application/json"})


def stats(port: int, symbol: str, k: int) -> Reply:
    return request(port, "GET", f"/stats/?symbol={quote_plus(symbol)}&k={k}")


def batches(symbol_index: int) -> list[list[float]]:
    """Two batches per symbol, different for each, with fractions that sum inexactly."""
    first = [100 + symbol_index + i * 0.1 for i in range(70)]
    return [first, [x * 1.5 - symbol_index for x in first[:45]]]


class Cluster:
    """``tradestats-cluster up`` as a subprocess."""

    def __init__(self, directory: Path, log_name: str = "up.log") -> None:
        self.directory = directory
        self.port = free_port_run(len(NODES) + 1)
        self.log_path = directory.parent / log_name
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                cluster_command("up", "--nodes", len(NODES), "--port", self.port,
                                "--data-dir", directory, "--max-k", MAX_K, "--restart-delay", 4),
                stdout=log, stderr=subprocess.STDOUT)
        self.wait_until(self.ready, "the cluster did not come up")
        self.placement = Placement.read(directory / "placement.json")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def state(self) -> dict:
        return json.loads((self.directory / "cluster.json").read_text())

    def ready(self) -> bool:
        return "Ctrl-C stops the cluster." in self.log and \
            (self.directory / "cluster.json").exists()

    def wait_until(self, condition, message: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"up exited {self.process.returncode}:\n{self.log}"
            try:
                if condition():
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"{message} within {timeout} s:\n{self.log}")

    def node_port(self, name: str) -> int:
        return int(self.placement.url(name).rsplit(":", 1)[1])

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"up ignored signal {signum} for 30 s:\n{self.log}")
        return self.process.returncode


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and \
        Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if HAPROXY is None:
        pytest.skip("haproxy is not installed")
    running = Cluster(tmp_path_factory.mktemp("cluster") / "DIR")
    try:
        yield running
    finally:
        stop_and_check(running)


def stop_and_check(cluster: Cluster, signum: int = signal.SIGTERM) -> None:
    """Exit 0 on the signal, every process it ran gone, its cluster.json too."""
    if cluster.process.poll() is not None:
        return
    state = cluster.state()
    pids = [state["haproxy"]["pid"], *(node["pid"] for node in state["nodes"].values())]
    status = cluster.stop(signum)
    assert status == 0, f"up exited {status} on signal {signum}:\n{cluster.log}"
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if alive(pid)], cluster.log
    assert not (cluster.directory / "cluster.json").exists()
    assert not (cluster.directory / "haproxy.sock").exists()


@pytest.fixture(scope="module")
def fed(cluster, tmp_path_factory):
    """The 60 symbols' batches through the front, and the same into one direct node."""
    single = ServerProcess(None, ("--max-k", str(MAX_K), "--max-symbols", "100", "--workers", "1"),
                           tmp_path_factory.mktemp("single") / "serve.log")
    try:
        for index, symbol in enumerate(SYMBOLS):
            for values in batches(index):
                for port in (cluster.port, single.port):
                    reply = post_batch(port, symbol, values)
                    assert reply.status == 200, (symbol, port, reply.status, reply.body)
        yield single
    finally:
        stop_cleanly(single)


def stored_on(cluster: Cluster, symbol: str) -> list[str]:
    parts = encode_symbol(symbol)
    return [name for name in NODES if cluster.directory.joinpath(
        name, SYMBOLS_DIR, *parts[:-1], parts[-1] + SUFFIX).exists()]


@needs_haproxy
def test_up_prints_each_node_and_the_front(cluster):
    for name in NODES:
        line = next(line for line in cluster.log.splitlines() if line.startswith(name + " "))
        assert cluster.placement.url(name) in line and str(cluster.directory / name) in line
    assert f"http://127.0.0.1:{cluster.port}" in cluster.log
    assert set(cluster.state()["nodes"]) == set(NODES)
    states = server_states(cluster.directory / "haproxy.sock")
    assert {server for (backend, server) in states if backend == server} == set(NODES)


@needs_haproxy
def test_each_symbol_lives_on_the_node_the_rule_names_with_one_node_s_stats(cluster, fed):
    owners = {symbol: cluster.placement.owner(symbol) for symbol in SYMBOLS}
    assert set(owners.values()) == set(NODES)  # the 60 spread over all three
    for symbol in SYMBOLS:
        assert stored_on(cluster, symbol) == [owners[symbol]], symbol
        for k in (1, 2):
            through_front, direct = stats(cluster.port, symbol, k), stats(fed.port, symbol, k)
            assert (through_front.status, through_front.json()) == (200, direct.json()), (symbol, k)
        assert stats(cluster.port, symbol, 3).json() == {"detail": "Not enough data points"}


@needs_haproxy
def test_symbols_through_the_front_lists_every_node_s(cluster, fed):
    reply = request(cluster.port, "GET", "/symbols")
    assert reply.status == 200 and "X-Tradestats-Missing-Nodes" not in reply.headers
    listed = reply.json()["symbols"]
    assert [entry["symbol"] for entry in listed] == sorted(SYMBOLS)
    assert {entry["count"] for entry in listed} == {115}


@needs_haproxy
def test_a_node_refuses_a_symbol_it_does_not_own_naming_the_owner(cluster, fed):
    symbol = next(s for s in SYMBOLS if cluster.placement.owner(s) == "node1")
    detail = f"Symbol {symbol} belongs to node node1 ({cluster.placement.url('node1')})"
    for other in ("node2", "node3"):
        reply = post_batch(cluster.node_port(other), symbol, [1.0])
        assert (reply.status, reply.json()) == (421, {"detail": detail})
        reply = stats(cluster.node_port(other), symbol, 1)
        assert (reply.status, reply.json()) == (421, {"detail": detail})
    assert stored_on(cluster, symbol) == ["node1"]


@needs_haproxy
def test_a_body_haproxy_cannot_route_is_refused_elsewhere_never_stored_twice(cluster):
    # HAProxy 2.6's json_query decodes \u00fc as the byte FC, not UTF-8 (Python escapes
    # non-ASCII by default): such a body reaches a node that may not own it, which refuses it
    # naming the owner.
    symbol = "ünroutable"
    owner = cluster.placement.owner(symbol)
    body = json.dumps({"symbol": symbol, "values": [1.0]}).encode()
    assert b"\\u00fc" in body
    replies = [request(cluster.port, "POST", "/add_batch/", body,
                       {"Content-Type": "application/json"}) for _ in NODES]
    for reply in replies:
        assert reply.status in (200, 421), reply.body
        if reply.status == 421:
            assert reply.json()["detail"].startswith(f"Symbol {symbol} belongs to node {owner} ")
    assert stored_on(cluster, symbol) in ([], [owner])
    # The same symbol named in the URL (tradestats.client does) is routed.
    reply = request(cluster.port, "POST", f"/add_batch/?symbol={quote_plus(symbol)}", body,
                    {"Content-Type": "application/json"})
    assert reply.status == 200, reply.body
    assert stored_on(cluster, symbol) == [owner]


@needs_haproxy
def test_a_body_over_the_limit_is_refused_by_haproxy_as_the_node_would(cluster):
    reply = raw_request(cluster.port, b"POST /add_batch/ HTTP/1.1\r\nHost: x\r\nContent-Type: "
                        b"application/json\r\nContent-Length: 524289\r\n\r\n")
    assert (reply.status, reply.json()) == (
        413, {"detail": "Request body is larger than the limit of 524288 bytes"})


def write_until_stopped(port: int, symbol: str, stop: threading.Event, acknowledged: list,
                        refused: list) -> None:
    """Batches of 5 prices through the front, about 50 a second, each retried until
    acknowledged (503 while the symbol moves, 421 from a node that just gave it away); at most
    190 of them (the window of 10^3 keeps them all)."""
    try:
        for batch in range(190):
            values = [float(batch * 5 + i) for i in range(5)]
            while True:
                reply = post_batch(port, symbol, values)
                if reply.status == 200:
                    acknowledged.extend(values)
                    break
                refused.append(reply.status)
                assert reply.status in (421, 503), (reply.status, reply.body)
                time.sleep(0.01)
            if stop.is_set():
                return
            time.sleep(0.02)
    except Exception as error:  # noqa: BLE001 (the test asserts on it)
        refused.append(error)


@needs_haproxy
def test_move_under_load_loses_and_doubles_nothing(cluster, fed):
    symbol = "MOVING"
    source = cluster.placement.owner(symbol)
    target = next(name for name in NODES if name != source)
    acknowledged, refused, stop = [], [], threading.Event()
    writer = threading.Thread(target=write_until_stopped,
                              args=(cluster.port, symbol, stop, acknowledged, refused))
    writer.start()
    try:
        cluster.wait_until(lambda: len(acknowledged) >= 50, "no batch acknowledged", 10)
        done = subprocess.run(cluster_command("move", symbol, "--to", target, "--data-dir",
                                              cluster.directory),
                              capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"from {source} to {target}" in done.stdout
        written = len(acknowledged)
        cluster.wait_until(lambda: len(acknowledged) >= written + 25, "no write after the move", 10)
    finally:
        stop.set()
        writer.join(timeout=30)
    assert not writer.is_alive()
    assert all(isinstance(status, int) for status in refused), refused
    reply = request(cluster.port, "GET", f"/prices/?symbol={symbol}&n=1000")
    assert reply.status == 200 and reply.json()["prices"] == acknowledged
    assert stored_on(cluster, symbol) == [target]
    assert Placement.read(cluster.directory / "placement.json").owner(symbol) == target
    reply = stats(cluster.node_port(source), symbol, 1)
    assert (reply.status, reply.json()["detail"]) == (
        421, f"Symbol {symbol} belongs to node {target} ({cluster.placement.url(target)})")


@needs_haproxy
def test_a_killed_node_answers_503_then_comes_back_with_its_data(cluster, fed):
    victim = "node2"
    mine = [s for s in SYMBOLS if cluster.placement.owner(s) == victim]
    others = [s for s in SYMBOLS if cluster.placement.owner(s) != victim][:5]
    before = {symbol: stats(cluster.port, symbol, 2).json() for symbol in mine}
    pid = cluster.state()["nodes"][victim]["pid"]
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def answers_503() -> bool:
        reply = stats(cluster.port, mine[0], 1)
        return reply.status == 503
    cluster.wait_until(answers_503, "no 503 for the killed node's symbol", timeout=2.5)
    assert time.monotonic() - killed_at < 2.5
    for symbol in mine[:5]:
        reply = stats(cluster.port, symbol, 1)
        assert reply.status == 503 and reply.headers["Retry-After"] == "1"
        assert reply.json() == {
            "detail": "No node is available for this request: retry in a moment"}
        assert post_batch(cluster.port, symbol, [1.0]).status == 503
    for symbol in others:
        assert stats(cluster.port, symbol, 1).status == 200, symbol

    # up restarts it (after --restart-delay 4): the same data, nothing lost.
    cluster.wait_until(lambda: cluster.state()["nodes"][victim]["pid"] != pid, "no restart", 10)
    cluster.wait_until(lambda: stats(cluster.port, mine[0], 1).status == 200, "not back", 20)
    assert {symbol: stats(cluster.port, symbol, 2).json() for symbol in mine} == before
    assert f"{victim} exited (signal SIGKILL)" in cluster.log


@needs_haproxy
def test_up_again_on_the_same_directory_keeps_every_price_and_every_move(cluster, fed):
    def snapshot(port: int) -> dict:
        return {symbol: stats(port, symbol, 2).json() for symbol in SYMBOLS} | {
            "MOVING": request(port, "GET", "/prices/?symbol=MOVING&n=1000").json()}
    placement = Placement.read(cluster.directory / "placement.json")
    assert "MOVING" in placement.overrides  # test_move_under_load's
    before = snapshot(cluster.port)
    stop_and_check(cluster)
    again = Cluster(cluster.directory, "up-again.log")
    try:
        assert Placement.read(cluster.directory / "placement.json") == placement
        assert snapshot(again.port) == before
        assert stored_on(again, "MOVING") == [placement.owner("MOVING")]
    finally:
        stop_and_check(again, signal.SIGINT)  # Ctrl-C
