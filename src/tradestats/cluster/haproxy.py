r"""The HAProxy 2.6 configuration in front of a cluster's nodes, and HAProxy's runtime API.

Routing (README, "Cluster"): a request's symbol is its ``symbol`` URL parameter, decoded as a
form value (``+`` is a space), else for a POST the body's ``$.symbol``. Its owner is the
override map's entry for it (keyed by the symbol's UTF-8 bytes in hex, as
``placement.symbol_key`` writes them), else node number ``crc32(symbol) % N`` of the node map:
the rule of ``placement.py``, computed by HAProxy itself. The request goes to that node's
backend. Requests without a symbol (``/symbols``, ``/health``, the page, ``/docs``,
``/metrics``), and bodies HAProxy cannot read a symbol from, go to any live node: a node
refuses a symbol it does not own (421 naming the owner), so a body routed blindly is never
stored twice.

Measured with HAProxy 2.6.12: ``json_query`` decodes ``\uXXXX`` to one byte per escape
(``\u00fc`` gives 0xFC, not UTF-8's C3 BC) and finds nothing in ``\/``; a body whose
non-ASCII symbol is written escaped (Python's ``json.dumps`` default) is therefore routed by the
wrong bytes, always to the same node, which answers 421 unless it happens to be the owner.
Naming the symbol in the URL (``?symbol=``, as tradestats.client does) or sending raw UTF-8
routes it. A whole body of up to the nodes' body limit fits in HAProxy's buffer
(``tune.bufsize``), so a symbol after a 10,000-value array is found; HAProxy's buffers are
allocated per request in flight, not per connection, so this costs memory only for the bodies
being received.
"""
from __future__ import annotations

import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

from tradestats.cluster.placement import Placement

#: The backend for requests without a routable symbol; no node may be called this.
ANY_NODE = "any_node"
#: HAProxy's names (backends, servers) are letters, digits and ``-_.:``.
NAME = re.compile(r"[A-Za-z0-9_.:-]+")
#: The nodes' default --max-body-bytes.
DEFAULT_MAX_BODY_BYTES = 524288
#: Room for a request head besides the body in HAProxy's buffer (its default bufsize).
HEAD_ROOM = 16384

#: HAProxy's own answers, as JSON like every other error of the API: 502/504 for a node that
#: failed or did not answer in time, 503 for a node that is down, 408 for a body that does not
#: arrive in time. HAProxy 2.6 answers a request head its HTTP/1 parser refuses (or one that
#: does not arrive) before any of this configuration applies, with its built-in HTML 400/408:
#: like granian's empty-bodied 400, outside the JSON contract (README, "Cluster").
ERRORS = {
    400: "Bad request: the proxy could not parse it",
    408: "The request did not arrive in time",
    500: "Internal error in the proxy",
    501: "Not implemented by the proxy",
    502: "The node owning this request gave no valid answer",
    503: "No node is available for this request: retry in a moment",
    504: "The node owning this request did not answer in time",
}
#: Worth a retry soon: a node restarting, a health check catching up.
RETRY_AFTER = {502, 503, 504}


