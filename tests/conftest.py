"""Fixtures that run the real ``tradestats-serve`` on 127.0.0.1, once per server it offers."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tradestats.servers.gunicorn import meinheld_importable

START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0

#: The shared server's limits: small windows fill fast; symbols are plenty because every test
#: uses fresh ones; a small body limit keeps the over-limit tests cheap.
SHARED_SERVER_ARGS = ("--max-k", "3", "--max-symbols", "1000", "--max-body-bytes", "100000")

#: What serves HTTP, by the flags that choose it. granian is the default and the only one held to
#: the hostile-client tests; gunicorn with meinheld is the design's first choice.
SERVER_KIND_ARGS = {
    "granian": ("--server", "granian"),
    "meinheld": ("--server", "gunicorn", "--worker-class", "meinheld"),
    "gthread": ("--server", "gunicorn", "--worker-class", "gthread"),
}
SERVER_KINDS = [
    pytest.param("granian", id="granian"),
    pytest.param(
        "meinheld",
        id="meinheld",
        marks=pytest.mark.skipif(not meinheld_importable(), reason="meinheld is not installed"),
    ),
]


def serve_command() -> list[str]:
    """The installed console script when present, else the module: both run server.main."""
    script = Path(sys.executable).with_name("tradestats-serve")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tradestats"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Reply:
    """One HTTP response, read completely."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    def json(self):
        def reject(token: str) -> None:
            raise AssertionError(f"response body has the non-JSON token {token}")

        assert self.headers.get("Content-Type", "").startswith("application/json"), self.body
        return json.loads(self.body, parse_constant=reject)


class ServerProcess:
    """A ``tradestats-serve`` subprocess; ``stop`` returns its exit status."""

    def __init__(
        self, kind: str | None, args: tuple[str, ...], log_path: Path, env=None,
        port: int | None = None, preexec_fn=None,
    ) -> None:
        """``kind`` (a key of SERVER_KIND_ARGS) None leaves the choice to the server. Unless
        ``args`` name one, the server keeps its data in a directory of its own beside its log
        (``data_dir``)."""
        self.kind = kind
        self.port = port or free_port()
        self.log_path = log_path
        self.data_dir = log_path.parent / f"data-{log_path.stem}"
        if "--data-dir" not in args and "--ephemeral" not in args:
            args = (*args, "--data-dir", str(self.data_dir))
        self.workers = int(args[args.index("--workers") + 1]) if "--workers" in args \
            else os.cpu_count()
        command = serve_command() + ["--host", "127.0.0.1", "--port", str(self.port), *args]
        if kind is not None:
            command += SERVER_KIND_ARGS[kind]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec_fn
            )
        self._wait_until_healthy()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def connection(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None, headers=None) -> Reply:
        connection = self.connection()
        try:
            connection.request(method, path, body=body, headers=headers or {})
            return Reply(connection.getresponse())
        finally:
            connection.close()

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                pytest.fail(f"server ignored signal {signum} for {STOP_TIMEOUT}s:\n{self.log}")
        return self.process.returncode

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def all_workers_up(self) -> bool:
        """Every worker forked (the first one answering /health does not mean the others are)."""
        return len(self.worker_pids()) >= self.workers

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode} on start:\n{self.log}")
            try:
                if self.request("GET", "/health").status == 200 and self.all_workers_up():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"server did not answer /health within {START_TIMEOUT}s:\n{self.log}")


def stop_cleanly(server: ServerProcess) -> None:
    status = server.stop()
    assert status == 0, f"server exited with {status}:\n{server.log}"


@pytest.fixture(scope="session", params=SERVER_KINDS)
def server_kind(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def server(server_kind, tmp_path_factory) -> Iterator[ServerProcess]:
    """One shared server per server kind (see SHARED_SERVER_ARGS)."""
    log_path = tmp_path_factory.mktemp("server") / "serve.log"
    running = ServerProcess(server_kind, SHARED_SERVER_ARGS, log_path)
    yield running
    stop_cleanly(running)


@pytest.fixture
def start_server(server_kind, tmp_path) -> Iterator[Callable[..., ServerProcess]]:
    """Start a private server with extra flags; whatever is still running is stopped afterwards."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        running = ServerProcess(server_kind, args, tmp_path / f"serve-{len(started)}.log")
        started.append(running)
        return running

    yield start
    for running in started:
        if running.process.poll() is None:
            stop_cleanly(running)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (needs root, as CI has)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)
