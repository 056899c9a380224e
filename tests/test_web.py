"""In-process tests of the Falcon layer against ../shared/API.md (falcon.testing, real engine)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from falcon import testing

from tradestats import Store, limits, messages
from tradestats.web import create_app

MAX_K = 3
MAX_SYMBOLS = 3
ADD_PATHS = ("/add_batch/", "/add_batch")
STATS_PATHS = ("/stats/", "/stats")


# --- helpers --------------------------------------------------------------------------------------

def reject_constant(token: str) -> None:
    raise AssertionError(f"response body has the non-JSON token {token}")


def strict_json(result: testing.Result):
    """The body parsed as RFC 8259 JSON: NaN/Infinity tokens fail the test."""
    assert result.headers["content-type"].startswith("application/json")
    return json.loads(result.text, parse_constant=reject_constant)


def assert_error(result: testing.Result, status: int, detail: str) -> None:
    assert result.status_code == status, result.text
    assert strict_json(result) == {"detail": detail}


def error_detail(result: testing.Result, status: int) -> str:
    assert result.status_code == status, result.text
    body = strict_json(result)
    assert set(body) == {"detail"}
    assert isinstance(body["detail"], str) and body["detail"]
    return body["detail"]


def post_json_text(client, text: str | bytes, path: str = "/add_batch/", **headers):
    body = text.encode() if isinstance(text, str) else text
    headers = {"Content-Type": "application/json", **headers}
    return client.simulate_post(path, body=body, headers=headers)


def post_batch(client, symbol, values, path: str = "/add_batch/", **extra_fields):
    document = {"symbol": symbol, "values": values, **extra_fields}
    return post_json_text(client, json.dumps(document), path)


def get_stats(client, symbol: str, k, path: str = "/stats/"):
    return client.simulate_get(path, params={"symbol": symbol, "k": str(k)})


def assert_added(result: testing.Result) -> None:
    assert result.status_code == 200, result.text
    assert strict_json(result) == {"message": "Batch data added successfully"}


def reference_stats(prices, k: int) -> dict:
    window = np.asarray(prices, dtype=np.float64)[-(10**k):]
    return {
        "min": float(window.min()),
        "max": float(window.max()),
        "last": float(window[-1]),
        "avg": float(window.mean()),
        "var": float(window.var()),  # ddof=0: population variance, as the contract says
    }


def assert_stats_match(result: testing.Result, symbol: str, prices, k: int) -> None:
    assert result.status_code == 200, result.text
    body = strict_json(result)
    assert list(body) == ["symbol", "min", "max", "last", "avg", "var"]
    assert body["symbol"] == symbol
    expected = reference_stats(prices, k)
    for field, value in expected.items():
        assert body[field] == pytest.approx(value, rel=1e-12, abs=1e-9), field


class CountingStream(io.BytesIO):
    """A wsgi.input that remembers how many bytes the app asked for and got."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


def post_with_stream(client, stream: io.BytesIO, declared_length: str):
    """POST whose body is ``stream``; ``declared_length`` '' means no Content-Length (chunked)."""
    return client.simulate_post(
        "/add_batch/",
        headers={"Content-Type": "application/json"},
        extras={"wsgi.input": stream, "CONTENT_LENGTH": declared_length},
    )


def batch_body_of_size(size: int) -> bytes:
    """A valid batch document padded with an unknown key to exactly ``size`` bytes."""
    head = b'{"symbol": "PAD", "values": [1.0], "padding": "'
    tail = b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture
def store() -> Store:
    return Store(max_symbols=MAX_SYMBOLS, max_k=MAX_K)


@pytest.fixture
def client(store) -> testing.TestClient:
    return testing.TestClient(create_app(store))


@pytest.fixture
def default_client() -> testing.TestClient:
    """The app with every limit at its default."""
    return testing.TestClient(create_app())


# --- success paths --------------------------------------------------------------------------------

def test_health(client):
    result = client.simulate_get("/health")
    assert result.status_code == 200
    assert strict_json(result) == {"status": "ok"}


@pytest.mark.parametrize("add_path", ADD_PATHS)
@pytest.mark.parametrize("stats_path", STATS_PATHS)
def test_both_path_spellings_reach_the_endpoints(client, add_path, stats_path):
    prices = [float(p) for p in range(150, 160)]
    assert_added(post_batch(client, "AAPL", prices, path=add_path))
    assert_stats_match(get_stats(client, "AAPL", 1, path=stats_path), "AAPL", prices, 1)


