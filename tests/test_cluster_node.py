"""A cluster node (tradestats-serve --cluster FILE --node NAME) without the router in front:
what it refuses (421 naming the owner, never a second copy), GET /symbols of the whole cluster,
and tradestats.cluster.move under a writer that never stops. (The router, `tradestats-cluster
up`, node kills: tests/test_cluster.py.)"""
from __future__ import annotations

import json
import threading
import time
import zlib
from pathlib import Path

import pytest

from conftest import ServerProcess, free_port, stop_cleanly
from tradestats import Store
from tradestats.client import Client
from tradestats.cluster.move import move_symbol
from tradestats.cluster.placement import Placement

NODES = ("node1", "node2")


def symbol_of(node_index: int, tag: str) -> str:
    """A symbol the rule (crc32 % 2) gives to NODES[node_index]."""
    for n in range(1000):
        symbol = f"{tag}{n}"
        if zlib.crc32(symbol.encode()) % len(NODES) == node_index:
            return symbol
    raise AssertionError("unreachable")


@pytest.fixture
def cluster(tmp_path):
    ports = {name: free_port() for name in NODES}
    placement = Placement([(name, f"http://127.0.0.1:{ports[name]}") for name in NODES])
    placement.write(tmp_path / "placement.json")
    nodes = {}
    try:
        for name in NODES:
            nodes[name] = ServerProcess(
                None, ("--workers", "2", "--max-k", "3", "--max-symbols", "20",
                       "--data-dir", str(tmp_path / name),
                       "--cluster", str(tmp_path / "placement.json"), "--node", name),
                tmp_path / f"{name}.log", port=ports[name])
        yield tmp_path, nodes
    finally:
        for node in nodes.values():
            if node.process.poll() is None:
                stop_cleanly(node)


def post(node, symbol: str, values, query: str | None = None):
    path = "/add_batch/" + (f"?symbol={query}" if query is not None else "")
    return node.request("POST", path, json.dumps({"symbol": symbol, "values": values}).encode())


def test_a_node_refuses_what_another_owns_and_serves_its_own(cluster):
    root, nodes = cluster
    mine, theirs = symbol_of(0, "A"), symbol_of(1, "B")
    assert post(nodes["node1"], mine, list(range(10))).status == 200
    refused = post(nodes["node1"], theirs, [1.0])
    assert refused.status == 421
    assert refused.json() == {"detail": f"Symbol {theirs} belongs to node node2 "
                                        f"(http://127.0.0.1:{nodes['node2'].port})"}
    for method, path in (("GET", f"/stats/?symbol={theirs}&k=1"),
                         ("GET", f"/prices/?symbol={theirs}&n=1"),
                         ("GET", f"/envelope/?symbol={theirs}&k=1"),
                         ("DELETE", f"/symbols/?symbol={theirs}")):
        assert nodes["node1"].request(method, path).status == 421, path
    assert not any((root / "node1" / "symbols").glob(f"{theirs}*"))   # no second copy
    assert nodes["node1"].request("GET", f"/stats/?symbol={mine}&k=1").json()["last"] == 9.0
    differs = post(nodes["node1"], mine, [1.0], query=symbol_of(0, "C"))
    assert differs.status == 400 and "query" in differs.json()["detail"]


def test_symbols_lists_every_node_and_says_which_did_not_answer(cluster):
    _, nodes = cluster
    expected = []
    for index, name in enumerate(NODES):
        for tag in "XYZ":
            symbol = symbol_of(index, tag)
            assert post(nodes[name], symbol, [float(index)]).status == 200
            expected.append({"symbol": symbol, "count": 1, "last": float(index)})
    expected.sort(key=lambda row: row["symbol"])
    for name in NODES:
        reply = nodes[name].request("GET", "/symbols")
        assert reply.json() == {"symbols": expected}
        assert "X-Tradestats-Missing-Nodes" not in reply.headers
    local = nodes["node1"].request("GET", "/symbols?local=1").json()["symbols"]
    assert local == [row for row in expected if row["last"] == 0.0]
    nodes["node2"].process.kill()
    nodes["node2"].process.wait()
    reply = nodes["node1"].request("GET", "/symbols")
    assert reply.json()["symbols"] == local
    assert reply.headers["X-Tradestats-Missing-Nodes"] == "node2"


