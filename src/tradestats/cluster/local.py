"""``tradestats-cluster up``: N nodes and HAProxy on this machine, supervised in the foreground.

Everything lives in one directory DIR: ``placement.json`` and the maps beside it (kept across
restarts, with their overrides), ``haproxy.cfg``, ``haproxy.sock`` (the runtime API that
``move`` uses), ``logs/`` (one file per process), each node's data in ``DIR/<node>`` and
``cluster.json`` (what runs, with its pids, while it runs).
"""
from __future__ import annotations

import argparse
import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tradestats.cluster.haproxy import haproxy_config, server_states
from tradestats.cluster.placement import Placement, write_atomically

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0  # the nodes' default --graceful-timeout (5 s), and some
POLL_SECONDS = 0.2
#: A process that dies sooner than this after its start is restarted after a growing delay
#: (a bad flag, a busy port) rather than at once, forever.
QUICK_DEATH_SECONDS = 3.0
MAX_RESTART_DELAY = 10.0
PR_SET_PDEATHSIG = 1


class Stopping(Exception):
    """SIGTERM or SIGINT arrived."""


@dataclass
class Child:
    """One supervised process: a node or HAProxy."""

    name: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float = 0.0
    extra: dict = field(default_factory=dict)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL,
                                            preexec_fn=detach)  # noqa: PLW1509 (one thread)
        self.started_at = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def detach() -> None:
    """In the child: a process group of its own, so that a terminal's Ctrl-C reaches only the
    supervisor, which stops the children in order (and does not restart them meanwhile); and
    SIGTERM when the supervisor dies, even by SIGKILL, so that nothing is left behind."""
    os.setpgrp()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: stop() still stops them


def find_haproxy() -> str | None:
    # A user's PATH often lacks the sbin directories the package installs it in.
    places = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
    return shutil.which("haproxy") or next(
        (path for path in places if os.access(path, os.X_OK)), None)


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen there now (connections of a stopped one in TIME_WAIT do
    not count: servers set SO_REUSEADDR, and so does this probe)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def cluster_placement(data_dir: Path, nodes: int | None, port: int) -> Placement:
    """DIR/placement.json as it is (a restarted cluster keeps its overrides), or a new one with
    node1..nodeN on the ports after HAProxy's."""
    path = data_dir / "placement.json"
    if path.exists():
        placement = Placement.read(path)
        if nodes is not None and nodes != len(placement.nodes):
            raise ValueError(
                f"{path} has {len(placement.nodes)} nodes, not {nodes}: a node count changes "
                "most symbols' owner (README, \"Cluster\": adding a node)")
        return placement
    if nodes is None:
        raise ValueError("--nodes is needed to create a cluster")
    placement = Placement([(f"node{i}", f"http://127.0.0.1:{port + i}")
                           for i in range(1, nodes + 1)])
    placement.write(path)
    return placement


def node_command(placement_path: Path, name: str, url: str, data_dir: Path,
                 args: argparse.Namespace) -> list[str]:
    from tradestats.cluster.cli import NODE_OPTIONS
    command = [sys.executable, "-m", "tradestats", "--host", urlsplit(url).hostname,
               "--port", str(urlsplit(url).port), "--data-dir", str(data_dir / name),
               "--cluster", str(placement_path), "--node", name,
               "--max-body-bytes", str(args.max_body_bytes)]
    for flag in NODE_OPTIONS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            command += [flag, value]
    return command