def test_seed_example_150_to_159(client):
    prices = list(range(150, 160))
    assert_added(post_batch(client, "AAPL", prices))
    assert_stats_match(get_stats(client, "AAPL", 1), "AAPL", prices, 1)


def test_seed_example_1_to_100(client):
    prices = list(range(1, 101))
    assert_added(post_batch(client, "SEED", prices))
    assert_stats_match(get_stats(client, "SEED", 2), "SEED", prices, 2)


def test_windows_cover_only_the_latest_prices_across_batches(client):
    rng = np.random.default_rng(7)
    batches = [rng.normal(100, 15, size).round(4).tolist() for size in (600, 1, 450, 73)]
    for batch in batches:
        assert_added(post_batch(client, "ROLL", batch))
    prices = [p for batch in batches for p in batch]
    for k in range(1, MAX_K + 1):
        assert_stats_match(get_stats(client, "ROLL", k), "ROLL", prices, k)


def test_integers_are_numbers(client):
    prices = list(range(-5, 5))
    assert_added(post_json_text(client, json.dumps({"symbol": "INT", "values": prices})))
    assert_stats_match(get_stats(client, "INT", 1), "INT", prices, 1)


def test_extreme_prices_still_give_valid_json(client):
    prices = [limits.MAX_ABS_PRICE, -limits.MAX_ABS_PRICE] * 5
    assert_added(post_batch(client, "HUGE", prices))
    assert_stats_match(get_stats(client, "HUGE", 1), "HUGE", prices, 1)


@pytest.mark.parametrize(
    "symbol", ["BRK.B", "EUR/USD", "ŻABKA", "日経225", "A B", "A\u200bB", "x" * 64]
)
def test_any_unicode_symbol_without_control_characters(client, symbol):
    prices = list(range(10))
    assert_added(post_batch(client, symbol, prices))
    assert_stats_match(get_stats(client, symbol, 1), symbol, prices, 1)


def test_symbols_are_case_sensitive(client):
    assert_added(post_batch(client, "AAPL", list(range(10))))
    assert_error(get_stats(client, "aapl", 1), 400, "Symbol aapl not found")


def test_empty_values_registers_the_symbol_and_adds_nothing(client, store):
    assert_added(post_batch(client, "EMPTY", []))
    assert "EMPTY" in store and len(store["EMPTY"]) == 0
    assert_error(get_stats(client, "EMPTY", 1), 400, "Not enough data points")


def test_unknown_keys_are_ignored(client, store):
    result = post_batch(client, "EXTRA", list(range(10)), note="hi", nested={"values": "no"})
    assert_added(result)
    assert len(store["EXTRA"]) == 10


