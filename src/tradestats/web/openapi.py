"""GET /openapi.json: the contract (../shared/API.md) as OpenAPI 3.1, built from the code.

One source of truth: limits and texts come from limits.py and messages.py, the k range from the
store, the batch and body limits from the app's settings; tests/test_openapi.py checks that
every route the app serves (and only those) is described, validates the document, fuzzes the
app from it with schemathesis, and sends a live server good, bad and hostile requests: every
status it answers must be listed here for that path and method.

How the document is laid out, and why:

* Operations are grouped by tag (``TAGS``) instead of all under "default".
* A path with two spellings (``/stats/`` and ``/stats``: existing clients call both) is one
  path item, the other spelling named in its description and in ``x-aliases``: one endpoint,
  listed once.
* Every operation lists every status the server can answer for it, including those written
  before the app sees the request. The HTTP server answers a malformed request 400, a request
  line too long 414, a header block too large or with too many fields 431 (granian: measured
  at 300 KB or 200 fields; 100 KB passes), a head that does not arrive in time 408 (meinheld;
  granian closes the connection without an answer); the app answers a ``Content-Encoding`` it does not decode 415 on any route, a request
  it had no memory or descriptor for 503. OpenAPI has no place for a method a path does not
  have, so 405 (with ``Allow``) is listed on each of the path's operations; an unknown path is
  404 (``components.responses.NotFound``, and the info description says so).
* OPTIONS is answered on every path (Falcon: 200 with ``Allow``), so it is described too.
"""
from __future__ import annotations

from typing import Any

from tradestats import __version__, limits, messages
from tradestats.envelope import MAX_BUCKETS
from tradestats.web.access import is_protected

JSON = "application/json"

#: Each operation's group, in the order Swagger UI shows them.
TAGS = (
    {"name": "statistics", "description": "Statistics and prices of one symbol"},
    {"name": "ingest", "description": "Appending prices"},
    {"name": "symbols", "description": "Listing and deleting symbols"},
    {"name": "operations", "description": "Probes, metrics and this document"},
    {"name": "page", "description": "Pages for people"},
)


# --- responses ------------------------------------------------------------------------------------

def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(description: str, schema_ref: str) -> dict[str, Any]:
    return {"description": description,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}


