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
#: Loopback only unless told otherwise (--host 0.0.0.0), as gunicorn and uvicorn do.
DEFAULT_HOST = "127.0.0.1"
MAX_WORKERS = 256

#: GET /prices/ returns at most this many prices.
MAX_PRICES_PER_REQUEST = 10_000
#: Buckets of GET /envelope/ when the request names none: about one per pixel of a phone's chart.
DEFAULT_ENVELOPE_BUCKETS = 200

#: A request head must arrive within this many seconds (and a kept-alive connection may stay
#: silent this long), else the connection is closed (--request-timeout).
REQUEST_READ_SECONDS = 10
MAX_REQUEST_READ_SECONDS = 3600

#: A worker serves at most this many connections at once; more wait in the listen backlog (they
#: cost no memory of ours there). Under granian each has an app thread when it needs one.
MAX_CONNECTIONS_PER_WORKER = 1024
LISTEN_BACKLOG = 2048
#: Descriptors a worker needs besides connections and symbol files (its runtime, metrics files,
#: logs); the connection cap shrinks to fit the descriptor limit, and the server refuses to
#: start if fewer than MIN_CONNECTIONS_PER_WORKER would fit.
RESERVED_DESCRIPTORS = 48
MIN_CONNECTIONS_PER_WORKER = 8

#: Read buffer of one HTTP/1 connection under granian: the longest request head accepted (a
#: longer one is refused with 431), and what one connection's buffer can cost.
HTTP1_BUFFER_BYTES = 64 * 1024

#: An app thread idle this long ends (granian's pool starts them again on demand; 5..600).
IDLE_THREAD_SECONDS = 30

#: granian's shortest wait for workers to stop before they are killed (--graceful-timeout 0).
MIN_KILL_TIMEOUT_SECONDS = 0.001

#: Retry-After, in seconds, on a 503 for exhausted memory or file descriptors.
RETRY_AFTER_SECONDS = 1
