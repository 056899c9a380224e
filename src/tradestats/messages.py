"""Every client-facing ``detail`` text and every log message, in one place.

The texts marked *contract* are quoted verbatim in ../shared/API.md and existing clients match on
them: change them only together with the contract. The others must keep naming the field or the
limit involved, but their wording is ours.
"""

# --- GET /stats/ (contract) ---------------------------------------------------------------------
INVALID_K = "Invalid k value"
MISSING_SYMBOL = "Missing symbol"
SYMBOL_NOT_FOUND = "Symbol {symbol} not found"
NOT_ENOUGH_DATA = "Not enough data points"
INVALID_N = "Invalid n value"  # contract: GET /prices/

# --- POST /add_batch/ ---------------------------------------------------------------------------
BATCH_ADDED = "Batch data added successfully"  # contract: the whole success body is this message

BODY_EMPTY = "Request body is empty: expected a JSON object with 'symbol' and 'values'"
BODY_NOT_JSON = "Request body is not valid JSON"
BODY_NON_FINITE_NUMBER = (
    "Request body is not valid JSON: NaN, Infinity or an out-of-range number outside 'values'"
)
BODY_NOT_OBJECT = "Request body must be a JSON object with 'symbol' and 'values'"
BODY_INCOMPLETE = "Request body is incomplete or its chunked framing is malformed ({reason}); nothing was stored"
BODY_TOO_LARGE = "Request body is larger than the limit of {max_body_bytes} bytes"
UNSUPPORTED_MEDIA_TYPE = "Unsupported Content-Type {content_type!r}: send application/json"

SYMBOL_MISSING = "Field 'symbol' is required"
SYMBOL_NOT_STRING = "Field 'symbol' must be a string"
SYMBOL_EMPTY = "Field 'symbol' must not be empty"
SYMBOL_TOO_LONG = "Field 'symbol' must be at most {max_length} characters long"
SYMBOL_CONTROL_CHARACTERS = (
    "Field 'symbol' must not contain control characters or unpaired surrogates"
)
SYMBOL_LIMIT_REACHED = (
    "Symbol limit reached: this server stores at most {max_symbols} symbols, "
    "so a new symbol cannot be added"
)

VALUES_MISSING = "Field 'values' is required"
VALUES_NOT_ARRAY = "Field 'values' must be a JSON array of numbers"
VALUES_OVER_BATCH_LIMIT = (
    "Field 'values' has {count} elements, more than the batch limit of {max_batch}"
)
VALUE_INVALID = (
    "Field 'values' element {index} is not a finite number with magnitude at most {max_abs:g}"
)

# --- Errors Falcon raises itself (routing, headers) -----------------------------------------------
NOT_FOUND = "Path {path} not found"
METHOD_NOT_ALLOWED = "Method {method} not allowed on {path}; allowed: {allowed}"
INTERNAL_ERROR = "Internal server error"
OUT_OF_MEMORY = "The server is out of memory for this request; nothing was stored, retry later"
OUT_OF_CONNECTIONS = "The server has no file descriptor left for this connection; retry later"
REQUEST_TIMEOUT = "The request did not arrive whole within {seconds} seconds"
HEAD_TOO_LONG = "The request head is longer than {limit} bytes"
HOST_MISSING = "An HTTP/1.1 request must carry a Host header"
HTTP_VERSION_UNSUPPORTED = "{protocol} is not supported: send HTTP/1.1 or HTTP/1.0"
HTTP_ERROR_FALLBACK = "{title}"

# --- GET /health ----------------------------------------------------------------------------------
HEALTH_OK = "ok"

# --- tradestats-serve (command line and logs) -----------------------------------------------------
ACCESS_LINE = "{method} {path} {status} {ms} ms"
WORKER_CLASS_REFUSED = "tradestats-serve: --worker-class {worker_class}: cannot be loaded ({reason})"
ARGUMENT_OUT_OF_RANGE = "must be an integer from {low} to {high}, got {value!r}"
STARTUP = (
    "tradestats {version}: worker class {worker_class}, {workers} workers, listening on {bind}; "
    "max_k={max_k} max_symbols={max_symbols} max_batch={max_batch} "
    "max_body_bytes={max_body_bytes}; worst-case disk {worst_case} (sparse files: disk and "
    "memory follow the data)"
)
STORE_OPENED = (
    "data directory {data_dir} ({kind}, {durability}): {symbols} symbols, {prices} prices; "
    "{torn} torn batches rolled back; opened in {seconds:.3f} s"
)
STORE_PERSISTENT = "kept across restarts"
STORE_EPHEMERAL = "ephemeral: removed when the server stops"
DURABILITY_PROCESS = "a batch survives any process crash"
DURABILITY_SYNC = "synced: a batch survives power loss"
STORE_REFUSED = "tradestats-serve: cannot use the data directory: {error}"
DISK_FULL = (
    "Insufficient storage: the disk holding the data is full; nothing of the batch was stored"
)
MEINHELD_RISKS = (
    "WARNING: the meinheld worker is not hardened against hostile clients: a chunked request with "
    "a trailer crashes it (SIGSEGV), a CONNECT request poisons the next request, pipelined POSTs "
    "are lost, it leaks file descriptors above worker_connections and accepts malformed requests. "
    "meinheld is unmaintained since 2020. Use it only behind a proxy that normalises requests; "
    "the default (buffered) worker has none of these faults"
)
