"""Access control: with an API key, every write needs ``Authorization: Bearer <key>``.

Reads stay open unless the server protects them too (``--protect-reads``); ``/health`` (for
probes) and what holds no data (the API's description and the pages' files) stay open either
way: the live page then needs its data calls answered, which it cannot do without the key. A refused request is a 401 ``{"detail"}`` with a
``WWW-Authenticate: Bearer`` challenge, decided before its body is read, so nothing of it is
stored. Keys are compared in constant time (``hmac.compare_digest``).
"""
from __future__ import annotations

import hmac

import falcon

from tradestats import messages

READ_METHODS = frozenset({"GET", "HEAD"})
ALWAYS_OPEN_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/"})
ALWAYS_OPEN_PREFIXES = ("/docs/assets/", "/page/assets/")
CHALLENGE = 'Bearer realm="tradestats"'


def bearer_token(header: str | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme is
    case-insensitive), or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip().encode("utf-8", "surrogateescape")


class ApiKeyCheck:
    """Falcon middleware: refuses what the key protects, unless the request carries the key."""

    def __init__(self, api_key: str, protect_reads: bool = False) -> None:
        if not api_key:
            raise ValueError("an empty API key would protect nothing")
        self._key = api_key.encode("utf-8")
        self._protect_reads = protect_reads

    def protects(self, req: falcon.Request) -> bool:
        if req.path in ALWAYS_OPEN_PATHS or req.path.startswith(ALWAYS_OPEN_PREFIXES):
            return False
        return self._protect_reads or req.method not in READ_METHODS

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not self.protects(req):
            return
        token = bearer_token(req.get_header("Authorization"))
        if token is None:
            raise falcon.HTTPUnauthorized(description=messages.API_KEY_MISSING,
                                          challenges=[CHALLENGE])
        if not hmac.compare_digest(token, self._key):
            raise falcon.HTTPUnauthorized(description=messages.API_KEY_WRONG,
                                          challenges=[CHALLENGE + ', error="invalid_token"'])
