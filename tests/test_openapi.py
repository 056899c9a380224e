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
from tradestats.web.openapi import aliases

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


OPERATION_METHODS = ("get", "head", "post", "put", "patch", "delete", "options", "trace")


def operations(doc: dict) -> set[tuple[str, str]]:
    return {(path, method) for path, item in doc["paths"].items()
            for method in item if method in OPERATION_METHODS}


def test_every_route_and_method_is_described_once_and_nothing_else():
    """What Falcon routes, each alias folded into the path it spells differently (OPTIONS is
    Falcon's own responder on every route), is exactly what the document describes."""
    doc = document()
    canonical = aliases(doc)
    served = set()
    for route in falcon.inspect.inspect_routes(APP):
        path = canonical.get(route.path, route.path)
        served |= {(path, m.method.lower()) for m in route.methods if m.internal is False}
        served.add((path, "options"))
    assert served == operations(doc)
    routed = {route.path for route in falcon.inspect.inspect_routes(APP)}
    assert set(canonical) <= routed   # every alias named is served
    assert not set(canonical) & set(doc["paths"])   # and never a second path item


def test_aliases_are_named_in_their_path_description():
    doc = document()
    for alias, path in aliases(doc).items():
        assert f"`{alias}`" in doc["paths"][path]["description"], alias
    assert aliases(doc) == {"/add_batch": "/add_batch/", "/stats": "/stats/",
                            "/prices": "/prices/", "/symbols": "/symbols/",
                            "/envelope": "/envelope/"}


def test_every_operation_is_tagged_with_a_declared_tag():
    doc = document()
    declared = {tag["name"] for tag in doc["tags"]}
    used = {tag for path, method in operations(doc)
            for tag in doc["paths"][path][method]["tags"]}
    assert used == declared == {"statistics", "ingest", "symbols", "operations", "page"}
    tag_of = {(path, method): doc["paths"][path][method]["tags"] for path, method in
              operations(doc)}
    assert tag_of["/stats/", "get"] == ["statistics"] and tag_of["/add_batch/", "post"] == [
        "ingest"] and tag_of["/symbols/", "delete"] == ["symbols"]


def test_statuses_fit_each_route():
    """What the server below the app can answer is on every operation; what only a body can
    cause (413, 507) only where a body is read; 415 everywhere (Content-Encoding)."""
    doc = document()
    for path, method in operations(doc):
        statuses = set(doc["paths"][path][method]["responses"])
        assert {"200", "400", "405", "408", "414", "415", "431", "503"} <= statuses, (path,
                                                                                     method)
        assert ("413" in statuses) == ("507" in statuses) == ((path, method) ==
                                                               ("/add_batch/", "post"))
        assert "401" not in statuses and "421" not in statuses
    assert "NotFound" in doc["components"]["responses"]


def test_delete_symbol_is_described_as_the_contract_says():
    keyed = keyed_document(protect_reads=False)
    delete = keyed["paths"]["/symbols/"]["delete"]
    assert [p["name"] for p in delete["parameters"]] == ["symbol"]
    assert delete["parameters"][0]["required"] is True
    deleted = keyed["components"]["schemas"][
        delete["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit(
            "/", 1)[1]]
    assert re.fullmatch(deleted["properties"]["message"]["pattern"],
                        messages.SYMBOL_DELETED.format(symbol="AAPL"))
    assert messages.SYMBOL_NOT_FOUND in delete["responses"]["400"]["description"]
    assert "401" in delete["responses"] and delete["security"] == [{"apiKey": []}]


def keyed_document(protect_reads: bool) -> dict:
    app = create_app(Store(max_symbols=10, max_k=MAX_K), api_key="k3y",
                     protect_reads=protect_reads)
    return testing.TestClient(app).simulate_get("/openapi.json").json


@pytest.mark.parametrize("protect_reads", [False, True])
def test_401_is_documented_exactly_where_the_key_is_asked_for(protect_reads):
    """The document's 401s against the app itself: each operation is called without the key."""
    doc = keyed_document(protect_reads)
    validate(doc)
    client = testing.TestClient(create_app(Store(max_symbols=10, max_k=MAX_K), api_key="k3y",
                                           protect_reads=protect_reads))
    for path, method in operations(doc):
        answered = client.simulate_request(method.upper(), path).status_code
        documented = "401" in doc["paths"][path][method]["responses"]
        assert (answered == 401) == documented, (path, method, answered)


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
    # Relative (a server behind a proxy under a path prefix) and nothing from a CDN.
    assert sources and all(not s.startswith("/") and "//" not in s for s in sources)
    for source in sources:
        asset = client.simulate_get("/" + source)
        assert asset.status_code == 200 and len(asset.content) > 1000, source
    assert 'url: "openapi.json"' in page.text


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_health_answers_get_and_head(method):
    result = testing.TestClient(APP).simulate_request(method, "/health")
    assert result.status_code == 200