def get_status(url: str, path: str = "/health") -> int:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def wait_until(ready, child: Child, what: str) -> None:
    """Until ready() is true; ValueError if the child exits or it takes too long."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not child.alive:
            raise ValueError(f"{what} exited with status {child.process.returncode} on start; "
                             f"the end of {child.log_path}:\n{child.log_tail()}")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise ValueError(f"{what} was not ready within {START_TIMEOUT:.0f} s; the end of "
                     f"{child.log_path}:\n{child.log_tail()}")


class LocalCluster:
    def __init__(self, args: argparse.Namespace, haproxy: str) -> None:
        self.args = args
        self.data_dir = args.data_dir.absolute()
        self.placement_path = self.data_dir / "placement.json"
        self.config_path = self.data_dir / "haproxy.cfg"
        self.stats_socket = self.data_dir / "haproxy.sock"
        self.front = f"http://{args.host}:{args.port}"
        self.haproxy = haproxy
        self.nodes: list[Child] = []
        self.proxy: Child | None = None

    # -- start --------------------------------------------------------------------------------

    def prepare(self) -> Placement:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        placement = cluster_placement(self.data_dir, self.args.nodes, self.args.port)
        busy = [f"{host}:{port}" for host, port in
                [(self.args.host, self.args.port),
                 *((urlsplit(url).hostname, urlsplit(url).port) for _, url in placement.nodes)]
                if not port_is_free(host, port)]
        if busy:
            raise ValueError(f"in use already: {', '.join(busy)}")
        self.config_path.write_text(haproxy_config(
            placement, bind=f"{self.args.host}:{self.args.port}", maps_dir=self.data_dir,
            stats_socket=self.stats_socket, max_body_bytes=self.args.max_body_bytes))
        checked = subprocess.run([self.haproxy, "-c", "-q", "-f", str(self.config_path)],
                                 capture_output=True, text=True, timeout=30, check=False)
        if checked.returncode != 0:
            raise ValueError(f"haproxy refuses {self.config_path}:\n"
                             f"{checked.stdout}{checked.stderr}")
        return placement

    def start(self, placement: Placement) -> None:
        logs = self.data_dir / "logs"
        for name, url in placement.nodes:
            command = node_command(self.placement_path, name, url, self.data_dir, self.args)
            node = Child(name, command, logs / f"{name}.log",
                         extra={"url": url, "data_dir": str(self.data_dir / name)})
            node.start()
            self.nodes.append(node)
        for node in self.nodes:  # started together, waited for in turn
            wait_until(lambda url=node.extra["url"]: get_status(url) == 200, node, node.name)
        self.proxy = Child("haproxy", [self.haproxy, "-W", "-db", "-f", str(self.config_path)],
                           logs / "haproxy.log")
        self.proxy.start()
        wait_until(self.every_node_up, self.proxy, "haproxy")
        self.write_state()

    def every_node_up(self) -> bool:
        states = server_states(self.stats_socket)
        return bool(states) and all(state == "UP" for state in states.values()) \
            and get_status(self.front) == 200

    def announce(self) -> None:
        width = max(len(node.name) for node in self.nodes)
        for node in self.nodes:
            print(f"{node.name:<{width}}  {node.extra['url']}  {node.extra['data_dir']}")
        print(f"{'front':<{width}}  {self.front}  (HAProxy: {self.config_path}; logs in "
              f"{self.data_dir / 'logs'})")
        print("Ctrl-C stops the cluster.", flush=True)

    def write_state(self) -> None:
        """DIR/cluster.json: what runs now, for the other subcommands and for people."""
        proxy = self.proxy.process if self.proxy else None
        state = {"supervisor": os.getpid(), "front": self.front,
                 "haproxy": {"pid": proxy.pid if proxy else None, "config": str(self.config_path),
                             "stats_socket": str(self.stats_socket)},
                 "nodes": {node.name: {"pid": node.process.pid if node.process else None,
                                       **node.extra, "log": str(node.log_path)}
                           for node in self.nodes}}
        write_atomically(self.data_dir / "cluster.json",
                         json.dumps(state, indent=1).encode() + b"\n")

    # -- supervise ----------------------------------------------------------------------------

    def supervise(self) -> None:
        """Restart whatever dies, until a stop signal."""
        while True:
            for child in [*self.nodes, self.proxy]:
                if not child.alive:
                    self.restart(child)
            time.sleep(POLL_SECONDS)

    def restart(self, child: Child) -> None:
        now = time.monotonic()
        if child.restart_at == 0.0:  # just found dead
            quick = now - child.started_at < QUICK_DEATH_SECONDS
            child.quick_deaths = child.quick_deaths + 1 if quick else 0
            delay = self.args.restart_delay + (
                min(MAX_RESTART_DELAY, 2.0 ** child.quick_deaths - 1) if quick else 0.0)
            child.restart_at = now + delay
            print(f"tradestats-cluster: {child.name} exited "
                  f"({describe(child.process.returncode)}); restarting it in {delay:g} s",
                  file=sys.stderr, flush=True)
        if now >= child.restart_at:
            child.restart_at = 0.0
            child.start()
            self.write_state()
            print(f"tradestats-cluster: {child.name} started again (pid {child.process.pid})",
                  file=sys.stderr, flush=True)

    # -- stop ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """HAProxy first (no new requests), then the nodes: SIGTERM, SIGKILL after a while."""
        for group in ([self.proxy] if self.proxy else [], self.nodes):
            running = [child for child in group if child.alive]
            for child in running:
                child.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            for child in running:
                try:
                    child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait()
        # Nothing answers there now: `move` must not find a socket to talk to.
        for stale in (self.data_dir / "cluster.json", self.stats_socket):
            stale.unlink(missing_ok=True)


def describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


def raise_stopping(signum, frame) -> None:
    raise Stopping()


def run_local_cluster(args: argparse.Namespace) -> int:
    haproxy = find_haproxy()
    if haproxy is None:
        print("tradestats-cluster: haproxy is not installed (apt-get install haproxy)",
              file=sys.stderr)
        return 2
    cluster = LocalCluster(args, haproxy)
    try:
        placement = cluster.prepare()
    except (OSError, ValueError) as error:
        print(f"tradestats-cluster: {error}", file=sys.stderr)
        return 2
    previous = {signum: signal.signal(signum, raise_stopping)
                for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        cluster.start(placement)
        cluster.announce()
        cluster.supervise()
    except Stopping:
        return 0
    except ValueError as error:  # a process did not start
        print(f"tradestats-cluster: {error}", file=sys.stderr)
        return 1
    finally:
        for signum in previous:  # a second Ctrl-C must not interrupt the stop
            signal.signal(signum, signal.SIG_IGN)
        cluster.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
