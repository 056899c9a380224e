"""GET /openapi.json describes the app exactly, validates as OpenAPI 3.1, and the app passes a
schemathesis run from it with every check on; GET /docs works with no internet."""
from __future__ import annotations

import re
from pathlib import Path

import falcon.inspect
import pytest
import schemathesis
from falcon import testing
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.config import SchemathesisConfig

from tradestats import Store, limits, messages
from tradestats.web import create_app

MAX_K = 3
FUZZ_SYMBOL_LIMIT = 10**6   # every schema-valid new symbol is accepted: no surprise 400


def fuzz_app():
    store = Store(max_symbols=FUZZ_SYMBOL_LIMIT, max_k=MAX_K)
    store.add("AAPL", [float(n) for n in range(1000)])   # schema-valid GETs can find data
    return create_app(store, max_batch=200, max_body_bytes=20_000)


APP = fuzz_app()
CONFIG = SchemathesisConfig.from_path(Path(__file__).with_name("schemathesis.toml"))
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP, config=CONFIG)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_the_app_conforms_to_its_document(case):
    case.call_and_validate()


def document() -> dict:
    return testing.TestClient(APP).simulate_get("/openapi.json").json


def test_the_document_is_valid_openapi_3_1():
    doc = document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_every_route_and_method_is_described_and_nothing_else():
    served = {}
    for route in falcon.inspect.inspect_routes(APP):
        methods = {m.method.lower() for m in route.methods if m.internal is False}
        served[route.path] = methods
    described = {path: set(item) for path, item in document()["paths"].items()}
    assert served == described


def test_the_document_states_the_limits_and_texts():
    doc = document()
    batch = doc["components"]["schemas"]["Batch"]["properties"]
    assert batch["values"]["maxItems"] == 200
    assert batch["values"]["items"]["maximum"] == limits.MAX_ABS_PRICE
    assert batch["symbol"]["maxLength"] == limits.MAX_SYMBOL_LENGTH
    k = next(p for p in doc["paths"]["/stats/"]["get"]["parameters"] if p["name"] == "k")
    assert k["schema"]["maximum"] == MAX_K
    text = str(doc)
    for detail in (messages.INVALID_K, messages.MISSING_SYMBOL, messages.NOT_ENOUGH_DATA,
                   messages.BATCH_ADDED):
        assert detail in text
    assert "20000 bytes" in doc["paths"]["/add_batch/"]["post"]["responses"]["413"]["description"]


def test_docs_page_and_its_assets_are_served_locally():
    client = testing.TestClient(APP)
    page = client.simulate_get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(source.startswith("/") for source in sources)   # nothing from a CDN
    for source in sources:
        asset = client.simulate_get(source)
        assert asset.status_code == 200 and len(asset.content) > 1000, source
    assert "/openapi.json" in page.text


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_health_answers_get_and_head(method):
    result = testing.TestClient(APP).simulate_request(method, "/health")
    assert result.status_code == 200
