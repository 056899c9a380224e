"""Every error the web layer answers is ``{"detail": ...}`` JSON (texts: messages.py)."""
from __future__ import annotations

from typing import NoReturn

import falcon

from tradestats import messages


def bad_request(detail: str) -> NoReturn:
    raise falcon.HTTPBadRequest(description=detail)


def content_too_large(max_body_bytes: int) -> NoReturn:
    raise falcon.HTTPError(
        falcon.HTTP_413, description=messages.BODY_TOO_LARGE.format(max_body_bytes=max_body_bytes)
    )


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
