"""tradestats-cluster without a cluster running: HAProxy's own answers are JSON (fake nodes that
close a connection unanswered, or never answer, and a node that is not there), the
configuration ``haproxy-config`` prints is one HAProxy accepts, and ``up`` without HAProxy says
how to install it. Needs haproxy: skipped without it, except under CI (see test_cluster.py).
"""
from __future__ import annotations

import http.client
import socket
import subprocess
import threading
import time

from conftest import free_port
from test_cluster import HAPROXY, cluster_command, needs_haproxy, raw_request, request, stats

from tradestats.cluster import cli, local
from tradestats.cluster.haproxy import haproxy_config
from tradestats.cluster.placement import Placement

# -- HAProxy's own answers, against fake nodes ----------------------------------------------------

class FakeNode:
    """Answers /health, then does to every other request what ``behaviour`` says: close the
    connection unanswered (502), or never answer (504)."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(connection,), daemon=True).start()

    def answer(self, connection: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = connection.recv(4096)
            if not chunk:
                break
            head += chunk
        if head.startswith(b"GET /health"):
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                               b"Connection: close\r\n\r\nok")
            connection.close()
        elif self.behaviour == "close":
            connection.close()
        else:
            self.held.append(connection)  # silent until HAProxy gives up

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


@needs_haproxy
def test_haproxy_s_own_errors_are_json(tmp_path):
    fakes = {"closing": FakeNode("close"), "silent": FakeNode("silent")}
    absent = free_port()
    placement = Placement([("closing", f"http://127.0.0.1:{fakes['closing'].port}"),
                           ("silent", f"http://127.0.0.1:{fakes['silent'].port}"),
                           ("absent", f"http://127.0.0.1:{absent}")])
    placement.write(tmp_path / "placement.json")
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(placement, bind=f"127.0.0.1:{port}", maps_dir=tmp_path,
                                     timeout_server="1s", timeout_request="1s"))
    symbol_of = {name: next(f"T{i}" for i in range(1000) if placement.owner(f"T{i}") == name)
                 for name in placement.names}
    with open(tmp_path / "haproxy.log", "wb") as log:
        proxy = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=log,
                                 stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                request(port, "GET", "/health")
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.8)  # the absent node's checks mark it DOWN
        expected = {"closing": (502, "The node owning this request gave no valid answer"),
                    "silent": (504, "The node owning this request did not answer in time"),
                    "absent": (503, "No node is available for this request: retry in a moment")}
        for name, (status, detail) in expected.items():
            reply = stats(port, symbol_of[name], 1)
            assert (reply.status, reply.json()) == (status, {"detail": detail}), name
            assert reply.headers["Retry-After"] == "1"
        # A head HAProxy's HTTP/1 parser refuses is answered before any configuration applies:
        # 400 with HAProxy's built-in HTML body (granian answers such a head with an empty one).
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n")
            response = http.client.HTTPResponse(connection)
            response.begin()
            assert response.status == 400
        # A body to be routed by its content that does not arrive in time.
        reply = raw_request(port, b"POST /add_batch/ HTTP/1.1\r\nHost: x\r\nContent-Type: "
                            b"application/json\r\nContent-Length: 100\r\n\r\n{\"symbol\"")
        assert (reply.status, reply.json()) == (
            408, {"detail": "The request did not arrive in time"})
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        for fake in fakes.values():
            fake.close()


# -- the other subcommands -----------------------------------------------------------------------

@needs_haproxy
def test_haproxy_config_prints_a_configuration_haproxy_accepts(tmp_path):
    done = subprocess.run(cluster_command(
        "haproxy-config", "--node", "a=http://10.0.0.1:8000", "--node", "b=http://10.0.0.2:8000",
        "--maps-dir", tmp_path, "--user", "", "--write-maps"),
        capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "server a 10.0.0.1:8000" in done.stdout and "server b 10.0.0.2:8000" in done.stdout
    assert (tmp_path / "nodes.map").read_text() == "0 a\n1 b\n"
    assert Placement.read(tmp_path / "placement.json").names == ["a", "b"]
    (tmp_path / "haproxy.cfg").write_text(done.stdout)
    checked = subprocess.run([HAPROXY, "-c", "-f", str(tmp_path / "haproxy.cfg")],
                             capture_output=True, text=True, timeout=30, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_up_without_haproxy_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(local, "find_haproxy", lambda: None)
    status = cli.main(["up", "--nodes", "2", "--port", "9000", "--data-dir", str(tmp_path / "c")])
    assert status == 2
    assert capsys.readouterr().err.strip() == \
        "tradestats-cluster: haproxy is not installed (apt-get install haproxy)"
    assert not (tmp_path / "c").exists()