@pytest.mark.parametrize(
    "content_type", [None, "application/json; charset=utf-8", "Application/JSON"]
)
def test_json_content_types_and_none_are_accepted(client, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = json.dumps({"symbol": "CT", "values": [1.0]}).encode()
    assert_added(client.simulate_post("/add_batch/", body=body, headers=headers))


def test_body_of_unknown_length_within_limit_is_read(store):
    client = testing.TestClient(create_app(store, max_body_bytes=1000))
    body = batch_body_of_size(1000)
    assert_added(post_with_stream(client, CountingStream(body), declared_length=""))
    assert len(store["PAD"]) == 1


def test_a_full_default_batch_fits_the_default_body_limit(default_client):
    # Long numbers: the body limit must leave room for 10,000 of them.
    values = [-1.2345678901234567e-99] * limits.DEFAULT_MAX_BATCH
    body = json.dumps({"symbol": "LONG", "values": values}).encode()
    assert len(body) <= limits.DEFAULT_MAX_BODY_BYTES
    assert_added(post_json_text(default_client, body))


# --- GET /stats/ errors (exact contract texts) ----------------------------------------------------

@pytest.mark.parametrize("k_part", ["", "&k=", "&k=abc", "&k=1.5", "&k=0", "&k=-1",
                                    f"&k={MAX_K + 1}",
                                    # Python's int() takes all of these; the contract does not.
                                    "&k=%201", "&k=1%20", "&k=%2B1", "&k=+1", "&k=0_1",
                                    "&k=%EF%BC%91", "&k=%D9%A1", "&k=1.0", "&k=1e0",
                                    "&k=%091", "&k=1&k=2"])
@pytest.mark.parametrize("stats_path", STATS_PATHS)
def test_invalid_k(client, k_part, stats_path):
    assert_added(post_batch(client, "AAPL", list(range(10**MAX_K))))
    result = client.simulate_get(stats_path, query_string=f"symbol=AAPL{k_part}")
    assert_error(result, 400, "Invalid k value")


@pytest.mark.parametrize("k", ["0", "9", "100"])
def test_k_outside_1_to_8_is_invalid_by_default(default_client, k):
    assert_added(post_batch(default_client, "AAPL", list(range(10))))
    assert_error(get_stats(default_client, "AAPL", k), 400, "Invalid k value")


@pytest.mark.parametrize("k_text", ["1", "01", "001"])
def test_k_in_ascii_digits_with_leading_zeros_is_valid(client, k_text):
    assert_added(post_batch(client, "AAPL", list(range(10))))
    result = client.simulate_get("/stats/", query_string=f"symbol=AAPL&k={k_text}")
    assert result.status_code == 200 and result.json["max"] == 9.0


def test_k_8_is_valid_by_default(default_client):
    assert_added(post_batch(default_client, "AAPL", list(range(10))))
    assert_error(get_stats(default_client, "AAPL", 8), 400, "Not enough data points")


@pytest.mark.parametrize("query", ["k=1", "symbol=&k=1", "symbol"])
@pytest.mark.parametrize("stats_path", STATS_PATHS)
def test_missing_symbol(client, query, stats_path):
    assert_error(client.simulate_get(stats_path, query_string=query), 400, "Missing symbol")


@pytest.mark.parametrize("symbol", ["NOPE", "ŻABKA"])
def test_symbol_never_added(client, symbol):
    assert_error(get_stats(client, symbol, 1), 400, f"Symbol {symbol} not found")


@pytest.mark.parametrize(("count", "k"), [(9, 1), (10, 2), (99, 2), (999, 3)])
def test_not_enough_data_points(client, count, k):
    assert_added(post_batch(client, "FEW", list(range(count))))
    assert_error(get_stats(client, "FEW", k), 400, "Not enough data points")


# --- POST /add_batch/ errors ----------------------------------------------------------------------

@pytest.mark.parametrize("text", ["{", "{'symbol': 'A', 'values': []}", "\ufeff{}", "[1, 2", "nul"])
def test_body_not_valid_json(client, text):
    assert_error(post_json_text(client, text), 400, messages.BODY_NOT_JSON)


def test_empty_body(client):
    assert_error(post_json_text(client, b""), 400, messages.BODY_EMPTY)


def test_body_too_deeply_nested_is_invalid_json_not_a_crash(client):
    assert_error(post_json_text(client, "[" * 100_000 + "]" * 100_000), 400, messages.BODY_NOT_JSON)


@pytest.mark.parametrize("text", ["[]", "[1, 2]", '"AAPL"', "42", "null", "true"])
def test_body_not_an_object(client, text):
    assert_error(post_json_text(client, text), 400, messages.BODY_NOT_OBJECT)


@pytest.mark.parametrize(
    ("document", "detail"),
    [
        ({"values": [1.0]}, messages.SYMBOL_MISSING),
        ({"symbol": None, "values": [1.0]}, messages.SYMBOL_NOT_STRING),
        ({"symbol": 42, "values": [1.0]}, messages.SYMBOL_NOT_STRING),
        ({"symbol": ["A"], "values": [1.0]}, messages.SYMBOL_NOT_STRING),
        ({"symbol": "", "values": [1.0]}, messages.SYMBOL_EMPTY),
        ({"symbol": "x" * 65, "values": [1.0]},
         messages.SYMBOL_TOO_LONG.format(max_length=limits.MAX_SYMBOL_LENGTH)),
        ({"symbol": "A"}, messages.VALUES_MISSING),
        ({"symbol": "A", "values": None}, messages.VALUES_NOT_ARRAY),
        ({"symbol": "A", "values": "1,2"}, messages.VALUES_NOT_ARRAY),
        ({"symbol": "A", "values": {"0": 1.0}}, messages.VALUES_NOT_ARRAY),
        ({"symbol": "A", "values": 150.0}, messages.VALUES_NOT_ARRAY),
    ],
)
def test_bad_symbol_or_values_field(client, store, document, detail):
    assert_error(post_json_text(client, json.dumps(document)), 400, detail)
    assert len(store) == 0


def test_bad_field_messages_name_the_field():
    assert all("'symbol'" in text for text in (
        messages.SYMBOL_MISSING, messages.SYMBOL_NOT_STRING, messages.SYMBOL_EMPTY,
        messages.SYMBOL_TOO_LONG, messages.SYMBOL_CONTROL_CHARACTERS))
    assert all("'values'" in text for text in (
        messages.VALUES_MISSING, messages.VALUES_NOT_ARRAY, messages.VALUES_OVER_BATCH_LIMIT,
        messages.VALUE_INVALID))


@pytest.mark.parametrize(
    "character", ["\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x80", "\x85", "\x9f"]
)
def test_control_characters_in_symbol(client, store, character):
    result = post_batch(client, f"AB{character}C", [1.0])
    assert_error(result, 400, messages.SYMBOL_CONTROL_CHARACTERS)
    assert len(store) == 0


def test_unpaired_surrogate_in_symbol(client, store):
    # orjson refuses it; the stdlib fallback would let it through to the symbol check.
    text = '{"symbol": "A\\ud800", "values": [NaN]}'
    assert_error(post_json_text(client, text), 400, messages.SYMBOL_CONTROL_CHARACTERS)
    assert len(store) == 0


BAD_ELEMENTS = ["true", "false", "null", '"150.0"', "[1.0]", "[]", '{"p": 1}',
                "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e300", "-1e300", "1e101",
                "1" + "0" * 101, "1" + "0" * 400]


@pytest.mark.parametrize("element", BAD_ELEMENTS)
def test_invalid_element_names_values_and_stores_nothing(client, store, element):
    text = f'{{"symbol": "BAD", "values": [150.0, {element}, 151.0]}}'
    expected = messages.VALUE_INVALID.format(index=1, max_abs=limits.MAX_ABS_PRICE)
    assert_error(post_json_text(client, text), 400, expected)
    assert "BAD" not in store
    assert_error(get_stats(client, "BAD", 1), 400, "Symbol BAD not found")


@pytest.mark.parametrize("element", ["NaN", "1e400", "true", '"x"'])
def test_a_bad_batch_leaves_an_existing_symbol_untouched(client, store, element):
    prices = list(range(150, 160))
    assert_added(post_batch(client, "KEEP", prices))
    text = f'{{"symbol": "KEEP", "values": [1.0, 2.0, 3.0, {element}]}}'
    error_detail(post_json_text(client, text), 400)
    assert len(store["KEEP"]) == len(prices)
    assert_stats_match(get_stats(client, "KEEP", 1), "KEEP", prices, 1)


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "1e400"])
def test_non_finite_number_outside_values_is_invalid_json(client, store, bad):
    text = f'{{"symbol": "ODD", "values": [1.0], "note": {bad}}}'
    assert_error(post_json_text(client, text), 400, messages.BODY_NON_FINITE_NUMBER)
    assert len(store) == 0