def _text(description: str, media_type: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def _empty_or_error(description: str) -> dict[str, Any]:
    """A status the HTTP server may write itself, before the app sees the request: its body
    may be empty (the contract allows it), else it is the app's {"detail"} JSON."""
    return _error(description + " The HTTP server may answer it itself, with an empty body.")


def _any_route_responses() -> dict[str, dict[str, Any]]:
    """What every operation can be answered, whatever its route does."""
    return {
        "400": _empty_or_error("Malformed HTTP: a bad request line, header or framing, no Host "
                               "in HTTP/1.1, a repeated Host, an unsupported HTTP version."),
        "405": _error("A method this path does not answer: Allow lists the ones it does."),
        "408": _empty_or_error("The request did not arrive in time (--request-timeout)."),
        "414": _empty_or_error("The request line is too long."),
        "415": _error("A Content-Encoding the server does not decode (send bodies "
                      "uncompressed)."),
        "431": _empty_or_error("The request's header fields are too large."),
        "503": _error(f"'{messages.OUT_OF_MEMORY}' or '{messages.OUT_OF_CONNECTIONS}' "
                      "(with Retry-After). Nothing stored."),
    }


def _damaged_symbol() -> dict[str, Any]:
    return _error("The symbol's file failed a check: refused by name, never served (the other "
                  "symbols are not affected).")


def _operation(tag: str, operation_id: str, summary: str, responses: dict[str, Any],
               **extra: Any) -> dict[str, Any]:
    """An operation with its own responses and those any route can be answered."""
    every = {**_any_route_responses(), **responses}
    return {"tags": [tag], "summary": summary, "operationId": operation_id, **extra,
            "responses": dict(sorted(every.items()))}


# --- parameters -----------------------------------------------------------------------------------

def _symbol_parameter() -> dict[str, Any]:
    return {"name": "symbol", "in": "query", "required": True,
            "schema": {"type": "string", "minLength": 1}}


def _digits_parameter(name: str, maximum: int, invalid: str) -> dict[str, Any]:
    """An integer query parameter as strict_integer reads it."""
    return {"name": name, "in": "query", "required": True,
            "description": f"ASCII digits only; anything else is '{invalid}'",
            "schema": {"type": "integer", "minimum": 1, "maximum": maximum}}


# --- path items -----------------------------------------------------------------------------------

def _add_batch(max_body_bytes: int) -> dict[str, Any]:
    return {"post": _operation(
        "ingest", "add_batch", "Append prices to a symbol, oldest first (all or nothing)",
        {"200": _json(messages.BATCH_ADDED, "Added"),
         "400": _empty_or_error("Invalid body, symbol or values; more values than the batch "
                                "limit; a new symbol beyond the symbol limit; a body shorter "
                                "than declared or badly framed; malformed HTTP. Nothing stored."),
         "413": _error(f"Body larger than {max_body_bytes} bytes. Nothing stored."),
         "415": _error("A Content-Type other than application/json, or a Content-Encoding "
                       "the server does not decode. Nothing stored."),
         "500": _damaged_symbol(),
         "503": _error(f"'{messages.SYNC_FAILED}', '{messages.OUT_OF_MEMORY}' or "
                       f"'{messages.OUT_OF_CONNECTIONS}' (with Retry-After). Nothing stored."),
         "507": _error(messages.DISK_FULL)},
        requestBody={"required": True, "content": {JSON: {
            "schema": {"$ref": "#/components/schemas/Batch"}}}})}


def _stats(max_k: int) -> dict[str, Any]:
    return {"get": _operation(
        "statistics", "stats",
        "min, max, last, avg and var (population) over the last 10**k prices",
        {"200": _json("Statistics of the window", "Stats"),
         "400": _empty_or_error(
             f"'{messages.INVALID_K}', '{messages.MISSING_SYMBOL}', "
             f"'{messages.SYMBOL_NOT_FOUND}' or '{messages.NOT_ENOUGH_DATA}'; malformed HTTP."),
         "500": _damaged_symbol()},
        parameters=[_symbol_parameter(), _digits_parameter("k", max_k, messages.INVALID_K)])}


def _prices() -> dict[str, Any]:
    return {"get": _operation(
        "statistics", "prices",
        "The last n prices of a symbol, oldest first (fewer if fewer are stored)",
        {"200": _json("The prices", "Prices"),
         "400": _empty_or_error(f"'{messages.INVALID_N}', '{messages.MISSING_SYMBOL}' or "
                                f"'{messages.SYMBOL_NOT_FOUND}'; malformed HTTP."),
         "500": _damaged_symbol()},
        parameters=[_symbol_parameter(),
                    _digits_parameter("n", limits.MAX_PRICES_PER_REQUEST, messages.INVALID_N)])}


def _envelope(max_k: int) -> dict[str, Any]:
    optional_buckets = {**_digits_parameter("buckets", MAX_BUCKETS, messages.INVALID_BUCKETS),
                        "required": False}
    optional_buckets["schema"] = {**optional_buckets["schema"], "default": limits.DEFAULT_ENVELOPE_BUCKETS}
    return {"get": _operation(
        "statistics", "envelope",
        "The whole window of the last 10**k prices as about `buckets` buckets, each with its "
        "lowest and highest price (for charts: O(buckets) from a pyramid kept per worker)",
        {"200": _json("The envelope", "Envelope"),
         "400": _empty_or_error(
             f"'{messages.INVALID_K}', '{messages.INVALID_BUCKETS}', "
             f"'{messages.MISSING_SYMBOL}', '{messages.SYMBOL_NOT_FOUND}' or "
             f"'{messages.NOT_ENOUGH_DATA}'; malformed HTTP."),
         "500": _damaged_symbol()},
        parameters=[_symbol_parameter(), _digits_parameter("k", max_k, messages.INVALID_K),
                    optional_buckets])}


def _symbols() -> dict[str, Any]:
    return {"get": _operation("symbols", "symbols",
                              "Every symbol with its count and last price, sorted by symbol",
                              {"200": _json("The symbols", "Symbols")})}


def _delete_symbol() -> dict[str, Any]:
    return {"delete": _operation(
        "symbols", "delete_symbol", "Delete a symbol: its prices are gone and its slot is free",
        {"200": _json(messages.SYMBOL_DELETED, "Deleted"),
         "400": _empty_or_error(f"'{messages.MISSING_SYMBOL}' or "
                                f"'{messages.SYMBOL_NOT_FOUND}'; malformed HTTP."),
         "500": _damaged_symbol()},
        parameters=[_symbol_parameter()])}


def _health() -> dict[str, Any]:
    return {"get": _operation("operations", "health", "For load balancers and start-up probes",
                              {"200": _json("The server is up", "Health")})}


def _page(tag: str, operation_id: str, summary: str, response: dict[str, Any]) -> dict[str, Any]:
    return {"get": _operation(tag, operation_id, summary, {"200": response})}


def _with_head(path_item: dict[str, Any]) -> dict[str, Any]:
    """Every GET route also answers HEAD: same status and headers, no body."""
    get = path_item.get("get")
    if get is None:
        return path_item
    head = {"tags": get["tags"], "summary": "As GET, without the body",
            "operationId": f"{get['operationId']}_head",
            "responses": {status: {"description": response["description"]}
                          for status, response in get["responses"].items()}}
    if "parameters" in get:
        head["parameters"] = get["parameters"]
    return {**path_item, "head": head}


def _with_options(path_item: dict[str, Any]) -> dict[str, Any]:
    """Falcon answers OPTIONS on every route: 200, empty, the allowed methods in Allow."""
    first = next(operation for _, operation in _operations(path_item))
    options = {"tags": first["tags"], "summary": "The methods this path answers, in Allow",
               "operationId": f"{first['operationId']}_options",
               "responses": dict(sorted({**_any_route_responses(), "200": {
                   "description": "No body; Allow lists the methods",
                   "headers": {"Allow": {"schema": {"type": "string"}}}}}.items()))}
    return {**path_item, "options": options}


def _aliased(path_item: dict[str, Any], alias: str,
             why: str = "existing clients call both spellings") -> dict[str, Any]:
    """One endpoint served at two spellings: described once, the other one named."""
    note = f"Also served at `{alias}` ({why}): the same endpoint."
    return {"description": note, "x-aliases": [alias], **path_item}


def _paths(max_k: int, max_body_bytes: int) -> dict[str, dict[str, Any]]:
    html = _text("HTML page", "text/html")
    described = {
        "/add_batch/": _aliased(_add_batch(max_body_bytes), "/add_batch"),
        "/stats/": _aliased(_stats(max_k), "/stats"),
        "/prices/": _aliased(_prices(), "/prices"),
        "/envelope/": _aliased(_envelope(max_k), "/envelope", "like /stats/ and /prices/"),
        "/symbols/": _aliased({**_symbols(), **_delete_symbol()}, "/symbols",
                               "the contract lists with GET /symbols and deletes with "
                               "DELETE /symbols/"),
        "/health": _health(),
        "/metrics": _page("operations", "metrics", "Prometheus text format",
                          _text("Metrics", "text/plain")),
        "/openapi.json": _page("operations", "openapi", "This document",
                               {"description": "OpenAPI 3.1",
                                "content": {JSON: {"schema": {"type": "object"}}}}),
        "/": _page("page", "page", "The live page: every symbol, the selected one's statistics "
                   "for every window and a chart, refreshed every second; ?symbol=S&k=K selects",
                   html),
        "/docs": _page("page", "docs", "Interactive documentation (Swagger UI, served locally)",
                       html),
    }
    return {path: _with_options(_with_head(item)) for path, item in described.items()}


def aliases(document: dict[str, Any]) -> dict[str, str]:
    """Every other spelling of a described path -> the path as described."""
    return {alias: path for path, item in document["paths"].items()
            for alias in item.get("x-aliases", ())}


# --- the document ---------------------------------------------------------------------------------

def _components(max_batch: int) -> dict[str, Any]:
    number = {"type": "number", "minimum": -limits.MAX_ABS_PRICE,
              "maximum": limits.MAX_ABS_PRICE}
    return {"schemas": {
        "Batch": {
            "type": "object", "required": ["symbol", "values"],
            "properties": {
                "symbol": {"type": "string", "minLength": 1,
                           "maxLength": limits.MAX_SYMBOL_LENGTH,
                           "pattern": "^[^\\u0000-\\u001F\\u007F-\\u009F]*$",
                           "description": "Any Unicode but control characters; case-sensitive"},
                "values": {"type": "array", "maxItems": max_batch, "items": number},
            },
            "description": "Unknown keys are ignored.",
        },
        "Added": {"type": "object", "required": ["message"], "additionalProperties": False,
                  "properties": {"message": {"const": messages.BATCH_ADDED}}},
        "Deleted": {"type": "object", "required": ["message"], "additionalProperties": False,
                    "properties": {"message": {"type": "string",
                                               "pattern": "^Symbol .+ deleted$"}}},
        "Stats": {"type": "object", "additionalProperties": False,
                  "required": ["symbol", "min", "max", "last", "avg", "var"],
                  "properties": {"symbol": {"type": "string"},
                                 "min": {"type": "number"}, "max": {"type": "number"},
                                 "last": {"type": "number"}, "avg": {"type": "number"},
                                 "var": {"type": "number", "minimum": 0}}},
        "Symbols": {"type": "object", "required": ["symbols"], "additionalProperties": False,
                    "properties": {"symbols": {"type": "array", "items": {
                        "type": "object", "required": ["symbol", "count", "last"],
                        "additionalProperties": False,
                        "properties": {"symbol": {"type": "string"},
                                       "count": {"type": "integer", "minimum": 0},
                                       "last": {"type": ["number", "null"]}}}}}},
        "Prices": {"type": "object", "required": ["symbol", "prices"],
                   "additionalProperties": False,
                   "properties": {"symbol": {"type": "string"},
                                  "prices": {"type": "array", "items": {"type": "number"},
                                             "maxItems": limits.MAX_PRICES_PER_REQUEST}}},
        "Envelope": {
            "type": "object", "additionalProperties": False,
            "required": ["symbol", "k", "count", "start", "bucket_prices", "complete", "min",
                         "max"],
            "description": "The window is positions start .. count - 1 (a position counts the "
                           "symbol's prices from 0). Bucket i covers positions "
                           "max(start, (start // bucket_prices + i) * bucket_prices) .. "
                           "min(count, (start // bucket_prices + i + 1) * bucket_prices) - 1: "
                           "buckets are aligned to multiples of bucket_prices (1, 2 or 5 times "
                           "a power of ten), so the first and last may be partial. Each worker "
                           "builds its view of a window newest first, a bounded amount per "
                           "call: until `complete`, the oldest buckets are null.",
            "properties": {"symbol": {"type": "string"}, "k": {"type": "integer", "minimum": 1},
                           "count": {"type": "integer", "minimum": 0},
                           "start": {"type": "integer", "minimum": 0},
                           "bucket_prices": {"type": "integer", "minimum": 1},
                           "complete": {"type": "boolean"},
                           "min": {"type": "array", "items": {"type": ["number", "null"]},
                                   "maxItems": MAX_BUCKETS + 1},
                           "max": {"type": "array", "items": {"type": ["number", "null"]},
                                   "maxItems": MAX_BUCKETS + 1}}},
        "Health": {"type": "object", "required": ["status"], "additionalProperties": False,
                   "properties": {"status": {"const": messages.HEALTH_OK}}},
        "Error": {"type": "object", "required": ["detail"], "additionalProperties": False,
                  "properties": {"detail": {"type": "string", "minLength": 1}}},
    }, "responses": {
        "NotFound": _error("Any path not described here (only the exact spellings are routed: "
                           "`//stats/` and `/stats%2F` are 404 too)."),
    }}


def openapi_document(*, max_k: int, max_batch: int, max_body_bytes: int,
                     api_key: bool = False, protect_reads: bool = False,
                     cluster: bool = False) -> dict[str, Any]:
    document = {
        "openapi": "3.1.0",
        "info": {"title": "tradestats", "version": __version__,
                 "description": "Rolling-window statistics over trading prices, in constant "
                 "time. Every error is {\"detail\": \"...\"} JSON (a request the HTTP server "
                 "refuses before the app sees it may get an empty body). Each operation lists "
                 "every status it can be answered; a path not described here is 404 "
                 "(components.responses.NotFound)."},
        "tags": list(TAGS),
        "paths": _paths(max_k, max_body_bytes),
        "components": _components(max_batch),
    }
    if api_key:
        _require_key(document, protect_reads)
    if cluster:
        _place_symbols(document)
    return document


def _place_symbols(document: dict[str, Any]) -> None:
    """A cluster node (--cluster): each operation on one symbol may be 421 (another node owns
    it) or 503 while it moves (web/cluster.py)."""
    for item in document["paths"].values():
        for method, operation in _operations(item):
            names = [parameter["name"] for parameter in operation.get("parameters", [])]
            if "symbol" not in names and method != "post":
                continue
            operation["responses"]["421"] = _error(
                "The symbol belongs to another node of the cluster (named); nothing stored.")
            operation["responses"]["503"]["description"] += (
                " In a cluster also while the symbol moves to another node (Retry-After).")
            operation["responses"] = dict(sorted(operation["responses"].items()))


def _require_key(document: dict[str, Any], protect_reads: bool) -> None:
    """The server has an API key: its bearer scheme, and on each protected operation the
    requirement and its 401."""
    document["components"]["securitySchemes"] = {
        "apiKey": {"type": "http", "scheme": "bearer",
                   "description": "The server's API key (--api-key): Authorization: Bearer <key>"}}
    document["components"]["responses"]["NotFound"]["description"] += (
        " A request the key protects (a write; with --protect-reads any) is 401 first.")
    for path, item in document["paths"].items():
        for method, operation in _operations(item):
            if not is_protected(path, method, protect_reads):
                continue
            operation["security"] = [{"apiKey": []}]
            operation["responses"]["401"] = _error(
                "No API key, or a wrong one (WWW-Authenticate: Bearer). Nothing stored.")
            operation["responses"] = dict(sorted(operation["responses"].items()))


def _operations(path_item: dict[str, Any]):
    """(method, operation) of a path item, without its other fields (description, x-...)."""
    return [(key, value) for key, value in path_item.items()
            if key in ("get", "head", "post", "put", "patch", "delete", "options", "trace")]