def server_address(url: str) -> str:
    """host:port of a node's http URL (nodes speak plain HTTP on a private network; TLS, if
    any, ends at the front)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path.strip("/") or parts.query:
        raise ValueError(f"a node URL is http://host:port, not {url!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port or 80}"


def check_names(placement: Placement) -> None:
    for name in placement.names:
        if not NAME.fullmatch(name) or name == ANY_NODE:
            raise ValueError(f"a node name for HAProxy is letters, digits and -_.: (not "
                             f"{ANY_NODE}), not {name!r}")


def quoted(text: str) -> str:
    """A string argument for HAProxy: single quotes keep everything but a single quote."""
    if "'" in text:
        raise ValueError(f"cannot quote {text!r} for HAProxy")
    return f"'{text}'"


def global_section(stats_socket: Path | None, user: str | None, log: str | None,
                   bufsize: int) -> list[str]:
    lines = ["global",
             "    maxconn 4096",
             # A whole body fits in the buffer, so a POST is routed by its symbol wherever the
             # symbol is in it (tradestats.client names it in the URL and needs none of this).
             f"    tune.bufsize {bufsize}",
             "    hard-stop-after 10s"]
    if log:
        # Notices and worse: a node going DOWN or UP again; not one line per request.
        lines.append(f"    log {log} local0 notice")
    if user:
        lines += [f"    user {user}", f"    group {user}"]
    if stats_socket is not None:
        # The runtime API: `tradestats-cluster move` switches a symbol's override through it.
        lines.append(f"    stats socket {quoted(str(stats_socket))} mode 600 level admin")
    return lines


def defaults_section(timeout_server: str, timeout_request: str) -> list[str]:
    lines = ["defaults",
             "    mode http",
             "    log global",
             "    option dontlognull",
             "    option forwardfor",
             # Nodes are near: a node that does not accept a connection at once is down.
             "    timeout connect 500ms",
             "    timeout client 30s",
             f"    timeout server {timeout_server}",
             f"    timeout http-request {timeout_request}",
             "    timeout http-keep-alive 10s",
             "    timeout check 1s"]
    for status, detail in ERRORS.items():
        header = " hdr Retry-After 1" if status in RETRY_AFTER else ""
        lines.append(f"    http-error status {status} content-type application/json "
                     f"string {quoted(detail_json(detail))}{header}")
    return lines


def detail_json(detail: str) -> str:
    return '{"detail":"' + detail + '"}'


def frontend_section(node_count: int, bind: str, maps_dir: Path,
                     max_body_bytes: int | None, timeout_request: str) -> list[str]:
    overrides, nodes = quoted(str(maps_dir / "overrides.map")), quoted(str(maps_dir / "nodes.map"))
    lines = ["frontend tradestats", f"    bind {bind}"]
    if max_body_bytes is not None:
        # The nodes' body limit, answered as they answer it, before a body is waited for.
        limit = detail_json(f"Request body is larger than the limit of {max_body_bytes} bytes")
        lines.append("    http-request return status 413 content-type application/json string "
                     f"{quoted(limit)} if {{ req.hdr_val(content-length) gt {max_body_bytes} }}")
    lines += [
        "    acl symbol_in_url url_param(symbol) -m found",
        "    http-request set-var(txn.symbol) url_param(symbol),url_dec(1) if symbol_in_url",
        # Only a POST naming its symbol in the body alone waits for the body: everything else,
        # tradestats.client's POSTs included, streams through.
        f"    http-request wait-for-body time {timeout_request} if METH_POST !symbol_in_url",
        ("    http-request set-var(txn.symbol) req.body,json_query('$.symbol') "
         "if METH_POST !symbol_in_url"),
        "    acl has_symbol var(txn.symbol) -m found",
        f"    http-request set-var(txn.node) var(txn.symbol),hex,map({overrides}) if has_symbol",
        "    acl has_node var(txn.node) -m found",
        (f"    http-request set-var(txn.node) var(txn.symbol),crc32,mod({node_count}),"
         f"map_int({nodes}) if has_symbol !has_node"),
        "    use_backend %[var(txn.node)] if { var(txn.node) -m found }",
        f"    default_backend {ANY_NODE}",
    ]
    return lines


def health_checked() -> list[str]:
    # A node killed is DOWN within two failed checks 300 ms apart; one good check brings it back.
    return ["    option httpchk GET /health",
            "    http-check expect status 200",
            "    default-server check inter 300ms fall 2 rise 1"]


def node_backend(name: str, url: str) -> list[str]:
    # One server: a symbol lives on one node, so there is nowhere else to send it.
    return [f"backend {name}", *health_checked(), f"    server {name} {server_address(url)}"]


def any_node_backend(placement: Placement) -> list[str]:
    # Each server is UP or DOWN as its node's own backend says (no second set of checks).
    servers = [f"    server {name} {server_address(url)} track {name}/{name}"
               for name, url in placement.nodes]
    # Nothing here is bound to a node: a connection refused may be tried on another one.
    return [f"backend {ANY_NODE}", "    balance roundrobin", "    option redispatch", *servers]


def haproxy_config(placement: Placement, *, bind: str, maps_dir: Path,
                   stats_socket: Path | None = None, user: str | None = None,
                   log: str | None = None, timeout_server: str = "30s",
                   timeout_request: str = "10s",
                   max_body_bytes: int | None = DEFAULT_MAX_BODY_BYTES) -> str:
    """The whole configuration: routing by the placement's rule with the maps in maps_dir
    (``nodes.map``, ``overrides.map``: what ``Placement.write`` writes beside placement.json).
    ``user``: the user (and group) HAProxy drops to; ``log``: where its notices go (a node
    DOWN, UP); ``timeout_server``: how long a node may take to answer (then 504);
    ``timeout_request``: how long a request head, or a body routed by its content, may take
    to arrive (then 408)."""
    check_names(placement)
    maps_dir = Path(maps_dir).absolute()
    bufsize = (max_body_bytes or DEFAULT_MAX_BODY_BYTES) + HEAD_ROOM
    sections = [global_section(stats_socket, user, log, bufsize),
                defaults_section(timeout_server, timeout_request),
                frontend_section(len(placement.nodes), bind, maps_dir, max_body_bytes,
                                 timeout_request),
                *(node_backend(name, url) for name, url in placement.nodes),
                any_node_backend(placement)]
    header = ["# tradestats cluster: written by tradestats-cluster (README, \"Cluster\").",
              f"# Nodes in rule order: {' '.join(placement.names)}."]
    return "\n\n".join("\n".join(section) for section in [header, *sections]) + "\n"


# -- the runtime API --------------------------------------------------------------------------

def runtime_command(stats_socket: Path, command: str, timeout: float = 5.0) -> str:
    """One command on HAProxy's stats socket; its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        connection.connect(str(stats_socket))
        connection.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def server_states(stats_socket: Path) -> dict[tuple[str, str], str]:
    """(backend, server) -> status (UP, DOWN, "UP 1/2"...) from ``show stat``."""
    lines = runtime_command(stats_socket, "show stat").splitlines()
    if not lines or not lines[0].startswith("# "):
        raise OSError(f"unexpected answer from {stats_socket}: {lines[:1]}")
    fields = lines[0][2:].split(",")
    backend, server, status = (fields.index(name) for name in ("pxname", "svname", "status"))
    states = {}
    for line in lines[1:]:
        row = line.split(",")
        if len(row) > status and row[server] not in ("FRONTEND", "BACKEND"):
            states[(row[backend], row[server])] = row[status]
    return states
