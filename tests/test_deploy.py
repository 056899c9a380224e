"""deploy/: the systemd unit, its environment file and the reverse-proxy examples, checked.

The unit passes ``systemd-analyze verify`` with no message at all (an unknown key or a bad value
is only a message there), runs ``tradestats-serve`` with real flags, and its environment file
sets real variables. Then the service is run as the unit would run it (its ExecStart with %S and
%d filled in, the environment file's variables, a key file as its credential, SIGTERM to stop)
behind nginx and HAProxy started for real on 127.0.0.1 with deploy/'s files (only the ports
changed), and the contract's answers come through each. Every process is stopped, each wait is
bounded.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import free_port, serve_command

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "tradestats.service"
ENV_FILE = DEPLOY / "tradestats.env"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


def tool(name: str) -> str:
    """The program's path; outside CI a missing one skips (.ci/run installs them)."""
    path = shutil.which(name) or next(
        (str(Path(d, name)) for d in ("/usr/sbin", "/sbin") if Path(d, name).exists()), None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (.ci/run installs it)")
        pytest.skip(f"{name} is not installed")
    return path


def unit_entries() -> list[tuple[str, str, str]]:
    """(section, key, value) for each assignment of the unit, in order."""
    entries, section = [], None
    for number, line in enumerate(UNIT.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"line {number}: {line}"
            section = line[1:-1]
            continue
        assert section is not None and "=" in line and not line.endswith("\\"), f"line {number}: {line}"
        key, value = line.split("=", 1)
        entries.append((section, key.strip(), value.strip()))
    return entries


def unit_value(key: str, section: str = "Service") -> str:
    values = [value for where, name, value in unit_entries() if (where, name) == (section, key)]
    assert len(values) == 1, f"{section}/{key}: {values}"
    return values[0]


def environment_file() -> dict[str, str]:
    """The file as systemd reads it (KEY=VALUE lines, # and ; comments on lines of their own)."""
    settings = {}
    for line in ENV_FILE.read_text().splitlines():
        line = line.strip()
        if line and line[0] not in "#;":
            key, value = line.split("=", 1)
            settings[key.strip()] = value.strip()
    return settings


def serve_help() -> str:
    done = subprocess.run(serve_command() + ["--help"], capture_output=True, text=True, timeout=30, check=False,
                          env={k: v for k, v in os.environ.items() if not k.startswith("TRADESTATS_")})
    assert done.returncode == 0, done.stderr
    return done.stdout


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min)?", text)
    assert match, text
    return float(match[1]) * (60 if match[2] == "min" else 1)


def exec_start(state_root: Path, credentials: Path) -> list[str]:
    """The unit's ExecStart as systemd would run it here: %S and %d filled in, and the program
    the one installed with these tests."""
    command = shlex.split(unit_value("ExecStart"))
    filled = [word.replace("%S", str(state_root)).replace("%d", str(credentials))
              for word in command[1:]]
    assert not [word for word in filled if "%" in word or "$" in word], filled
    return serve_command() + filled


def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = tool("systemd-analyze")
    program = serve_command()
    if len(program) > 1:
        pytest.skip("the tradestats-serve script is not installed beside this python")
    # verify checks that ExecStart's program exists: the one installed here stands in for the venv's.
    text = UNIT.read_text()
    assert text.count("/opt/tradestats/venv/bin/tradestats-serve") == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace("/opt/tradestats/venv/bin/tradestats-serve", program[0]))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def test_the_unit_runs_tradestats_serve_with_real_flags_hardened():
    command = shlex.split(unit_value("ExecStart"))
    assert command[0] == "/opt/tradestats/venv/bin/tradestats-serve"
    real_flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", serve_help()))
    flags = [word for word in command[1:] if word.startswith("-")]
    assert flags and set(flags) <= real_flags, set(flags) - real_flags
    # The data in the state directory, the key from the credential, settings from the file.
    state = unit_value("StateDirectory")
    assert command[command.index("--data-dir") + 1] == f"%S/{state}"
    assert unit_value("ReadWritePaths") == f"/var/lib/{state}"
    credential, source = unit_value("LoadCredential").split(":", 1)
    assert command[command.index("--api-key-file") + 1] == f"%d/{credential}"
    assert source.startswith("/etc/tradestats/")
    assert unit_value("EnvironmentFile") == "/etc/tradestats/" + ENV_FILE.name
    for key, expected in {"User": "tradestats", "Restart": "on-failure", "KillSignal": "SIGTERM",
                          "KillMode": "mixed", "RestartPreventExitStatus": "2",
                          "NoNewPrivileges": "yes",
                          "ProtectSystem": "strict", "PrivateTmp": "yes", "ProtectHome": "yes",
                          "PrivateDevices": "yes", "CapabilityBoundingSet": ""}.items():
        assert unit_value(key) == expected, key
    # The server's own grace period ends before systemd kills what is left.
    graceful = float(environment_file().get("TRADESTATS_GRACEFUL_TIMEOUT", "5"))
    assert seconds(unit_value("TimeoutStopSec")) >= graceful + 5
    assert unit_value("WantedBy", "Install") == "multi-user.target"


