"""tradestats-serve's configuration: safe defaults, every flag from TRADESTATS_<FLAG> (flags
win), one line and status 2 for a bad value or a busy port."""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import free_port, serve_command

from tradestats import limits
from tradestats.environment import variable_name
from tradestats.server import build_parser, parse_settings


def long_options() -> list:
    return [action for action in build_parser()._actions if variable_name(action)]


def test_the_server_listens_on_loopback_unless_told():
    assert parse_settings([], environ={}).host == "127.0.0.1"
    assert parse_settings(["--host", "0.0.0.0"], environ={}).host == "0.0.0.0"


@pytest.mark.parametrize("flag, text, field, expected", [
    ("--port", "9100", "port", 9100),
    ("--max-k", "3", "max_k", 3),
    ("--max-symbols", "40", "max_symbols", 40),
    ("--log-level", "warning", "log_level", "warning"),
    ("--data-dir", "/srv/prices", "data_dir", Path("/srv/prices")),
    ("--workers", "3", "workers", 3),
    ("--sync", "yes", "sync", True),
    ("--access-log", "1", "access_log", True),
    ("--shared-group", "off", "shared_group", False),
])
def test_a_variable_sets_its_flag_and_the_flag_wins(flag, text, field, expected):
    variable = "TRADESTATS_" + flag[2:].upper().replace("-", "_")
    assert getattr(parse_settings([], environ={variable: text}), field) == expected
    default = getattr(parse_settings([], environ={}), field)
    if isinstance(expected, bool):
        return  # a switch on the command line can only turn itself on
    other = {"port": "9200", "max_k": "4", "max_symbols": "41", "log_level": "error",
             "data_dir": "/srv/other", "workers": "2"}[field]
    given = getattr(parse_settings([flag, other], environ={variable: text}), field)
    assert given == type(expected)(other) != expected
    assert default != expected


def test_every_flag_has_a_variable_named_after_it():
    names = {variable_name(action): action.option_strings[-1] for action in long_options()}
    assert len(names) == len(long_options()) >= 20
    for name, flag in names.items():
        assert name == "TRADESTATS_" + flag[2:].upper().replace("-", "_")


@pytest.mark.parametrize("variable, text, words", [
    ("TRADESTATS_PORT", "eighty", ["TRADESTATS_PORT", "eighty"]),
    ("TRADESTATS_PORT", "70000", ["TRADESTATS_PORT", "70000"]),
    ("TRADESTATS_MAX_K", "0", ["TRADESTATS_MAX_K"]),
    ("TRADESTATS_LOG_LEVEL", "loud", ["TRADESTATS_LOG_LEVEL", "loud", "warning"]),
    ("TRADESTATS_SYNC", "maybe", ["TRADESTATS_SYNC", "maybe", "true"]),
])
def test_a_bad_value_is_refused_naming_its_variable(capsys, variable, text, words):
    with pytest.raises(SystemExit) as stopped:
        parse_settings([], environ={variable: text})
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error   # one line: no usage block
    assert all(word in error for word in words), error


@pytest.mark.parametrize("argv", [["--port", "9200"], ["--port=9200"]])
def test_a_flag_wins_even_over_a_malformed_variable(argv):
    assert parse_settings(argv, environ={"TRADESTATS_PORT": "eighty"}).port == 9200


def test_a_bad_flag_is_one_line_too(capsys):
    for argv in (["--port", "0"], ["--no-such-flag"], ["--max-k", "x"]):
        with pytest.raises(SystemExit) as stopped:
            parse_settings(argv, environ={})
        error = capsys.readouterr().err
        assert stopped.value.code == 2 and error.count("\n") == 1, error


def test_ephemeral_and_a_data_directory_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        parse_settings(["--data-dir", "/srv/x"], environ={"TRADESTATS_EPHEMERAL": "1"})
    assert "exclude each other" in capsys.readouterr().err
    settings = parse_settings(["--ephemeral"], environ={})
    assert settings.ephemeral and settings.data_dir != Path(limits.DEFAULT_DATA_DIR)
    shutil.rmtree(settings.data_dir)


def test_help_names_each_variable_and_at_most_one_default():
    text = subprocess.run([*serve_command(), "--help"], capture_output=True, text=True,
                          timeout=30, check=True).stdout
    blocks = re.split(r"\n  (?=-)", text.split("options:", 1)[1])
    for action in long_options():
        flag = action.option_strings[-1]
        [block] = [b for b in blocks if b.lstrip().startswith(flag + " ")
                   or b.lstrip().startswith(flag + "\n") or b.strip() == flag
                   or b.lstrip().split(" ")[0] == flag]
        flat = " ".join(block.split())
        assert variable_name(action) in flat.replace("- ", "-"), flat
        assert flat.count("default") <= 1, flat
    assert "default: the number of CPUs" in " ".join(text.split())


def test_a_busy_port_is_one_line_and_status_2(tmp_path):
    port = free_port()
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = subprocess.run(
            [*serve_command(), "--port", str(port), "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr and "in use" in result.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was opened


def test_a_server_configured_only_by_variables(tmp_path):
    port = free_port()
    data = tmp_path / "from-env"
    env = {"PATH": os.environ["PATH"], "TRADESTATS_PORT": str(port),
           "TRADESTATS_DATA_DIR": str(data), "TRADESTATS_MAX_K": "2", "TRADESTATS_WORKERS": "1"}
    process = subprocess.Popen(serve_command(), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        reply = wait_for_stats(port, "/stats/?symbol=X&k=3")
        assert reply is not None, "the server did not answer within 30 s"
        status, detail = reply
        assert status == 400 and detail == "Invalid k value"  # max_k 2, from the variable
        assert data.is_dir()
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode == 0


def wait_for_stats(port: int, path: str):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, json.loads(response.read())["detail"]
        except OSError:
            time.sleep(0.1)
        finally:
            connection.close()
    return None
