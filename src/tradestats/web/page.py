"""GET /: the live page for people (HTML, CSS and JavaScript in static/page/, no build step and
nothing from a CDN). The page polls the JSON API; the server only fills in ``max_k``."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import falcon

PAGE_FILES = Path(str(resources.files("tradestats.web").joinpath("static/page")))


class PageResource:
    def __init__(self, max_k: int) -> None:
        template = (PAGE_FILES / "index.html").read_text(encoding="utf-8")
        self._body = template.replace("{{MAX_K}}", str(max_k)).encode()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.cache_control = ["no-cache"]
        resp.data = self._body