def test_the_environment_file_sets_real_variables_only():
    variables = set(re.findall(r"TRADESTATS_[A-Z_]+", serve_help()))
    settings = environment_file()
    assert settings and set(settings) <= variables, set(settings) - variables
    commented = set(re.findall(r"^#\s*(TRADESTATS_[A-Z_]+)=", ENV_FILE.read_text(), re.MULTILINE))
    assert commented <= variables, commented - variables
    # The unit passes these itself, as flags: the file must not pretend to set them.
    assert not {"TRADESTATS_DATA_DIR", "TRADESTATS_API_KEY", "TRADESTATS_API_KEY_FILE"} & set(settings)
    assert settings["TRADESTATS_HOST"] == "127.0.0.1"


class Process:
    """A subprocess with its output in a file; stop() signals it and waits, bounded."""

    def __init__(self, command: list[str], log: Path, **options) -> None:
        self.log_path = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                            **options)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"ignored signal {signum} for {timeout} s:\n{self.log}")
        return self.process.returncode


def request(port: int, method: str, path: str, body: bytes | None = None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def announce_body(port: int, length: int, headers: dict):
    """A POST /add_batch/ head announcing a body of ``length`` bytes, and no body: a limit is
    enforced from Content-Length, before any body is read (sending it would race the proxy's
    close after its answer)."""
    head = "".join(f"{name}: {value}\r\n" for name, value in
                   {"Host": "localhost", "Content-Length": length, **headers}.items())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(f"POST /add_batch/ HTTP/1.1\r\n{head}\r\n".encode())
        response = http.client.HTTPResponse(connection)
        response.begin()
        return response.status, response.headers, response.read()


def wait_healthy(port: int, process: Process, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert process.process.poll() is None, f"{what} exited {process.process.returncode}:\n{process.log}"
        try:
            if request(port, "GET", "/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} did not answer /health within {START_TIMEOUT} s:\n{process.log}")


@pytest.fixture
def service(tmp_path):
    """tradestats-serve as the unit runs it; yields (port, API key)."""
    state_root, credentials = tmp_path / "state", tmp_path / "credentials"
    (state_root / unit_value("StateDirectory")).mkdir(parents=True)
    credentials.mkdir()
    key = secrets.token_hex(16)
    credential = unit_value("LoadCredential").split(":", 1)[0]
    (credentials / credential).write_text(key + "\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADESTATS_")}
    env.update(environment_file(), TRADESTATS_PORT=str(port))
    server = Process(exec_start(state_root, credentials), tmp_path / "serve.log", env=env,
                     cwd=state_root / unit_value("StateDirectory"))
    try:
        wait_healthy(port, server, "tradestats-serve")
        yield port, key
    finally:
        status = server.stop(getattr(signal, unit_value("KillSignal")),
                             seconds(unit_value("TimeoutStopSec")))
    assert status == 0, f"tradestats-serve exited {status} on SIGTERM:\n{server.log}"
    assert list((state_root / unit_value("StateDirectory")).iterdir()), "no data written"


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} is not in the file exactly once"
    return text.replace(old, new)


