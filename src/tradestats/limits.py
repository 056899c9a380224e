"""Every tunable limit and default of tradestats, in one place."""

#: Windows are 10**1 .. 10**max_k prices; ring positions are stored as uint32, so 10**9 is the ceiling.
DEFAULT_MAX_K = 8
MAX_MAX_K = 9

#: |price| bound: squares and window sums of squares then stay far from overflow.
MAX_ABS_PRICE = 1e100

DEFAULT_MAX_SYMBOLS = 10
DEFAULT_MAX_BATCH = 10_000
MAX_SYMBOL_LENGTH = 64

#: 10,000 numbers of up to ~25 characters each ("-1.2345678901234567e-100,") plus the symbol
#: and JSON punctuation fit with room to spare.
DEFAULT_MAX_BODY_BYTES = 512 * 1024

#: By default a stop signal (SIGTERM, SIGINT, SIGQUIT) lets requests in flight finish for at most
#: this many seconds (--graceful-timeout); the master then kills what is left.
SHUTDOWN_GRACE_SECONDS = 5

#: tradestats-serve keeps its prices here unless told otherwise (--data-dir).
DEFAULT_DATA_DIR = "tradestats-data"
MAX_WORKERS = 256

#: GET /prices/ returns at most this many prices.
MAX_PRICES_PER_REQUEST = 10_000

#: A request must arrive whole within this many seconds of its first byte (a new connection's:
#: of the connect), else 408 and the connection is closed. Until then it costs a buffer, not a
#: thread (workers/buffered.py).
REQUEST_READ_SECONDS = 10

#: One send to a client that stopped reading gives up after this many seconds.
SEND_TIMEOUT_SECONDS = 10

#: A worker serves at most this many connections at once (gunicorn's worker_connections); the
#: open-file limit usually binds first, and running out of descriptors is answered 503.
MAX_CONNECTIONS_PER_WORKER = 10_000

#: Retry-After, in seconds, on a 503 for exhausted memory or file descriptors.
RETRY_AFTER_SECONDS = 1
