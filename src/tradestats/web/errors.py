"""Every error the web layer answers is ``{"detail": ...}`` JSON (texts: messages.py)."""
from __future__ import annotations

import errno
import logging
from typing import NoReturn

import falcon

from tradestats import limits, messages

#: OSErrors that mean the process ran out of something, not that the request was wrong.
OUT_OF_RESOURCES = frozenset({errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.ENOBUFS})

log = logging.getLogger("tradestats.web")


def bad_request(detail: str) -> NoReturn:
    raise falcon.HTTPBadRequest(description=detail)


def content_too_large(max_body_bytes: int) -> NoReturn:
    # The rest of the body is never read: the server closes the connection after the answer
    # (tests/test_http_hostile.py: the unread rest is never taken for a next request).
    raise falcon.HTTPError(
        falcon.HTTP_413, description=messages.BODY_TOO_LARGE.format(max_body_bytes=max_body_bytes)
    )


def out_of_resources(req: falcon.Request, resp: falcon.Response, error: Exception,
                     params: dict) -> None:
    """MemoryError, or an OSError for memory or descriptors: 503, retry later; else a 500.

    The engine raises before it changes anything, so the batch is not stored and its symbol
    keeps working once memory is back.
    """
    resp.content_type = falcon.MEDIA_JSON
    if isinstance(error, MemoryError) or getattr(error, "errno", None) in OUT_OF_RESOURCES:
        log.warning("%s %s: out of resources: %s", req.method, req.path, error)
        resp.status = falcon.HTTP_503
        resp.set_header("Retry-After", str(limits.RETRY_AFTER_SECONDS))
        resp.media = {"detail": messages.OUT_OF_MEMORY if isinstance(error, MemoryError)
                      or error.errno == errno.ENOMEM else messages.OUT_OF_CONNECTIONS}
    else:
        log.error("%s %s: unexpected error", req.method, req.path, exc_info=error)
        resp.status = falcon.HTTP_500
        resp.media = {"detail": messages.INTERNAL_ERROR}


def error_detail(req: falcon.Request, error: falcon.HTTPError) -> str:
    """Our own errors carry their detail; Falcon's routing errors get a message naming the path."""
    if error.description:
        return error.description
    if error.status_code == 404:
        return messages.NOT_FOUND.format(path=req.path)
    if error.status_code == 405:
        allowed = (error.headers or {}).get("Allow", "")
        return messages.METHOD_NOT_ALLOWED.format(method=req.method, path=req.path, allowed=allowed)
    if error.status_code >= 500:
        return messages.INTERNAL_ERROR
    return messages.HTTP_ERROR_FALLBACK.format(title=error.title)


def serialize_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    """Every error is ``{"detail": ...}`` as JSON, whatever the client's Accept header says."""
    resp.content_type = falcon.MEDIA_JSON
    resp.media = {"detail": error_detail(req, error)}
