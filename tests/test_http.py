"""The real ``tradestats-serve`` over real HTTP, under each server it offers (conftest.py)."""
from __future__ import annotations

import http.client
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from urllib.parse import urlencode

import numpy as np
import pytest

from conftest import SHARED_SERVER_ARGS, Reply, ServerProcess, serve_command, stop_cleanly
import tradestats
from tradestats import limits, messages
from tradestats.server import format_bytes, parse_settings
from tradestats.servers.gunicorn import meinheld_importable

SHARED_MAX_K = int(SHARED_SERVER_ARGS[SHARED_SERVER_ARGS.index("--max-k") + 1])
SHARED_MAX_BODY = int(SHARED_SERVER_ARGS[SHARED_SERVER_ARGS.index("--max-body-bytes") + 1])
ADD_PATHS = ("/add_batch/", "/add_batch")
STATS_PATHS = ("/stats/", "/stats")
PROMPTLY = 3.0  # seconds: far less than any body we never send would take to arrive

_symbol_numbers = itertools.count()


# --- helpers --------------------------------------------------------------------------------------

def fresh_symbol(prefix: str = "SYM") -> str:
    """Tests share one server per worker class, so each test uses symbols of its own."""
    return f"{prefix}-{next(_symbol_numbers)}"


def post_json(server: ServerProcess, document, path: str = "/add_batch/") -> Reply:
    body = json.dumps(document).encode() if not isinstance(document, bytes) else document
    return server.request("POST", path, body, {"Content-Type": "application/json"})


def post_batch(server: ServerProcess, symbol: str, values, path: str = "/add_batch/") -> Reply:
    return post_json(server, {"symbol": symbol, "values": values}, path)


def stats_path(symbol: str, k, path: str = "/stats/") -> str:
    return f"{path}?{urlencode({'symbol': symbol, 'k': k})}"


def get_stats(server: ServerProcess, symbol: str, k, path: str = "/stats/") -> Reply:
    return server.request("GET", stats_path(symbol, k, path))


def assert_added(reply: Reply) -> None:
    assert reply.status == 200, reply.body
    assert reply.json() == {"message": "Batch data added successfully"}


def assert_error(reply: Reply, status: int, detail: str) -> None:
    assert reply.status == status, reply.body
    assert reply.json() == {"detail": detail}


def error_detail(reply: Reply, status: int) -> str:
    assert reply.status == status, reply.body
    body = reply.json()
    assert set(body) == {"detail"} and body["detail"]
    return body["detail"]


def assert_stats_match(reply: Reply, symbol: str, prices, k: int) -> None:
    assert reply.status == 200, reply.body
    body = reply.json()
    window = np.asarray(prices, dtype=np.float64)[-(10**k):]
    expected = {"symbol": symbol, "min": window.min(), "max": window.max(), "last": window[-1],
                "avg": window.mean(), "var": window.var()}
    assert list(body) == list(expected)
    assert body["symbol"] == symbol
    for field in ("min", "max", "last", "avg", "var"):
        assert body[field] == pytest.approx(float(expected[field]), rel=1e-12, abs=1e-9), field


def send_raw(server: ServerProcess, head: bytes, body: bytes = b"") -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    connection.sendall(head + body)
    return connection


def read_reply(connection: socket.socket, method: str = "POST") -> Reply:
    response = http.client.HTTPResponse(connection, method=method)
    response.begin()
    return Reply(response)