def start_nginx(directory: Path, port: int, upstream: int) -> Process:
    site = (DEPLOY / "nginx.conf").read_text()
    site = replace_once(site, "server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream};")
    site = replace_once(site, "listen 80;", f"listen 127.0.0.1:{port};")
    (directory / "tradestats.conf").write_text(site)
    # What /etc/nginx/nginx.conf is around conf.d/, with every path in the test's directory.
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers may then read the temp files
    temp = "".join(f"    {kind}_temp_path {directory}/{kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (directory / "nginx.conf").write_text(
        f"{user}worker_processes 1;\ndaemon off;\npid {directory}/nginx.pid;\n"
        f"error_log {directory}/error.log info;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n    access_log {directory}/access.log;\n{temp}"
        f"    include {directory}/tradestats.conf;\n}}\n")
    nginx = tool("nginx")
    command = [nginx, "-e", str(directory / "error.log"), "-p", str(directory),
               "-c", str(directory / "nginx.conf")]
    checked = subprocess.run(command + ["-t"], capture_output=True, text=True, timeout=30,
                             check=False)
    assert checked.returncode == 0, checked.stderr
    return Process(command, directory / "nginx.out")


def start_haproxy(directory: Path, port: int, upstream: int) -> Process:
    config = (DEPLOY / "haproxy.cfg").read_text()
    config = replace_once(config, "bind :80\n", f"bind 127.0.0.1:{port}\n")
    config = replace_once(config, "server tradestats1 127.0.0.1:8000 ",
                          f"server tradestats1 127.0.0.1:{upstream} ")
    if os.geteuid() != 0 or not Path("/var/lib/haproxy").is_dir():
        # Not root: no user to drop to, no jail to enter; the rest as it is.
        config = re.sub(r"^\s*(user|group|chroot)\s.*\n", "", config, flags=re.MULTILINE)
    (directory / "haproxy.cfg").write_text(config)
    haproxy = tool("haproxy")
    checked = subprocess.run([haproxy, "-c", "-f", str(directory / "haproxy.cfg")],
                             capture_output=True, text=True, timeout=30, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return Process([haproxy, "-db", "-f", str(directory / "haproxy.cfg")], directory / "haproxy.out")


@pytest.mark.parametrize("proxy", ["nginx", "haproxy"])
def test_the_contract_through_the_proxy(proxy, service, tmp_path):
    upstream, key = service
    directory = tmp_path / proxy
    directory.mkdir()
    port = free_port()
    running = {"nginx": start_nginx, "haproxy": start_haproxy}[proxy](directory, port, upstream)
    try:
        wait_healthy(port, running, proxy)
        batch = json.dumps({"symbol": "AAPL", "values": list(range(150, 160))}).encode()
        json_type = {"Content-Type": "application/json"}

        status, headers, body = request(port, "POST", "/add_batch/", batch, json_type)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), body
        assert "API key" in json.loads(body)["detail"]

        authorized = {**json_type, "Authorization": f"Bearer {key}"}
        status, _, body = request(port, "POST", "/add_batch/", batch, authorized)
        assert (status, json.loads(body)) == (200, {"message": "Batch data added successfully"})

        status, _, body = request(port, "GET", "/stats/?symbol=AAPL&k=1")
        assert (status, json.loads(body)) == (200, {"symbol": "AAPL", "min": 150.0, "max": 159.0,
                                                    "last": 159.0, "avg": 154.5, "var": 8.25})
        status, _, body = request(port, "GET", "/stats/?symbol=AAPL&k=2")
        assert (status, json.loads(body)) == (400, {"detail": "Not enough data points"})
        status, _, body = request(port, "GET", "/stats/?symbol=MSFT&k=1")
        assert (status, json.loads(body)) == (400, {"detail": "Symbol MSFT not found"})
        # The proxy holds the server's body limit: a body of the limit reaches the server (whose
        # answer is about the JSON), one byte more gets the server's 413 answer from the proxy.
        limit = int(environment_file()["TRADESTATS_MAX_BODY_BYTES"])
        status, headers, body = request(port, "POST", "/add_batch/", b" " * limit, authorized)
        assert status == 400 and headers["Content-Type"].startswith("application/json"), body
        status, headers, body = announce_body(port, limit + 1, authorized)
        assert status == 413 and headers["Content-Type"].startswith("application/json"), body
        assert json.loads(body) == {"detail": f"Request body is larger than the limit of {limit} bytes"}
    finally:
        running.stop()
