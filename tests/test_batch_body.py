"""The simdjson fast paths for /add_batch/ bodies (web/batch_body.py), each of them (the GIL-free
libsimdjson binding where it was built, and pysimdjson), against two references:

- where the fast path answers, its symbol and values are bit for bit what the stdlib json reads;
- with its fallback, it returns or raises exactly what ``parse_batch(decode_json_body())`` does.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
from array import array

import falcon
import pytest
from falcon import testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradestats import InvalidPriceError, Store, messages
from tradestats.web import batch_body, create_app
from tradestats.web.batch_body import parse_batch_body
from tradestats.web.inputs import decode_json_body, parse_batch

MAX_BATCH = 100_000
SMALL_BATCH = 3

#: A request carrying the options (so the orjson media handler) the real app registers.
REQ = testing.create_req(options=create_app().req_options)

HYPOTHESIS = settings(max_examples=400, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True, params=sorted(batch_body.FAST_PATHS))
def fast_path(request):
    """Every test of this module runs against each fast path in turn, as the one the route uses."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batch_body, "parse_fast", batch_body.FAST_PATHS[request.param])
        yield request.param


def parse_fast(body: bytes):
    return batch_body.parse_fast(body)


# --- the two comparisons --------------------------------------------------------------------------

def bits(numbers) -> bytes:
    return array("d", numbers).tobytes()


def check_fast_against_stdlib(body: bytes):
    """The fast result, which (when not None) must be exactly what json.loads reads."""
    fast = parse_fast(body)
    if fast is None:
        return None
    symbol, values = fast
    assert isinstance(values, memoryview) and values.format == "d" and values.ndim == 1
    reference = json.loads(body.decode("utf-8"))
    assert isinstance(reference, dict)
    assert type(reference["symbol"]) is str and symbol == reference["symbol"]
    expected = reference["values"]
    assert isinstance(expected, list)
    assert all(type(value) in (int, float) for value in expected), expected
    assert values.tobytes() == bits(float(value) for value in expected)
    return fast


def outcome(parse, body: bytes, max_batch: int):
    try:
        symbol, values = parse(body, max_batch)
    except falcon.HTTPError as error:
        return ("error", error.status, error.description)
    if isinstance(values, memoryview):
        return ("ok", symbol, values.tobytes())
    if all(type(value) in (int, float) for value in values):
        try:
            return ("ok", symbol, bits(float(value) for value in values))
        except OverflowError:
            pass
    return ("ok", symbol, [describe(value) for value in values])


def describe(value) -> str:
    """A value of the ordinary path's list, comparable across runs (its NaN stand-ins included)."""
    if type(value).__name__ == "_NonFiniteNumber":
        return "non-finite marker"
    return f"{type(value).__name__} {value.hex() if type(value) is float else repr(value)}"


def today(body: bytes, max_batch: int):
    return parse_batch(decode_json_body(REQ, body), max_batch)


def new(body: bytes, max_batch: int):
    return parse_batch_body(REQ, body, max_batch)


def check(body: bytes) -> None:
    check_fast_against_stdlib(body)
    for max_batch in (MAX_BATCH, SMALL_BATCH):
        assert outcome(new, body, max_batch) == outcome(today, body, max_batch), body[:300]


# --- hand-written bodies --------------------------------------------------------------------------

def batch(values: str, symbol: str = '"AAPL"') -> bytes:
    return f'{{"symbol": {symbol}, "values": [{values}]}}'.encode()


TAKEN = [  # the fast path must answer these
    batch("1, 2, 3"),
    batch(""),
    batch("-0"),
    batch("-0.0, 0.0, -0e5, 0e-5"),
    batch("5e-324, 4.9e-324, 2.4703282292062328e-324, 2.2250738585072014e-308"),
    batch("1e-400, -1e-400"),
    batch("1.7976931348623157e308, -1.7976931348623157e308, 1.7976931348623158e308"),
    batch("9007199254740993, 9223372036854775807, -9223372036854775808, 18446744073709551615"),
    batch("0.1000000000000000055511151231257827021181583404541015625"),
    batch("3." + "1415926535" * 40 + ", 1" + "0" * 300 + ".5, 0." + "0" * 300 + "1"),
    batch("123456789012345678901234567890.5e-10, 1E+5, 1e05, 2.5E-3"),
    batch("1e300, 1e-300, 1"),
    b'\n\t {\r\n"symbol"\t:\n"AAPL" ,  "values" : [ 1 ,\n2 ] \n}\n\n',
    b'{"values":[1.5],"symbol":"B"}',
    b'{"symbol":"\\u00e9\\ud83d\\ude00\\"\\\\\\/x","values":[1]}',
    '{"symbol":"ÉTÉ😀","values":[1]}'.encode(),
    b'{"symbol":"A","values":[1],"extra":{"a":{"b":1}},"n":null,"t":true,"s":"]"}',
    b'{"symbol":"A","valu\\u0065s":[1]}',
]