@pytest.mark.parametrize("magnitude", [limits.MAX_ABS_PRICE, -limits.MAX_ABS_PRICE, 1e-300, 0.0])
def test_magnitude_limit_is_inclusive(client, magnitude):
    assert_added(post_batch(client, "EDGE", [magnitude]))


def test_batch_over_the_value_limit(default_client):
    count = limits.DEFAULT_MAX_BATCH + 1
    result = post_batch(default_client, "MANY", [1.0] * count)
    detail = error_detail(result, 400)
    expected = messages.VALUES_OVER_BATCH_LIMIT.format(
        count=count, max_batch=limits.DEFAULT_MAX_BATCH
    )
    assert detail == expected
    assert f"{limits.DEFAULT_MAX_BATCH}" in detail
    assert_error(get_stats(default_client, "MANY", 1), 400, "Symbol MANY not found")


def test_batch_exactly_at_the_value_limit(store):
    client = testing.TestClient(create_app(store, max_batch=25))
    assert_added(post_batch(client, "FULL", list(range(25))))
    error_detail(post_batch(client, "FULL", list(range(26))), 400)
    assert len(store["FULL"]) == 25


def test_symbol_limit(client, store):
    for symbol in ("S1", "S2", "S3"):
        assert_added(post_batch(client, symbol, [1.0]))
    detail = error_detail(post_batch(client, "S4", [1.0]), 400)
    assert detail == messages.SYMBOL_LIMIT_REACHED.format(max_symbols=MAX_SYMBOLS)
    assert str(MAX_SYMBOLS) in detail
    assert "S4" not in store
    assert_added(post_batch(client, "S1", [2.0]))  # existing symbols keep accepting
    assert len(store["S1"]) == 2


