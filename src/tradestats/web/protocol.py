"""What HTTP/1.1 refuses and the server below us may let through, refused before routing, so
every server answers them alike (RFC 9112 sections 2.3 and 3.2; RFC 9110 section 8.4).
"""
from __future__ import annotations

import falcon

from tradestats import messages

#: SERVER_PROTOCOL as servers spell it: granian says "HTTP/1" for HTTP/1.0.
SUPPORTED_PROTOCOLS = frozenset({"HTTP/1.0", "HTTP/1", "HTTP/1.1", "HTTP/2"})
#: A request body in one of these codings is read as is.
IDENTITY_CODINGS = frozenset({"", "identity"})


class ProtocolCheck:
    """One middleware for every check (each middleware call costs every request a little)."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if "//" in req.path:
            # Only the exact paths are routed: Falcon's router skips empty segments, so
            # ``//stats/`` would otherwise reach ``/stats/``.
            raise falcon.HTTPNotFound()
        protocol = req.env.get("SERVER_PROTOCOL", "HTTP/1.1")
        if protocol not in SUPPORTED_PROTOCOLS:
            # 400, not 505: a malformed request is the client's error (issue #9: no 5xx for input).
            raise falcon.HTTPBadRequest(
                description=messages.HTTP_VERSION_UNSUPPORTED.format(protocol=protocol))
        host = req.env.get("HTTP_HOST", "")
        if protocol == "HTTP/1.1" and not host:
            raise falcon.HTTPBadRequest(description=messages.HOST_MISSING)
        if "," in host:  # servers join repeated fields with commas; a host name has none
            raise falcon.HTTPBadRequest(description=messages.HOST_REPEATED)
        coding = req.env.get("HTTP_CONTENT_ENCODING", "").strip().lower()
        if coding not in IDENTITY_CODINGS:
            # A gzip body read as plain JSON would be refused for the wrong reason, or worse.
            raise falcon.HTTPUnsupportedMediaType(
                description=messages.CONTENT_ENCODING_UNSUPPORTED.format(coding=coding))