DECLINED = [  # the fast path must decline these; the ordinary path answers
    batch("[1], [2]"),
    batch("[]"),
    batch("[1, 2], [3]"),
    b'{"symbol":"A","values":[[]]}',
    batch("NaN"), batch("Infinity"), batch("-Infinity"), batch("1e400"), batch("-1e400"),
    batch("true"), batch("null"), batch('"1"'), batch("{}"),
    batch("1" * 30), batch("-9223372036854775809"), batch("18446744073709551616"),
    b'{"symbol":"A","values":[1],"values":[2]}',
    b'{"symbol":"A","values":[1],"valu\\u0065s":2}',
    b'{"symbol":"A","symbol":"B","values":[1]}',
    b'{"symbol":"\\ud800","values":[1]}',
    b'{"symbol":"\xff","values":[1]}',
    b'{"symbol":"\xed\xa0\x80","values":[1]}',
    b'\xef\xbb\xbf{"symbol":"A","values":[1]}',
    b'[1, 2]', b'[{"symbol":"A","values":[1]}]', b'"A"', b'1', b'null', b'',
    b' ', b'{}', b'{"symbol":"A"}', b'{"values":[1]}',
    b'{"symbol":1,"values":[1]}', b'{"symbol":null,"values":[1]}',
    b'{"symbol":"A","values":1}', b'{"symbol":"A","values":{"0":1}}',
    b'{"symbol":"A","values":[1]} x', b'{"symbol":"A","values":[1]}\x00',
    b'{"symbol":"A","values":[1,]}', b'{"symbol":"A","values":[01]}',
    b'{"symbol":"A","values":[+1]}', b'{"symbol":"A","values":[.5]}',
    b'{"symbol":"A","values":[1.]}', b'{"symbol":"A","values":[1],"s":"\x01"}',
]

MAY_DECLINE = [  # pysimdjson's path declines any "[" but the one opening values; libsimdjson's reads
    b'{"symbol":"[A","values":[1]}',
    b'{"symbol":"A","values":[1],"extra":[1, [2]]}',
    b'{"symbol":"A]","values":[1],"extra":"["}',
    batch("1, 2", symbol='"[[["'),
]

ORDINARY_PATH_ERRORS = [  # the fast path answers; the checks after it fail
    batch("1", symbol='""'),
    batch("1", symbol='"' + "A" * 1000 + '"'),
    batch("1", symbol='"A\\u0000"'),
    batch("1", symbol='"A\\u0085"'),
    batch("1, 2, 3, 4"),  # over SMALL_BATCH
]


@pytest.mark.parametrize("body", TAKEN, ids=range(len(TAKEN)))
def test_fast_path_answers_ordinary_bodies(body: bytes) -> None:
    assert check_fast_against_stdlib(body) is not None
    check(body)


@pytest.mark.parametrize("body", DECLINED, ids=range(len(DECLINED)))
def test_fast_path_declines_unusual_bodies(body: bytes) -> None:
    assert parse_fast(body) is None
    check(body)


@pytest.mark.parametrize("body", MAY_DECLINE, ids=range(len(MAY_DECLINE)))
def test_brackets_elsewhere(body: bytes, fast_path: str) -> None:
    taken = check_fast_against_stdlib(body) is not None
    assert taken == (fast_path == "libsimdjson")
    check(body)


def test_many_keys(fast_path: str) -> None:
    """libsimdjson's path checks repeated keys among at most 16 and declines bigger objects."""
    for extra_keys in range(20):
        document = {"symbol": "A", "values": [1.5], **{f"k{i}": i for i in range(extra_keys)}}
        body = json.dumps(document).encode()
        taken = check_fast_against_stdlib(body) is not None
        assert taken == (fast_path == "pysimdjson" or len(document) <= 16)
        check(body)
        repeated = body[:-1] + b', "k0": 7}'
        assert parse_fast(repeated) is None or extra_keys == 0
        check(repeated)


@pytest.mark.parametrize("body", ORDINARY_PATH_ERRORS, ids=range(len(ORDINARY_PATH_ERRORS)))
def test_errors_after_the_fast_path_are_the_ordinary_ones(body: bytes) -> None:
    assert parse_fast(body) is not None
    with pytest.raises(falcon.HTTPError):
        parse_batch_body(REQ, body, SMALL_BATCH)
    check(body)