def test_empty_batch_for_a_new_symbol_counts_against_the_symbol_limit(client):
    for symbol in ("S1", "S2", "S3"):
        assert_added(post_batch(client, symbol, []))
    error_detail(post_batch(client, "S4", []), 400)


def test_body_over_the_limit_is_refused_from_content_length_unread(store):
    client = testing.TestClient(create_app(store, max_body_bytes=1000))
    stream = CountingStream(batch_body_of_size(1001))
    result = post_with_stream(client, stream, declared_length="1001")
    assert_error(result, 413, messages.BODY_TOO_LARGE.format(max_body_bytes=1000))
    assert stream.bytes_read == 0
    assert len(store) == 0


def test_body_of_unknown_length_over_the_limit_reads_one_byte_past_it(store):
    client = testing.TestClient(create_app(store, max_body_bytes=1000))
    stream = CountingStream(batch_body_of_size(50_000))
    result = post_with_stream(client, stream, declared_length="")
    assert_error(result, 413, messages.BODY_TOO_LARGE.format(max_body_bytes=1000))
    assert stream.bytes_read == 1001
    assert len(store) == 0


def test_body_exactly_at_the_limit_is_accepted(store):
    client = testing.TestClient(create_app(store, max_body_bytes=1000))
    assert_added(post_json_text(client, batch_body_of_size(1000)))
    assert error_detail(post_json_text(client, batch_body_of_size(1001)), 413)


def test_default_body_limit_message_names_the_limit(default_client):
    body = batch_body_of_size(limits.DEFAULT_MAX_BODY_BYTES + 1)
    detail = error_detail(post_json_text(default_client, body), 413)
    assert str(limits.DEFAULT_MAX_BODY_BYTES) in detail


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx",
                                          "application/vnd.api+json"])
def test_unsupported_content_type(client, store, content_type):
    body = json.dumps({"symbol": "CT", "values": [1.0]}).encode()
    result = client.simulate_post("/add_batch/", body=body, headers={"Content-Type": content_type})
    error_detail(result, 415)
    assert len(store) == 0


# --- routing errors -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "path", ["/nope", "/index.html", "/stats/extra", "/add_batch//", "/STATS/", "/health/x"]
)
def test_unknown_path(client, path):
    assert path in error_detail(client.simulate_get(path), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/add_batch/"), ("GET", "/add_batch"), ("PUT", "/add_batch/"), ("POST", "/stats/"),
     ("POST", "/stats"), ("DELETE", "/stats/"), ("POST", "/health"), ("PATCH", "/health")],
)
def test_wrong_method(client, method, path):
    result = client.simulate_request(method, path, body=b"{}")
    detail = error_detail(result, 405)
    assert method in detail
    assert result.headers["allow"]


class EngineBug:
    """Stands in for a store whose stats() fails unexpectedly."""

    max_k = MAX_K

    def stats(self, symbol, k):
        raise RuntimeError("simulated engine bug")


def test_unexpected_failure_is_a_json_500():
    client = testing.TestClient(create_app(EngineBug()))
    assert_error(get_stats(client, "X", 1), 500, messages.INTERNAL_ERROR)