def test_a_move_under_a_writer_loses_and_doubles_nothing(cluster):
    """A writer posts numbered batches to S without pause, following 421 to the owner it names
    and retrying a 503 after a pause, while S moves node1 -> node2 -> node1. Afterwards S holds
    exactly the acknowledged batches, in order, on one node only."""
    root, nodes = cluster
    symbol = symbol_of(0, "S")
    urls = {name: f"http://127.0.0.1:{node.port}" for name, node in nodes.items()}
    acknowledged, refusals, stop = [], {"421": 0, "503": 0}, threading.Event()

    def write() -> None:
        owner = "node1"
        batch = 0
        while not stop.is_set():
            values = [batch * 1000.0 + i for i in range(1 + batch % 7)]
            reply = post(nodes[owner], symbol, values)
            if reply.status == 200:
                acknowledged.append(values)
                batch += 1
            elif reply.status == 421:
                refusals["421"] += 1
                owner = reply.json()["detail"].split("belongs to node ")[1].split(" ")[0]
            elif reply.status == 503:
                refusals["503"] += 1
                assert reply.headers["Retry-After"]
                time.sleep(0.01)
            else:
                raise AssertionError((reply.status, reply.body))

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for target in ("node2", "node1", "node2"):
            time.sleep(0.4)
            assert "moved" in move_symbol(root, symbol, target)
        time.sleep(0.4)
    finally:
        stop.set()
        writer.join(timeout=30)
    assert refusals["421"] >= 1 and len(acknowledged) > 20
    expected = [value for values in acknowledged for value in values]
    final = Store(max_k=3, path=root / "node2")
    assert final.prices(symbol, 10_000).tolist() == expected[-1000:]
    assert len(final[symbol]) == len(expected)
    assert symbol not in Store(max_k=3, path=root / "node1")
    placement = Placement.read(root / "placement.json")
    assert placement.owner(symbol) == "node2" and not placement.moving
    with Client(urls["node2"]) as client:   # the client sends ?symbol= and is served
        client.add(symbol, [1.5])
        assert client.stats(symbol, 1).last == 1.5


def test_a_hand_over_keeps_every_batch_a_writer_was_told_was_stored(tmp_path):
    """Below the web layer's freeze: a writer adds to S without pause while S's file is handed
    to another store (with a slow copy). Every add either lands in the copy or fails; none is
    acknowledged by the source after its copy was taken (it would be lost)."""
    from tradestats.admin import copy_sparse
    from tradestats.cluster.placement import SymbolMoving
    from tradestats.storage import SymbolDirectory

    source = Store(max_k=3, path=tmp_path / "a")
    Store(max_k=3, path=tmp_path / "b")
    source.add("S", [0.0])
    acknowledged, outcome = [[0.0]], []

    def refuse(symbol):
        raise SymbolMoving(symbol, "b")

    source.admit = refuse   # as a node's placement would, once the move began

    def write() -> None:
        batch = 1
        while True:
            values = [batch * 10.0 + i for i in range(3)]
            try:
                source.add("S", values)
            except SymbolMoving:
                outcome.append("refused")
                return
            acknowledged.append(values)
            batch += 1

    def slow_copy(origin, target):
        time.sleep(0.05)   # writers keep trying meanwhile
        copy_sparse(origin, target)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.05)
    giver = SymbolDirectory(tmp_path / "a", max_k=3, max_batch=None, sync=False)
    taker = SymbolDirectory(tmp_path / "b", max_k=3, max_batch=None, sync=False)
    giver.hand_over("S", lambda path: taker.take_in("S", Path(path), slow_copy))
    writer.join(timeout=30)
    assert outcome == ["refused"] and len(acknowledged) > 10
    expected = [value for values in acknowledged for value in values]
    moved = Store(max_k=3, path=tmp_path / "b")
    assert len(moved["S"]) == len(expected)
    assert moved.prices("S", 1000).tolist() == expected[-1000:]
    assert "S" not in Store(max_k=3, path=tmp_path / "a")


def test_a_broken_placement_file_keeps_the_last_good_one(tmp_path, caplog):
    from tradestats.cluster.placement import PlacementFile, SymbolElsewhere

    path = tmp_path / "placement.json"
    Placement([("node1", "http://a"), ("node2", "http://b")]).write(path)
    view = PlacementFile(path, "node1")
    mine, theirs = symbol_of(0, "M"), symbol_of(1, "T")
    for broken in (b"{not json", b'{"nodes": [["node2", "http://b"]]}'):
        path.write_bytes(broken)
        assert view.check(mine, write=True) is False       # as before
        with pytest.raises(SymbolElsewhere):
            view.check(theirs, write=True)
    assert "keeping the placement read before" in caplog.text
    Placement([("node1", "http://a"), ("node2", "http://b")], {theirs: "node1"}).write(path)
    assert view.check(theirs, write=True) is False         # a good file is read again
    with pytest.raises(OSError):   # at start there is no good one to keep
        PlacementFile(tmp_path / "missing.json", "node1")
    with pytest.raises(ValueError):
        PlacementFile(path, "node9")
