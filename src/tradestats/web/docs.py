"""GET /openapi.json and GET /docs: the contract as OpenAPI 3.1, and Swagger UI over it.

Swagger UI's files come from the swagger-ui-bundle-v2 package and the page from static/: the
docs work with no internet.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import falcon
import orjson
from swagger_ui_bundle import swagger_ui_path

DOCS_PAGE = resources.files("tradestats.web").joinpath("static/docs.html").read_bytes()
SWAGGER_UI_FILES = Path(swagger_ui_path)


class OpenApiResource:
    def __init__(self, document: dict) -> None:
        self._body = orjson.dumps(document)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._body


class DocsResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.data = DOCS_PAGE