def test_metrics_in_one_process(client):
    from prometheus_client.parser import text_string_to_metric_families

    assert_added(post_batch(client, "AAPL", list(range(25))))
    assert_added(post_batch(client, "MSFT", [1.0, 2.0]))
    client.simulate_get("/nope")
    result = client.simulate_get("/metrics")
    assert result.status_code == 200 and result.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(result.text) for s in family.samples}
    assert samples[("tradestats_batches_ingested_total", ())] == 2
    assert samples[("tradestats_prices_ingested_total", ())] == 27
    assert samples[("tradestats_symbols", ())] == 2
    assert samples[("tradestats_prices_held", ())] == min(25, 10**MAX_K) + 2
    assert samples[("tradestats_http_requests_total",
                    (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1


def test_symbols_lists_every_symbol_sorted_with_count_and_last(client):
    model = {"MSFT": [1.5, 2.5], "AAPL": [float(n) for n in range(1500)], "EUR/USD": []}
    for symbol, values in model.items():
        for start in range(0, max(len(values), 1), 700):
            assert_added(post_batch(client, symbol, values[start:start + 700]))
    result = client.simulate_get("/symbols")
    assert result.status_code == 200
    assert result.json == {"symbols": [
        {"symbol": symbol, "count": len(model[symbol]),
         "last": model[symbol][-1] if model[symbol] else None} for symbol in sorted(model)]}


@pytest.mark.parametrize("n", [1, 7, 10**MAX_K, 10**MAX_K + 1, limits.MAX_PRICES_PER_REQUEST])
@pytest.mark.parametrize("path", ["/prices/", "/prices"])
def test_prices_are_the_last_n_oldest_first(client, n, path):
    values = [float(x) * 1.5 for x in range(10**MAX_K + 37)]
    for start in range(0, len(values), 900):
        assert_added(post_batch(client, "P", values[start:start + 900]))
    result = client.simulate_get(path, params={"symbol": "P", "n": str(n)})
    assert result.status_code == 200
    held = values[-(10**MAX_K):]   # the ring keeps the largest window
    assert result.json == {"symbol": "P", "prices": held[-min(n, len(held)):]}


@pytest.mark.parametrize("query", ["symbol=P&n=0", "symbol=P&n=10001", "symbol=P&n=1.0",
                                   "symbol=P&n=%201", "symbol=P&n=-1", "symbol=P", "symbol=P&n="])
def test_prices_invalid_n(client, query):
    assert_added(post_batch(client, "P", [1.0, 2.0]))
    assert_error(client.simulate_get("/prices/", query_string=query), 400, "Invalid n value")


@pytest.mark.parametrize(("query", "detail"), [("n=3", "Missing symbol"),
                                               ("symbol=&n=3", "Missing symbol"),
                                               ("symbol=NOPE&n=3", "Symbol NOPE not found")])
def test_prices_symbol_errors(client, query, detail):
    assert_error(client.simulate_get("/prices/", query_string=query), 400, detail)


def test_bulk_observation_equals_prometheus_observe():
    """metrics.observe_all writes prometheus_client's histogram internals: the result must be
    what observe() gives, value by value, bucket bounds included."""
    import random

    from prometheus_client import CollectorRegistry, Histogram

    from tradestats.web.metrics import LATENCY_BUCKETS, observe_all

    rng = random.Random(7)
    values = [rng.choice([*LATENCY_BUCKETS, 0.0, 2.0]) for _ in range(300)]
    values += [rng.uniform(0, 1.5) for _ in range(300)]
    histograms = [Histogram("h", "h", ["route"], buckets=LATENCY_BUCKETS,
                            registry=CollectorRegistry()) for _ in range(2)]
    for value in values:
        histograms[0].labels("r").observe(value)
    observe_all(histograms[1].labels("r"), values[:250])
    observe_all(histograms[1].labels("r"), values[250:])
    by_observe, by_bulk = ([(s.name, s.labels, s.value) for s in h.collect()[0].samples
                            if not s.name.endswith("_created")] for h in histograms)
    assert [sample[:2] for sample in by_observe] == [sample[:2] for sample in by_bulk]
    for one, other in zip(by_observe, by_bulk):
        assert one[2] == pytest.approx(other[2], rel=1e-12)


def test_a_failed_sync_is_503_with_retry_after_and_stores_nothing(tmp_path):
    """With --sync, a batch the disk did not confirm is undone (test_store.py) and answered 503:
    the client's retry then stores it once."""
    import errno

    from tradestats import filestore

    client = testing.TestClient(create_app(Store(max_k=1, path=tmp_path, sync=True)))
    first = {"symbol": "S", "values": [float(n) for n in range(10)]}
    assert client.simulate_post("/add_batch/", json=first).status_code == 200
    filestore._fail_sync(1, errno.EIO)  # the batch's data sync
    try:
        reply = client.simulate_post("/add_batch/", json={"symbol": "S", "values": [99.0]})
    finally:
        filestore._fail_sync(-1, 0)
    assert reply.status_code == 503 and reply.headers["Retry-After"] == str(
        limits.RETRY_AFTER_SECONDS)
    assert reply.json == {"detail": messages.SYNC_FAILED}
    prices = client.simulate_get("/prices/", params={"symbol": "S", "n": "100"}).json["prices"]
    assert prices == first["values"]
    retry = client.simulate_post("/add_batch/", json={"symbol": "S", "values": [99.0]})
    assert retry.status_code == 200
    prices = client.simulate_get("/prices/", params={"symbol": "S", "n": "100"}).json["prices"]
    assert len(prices) >= 10 and prices == (first["values"] + [99.0])[-len(prices):]
    assert prices.count(99.0) == 1
