"""Access control: with an API key, every write needs ``Authorization: Bearer <key>``.

Reads stay open unless the server protects them too (``--protect-reads``); ``/health`` (for
probes) and what holds no data (the API's description and the pages' files) stay open either
way, though the live page's data calls then need the key, which it cannot send. A refused
request is a 401 ``{"detail"}`` with a ``WWW-Authenticate: Bearer`` challenge, decided before
its body is read, so nothing of it is stored. Keys are compared in constant time
(``hmac.compare_digest``). ``is_protected`` is the one rule; the OpenAPI document states it.
"""
from __future__ import annotations

import hmac

import falcon

from tradestats import messages

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})   # OPTIONS tells only the methods: a read
ALWAYS_OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/"})
ALWAYS_OPEN_PREFIXES = ("/docs/assets/", "/page/assets/")
CHALLENGE = 'Bearer realm="tradestats"'


def is_protected(path: str, method: str, protect_reads: bool) -> bool:
    """Whether a request needs the key (when the server has one)."""
    if path in ALWAYS_OPEN_PATHS or path.startswith(ALWAYS_OPEN_PREFIXES):
        return False
    return protect_reads or method.upper() not in READ_METHODS


def bearer_token(header: str | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme is
    case-insensitive), or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token.encode("utf-8", "surrogateescape")


class ApiKeyCheck:
    """Falcon middleware: refuses what the key protects, unless the request carries the key."""

    def __init__(self, api_key: str, protect_reads: bool = False) -> None:
        if not api_key:
            raise ValueError("an empty API key would protect nothing")
        self._key = api_key.encode("utf-8")
        self._protect_reads = protect_reads

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not is_protected(req.path, req.method, self._protect_reads):
            return
        token = bearer_token(req.get_header("Authorization"))
        if token is None:
            raise falcon.HTTPUnauthorized(description=messages.API_KEY_MISSING,
                                          challenges=[CHALLENGE])
        if not hmac.compare_digest(token, self._key):
            raise falcon.HTTPUnauthorized(description=messages.API_KEY_WRONG,
                                          challenges=[CHALLENGE + ', error="invalid_token"'])