def chunked(body: bytes, chunk_size: int = 8192) -> bytes:
    pieces = [body[i:i + chunk_size] for i in range(0, len(body), chunk_size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def batch_body_of_size(size: int, symbol: str) -> bytes:
    """A valid batch padded with an unknown key to exactly ``size`` bytes."""
    head = json.dumps({"symbol": symbol, "values": [1.0], "padding": ""}).encode()[:-2]
    return head + b"x" * (size - len(head) - 2) + b'"}'


def assert_meinheld_refused(reply: Reply) -> None:
    """meinheld buffers whole bodies before the app runs, so the server limits it to the body
    limit and meinheld itself answers an oversized body: 413, with meinheld's HTML page."""
    assert reply.status == 413
    assert reply.headers.get("Server", "").startswith("meinheld")


# --- health, seed examples, both spellings --------------------------------------------------------

def test_health(server):
    reply = server.request("GET", "/health")
    assert reply.status == 200
    assert reply.json() == {"status": "ok"}


@pytest.mark.parametrize("add_path", ADD_PATHS)
@pytest.mark.parametrize("stats_path_", STATS_PATHS)
@pytest.mark.parametrize(("prices", "k"), [(list(range(150, 160)), 1), (list(range(1, 101)), 2)])
def test_seed_examples(server, add_path, stats_path_, prices, k):
    symbol = fresh_symbol()
    assert_added(post_batch(server, symbol, prices, add_path))
    assert_stats_match(get_stats(server, symbol, k, stats_path_), symbol, prices, k)


def test_the_largest_window_rolls(server):
    symbol = fresh_symbol()
    rng = np.random.default_rng(3)
    prices = rng.uniform(-1e6, 1e6, 2500).tolist()
    for start in range(0, len(prices), 700):
        assert_added(post_batch(server, symbol, prices[start:start + 700]))
    for k in range(1, SHARED_MAX_K + 1):
        assert_stats_match(get_stats(server, symbol, k), symbol, prices, k)


@pytest.mark.parametrize("symbol", ["BRK.B", "EUR/USD", "ŻABKA", "A+B", "A&k=1", "日経 225"])
def test_unicode_symbols_round_trip_url_encoded(server, symbol):
    symbol = f"{symbol}#{next(_symbol_numbers)}"
    prices = list(range(10))
    assert_added(post_batch(server, symbol, prices))
    assert_stats_match(get_stats(server, symbol, 1), symbol, prices, 1)


def test_empty_values_and_unknown_keys(server):
    symbol = fresh_symbol()
    assert_added(post_json(server, {"symbol": symbol, "values": [], "comment": {"any": [1, "x"]}}))
    assert_error(get_stats(server, symbol, 1), 400, "Not enough data points")


def test_request_without_content_type_is_read_as_json(server):
    symbol = fresh_symbol()
    body = json.dumps({"symbol": symbol, "values": list(range(10))}).encode()
    assert_added(server.request("POST", "/add_batch/", body))
    assert_stats_match(get_stats(server, symbol, 1), symbol, list(range(10)), 1)


def test_chunked_body_within_the_limit(server):
    symbol = fresh_symbol()
    body = batch_body_of_size(SHARED_MAX_BODY, symbol)
    head = (b"POST /add_batch/ HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    with send_raw(server, head, chunked(body)) as connection:
        assert_added(read_reply(connection))
    assert_error(get_stats(server, symbol, 1), 400, "Not enough data points")


# --- the error table ------------------------------------------------------------------------------

@pytest.mark.parametrize("k_part", ["", "&k=", "&k=x", "&k=0", "&k=2.0", f"&k={SHARED_MAX_K + 1}"])
def test_invalid_k(server, k_part):
    symbol = fresh_symbol()
    assert_added(post_batch(server, symbol, list(range(10**SHARED_MAX_K))))
    reply = server.request("GET", f"/stats/?{urlencode({'symbol': symbol})}{k_part}")
    assert_error(reply, 400, "Invalid k value")


@pytest.mark.parametrize("path", ["/stats/?k=1", "/stats?symbol=&k=1", "/stats/"])
def test_missing_symbol(server, path):
    assert_error(server.request("GET", path), 400, "Missing symbol")


def test_symbol_never_added(server):
    symbol = fresh_symbol("NEVER")
    assert_error(get_stats(server, symbol, 1), 400, f"Symbol {symbol} not found")


@pytest.mark.parametrize("symbol", ["L" * 1400, "A\x01B", "x" * 65])
@pytest.mark.parametrize("path", ["/stats/?symbol={}&k=1", "/prices/?symbol={}&n=1"])
def test_a_queried_symbol_no_batch_could_name_is_not_found(server, symbol, path):
    """Issue #16: a 1,400-character symbol in a query was a 500 (its file name too long)."""
    reply = server.request("GET", path.format(urllib.parse.quote(symbol)))
    assert_error(reply, 400, f"Symbol {symbol} not found")


def test_not_enough_data_points(server):
    symbol = fresh_symbol()
    assert_added(post_batch(server, symbol, list(range(99))))
    assert_error(get_stats(server, symbol, 2), 400, "Not enough data points")


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", messages.BODY_NOT_JSON),
        (b"[1, 2, 3]", messages.BODY_NOT_OBJECT),
        (b'{"values": [1]}', messages.SYMBOL_MISSING),
        (b'{"symbol": 7, "values": [1]}', messages.SYMBOL_NOT_STRING),
        (b'{"symbol": "", "values": [1]}', messages.SYMBOL_EMPTY),
        (b'{"symbol": "A\\u0007B", "values": [1]}', messages.SYMBOL_CONTROL_CHARACTERS),
        (json.dumps({"symbol": "x" * 65, "values": [1]}).encode(),
         messages.SYMBOL_TOO_LONG.format(max_length=limits.MAX_SYMBOL_LENGTH)),
        (b'{"symbol": "A", "values": {"a": 1}}', messages.VALUES_NOT_ARRAY),
    ],
)
def test_bad_body(server, body, detail):
    assert_error(post_json(server, body), 400, detail)


@pytest.mark.parametrize(
    "element", ["true", "null", '"1.5"', "[1.5]", "NaN", "Infinity", "1e400", "1e300"]
)
def test_a_bad_element_names_values_and_nothing_is_stored(server, element):
    symbol = fresh_symbol()
    prices = list(range(10))
    assert_added(post_batch(server, symbol, prices))
    body = f'{{"symbol": "{symbol}", "values": [1.5, 2.5, {element}, 3.5]}}'.encode()
    expected = messages.VALUE_INVALID.format(index=2, max_abs=limits.MAX_ABS_PRICE)
    assert_error(post_json(server, body), 400, expected)
    assert_stats_match(get_stats(server, symbol, 1), symbol, prices, 1)  # unchanged


def test_a_bad_batch_does_not_register_a_new_symbol(server):
    symbol = fresh_symbol()
    error_detail(post_json(server, f'{{"symbol": "{symbol}", "values": [1, NaN]}}'.encode()), 400)
    assert_error(get_stats(server, symbol, 1), 400, f"Symbol {symbol} not found")


def test_more_values_than_the_batch_limit(server):
    symbol = fresh_symbol()
    count = limits.DEFAULT_MAX_BATCH + 1
    detail = error_detail(post_batch(server, symbol, [1.0] * count), 400)
    assert str(limits.DEFAULT_MAX_BATCH) in detail
    assert_error(get_stats(server, symbol, 1), 400, f"Symbol {symbol} not found")


def test_symbol_limit(start_server):
    server = start_server("--max-symbols", "2")
    assert_added(post_batch(server, "FIRST", [1.0]))
    assert_added(post_batch(server, "SECOND", [1.0]))
    detail = error_detail(post_batch(server, "THIRD", [1.0]), 400)
    assert detail == messages.SYMBOL_LIMIT_REACHED.format(max_symbols=2)
    assert_error(get_stats(server, "THIRD", 1), 400, "Symbol THIRD not found")
    assert_added(post_batch(server, "FIRST", list(range(9))))  # existing symbols still accept
    assert_stats_match(get_stats(server, "FIRST", 1), "FIRST", [1.0, *range(9)], 1)


def test_default_limits(start_server):
    server = start_server()
    symbol = fresh_symbol()
    assert_added(post_batch(server, symbol, list(range(10))))
    assert_error(get_stats(server, symbol, 8), 400, "Not enough data points")
    assert_error(get_stats(server, symbol, 9), 400, "Invalid k value")
    for n in range(limits.DEFAULT_MAX_SYMBOLS - 1):
        assert_added(post_batch(server, f"{symbol}-{n}", []))
    detail = error_detail(post_batch(server, fresh_symbol(), []), 400)
    assert str(limits.DEFAULT_MAX_SYMBOLS) in detail


def announce_and_send_a_little(server: ServerProcess, content_length: int) -> tuple[Reply, float]:
    """Announce a body of ``content_length`` bytes but send only its start: a server can answer
    promptly only if it does not wait for the rest. (Sending all of an oversized body would race
    the server closing the connection, which a client may see as a reset instead of the 413.)"""
    head = (b"POST /add_batch/ HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % content_length)
    started = time.monotonic()
    with send_raw(server, head, b'{"symbol": "X", "values": [') as connection:
        reply = read_reply(connection)
    return reply, time.monotonic() - started


@pytest.mark.parametrize("content_length", [SHARED_MAX_BODY + 1, 10**9])
def test_body_over_the_limit_is_refused_unread(server, content_length):
    reply, elapsed = announce_and_send_a_little(server, content_length)
    assert elapsed < PROMPTLY
    if server.kind == "meinheld":
        assert_meinheld_refused(reply)
    else:
        assert_error(reply, 413, messages.BODY_TOO_LARGE.format(max_body_bytes=SHARED_MAX_BODY))
    assert server.request("GET", "/health").status == 200


def test_body_exactly_at_the_limit_is_accepted(server):
    symbol = fresh_symbol()
    assert_added(post_json(server, batch_body_of_size(SHARED_MAX_BODY, symbol)))
    assert_error(get_stats(server, symbol, 1), 400, "Not enough data points")


def test_chunked_body_running_past_the_limit(server):
    """A chunked body that goes on past the limit (and is never finished) is refused at once."""
    symbol = fresh_symbol()
    body = batch_body_of_size(SHARED_MAX_BODY + 10_000, symbol)
    unfinished = chunked(body)[: -len(b"0\r\n\r\n")]
    head = (b"POST /add_batch/ HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    started = time.monotonic()
    with send_raw(server, head, unfinished) as connection:
        reply = read_reply(connection)
    assert time.monotonic() - started < PROMPTLY
    if server.kind == "meinheld":
        assert_meinheld_refused(reply)
    else:
        assert_error(reply, 413, messages.BODY_TOO_LARGE.format(max_body_bytes=SHARED_MAX_BODY))
    assert_error(get_stats(server, symbol, 1), 400, f"Symbol {symbol} not found")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_unsupported_content_type(server, content_type):
    symbol = fresh_symbol()
    body = json.dumps({"symbol": symbol, "values": [1.0]}).encode()
    error_detail(server.request("POST", "/add_batch/", body, {"Content-Type": content_type}), 415)
    assert_error(get_stats(server, symbol, 1), 400, f"Symbol {symbol} not found")


@pytest.mark.parametrize("path", ["/nope", "/page", "/stats/more", "/add_batch//", "//stats/",
                                  "/stats//", "//health"])
def test_unknown_path(server, path):
    assert path in error_detail(server.request("GET", path), 404)


GET_ROUTES = ["/", "/health", "/symbols", "/metrics", "/docs", "/openapi.json",
              "/stats/?symbol={symbol}&k=1", "/stats?symbol={symbol}&k=1",
              "/prices/?symbol={symbol}&n=3", "/prices?symbol={symbol}&n=3",
              "/stats/?symbol={symbol}&k=9", "/prices/?symbol=NOPE&n=3"]


@pytest.mark.parametrize("route", GET_ROUTES)
def test_every_get_route_answers_head_alike_without_a_body(server, route):
    symbol = fresh_symbol()
    assert_added(post_batch(server, symbol, list(range(10))))
    path = route.format(symbol=symbol)
    get = server.request("GET", path)
    head = server.request("HEAD", path)
    assert head.status == get.status
    assert head.body == b""
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    if path != "/metrics":  # the metrics count this very request
        assert head.headers["Content-Length"] == get.headers["Content-Length"] == str(len(get.body))


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "x-unknown"])
def test_a_compressed_body_is_415_and_stores_nothing(server, coding):
    symbol = fresh_symbol()
    body = json.dumps({"symbol": symbol, "values": [1.0]}).encode()
    reply = server.request("POST", "/add_batch/", body, {"Content-Type": "application/json",
                                                          "Content-Encoding": coding})
    assert coding in error_detail(reply, 415)
    assert_error(get_stats(server, symbol, 1), 400, f"Symbol {symbol} not found")


@pytest.mark.parametrize(("method", "path"), [("GET", "/add_batch/"), ("GET", "/add_batch"),
                                              ("POST", "/stats/"), ("DELETE", "/stats"),
                                              ("PUT", "/health")])
def test_wrong_method(server, method, path):
    reply = server.request(method, path, b"{}")
    assert method in error_detail(reply, 405)
    assert "Allow" in reply.headers


# --- connection handling --------------------------------------------------------------------------

def test_keep_alive_serves_many_requests_on_one_connection(server):
    symbol = fresh_symbol()
    prices: list[float] = []
    connection = server.connection()
    try:
        connection.connect()
        first_socket = connection.sock
        for n in range(100):
            batch = [float(n), n + 0.5]
            prices.extend(batch)
            body = json.dumps({"symbol": symbol, "values": batch}).encode()
            connection.request("POST", "/add_batch/", body, {"Content-Type": "application/json"})
            assert_added(Reply(connection.getresponse()))
            connection.request("GET", stats_path(symbol, 1))
            reply = Reply(connection.getresponse())
            if len(prices) >= 10:
                assert_stats_match(reply, symbol, prices, 1)
            else:
                assert_error(reply, 400, "Not enough data points")
            assert connection.sock is first_socket, f"connection was reopened after request {n}"
    finally:
        connection.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_the_server_cleanly(start_server, signum):
    server = start_server()
    assert_added(post_batch(server, "X", [1.0]))
    started = time.monotonic()
    assert server.stop(signum) == 0, server.log
    assert time.monotonic() - started < 10
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()


# --- the command line -----------------------------------------------------------------------------

SERVER_NAMES = {"granian": "granian", "meinheld": "gunicorn (meinheld workers)"}


def test_startup_log_names_server_configuration_and_disk(server):
    log = server.log
    assert f": {SERVER_NAMES[server.kind]}, {os.cpu_count()} workers" in log
    assert "max_k=3 max_symbols=1000 max_batch=10000 max_body_bytes=100000" in log
    assert_added(post_batch(server, fresh_symbol(), [1.0]))
    one_file = next(server.data_dir.rglob("*.sym")).stat().st_size
    assert f"worst-case disk {format_bytes(one_file * 1000)}" in log
    assert f"data directory {server.data_dir} (kept across restarts" in log


@pytest.mark.parametrize(("count", "text"), [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"),
                                             (16 * 10**8 * 10, "14.9 GiB"), (3 * 2**40, "3.0 TiB")])
def test_format_bytes(count, text):
    assert format_bytes(count) == text


def test_the_default_server_is_granian():
    assert parse_settings([]).server == "granian"


@pytest.mark.parametrize("kind", [
    pytest.param("meinheld", marks=pytest.mark.skipif(not meinheld_importable(),
                                                      reason="meinheld is not installed")),
    "gthread",
])
def test_choosing_gunicorn_logs_its_risks_loudly(tmp_path, kind):
    server = ServerProcess(kind, SHARED_SERVER_ARGS, tmp_path / "serve.log")
    try:
        assert f"[WARNING] WARNING: {kind} under gunicorn is not hardened" in server.log
        assert server.request("GET", "/health").status == 200
    finally:
        stop_cleanly(server)
    default = ServerProcess(None, SHARED_SERVER_ARGS, tmp_path / "default.log")
    try:
        assert ": granian, " in default.log
        assert "not hardened" not in default.log
    finally:
        stop_cleanly(default)


@pytest.mark.parametrize("command", [serve_command(), [sys.executable, "-m", "tradestats"]],
                         ids=["serve_command", "python-m"])
@pytest.mark.parametrize("workers", ["0", "257", "x"])
def test_worker_counts_out_of_range_are_refused(command, workers):
    result = subprocess.run(
        [*command, "--port", "1", "--workers", workers], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "--workers" in result.stderr


def test_workers_default_to_the_cpu_count():
    assert parse_settings([]).workers == os.cpu_count()


@pytest.mark.parametrize("flag", [("--max-k", "0"), ("--max-k", str(limits.MAX_MAX_K + 1)),
                                  ("--max-symbols", "0"), ("--port", "70000"),
                                  ("--max-batch", "x")])
def test_out_of_range_flags_are_refused(flag):
    result = subprocess.run([*serve_command(), *flag], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert flag[0] in result.stderr


def test_version_flag():
    result = subprocess.run([*serve_command(), "--version"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0
    assert result.stdout == f"tradestats {tradestats.__version__}\n"


@pytest.mark.parametrize("flags", [("--worker-class", "eventlet"), ("--server", "nope"),
                                   ("--worker-class", "gthread"),  # not without --server gunicorn
                                   ("--ssl-certfile", "/nonexistent.pem")])
def test_an_unusable_server_choice_is_refused_with_status_2(flags):
    result = subprocess.run([*serve_command(), "--port", "1", *flags],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert flags[0] in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("missing", "flags", "hint"), [
    ("gunicorn", ("--server", "gunicorn"), 'pip install "tradestats[gunicorn]"'),
    ("meinheld", ("--server", "gunicorn", "--worker-class", "meinheld"), "pip install"),
])
def test_a_server_that_is_not_installed_is_one_line_and_status_2(tmp_path, missing, flags, hint):
    """gunicorn is an optional extra now: without it, --server gunicorn says what to install."""
    program = (f"import sys; sys.modules[{missing!r}] = None; "
               "from tradestats.server import main; main(sys.argv[1:])")
    result = subprocess.run([sys.executable, "-c", program, "--port", "1", "--data-dir",
                             str(tmp_path / "data"), *flags],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and hint in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_every_flag_states_its_default_or_range():
    text = subprocess.run([*serve_command(), "--help"], capture_output=True, text=True,
                          timeout=30).stdout
    for flag in ("--port", "--max-k", "--max-symbols", "--max-batch", "--max-body-bytes",
                 "--graceful-timeout", "--workers", "--data-dir"):
        help_text = text.split(flag, 2)[-1].split("\n  --", 1)[0]
        assert "default" in help_text or ".." in help_text, (flag, help_text)


@pytest.mark.parametrize("level", ["info", "warning"])
def test_json_logs_with_access_lines_and_the_start_up_lines_at_info(start_server, level):
    """Start-up lines are INFO: a restart is no warning (at --log-level warning they are not
    shown)."""
    server = start_server("--log-format", "json", "--access-log", "--log-level", level,
                          "--max-k", "1")
    symbol = fresh_symbol()
    assert_added(post_batch(server, symbol, list(range(10))))
    assert_error(get_stats(server, symbol, 2), 400, "Invalid k value")
    stop_cleanly(server)
    lines = [json.loads(line) for line in server.log.splitlines() if line.strip()]
    assert all({"time", "level", "pid", "logger", "message"} <= set(line) for line in lines)
    start_up = [line for line in lines if line["message"].startswith("tradestats ")
                and "listening on" in line["message"]]
    if level == "info":
        assert start_up and all(line["level"] == "info" for line in start_up), start_up
    else:
        assert not start_up, start_up
    access = [line for line in lines if line["logger"] == "tradestats.access"]
    posts = [line for line in access if line["method"] == "POST"]
    gets = [line for line in access if line["method"] == "GET" and "/stats/" in line["path"]]
    assert posts and posts[-1]["status"] == 200 and posts[-1]["path"] == "/add_batch/"
    assert gets and gets[-1]["status"] == 400 and 0 <= gets[-1]["ms"] < 1000
