"""GET /openapi.json: the contract (../shared/API.md) as OpenAPI 3.1, built from the code.

One source of truth: limits and texts come from limits.py and messages.py, the k range from the
store, the batch and body limits from the app's settings; tests/test_openapi.py checks that
every route the app serves (and only those) is described, validates the document and fuzzes the
app from it with schemathesis.
"""
from __future__ import annotations

from typing import Any

from tradestats import __version__, limits, messages
from tradestats.web.access import is_protected

JSON = "application/json"


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(description: str, schema_ref: str) -> dict[str, Any]:
    return {"description": description,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}}


def _text(description: str, media_type: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def _add_batch(operation_id: str, max_batch: int, max_body_bytes: int) -> dict[str, Any]:
    return {"post": {
        "summary": "Append prices to a symbol, oldest first (all or nothing)",
        "operationId": operation_id,
        "requestBody": {"required": True, "content": {JSON: {
            "schema": {"$ref": "#/components/schemas/Batch"}}}},
        "responses": {
            "200": _json(messages.BATCH_ADDED, "Added"),
            "400": _error("Invalid body, symbol or values; more values than the batch limit; "
                          "a new symbol beyond the symbol limit. Nothing stored."),
            "413": _error(f"Body larger than {max_body_bytes} bytes. Nothing stored."),
            "415": _error("A Content-Type other than application/json. Nothing stored."),
            "507": _error(messages.DISK_FULL),
        },
    }}


def _symbol_parameter() -> dict[str, Any]:
    return {"name": "symbol", "in": "query", "required": True,
            "schema": {"type": "string", "minLength": 1}}


def _digits_parameter(name: str, maximum: int, invalid: str) -> dict[str, Any]:
    """An integer query parameter as strict_integer reads it."""
    return {"name": name, "in": "query", "required": True,
            "description": f"ASCII digits only; anything else is '{invalid}'",
            "schema": {"type": "integer", "minimum": 1, "maximum": maximum}}


def _stats(operation_id: str, max_k: int) -> dict[str, Any]:
    return {"get": {
        "summary": "min, max, last, avg and var (population) over the last 10**k prices",
        "operationId": operation_id,
        "parameters": [_symbol_parameter(),
                       _digits_parameter("k", max_k, messages.INVALID_K)],
        "responses": {
            "200": _json("Statistics of the window", "Stats"),
            "400": _error(f"'{messages.INVALID_K}', '{messages.MISSING_SYMBOL}', "
                          f"'{messages.SYMBOL_NOT_FOUND}' or '{messages.NOT_ENOUGH_DATA}'"),
        },
    }}


def _symbols() -> dict[str, Any]:
    return {"get": {"summary": "Every symbol with its count and last price, sorted by symbol",
                    "operationId": "symbols",
                    "responses": {"200": _json("The symbols", "Symbols")}}}


def _prices(operation_id: str) -> dict[str, Any]:
    return {"get": {
        "summary": "The last n prices of a symbol, oldest first (fewer if fewer are stored)",
        "operationId": operation_id,
        "parameters": [_symbol_parameter(),
                       _digits_parameter("n", limits.MAX_PRICES_PER_REQUEST, messages.INVALID_N)],
        "responses": {
            "200": _json("The prices", "Prices"),
            "400": _error(f"'{messages.INVALID_N}', '{messages.MISSING_SYMBOL}' or "
                          f"'{messages.SYMBOL_NOT_FOUND}'"),
        },
    }}


def _health() -> dict[str, Any]:
    answer = _json("The server is up", "Health")
    return {"get": {"summary": "For load balancers and start-up probes", "operationId": "health",
                    "responses": {"200": answer}}}


def _with_head(path_item: dict[str, Any]) -> dict[str, Any]:
    """Every GET route also answers HEAD: same status and headers, no body."""
    get = path_item.get("get")
    if get is None:
        return path_item
    head = {"summary": "As GET, without the body", "operationId": f"{get['operationId']}_head",
            "responses": {status: {"description": response["description"]}
                          for status, response in get["responses"].items()}}
    if "parameters" in get:
        head["parameters"] = get["parameters"]
    return {**path_item, "head": head}


def _page(operation_id: str, summary: str, response: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "operationId": operation_id,
                    "responses": {"200": response}}}


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
        "Health": {"type": "object", "required": ["status"], "additionalProperties": False,
                   "properties": {"status": {"const": messages.HEALTH_OK}}},
        "Error": {"type": "object", "required": ["detail"], "additionalProperties": False,
                  "properties": {"detail": {"type": "string", "minLength": 1}}},
    }}


def openapi_document(*, max_k: int, max_batch: int, max_body_bytes: int,
                     api_key: bool = False, protect_reads: bool = False) -> dict[str, Any]:
    document = {
        "openapi": "3.1.0",
        "info": {"title": "tradestats", "version": __version__,
                 "description": "Rolling-window statistics over trading prices, in constant "
                 "time. Every error is {\"detail\": \"...\"} JSON with a 4xx status (507 for "
                 "a full disk)."},
        "paths": {path: _with_head(item) for path, item in {
            # Existing clients call both spellings: both are the same endpoint.
            "/add_batch/": _add_batch("add_batch", max_batch, max_body_bytes),
            "/add_batch": _add_batch("add_batch_without_slash", max_batch, max_body_bytes),
            "/stats/": _stats("stats", max_k),
            "/stats": _stats("stats_without_slash", max_k),
            "/symbols": _symbols(),
            "/prices/": _prices("prices"),
            "/prices": _prices("prices_without_slash"),
            "/health": _health(),
            "/metrics": _page("metrics", "Prometheus text format",
                              _text("Metrics", "text/plain")),
            "/openapi.json": _page("openapi", "This document",
                                   {"description": "OpenAPI 3.1",
                                    "content": {JSON: {"schema": {"type": "object"}}}}),
            "/": _page("page", "The live page: every symbol, the selected one's statistics for "
                        "every window and a chart, refreshed every second; ?symbol=S&k=K selects",
                        _text("HTML page", "text/html")),
            "/docs": _page("docs", "Interactive documentation (Swagger UI, served locally)",
                           _text("HTML page", "text/html")),
        }.items()},
        "components": _components(max_batch),
    }
    if api_key:
        _require_key(document, protect_reads)
    return document


def _require_key(document: dict[str, Any], protect_reads: bool) -> None:
    """The server has an API key: its bearer scheme, and on each protected operation the
    requirement and its 401."""
    document["components"]["securitySchemes"] = {
        "apiKey": {"type": "http", "scheme": "bearer",
                   "description": "The server's API key (--api-key): Authorization: Bearer <key>"}}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if not is_protected(path, method, protect_reads):
                continue
            operation["security"] = [{"apiKey": []}]
            operation["responses"]["401"] = _error(
                "No API key, or a wrong one (WWW-Authenticate: Bearer). Nothing stored.")
