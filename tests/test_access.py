"""Access control: with an API key every write needs ``Authorization: Bearer <key>`` (401 JSON
with ``WWW-Authenticate`` otherwise, nothing stored); reads too with protect_reads, /health
never. In-process against the app, then a real server configured by file and by variable."""
from __future__ import annotations

import http.client
import os
import subprocess

import falcon.testing
import pytest
from conftest import ServerProcess, serve_command, stop_cleanly

from tradestats import Store, messages
from tradestats.client import Client
from tradestats.server import parse_settings
from tradestats.web import create_app

KEY = "k3y-with-some-entropy-7Qp"
BATCH = {"symbol": "AAPL", "values": [float(x) for x in range(1, 11)]}


def client_for(**options) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(Store(max_k=2), **options))


def post(client, headers=None):
    return client.simulate_post("/add_batch/", json=BATCH, headers=headers or {})


def stored(client) -> bool:
    return client.simulate_get("/stats/", params={"symbol": "AAPL", "k": "1"},
                               headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


@pytest.mark.parametrize("header, detail", [
    (None, messages.API_KEY_MISSING),
    ("Bearer", messages.API_KEY_MISSING),
    ("Basic " + KEY, messages.API_KEY_MISSING),
    ("Bearer wrong", messages.API_KEY_WRONG),
    ("Bearer " + KEY[:-1], messages.API_KEY_WRONG),
    ("Bearer " + KEY + "x", messages.API_KEY_WRONG),
    ("Bearer " + KEY.upper(), messages.API_KEY_WRONG),
])
def test_a_write_without_the_key_is_401_and_stores_nothing(header, detail):
    client = client_for(api_key=KEY)
    reply = post(client, {"Authorization": header} if header else None)
    assert reply.status_code == 401
    assert reply.json == {"detail": detail}
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert not stored(client)


@pytest.mark.parametrize("header", ["Bearer " + KEY, "bearer " + KEY, "BEARER  " + KEY + " "])
def test_a_write_with_the_key_is_stored(header):
    client = client_for(api_key=KEY)
    assert post(client, {"Authorization": header}).status_code == 200
    assert stored(client)


def test_reads_stay_open_unless_protected():
    open_reads = client_for(api_key=KEY)
    assert post(open_reads, {"Authorization": f"Bearer {KEY}"}).status_code == 200
    for path in ("/stats/?symbol=AAPL&k=1", "/symbols", "/prices/?symbol=AAPL&n=3", "/health",
                 "/envelope/?symbol=AAPL&k=1"):
        assert open_reads.simulate_get(path).status_code == 200, path
    for path in ("/stats/", "/add_batch/", "/metrics"):   # OPTIONS names methods: a read
        assert open_reads.simulate_options(path).status_code == 200, path
    assert client_for(api_key=KEY, protect_reads=True).simulate_options("/stats/") \
        .status_code == 401
    deleted = open_reads.simulate_delete("/symbols/", params={"symbol": "AAPL"})
    assert deleted.status_code == 401 and stored(open_reads)   # a delete is a write

    protected = client_for(api_key=KEY, protect_reads=True)
    assert post(protected, {"Authorization": f"Bearer {KEY}"}).status_code == 200
    for path in ("/stats/?symbol=AAPL&k=1", "/symbols", "/prices/?symbol=AAPL&n=3", "/metrics"):
        reply = protected.simulate_get(path)
        assert reply.status_code == 401 and reply.json["detail"], path
        assert protected.simulate_get(path, headers={"Authorization": f"Bearer {KEY}"}) \
            .status_code == 200, path
    for path in ("/health", "/openapi.json", "/docs", "/"):  # probes, and what holds no data
        assert protected.simulate_get(path).status_code == 200, path


def test_without_a_key_everything_is_open():
    client = client_for()
    assert post(client).status_code == 200
    assert "securitySchemes" not in client.simulate_get("/openapi.json").json["components"]


def test_the_openapi_document_states_the_scheme_and_the_401s():
    document = client_for(api_key=KEY).simulate_get("/openapi.json").json
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    post_operation = document["paths"]["/add_batch/"]["post"]
    assert post_operation["security"] == [{"apiKey": []}] and "401" in post_operation["responses"]
    assert "security" not in document["paths"]["/stats/"]["get"]
    protected = client_for(api_key=KEY, protect_reads=True).simulate_get("/openapi.json").json
    assert "401" in protected["paths"]["/stats/"]["get"]["responses"]
    for path in ("/health", "/openapi.json", "/docs", "/"):
        assert "security" not in protected["paths"][path]["get"], path


def test_the_key_comes_from_one_place(tmp_path, capsys):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    assert parse_settings(["--api-key-file", str(key_file)], environ={}).api_key == KEY
    assert parse_settings([], environ={"TRADESTATS_API_KEY": KEY}).api_key == KEY
    assert KEY not in repr(parse_settings(["--api-key", KEY], environ={}))
    for argv in (["--api-key", KEY, "--api-key-file", str(key_file)], ["--protect-reads"],
                 ["--api-key", " "], ["--api-key", "clé"], ["--api-key", "two words"],
                 ["--api-key", "tab\there"]):
        with pytest.raises(SystemExit):
            parse_settings(argv, environ={})
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(SystemExit):
        parse_settings(["--api-key-file", str(empty)], environ={})
    assert "empty" in capsys.readouterr().err


def test_help_never_prints_a_key_from_the_environment():
    text = subprocess.run([*serve_command(), "--help"], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "TRADESTATS_API_KEY": KEY}).stdout
    assert "TRADESTATS_API_KEY" in text and KEY not in text


@pytest.mark.parametrize("how", ["file", "variable"])
def test_a_real_server_with_a_key_and_the_client(tmp_path, how):
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    args, env = ("--max-k", "1", "--workers", "1"), dict(os.environ)
    if how == "file":
        args += ("--api-key-file", str(key_file))
    else:
        env["TRADESTATS_API_KEY"] = KEY
    server = ServerProcess(None, args, tmp_path / "serve.log", env=env)
    try:
        base = f"http://127.0.0.1:{server.port}"
        with Client(base) as anonymous, Client(base, api_key=KEY) as owner, \
                Client(base, api_key="nope") as stranger:
            with pytest.raises(PermissionError, match="API key"):
                anonymous.add("AAPL", [1.0] * 10)
            with pytest.raises(PermissionError, match="Wrong API key"):
                stranger.add("AAPL", [1.0] * 10)
            owner.add("AAPL", [float(x) for x in range(10)])
            assert anonymous.stats("AAPL", 1).avg == 4.5  # reads stay open
        refused_body_is_not_read_as_a_request(server)
        assert "writes need the API key" in server.log and KEY not in server.log
    finally:
        stop_cleanly(server)


def refused_body_is_not_read_as_a_request(server: ServerProcess) -> None:
    """A 401 is decided before the body is read: the unread body must never be taken for the
    next request on the connection (the server closes it, or answers the next one right)."""
    hidden = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 200
    connection = server.connection()
    try:
        connection.request("POST", "/add_batch/", body=hidden,
                           headers={"Content-Type": "application/json"})
        refused = connection.getresponse()
        assert refused.status == 401 and b"API key" in refused.read()
        try:
            connection.request("GET", "/symbols")
            reply = connection.getresponse()
        except (ConnectionError, http.client.HTTPException):
            return  # closed: fine
        assert reply.status == 200 and b"symbols" in reply.read()
    finally:
        connection.close()