def test_a_bytearray_body_reads_the_same() -> None:
    """WSGI promises bytes; a server that gave a bytearray still gets the same answers."""
    for body in (batch("1.5, 2, -3e2"), batch("1", symbol='""'), batch("NaN"), b"{"):
        check(bytearray(body))


def test_truncated_bodies() -> None:
    body = batch("1.5, -2e-3, 300, 4.25", symbol='"\\u00e9A"')
    for end in range(len(body) + 1):
        check(body[:end])


def test_ten_thousand_prices_take_the_fast_path(monkeypatch) -> None:
    rng = random.Random(7)
    prices = [rng.uniform(1, 1000) for _ in range(10_000)]
    body = json.dumps({"symbol": "AAPL", "values": prices}).encode()
    symbol, values = check_fast_against_stdlib(body)
    assert symbol == "AAPL" and len(values) == 10_000 and values.tobytes() == bits(prices)

    def no_fallback(*args):
        raise AssertionError("the ordinary path was taken")

    monkeypatch.setattr(batch_body, "decode_json_body", no_fallback)
    assert parse_batch_body(REQ, body, MAX_BATCH)[1].tobytes() == bits(prices)
    # And through the app's resource.
    store = Store(max_symbols=3, max_k=4)
    result = testing.TestClient(create_app(store)).simulate_post(
        "/add_batch/", body=body, headers={"Content-Type": "application/json"})
    assert result.status_code == 200, result.text
    assert store.prices("AAPL", 10_000).tobytes() == bits(prices)


def test_values_outlive_the_next_parse_and_other_threads() -> None:
    first = parse_fast(batch("1.5, 2.5, 3.5"))
    assert parse_fast(batch(", ".join(["9"] * 5000))) is not None
    results = []
    thread = threading.Thread(target=lambda: results.append(parse_fast(batch("7"))))
    thread.start()
    thread.join()
    assert first[1].tolist() == [1.5, 2.5, 3.5]
    assert results[0][1].tolist() == [7.0]


def test_engine_takes_the_buffer_like_the_list() -> None:
    body = batch("1, 2, 1e300, 4")
    _, values = parse_fast(body)
    for given_values in (values, json.loads(body)["values"]):
        with pytest.raises(InvalidPriceError) as caught:
            Store(max_symbols=1, max_k=3).add("AAPL", given_values)
        assert caught.value.index == 2
    assert messages.VALUE_INVALID  # the resource turns the index into this message


# --- generated bodies -----------------------------------------------------------------------------

DIGITS = st.text("0123456789", min_size=1, max_size=25)
NUMBER_TOKENS = st.one_of(
    st.builds(
        lambda sign, whole, fraction, exponent: sign + whole + fraction + exponent,
        st.sampled_from(["", "-"]),
        st.one_of(st.just("0"), st.builds(lambda d, rest: d + rest, st.sampled_from("123456789"),
                                          st.text("0123456789", max_size=25))),
        st.one_of(st.just(""), DIGITS.map(lambda d: "." + d)),
        st.one_of(st.just(""), st.builds(lambda e, s, d: e + s + d, st.sampled_from("eE"),
                                         st.sampled_from(["", "+", "-"]),
                                         st.text("0123456789", min_size=1, max_size=4))),
    ),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(json.dumps),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70).map(str),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "true", "false", "null", '"1"', "[]", "[1]",
                     "{}", "01", "-", "1.", ".1", "1e", "+1", "0x10", "1_0"]),
)


@HYPOTHESIS
@given(tokens=st.lists(NUMBER_TOKENS, max_size=20), space=st.sampled_from(["", " ", "\n\t"]))
def test_number_tokens(tokens: list[str], space: str) -> None:
    check(batch(("," + space).join(tokens)))


JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2 ** 66), max_value=2 ** 66),
    st.floats(), st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=6), children, max_size=4)),
    max_leaves=12,
)
FLAT_VALUES = st.recursive(  # no arrays: such extras keep the fast path open
    JSON_LEAVES, lambda children: st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
CLEAN_PRICES = st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                                  st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1)),
                        max_size=12)
ANY_PRICES = st.lists(st.one_of(st.floats(), st.integers(min_value=-(2 ** 65),
                                                         max_value=2 ** 65)), max_size=12)
SYMBOLS = st.one_of(st.text(max_size=12), st.text(max_size=12),
                    st.sampled_from(["AAPL", "BRK.B", "A[1]", ""]), JSON_LEAVES)


