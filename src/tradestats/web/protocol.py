"""What the server below us lets through and HTTP/1.1 refuses (RFC 9112 sections 2.3 and 3.2).

gunicorn's parser takes any ``HTTP/1.x`` version and a request without Host; both are refused
here, before routing, so every worker class answers them the same way.
"""
from __future__ import annotations

import falcon

from tradestats import messages

SUPPORTED_PROTOCOLS = frozenset({"HTTP/1.0", "HTTP/1.1"})


class ProtocolCheck:
    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        protocol = req.env.get("SERVER_PROTOCOL", "HTTP/1.1")
        if protocol not in SUPPORTED_PROTOCOLS:
            # 400, not 505: a malformed request is the client's error (issue #9: no 5xx for input).
            raise falcon.HTTPBadRequest(
                description=messages.HTTP_VERSION_UNSUPPORTED.format(protocol=protocol))
        if protocol == "HTTP/1.1" and not req.env.get("HTTP_HOST"):
            raise falcon.HTTPBadRequest(description=messages.HOST_MISSING)
