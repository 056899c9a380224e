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
INVALID_BUCKETS = "Invalid buckets value"  # GET /envelope/
QUERY_SYMBOL_DIFFERS = "symbol in the query ({query!r}) is not the body's ({body!r})"

# --- POST /add_batch/ ---------------------------------------------------------------------------
BATCH_ADDED = "Batch data added successfully"  # contract: the whole success body is this message
SYMBOL_DELETED = "Symbol {symbol} deleted"  # contract: DELETE /symbols/

BODY_EMPTY = "Request body is empty: expected a JSON object with 'symbol' and 'values'"
BODY_NOT_JSON = "Request body is not valid JSON"
BODY_NON_FINITE_NUMBER = (
    "Request body is not valid JSON: NaN, Infinity or an out-of-range number outside 'values'"
)
BODY_NOT_OBJECT = "Request body must be a JSON object with 'symbol' and 'values'"
BODY_INCOMPLETE = "Request body is incomplete or its chunked framing is malformed ({reason}); nothing was stored"
BODY_TOO_LARGE = "Request body is larger than the limit of {max_body_bytes} bytes"
CONTENT_ENCODING_UNSUPPORTED = (
    "Unsupported Content-Encoding {coding!r}: send the body uncompressed"
)
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
HOST_MISSING = "An HTTP/1.1 request must carry a Host header"
HOST_REPEATED = "A request must carry one Host header, not several"
HTTP_VERSION_UNSUPPORTED = "{protocol} is not supported: send HTTP/1.1 or HTTP/1.0"
HTTP_ERROR_FALLBACK = "{title}"

# --- GET /health ----------------------------------------------------------------------------------
HEALTH_OK = "ok"
API_KEY_MISSING = "This server needs an API key: send Authorization: Bearer <key>"
API_KEY_WRONG = "Wrong API key"
API_KEY_FILE_EMPTY = "--api-key-file {path}: the file is empty"
API_KEY_CHARACTERS = ("the API key must be printable ASCII without spaces (it travels in an "
                      "HTTP header)")
API_KEY_EMPTY = "--api-key (TRADESTATS_API_KEY) is empty: an empty key would protect nothing"
API_KEY_TWICE = "--api-key (TRADESTATS_API_KEY) and --api-key-file (TRADESTATS_API_KEY_FILE) exclude each other"
PROTECT_READS_NEEDS_KEY = "--protect-reads needs an API key (--api-key or --api-key-file)"
CLUSTER_NEEDS_NODE = "--cluster and --node go together (the placement file and this node's name in it)"

# --- tradestats-serve (command line and logs) -----------------------------------------------------
WORKER_CLASS_NEEDS_GUNICORN = "--worker-class chooses a gunicorn worker: use it with --server gunicorn"
SSL_NEEDS_BOTH = "--ssl-certfile and --ssl-keyfile go together"
SSL_NEEDS_GRANIAN = "HTTPS and HTTP/2 are served by granian only: drop --server gunicorn"
DESCRIPTORS_TOO_FEW = (
    "tradestats-serve: the open-file limit is too low: each worker needs at least {needed} "
    "descriptors with --max-symbols {max_symbols} (raise it with ulimit -n)"
)
SERVER_UNAVAILABLE = "tradestats-serve: {what} is not installed ({reason}); {hint}"
FILE_UNREADABLE = "no readable file at {path!r}"
ARGUMENT_OUT_OF_RANGE = "must be an integer from {low} to {high}, got {value!r}"
STARTUP = (
    "tradestats {version}: {server}, {workers} workers, listening on {bind}; "
    "max_k={max_k} max_symbols={max_symbols} max_batch={max_batch} "
    "max_body_bytes={max_body_bytes}; worst-case disk {worst_case} (sparse files: disk and "
    "memory follow the data); {access}"
)
ACCESS_OPEN = "no API key: open to anyone who can connect to {host}"
ACCESS_WRITES = "writes need the API key, reads are open"
ACCESS_ALL = "reads and writes need the API key (/health excepted)"
STORE_OPENED = (
    "data directory {data_dir} ({kind}, {durability}): {symbols} symbols, {prices} prices; "
    "{torn} torn batches rolled back; {damaged} damaged symbols refused (named above); "
    "checksums checked, opened in {seconds:.3f} s"
)
MIGRATION_STARTED = (
    "{root}: format version {old} -> {new}: migrating {symbols} symbols (each rewritten whole "
    "beside the old file, then renamed over it; a stop resumes at the next open)"
)
MIGRATION_SYMBOL = "{path}: migrated {done}/{total}: {prices} prices, {seconds:.2f} s"
MIGRATION_DONE = "{root}: migrated {symbols} symbols to format version {new} in {seconds:.2f} s"
STORE_PERSISTENT = "kept across restarts"
STORE_EPHEMERAL = "ephemeral: removed when the server stops"
ABANDONED_REMOVED = ("{path}: removed, a throwaway directory (metrics or --ephemeral prices) "
                     "left by a server that was killed")
DURABILITY_PROCESS = "a batch survives any process crash"
DURABILITY_SYNC = "synced: a batch survives power loss"
STRAY_FILE = ("{path}: not a symbol file name this store writes (ignored, left as it is; "
              "remove it or rename it to its symbol's encoding)")
STORE_REFUSED = "tradestats-serve: cannot use the data directory: {error}"
PORT_UNAVAILABLE = ("tradestats-serve: cannot listen on {bind}: {reason}; choose another with "
                    "--port or TRADESTATS_PORT (or --host / TRADESTATS_HOST)")
EPHEMERAL_AND_DATA_DIR = ("--ephemeral (TRADESTATS_EPHEMERAL) and --data-dir (TRADESTATS_DATA_DIR) "
                          "exclude each other")
SYNC_FAILED = (
    "The disk did not take or confirm the batch; nothing of it was stored, retry later"
)
SYMBOL_DAMAGED = (
    "Symbol {symbol} is not served: its file failed a check ({reason}); the other symbols are "
    "not affected"
)
SYMBOL_DAMAGED_LOG = "{path}: refused: {reason}"
DISK_FULL = (
    "Insufficient storage: the disk holding the data is full; nothing of the batch was stored"
)
GUNICORN_RISKS = (
    "WARNING: {worker_class} under gunicorn is not hardened against hostile clients: {faults} "
    "Serve it only behind a proxy that buffers and normalises requests (nginx), or use the "
    "default server (granian)"
)
MEINHELD_FAULTS = (
    "a chunked request with a trailer crashes a worker (SIGSEGV), a CONNECT request poisons the "
    "next request, pipelined POSTs are lost, descriptors leak above worker_connections, malformed "
    "requests are accepted; meinheld is unmaintained since 2020."
)
GTHREAD_FAULTS = (
    "a few clients that send slowly occupy every thread of a worker (no answer to anyone until "
    "they finish), and running out of descriptors stops a worker."
)