@st.composite
def documents(draw) -> bytes:
    pairs = []
    if draw(st.integers(0, 7)):
        pairs.append(("symbol", draw(SYMBOLS)))
    if draw(st.integers(0, 7)):
        pairs.append(("values", draw(st.one_of(CLEAN_PRICES, CLEAN_PRICES, ANY_PRICES,
                                               JSON_VALUES))))
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.one_of(st.text(max_size=6), st.sampled_from(["symbol", "values", "x"])))
        pairs.append((key, draw(st.one_of(FLAT_VALUES, FLAT_VALUES, JSON_VALUES))))
    pairs = draw(st.permutations(pairs))
    ensure_ascii = draw(st.booleans())
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]))
    members = [json.dumps(key, ensure_ascii=ensure_ascii) + separators[1]
               + json.dumps(value, ensure_ascii=ensure_ascii, separators=separators)
               for key, value in pairs]
    text = "{" + separators[0].join(members) + "}"
    if draw(st.integers(0, 9)) == 0:
        text = draw(st.sampled_from(["[", " ", "\ufeff", '"x"'])) + text
    return text.encode("utf-8", "surrogatepass")


@HYPOTHESIS
@given(body=documents())
def test_generated_documents(body: bytes) -> None:
    check(body)


FINITE_LEAVES = st.one_of(st.none(), st.booleans(), st.text(max_size=8),
                         st.floats(allow_nan=False, allow_infinity=False),
                         st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1))


@HYPOTHESIS
@given(symbol=st.text(max_size=12), values=CLEAN_PRICES,
       extras=st.dictionaries(st.text(max_size=6).filter(lambda key: key not in ("symbol", "values")),
                              st.recursive(FINITE_LEAVES, lambda children: st.dictionaries(
                                  st.text(max_size=4), children, max_size=3), max_leaves=6),
                              max_size=3),
       data=st.data())
def test_ordinary_documents(symbol: str, values: list, extras: dict, data, fast_path: str) -> None:
    """Bodies a client would send: most of them must take the fast path."""
    pairs = data.draw(st.permutations([("symbol", symbol), ("values", values), *extras.items()]))
    body = json.dumps(dict(pairs), ensure_ascii=data.draw(st.booleans()),
                      indent=data.draw(st.sampled_from([None, 1, "\t"]))).encode()
    if fast_path == "libsimdjson" or ("[" not in symbol and "[" not in json.dumps(extras)):
        assert parse_fast(body) is not None
    check(body)


@HYPOTHESIS
@given(body=documents(), data=st.data())
def test_damaged_documents(body: bytes, data) -> None:
    position = data.draw(st.integers(0, len(body)))
    action = data.draw(st.sampled_from(["cut", "insert", "replace", "delete"]))
    byte = data.draw(st.one_of(st.sampled_from(list(b'[]{}",:\\ 0-eE.\x00\xff\xc3')),
                               st.integers(0, 255)))
    if action == "cut":
        body = body[:position]
    elif action == "insert":
        body = body[:position] + bytes([byte]) + body[position:]
    elif action == "replace":
        body = body[:position] + bytes([byte]) + body[position + 1:]
    else:
        body = body[:position] + body[position + 1:]
    check(body)


@HYPOTHESIS
@given(body=st.binary(max_size=64))
def test_arbitrary_bytes(body: bytes) -> None:
    check(body)


# --- the GIL ----------------------------------------------------------------------------------------

def longest_pause_of_another_thread(body: bytes, parses: int) -> float:
    """The longest time this thread could not run while another thread parsed body."""
    done = threading.Event()

    def parse_repeatedly() -> None:
        for _ in range(parses):
            assert parse_fast(body) is not None
        done.set()

    worker = threading.Thread(target=parse_repeatedly)
    longest, last = 0.0, time.perf_counter()
    worker.start()
    while not done.is_set():
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    worker.join()
    return longest


def test_only_the_libsimdjson_path_lets_other_threads_run_while_it_parses(fast_path: str) -> None:
    body = json.dumps({"symbol": "A", "values": [i * 0.37 for i in range(3_000_000)]}).encode()
    started = time.perf_counter()
    assert len(parse_fast(body)[1]) == 3_000_000
    one_parse = time.perf_counter() - started
    longest = longest_pause_of_another_thread(body, parses=4)
    if fast_path == "libsimdjson":
        # Between two parses the parsing thread holds the GIL for microseconds, plus one
        # switch interval (5 ms) to get it back from this thread.
        assert longest < one_parse / 2, (longest, one_parse)
    else:
        assert longest > one_parse / 2, (longest, one_parse)


@pytest.mark.skipif(not os.environ.get("CI"), reason="outside CI libsimdjson-dev is optional")
def test_ci_builds_the_gil_free_parser() -> None:
    assert batch_body.FAST_PATH_NAME == "libsimdjson", "apt-get install libsimdjson-dev, rebuild"
