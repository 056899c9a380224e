"""HTTPS and HTTP/2 under granian (--ssl-certfile/--ssl-keyfile, --http auto), checked with
Python's ssl module and with curl (HTTP/2 by prior knowledge and by ALPN)."""
from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess

import pytest

from conftest import ServerProcess, stop_cleanly
from test_http import fresh_symbol

from tradestats.client import Client, TransportError

BATCH_ARGS = ("--max-k", "1", "--max-symbols", "100", "--workers", "1")


def curl_speaks_http2() -> bool:
    curl = shutil.which("curl")
    if not curl:
        return False
    return "HTTP2" in subprocess.run([curl, "-V"], capture_output=True, text=True).stdout


needs_curl_http2 = pytest.mark.skipif(not curl_speaks_http2(), reason="no curl with HTTP/2")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def https_request(server, cert, method, path, body=None):
    context = ssl.create_default_context(cafile=str(cert))
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context,
                                             timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


class HttpsServer(ServerProcess):
    def __init__(self, cert, *args, **kwargs):
        self.cert = cert
        super().__init__(*args, **kwargs)

    def request(self, method, path, body=None, headers=None):  # the readiness probe
        status, document = https_request(self, self.cert, method, path, body)

        class Reply:
            pass

        reply = Reply()
        reply.status, reply.document = status, document
        return reply


def curl(*args: str) -> tuple[str, str]:
    done = subprocess.run(["curl", "-s", "-w", "\n%{http_version}", *args], capture_output=True,
                          text=True, timeout=20)
    body, _, version = done.stdout.rpartition("\n")
    return body, version


def test_https_serves_the_api(certificate, tmp_path):
    cert, key = certificate
    server = HttpsServer(cert, "granian", (*BATCH_ARGS, "--ssl-certfile", str(cert),
                                           "--ssl-keyfile", str(key)), tmp_path / "serve.log")
    try:
        assert "listening on https://127.0.0.1:" in server.log
        symbol = fresh_symbol("TLS")
        body = json.dumps({"symbol": symbol, "values": list(range(150, 160))}).encode()
        assert https_request(server, cert, "POST", "/add_batch/", body)[0] == 200
        status, stats = https_request(server, cert, "GET", f"/stats/?symbol={symbol}&k=1")
        assert status == 200 and (stats["avg"], stats["var"]) == (154.5, 8.25)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as plain:
            plain.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            try:
                answer = plain.recv(4096)
            except ConnectionResetError:
                answer = b""
        assert not answer.startswith(b"HTTP/1.1 200"), answer  # plain HTTP is not served
    finally:
        stop_cleanly(server)


@needs_curl_http2
def test_http2_by_prior_knowledge_and_by_alpn(certificate, tmp_path):
    cert, key = certificate
    plain = ServerProcess("granian", (*BATCH_ARGS, "--http", "auto"), tmp_path / "plain.log")
    try:
        symbol = fresh_symbol("H2")
        document = json.dumps({"symbol": symbol, "values": list(range(10))})
        url = f"http://127.0.0.1:{plain.port}"
        assert curl("--http2-prior-knowledge", "-H", "Content-Type: application/json",
                    "--data", document, f"{url}/add_batch/") == (
            '{"message":"Batch data added successfully"}', "2")
        body, version = curl("--http2-prior-knowledge", f"{url}/stats/?symbol={symbol}&k=1")
        assert version == "2" and json.loads(body)["avg"] == 4.5
    finally:
        stop_cleanly(plain)
    secure = HttpsServer(cert, "granian", (*BATCH_ARGS, "--http", "auto", "--ssl-certfile",
                                           str(cert), "--ssl-keyfile", str(key)),
                         tmp_path / "tls.log")
    try:
        body, version = curl("--http2", "--cacert", str(cert),
                             f"https://127.0.0.1:{secure.port}/health")
        assert (body, version) == ('{"status":"ok"}', "2")
    finally:
        stop_cleanly(secure)


@needs_curl_http2
def test_the_default_speaks_http1_only(tmp_path):
    """HTTP/2 is opt-in: under protocol detection a silent connection is never closed."""
    server = ServerProcess("granian", BATCH_ARGS, tmp_path / "serve.log")
    try:
        url = f"http://127.0.0.1:{server.port}/health"
        assert curl("--http2", url) == ('{"status":"ok"}', "1.1")  # an upgrade is not taken
        body, version = curl("--http2-prior-knowledge", url)
        assert version != "2"
    finally:
        stop_cleanly(server)


def test_the_client_over_https(certificate, tmp_path):
    cert, key = certificate
    server = HttpsServer(cert, "granian", (*BATCH_ARGS, "--ssl-certfile", str(cert),
                                           "--ssl-keyfile", str(key)), tmp_path / "serve.log")
    try:
        url = f"https://127.0.0.1:{server.port}"
        trusted = ssl.create_default_context(cafile=str(cert))
        with Client(url, ssl_context=trusted) as client:
            symbol = fresh_symbol("TLSCLIENT")
            client.add(symbol, [float(x) for x in range(150, 160)])
            stats = client.stats(symbol, 1)
            assert (stats.avg, stats.var) == (154.5, 8.25) and symbol in client
        with Client(url) as untrusting, pytest.raises(TransportError):
            untrusting.health()   # a self-signed certificate is not trusted by default
    finally:
        stop_cleanly(server)
