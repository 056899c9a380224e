# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, embedsignature=True
"""The tradestats engine: per-symbol rolling statistics over the windows 10**1 .. 10**max_k.

Per symbol: a ring of the last 10**max_k prices, two monotonic deques of ring slots (one for the
minimum, one for the maximum) with one front per window, and per window compensated sums of
prices shifted by a reference price. `add` costs amortized O(1) per value per window and
`stats(k)` is O(1). See README.md, "Design", for the numerical method.
"""
import errno as errno_module
import numbers
import os
import threading

from cpython.array cimport array, clone
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.errno cimport ENOMEM
from libc.limits cimport INT_MAX
from libc.math cimport fabs, isfinite, sqrt
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset
from posix.mman cimport MAP_FAILED, MAP_SHARED, MS_SYNC, PROT_READ, PROT_WRITE, mmap, msync, munmap
from posix.signal cimport kill
from posix.unistd cimport ftruncate, getpid

from tradestats.kernels cimport (
    CHUNK, add_shifted_terms, advance_fronts, clear_sums, deque_size, difference,
    expire_before_chunk, init_header, merge_chunk, newest_slot, physical, rebuild_deques,
    ring_slot, total,
)
from tradestats.layout cimport (
    FORMAT_VERSION, MAX_SYMBOL_BYTES, CompensatedSum, DequeCursor, DequeHeader, Snapshot,
    SymbolFile, SymbolHeader, WindowSums, plan_layout,
)

from tradestats.limits import DEFAULT_MAX_K, DEFAULT_MAX_SYMBOLS, MAX_ABS_PRICE, MAX_MAX_K
from tradestats.messages import NOT_ENOUGH_DATA

cdef extern from "<signal.h>":
    enum: SIGKILL

cdef extern from "<unistd.h>" nogil:
    int fdatasync(int fd)

cdef extern from "<fcntl.h>" nogil:
    struct flock:
        short l_type
        short l_whence
        long l_start
        long l_len
        int l_pid
    enum: F_OFD_SETLKW, F_WRLCK, F_UNLCK
    int fcntl(int fd, int cmd, ...)
    int posix_fallocate(int fd, long offset, long length)

# Acquire/release atomics for the commit word, straight from the compiler.
cdef extern from *:
    """
    static inline uint64_t ts_load_acquire(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline uint64_t ts_load_relaxed(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline void ts_store_release(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void ts_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
    static inline void ts_fence_full(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    """
    uint64_t ts_load_acquire(const uint64_t* p) noexcept nogil
    uint64_t ts_load_relaxed(const uint64_t* p) noexcept nogil
    void ts_store_release(uint64_t* p, uint64_t v) noexcept nogil
    void ts_fence_acquire() noexcept nogil
    void ts_fence_full() noexcept nogil

cdef double _MAX_ABS_PRICE = MAX_ABS_PRICE
cdef array _DOUBLE_TEMPLATE = array("d")

# The kernels (kernels.pxd) sum terms in groups of GROUP folded into Neumaier sums: the rounding
# error of a window's sum of squares is then below SUM_ERROR times the sum's mass.
cdef double SUM_ERROR = 24 * 2.0 ** -53
# A window is rebuilt from the ring when its estimated rounding error passes these fractions of
# its variance (relative) or of max|x|**2 (absolute); the accuracy promised is 1e-9 and 1e-30.
cdef double REBUILD_RELATIVE = 1e-11
cdef double REBUILD_ABSOLUTE = 1e-32
cdef int64_t FIRST_ALLOCATION = 16
# A file store allocates disk blocks ahead of the data, from RESERVE_STEP prices at a time
# doubling up to RESERVE_MAX_STEP, so a full disk is an error before a batch is written, never a
# SIGBUS while it is.
cdef int64_t RESERVE_STEP = 16384
cdef int64_t RESERVE_MAX_STEP = 1 << 20
# A reader retries a snapshot copy that a commit overlapped. Each retry means a whole batch was
# committed during a copy of a few hundred bytes, so this bound is reached only if writers commit
# without pause; the reader then waits for the writers' lock instead of spinning on.
cdef int MAX_READ_TRIES = 1000
cdef const char* FILE_MAGIC = b"TSTATSYM"
#: A full window's memory per price when both deques are full: ring slot plus two deque slots.
WORST_CASE_BYTES_PER_PRICE = sizeof(double) + 2 * sizeof(uint32_t)


class NotEnoughDataError(ValueError):
    """Fewer than 10**k prices have been added."""

    def __init__(self, message=NOT_ENOUGH_DATA):
        super().__init__(message)


class InvalidPriceError(ValueError):
    """A batch element is not a finite real number with |x| <= 1e100; nothing was stored."""

    def __init__(self, index, value):
        shown = repr(value)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        super().__init__(
            f"value at index {index} is not a finite real number with magnitude at most "
            f"{_MAX_ABS_PRICE:g}: {shown}"
        )
        self.index = index


class StoreFormatError(ValueError):
    """A store file this version cannot use: another format version or max_k, truncated or corrupt.

    Nothing in the file is changed.
    """

    def __init__(self, path, reason):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class DiskFullError(OSError):
    """No disk space for a batch (or a new symbol); nothing of it was stored."""


class StorageSyncError(OSError):
    """In sync mode the disk did not confirm a batch: nothing of it was stored (retry it)."""


def sync_failure(int code, path):
    """The exception for a failed sync of ``path``: the batch was rolled back."""
    if code in (errno_module.ENOSPC, errno_module.EDQUOT):
        return DiskFullError(code, f"no space to sync {path}; the batch was not stored", str(path))
    return StorageSyncError(code, f"cannot sync {path}; the batch was not stored", str(path))


class TooManySymbolsError(ValueError):
    """A new symbol would pass the store's max_symbols."""

    def __init__(self, max_symbols):
        super().__init__(f"symbol limit reached: at most {max_symbols} symbols")
        self.max_symbols = max_symbols


# ---------------------------------------------------------------------------------------------
# Allocation: the one place that gets memory for a symbol's state.

cdef void* _reallocate(void* block, size_t nbytes) except NULL:
    cdef void* grown = PyMem_Realloc(block, nbytes)
    if grown == NULL:
        raise MemoryError(f"cannot allocate {nbytes} bytes for a symbol")
    return grown


cdef inline int64_t grown_capacity(int64_t current, int64_t needed, int64_t limit) noexcept nogil:
    """Double (at least to `needed`), never past `limit`: memory follows the data."""
    return min(max(2 * current, needed, FIRST_ALLOCATION), limit)


cdef int grow_deque(DequeCursor* at, uint32_t** slots, int64_t needed, int64_t limit) except -1:
    """Make room for `needed` elements (at most `limit`), laying the deque out from slot 0."""
    cdef int64_t new_capacity, size, first_run
    cdef uint32_t* grown
    if needed <= at.capacity:
        return 0
    new_capacity = grown_capacity(at.capacity, needed, limit)
    size = deque_size(at)
    grown = <uint32_t*>_reallocate(NULL, new_capacity * sizeof(uint32_t))
    if size:
        first_run = min(size, at.capacity - at.head_phys)
        memcpy(grown, slots[0] + at.head_phys, first_run * sizeof(uint32_t))
        memcpy(grown + first_run, slots[0], (size - first_run) * sizeof(uint32_t))
    PyMem_Free(slots[0])
    slots[0] = grown
    at.capacity = new_capacity
    at.head_phys = 0
    return 0


# ---------------------------------------------------------------------------------------------
# Input validation: a batch becomes a contiguous float64 array, or nothing happens.

cdef int integer_in_range(str name, object value, int low, int high) except? -1:
    """value as a C int, or ValueError: no bool, float or out-of-range value is cut to fit."""
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)) \
            or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}")
    return value


cdef inline bint acceptable(double x) noexcept nogil:
    return isfinite(x) and fabs(x) <= _MAX_ABS_PRICE


cdef double _python_number(object item, Py_ssize_t index) except? -1.0:
    if isinstance(item, bool) or not isinstance(item, numbers.Real):
        raise InvalidPriceError(index, item)
    try:
        return float(item)
    except (OverflowError, TypeError, ValueError):
        raise InvalidPriceError(index, item) from None


cdef array _prices_from_sequence(object values):
    cdef Py_ssize_t n = len(values), i
    cdef array prices = clone(_DOUBLE_TEMPLATE, n, False)
    cdef double* out = prices.data.as_doubles
    cdef double x
    cdef object item
    for i in range(n):
        item = values[i]
        if type(item) is float:
            x = PyFloat_AS_DOUBLE(item)
        else:
            x = _python_number(item, i)
        if not acceptable(x):
            raise InvalidPriceError(i, item)
        out[i] = x
    return prices


cdef array _prices_from_buffer(object values):
    cdef memoryview view
    try:
        view = memoryview(values)
    except TypeError:
        raise TypeError(
            f"prices must be a list or tuple of numbers or a 1-D float64 buffer, "
            f"not {type(values).__name__}"
        ) from None
    if view.ndim != 1 or view.format.lstrip("@=<") != "d":
        raise TypeError(
            f"a price buffer must be 1-D float64 (format 'd'), "
            f"not format {view.format!r} with {view.ndim} dimensions"
        )
    cdef const double[:] xs = values
    cdef Py_ssize_t n = xs.shape[0], i
    cdef array prices = clone(_DOUBLE_TEMPLATE, n, False)
    cdef double* out = prices.data.as_doubles
    for i in range(n):
        if not acceptable(xs[i]):
            raise InvalidPriceError(i, xs[i])
        out[i] = xs[i]
    return prices


cpdef array as_prices(object values):
    """Validate a whole batch and return it as array('d'); raise before anything is stored."""
    if isinstance(values, (list, tuple)):
        return _prices_from_sequence(values)
    if isinstance(values, (str, bytes, bytearray)):
        raise TypeError("prices must be a list or tuple of numbers or a 1-D float64 buffer")
    return _prices_from_buffer(values)


# ---------------------------------------------------------------------------------------------

cdef class Stats:
    """Immutable statistics of one window: min, max, last, avg and var (population variance)."""

    def as_dict(self):
        return {"min": self.min, "max": self.max, "last": self.last,
                "avg": self.avg, "var": self.var}

    def __iter__(self):
        return iter((self.min, self.max, self.last, self.avg, self.var))

    def __eq__(self, other):
        if not isinstance(other, Stats):
            return NotImplemented
        return tuple(self) == tuple(other)

    def __hash__(self):
        return hash(tuple(self))

    def __repr__(self):
        return (f"Stats(min={self.min!r}, max={self.max!r}, last={self.last!r}, "
                f"avg={self.avg!r}, var={self.var!r})")

    def __reduce__(self):
        return (_make_stats, tuple(self))


def _make_stats(double minimum, double maximum, double last, double avg, double var):
    cdef Stats result = Stats.__new__(Stats)
    result.min, result.max, result.last, result.avg, result.var = minimum, maximum, last, avg, var
    return result


cdef inline double window_min(SymbolStats s, int i) noexcept:
    return s.ring[ring_slot(s.low_slots[physical(&s.h.lows.at, s.h.lows.front[i])],
                            s.h.ring_size)]


cdef inline double window_max(SymbolStats s, int i) noexcept:
    return s.ring[ring_slot(s.high_slots[physical(&s.h.highs.at, s.h.highs.front[i])],
                            s.h.ring_size)]


# ---------------------------------------------------------------------------------------------
# Locks and test hooks of the file store.

cdef int lock_file(int fd, bint exclusive) except -1:
    """An open-file-description lock on the whole file: the kernel drops it when its holder dies,
    and two descriptions exclude each other even inside one process."""
    cdef flock request
    cdef int result
    memset(&request, 0, sizeof(request))
    request.l_type = F_WRLCK if exclusive else F_UNLCK
    with nogil:
        result = fcntl(fd, F_OFD_SETLKW, &request)
    if result != 0:
        raise OSError(errno_value(), "cannot lock a store file")
    return 0


cdef extern from "<errno.h>":
    int errno


cdef inline int errno_value() noexcept:
    return errno


def raise_map_failed(path):
    """An address-space or memory limit is a MemoryError, as for the heap store; else OSError."""
    cdef int code = errno_value()
    if code == ENOMEM:
        raise MemoryError(f"cannot map {path}: {os.strerror(code)}")
    raise OSError(code, f"cannot map {path}", str(path))


def _lock_fd(int fd):
    """Lock the whole file behind fd; closing fd releases it (storage.py relies on that)."""
    lock_file(fd, True)


cdef int64_t _crash_countdown = -1


def _crash_after_chunks(int64_t chunks):
    """Test hook: SIGKILL this process after `chunks` more chunks of a batch have been appended
    (a batch of c chunks that reaches 0 at its end dies just before publishing). -1 disarms."""
    global _crash_countdown
    _crash_countdown = chunks


cdef int _sync_countdown = -1
cdef int _sync_errno = 0


def _fail_sync(int after, int error):
    """Test hook: in sync mode, the sync after `after` more successful ones reports `error` (a
    batch syncs three times: the torn-batch mark, the data, the publish). -1 disarms."""
    global _sync_countdown, _sync_errno
    _sync_countdown, _sync_errno = after, error


cdef int sync_result(int result) noexcept:
    """0, or the errno of a failed sync (or of the one a test made fail)."""
    global _sync_countdown
    if _sync_countdown == 0:
        _sync_countdown = -1
        return _sync_errno
    if _sync_countdown > 0:
        _sync_countdown -= 1
    return errno_value() if result != 0 else 0


cdef inline void crash_point() noexcept:
    global _crash_countdown
    if _crash_countdown < 0:
        return
    if _crash_countdown == 0:
        kill(getpid(), SIGKILL)
    _crash_countdown -= 1


# ---------------------------------------------------------------------------------------------
# The symbol file: layout arithmetic, formatting, validation.

cdef int reserve(int fd, int64_t offset, int64_t length, object path) except -1:
    cdef int result
    if length <= 0:
        return 0
    with nogil:
        result = posix_fallocate(fd, offset, length)
    if result != 0:
        raise DiskFullError(result, f"cannot reserve {length} bytes of disk for {path}", str(path))
    return 0


def symbol_file_size(int max_k, int64_t slack):
    """Bytes a symbol file spans (sparse: disk blocks follow the data)."""
    cdef SymbolFile plan
    plan_layout(&plan, max_k, slack)
    return plan.file_size


def _format_symbol_file(int fd, bytes symbol, int max_k, int64_t slack, path):
    """Make the empty file behind fd a symbol file: sparse at full size, header on disk."""
    cdef SymbolFile plan
    cdef SymbolFile* f
    cdef void* mapped
    if len(symbol) > MAX_SYMBOL_BYTES:
        raise ValueError(f"a symbol is at most {MAX_SYMBOL_BYTES} bytes of UTF-8")
    memset(&plan, 0, sizeof(SymbolFile))
    plan_layout(&plan, max_k, slack)
    if ftruncate(fd, plan.file_size) != 0:
        raise OSError(errno_value(), f"cannot size {path}", str(path))
    reserve(fd, 0, plan.header_bytes, path)
    mapped = mmap(NULL, plan.header_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
    if mapped == MAP_FAILED:
        raise_map_failed(path)
    f = <SymbolFile*>mapped
    memcpy(f, &plan, sizeof(SymbolFile))
    memcpy(f.magic, FILE_MAGIC, 8)
    f.version = FORMAT_VERSION
    f.symbol_bytes = len(symbol)
    memcpy(f.symbol, <const char*>symbol, len(symbol))
    init_header(&f.state[0], max_k, slack)
    f.state[0].ring_allocated = f.ring_size
    f.state[0].lows.at.capacity = f.capacity
    f.state[0].highs.at.capacity = f.capacity
    munmap(mapped, plan.header_bytes)


cdef str layout_problem(const SymbolFile* f, int64_t size, bytes symbol, int max_k,
                        int64_t slack):
    """Why the file cannot be used as this symbol's file, or None."""
    cdef SymbolFile plan
    cdef const SymbolHeader* h
    cdef uint64_t g = f.generation
    cdef int64_t size_of_window
    cdef int i
    if memcmp(f.magic, FILE_MAGIC, 8) != 0:
        return "not a tradestats symbol file (bad magic number)"
    if f.version != FORMAT_VERSION:
        return f"format version {f.version}; this tradestats reads version {FORMAT_VERSION}"
    if f.max_k != max_k:
        return f"created with max_k={f.max_k}, opened with max_k={max_k}"
    if f.slack != slack:
        return f"created with a ring slack of {f.slack} prices, opened with {slack}"
    plan_layout(&plan, max_k, slack)
    if (f.header_bytes != plan.header_bytes or f.ring_offset != plan.ring_offset
            or f.lows_offset != plan.lows_offset or f.highs_offset != plan.highs_offset
            or f.file_size != plan.file_size or f.capacity != plan.capacity
            or f.ring_size != plan.ring_size):
        return "corrupt: its layout does not match its max_k"
    if size != f.file_size:
        return f"truncated or extended: {size} bytes, its layout needs {f.file_size}"
    if f.symbol_bytes != len(symbol) or memcmp(f.symbol, <const char*>symbol, len(symbol)) != 0:
        return f"holds symbol {f.symbol[:max(0, min(f.symbol_bytes, MAX_SYMBOL_BYTES))]!r}, not {symbol!r}"
    if f.writing != g and f.writing != g + 1:
        return "corrupt: its commit words disagree"
    h = &f.state[g & 1]
    if (h.max_k != max_k or h.capacity != plan.capacity or h.ring_size != plan.ring_size
            or h.ring_allocated != plan.ring_size or h.count < 0
            or f.snapshot[g & 1].count != h.count):
        return "corrupt: its committed header does not match its layout"
    if deque_out_of_bounds(&h.lows.at, h) or deque_out_of_bounds(&h.highs.at, h):
        return "corrupt: its committed deques are out of bounds"
    size_of_window = 1
    for i in range(max_k):
        size_of_window *= 10
        if h.window[i] != size_of_window:
            return f"corrupt: window {i + 1} holds {h.window[i]} prices, not {size_of_window}"
        if (fronts_out_of_bounds(&h.lows, i) or fronts_out_of_bounds(&h.highs, i)):
            return f"corrupt: a deque front of window {i + 1} is out of bounds"
    if not min(h.count, f.ring_size) <= f.reserved <= f.ring_size:
        return f"corrupt: {f.reserved} prices reserved, outside {min(h.count, f.ring_size)}.." \
               f"{f.ring_size}"
    return None


cdef bint fronts_out_of_bounds(const DequeHeader* deque, int i) noexcept nogil:
    # A window's front is a virtual index inside the deque: between its head and its tail.
    return not (deque.at.head_virtual <= deque.front[i] <= deque.at.tail_virtual)


cdef bint deque_out_of_bounds(const DequeCursor* at, const SymbolHeader* h) noexcept nogil:
    return (at.capacity != h.capacity or at.tail_virtual < at.head_virtual
            or at.tail_virtual - at.head_virtual > <uint64_t>min(h.count, h.capacity)
            or at.head_phys < 0 or at.head_phys >= h.capacity)


def _open_symbol_file(path, bytes symbol, int max_k, int64_t slack, bint sync):
    """The SymbolStats kept in an existing symbol file, mapped shared; StoreFormatError if the
    file cannot be used (it is left as it is)."""
    cdef SymbolStats stats = SymbolStats(max_k)
    cdef int fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    cdef int64_t size
    cdef void* mapped
    cdef str problem
    try:
        size = os.fstat(fd).st_size
        if size < <int64_t>sizeof(SymbolFile):
            raise StoreFormatError(path, f"truncated: {size} bytes, shorter than its header")
        mapped = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if mapped == MAP_FAILED:
            raise_map_failed(path)
        problem = layout_problem(<SymbolFile*>mapped, size, symbol, max_k, slack)
        if problem is not None:
            munmap(mapped, size)
            raise StoreFormatError(path, problem)
    except BaseException:
        os.close(fd)
        raise
    stats._attach(<SymbolFile*>mapped, size, fd, path, sync)
    return stats


cdef array last_prices(const double* ring, int64_t count, int64_t capacity, int64_t ring_size,
                       int64_t wanted):
    """The last min(wanted, count, capacity) prices before position count, oldest first."""
    cdef int64_t n = min(wanted, count, capacity), start = (count - n) % ring_size if n else 0
    cdef int64_t first = min(n, ring_size - start)
    cdef array out = clone(_DOUBLE_TEMPLATE, n, False)
    memcpy(out.data.as_doubles, ring + start, first * sizeof(double))
    memcpy(out.data.as_doubles + first, ring, (n - first) * sizeof(double))
    return out


cdef class SymbolStats:
    """One symbol's rolling store: min, max, last, avg and var over the last 10**k prices.

    Not thread-safe; the GIL is held throughout `add`, so no reader sees half a batch.
    """

    def __cinit__(self, max_k=DEFAULT_MAX_K):
        max_k = integer_in_range("max_k", max_k, 1, MAX_MAX_K)
        self.h = &self.own_header
        init_header(self.h, max_k, 0)
        self.fd = -1

    cdef void _attach(self, SymbolFile* f, size_t nbytes, int fd, object path, bint sync) noexcept:
        """Work on the state in a mapped symbol file instead of the heap."""
        cdef char* base = <char*>f
        self.file = f
        self.mapped_bytes = nbytes
        self.fd = fd
        self.path = path
        self._sync = sync
        self._thread_lock = threading.Lock()
        self._owner_pid = getpid()
        self.h = &f.state[f.generation & 1]
        self.ring = <double*>(base + f.ring_offset)
        self.low_slots = <uint32_t*>(base + f.lows_offset)
        self.high_slots = <uint32_t*>(base + f.highs_offset)

    def __dealloc__(self):
        if self.file is NULL:
            PyMem_Free(self.ring)
            PyMem_Free(self.low_slots)
            PyMem_Free(self.high_slots)
        else:
            munmap(self.file, self.mapped_bytes)
            os.close(self.fd)

    @property
    def max_k(self):
        return self.h.max_k

    @property
    def nbytes(self):
        """Bytes held now: in the heap, the header, ring and deques; in a file, its disk blocks."""
        if self.file is not NULL:
            return (self.file.header_bytes + self.file.reserved * sizeof(double)
                    + 2 * min(self.file.reserved, self.file.capacity) * sizeof(uint32_t))
        return (sizeof(SymbolHeader) + sizeof(double) * self.h.ring_allocated
                + sizeof(uint32_t) * (self.h.lows.at.capacity + self.h.highs.at.capacity))

    @property
    def rebuilds(self):
        """How many times each window was rebuilt from the ring (numerical safety valve)."""
        cdef Snapshot snap
        if self.file is NULL:
            return tuple(self.h.sums[i].recomputes for i in range(self.h.max_k))
        self._snapshot(&snap)
        return tuple(snap.recomputes[i] for i in range(self.h.max_k))

    @property
    def recoveries(self):
        """Torn batches (a writer killed mid-batch) rolled back in this symbol's file; 0 in the heap."""
        return 0 if self.file is NULL else self.file.recoveries

    def __len__(self):
        cdef Snapshot snap
        if self.file is NULL:
            return self.h.count
        self._snapshot(&snap)
        return snap.count

    def add(self, values):
        """Append prices, oldest first. All or nothing: InvalidPriceError names the first bad index."""
        cdef array prices = as_prices(values)
        if self.file is NULL:
            self._append(prices.data.as_doubles, len(prices))
        else:
            self._write_file_batch(prices.data.as_doubles, len(prices))

    def stats(self, k):
        """Statistics over the last 10**k prices, in O(1)."""
        cdef int i = integer_in_range("k", k, 1, self.h.max_k) - 1
        cdef Snapshot snap
        cdef Stats result
        if self.file is NULL:
            return self._stats(i + 1)
        self._snapshot(&snap)
        if snap.count < self.h.window[i]:
            raise NotEnoughDataError()
        result = Stats.__new__(Stats)
        result.min, result.max, result.last = snap.min[i], snap.max[i], snap.last
        result.avg, result.var = snap.avg[i], snap.var[i]
        return result

    @property
    def last(self):
        """The most recent price, or None before the first."""
        return self.count_and_last()[1]

    def count_and_last(self):
        """(prices added, the most recent price or None), both of one commit."""
        cdef Snapshot snap
        if self.file is NULL:
            return self.h.count, (self.ring[newest_slot(self.h)] if self.h.count else None)
        self._snapshot(&snap)
        return snap.count, (snap.last if snap.count else None)

    def prices(self, n):
        """The last n prices (fewer if fewer are held), oldest first, as array('d'), in one copy."""
        cdef int64_t wanted = integer_in_range("n", n, 1, INT_MAX)
        cdef array out
        cdef SymbolFile* f = self.file
        cdef uint64_t g
        cdef int attempt
        if f is NULL:
            return last_prices(self.ring, self.h.count, self.h.capacity, self.h.ring_size, wanted)
        for attempt in range(MAX_READ_TRIES):   # the seqlock of _read_snapshot, over the ring
            g = ts_load_acquire(&f.generation)
            out = last_prices(self.ring, f.snapshot[g & 1].count, f.capacity, f.ring_size, wanted)
            ts_fence_acquire()
            if ts_load_relaxed(&f.generation) == g:
                return out
        self._own_description()
        with self._thread_lock:   # writers never paused: queue up with them
            lock_file(self.fd, True)
            try:
                return last_prices(self.ring, f.snapshot[f.generation & 1].count, f.capacity,
                                   f.ring_size, wanted)
            finally:
                lock_file(self.fd, False)

    def recover(self):
        """Roll back a torn batch now, if there is one (the next writer would); True if there was."""
        if self.file is NULL:
            return False
        self._own_description()
        with self._thread_lock:
            lock_file(self.fd, True)
            try:
                return self._recover_if_torn() == 1
            finally:
                lock_file(self.fd, False)

    def __repr__(self):
        return f"SymbolStats(max_k={self.h.max_k}, len={len(self)})"

    # -- the file: one writer, readers without locks -------------------------------------------

    cdef int _write_file_batch(self, const double* values, Py_ssize_t n) except -1:
        cdef SymbolFile* f = self.file
        cdef uint64_t g
        if n > f.slack:
            raise ValueError(
                f"a batch of {n} prices is more than this file store takes at once "
                f"({f.slack}, fixed when the store was created)")
        if n == 0:
            return 0
        self._own_description()
        with self._thread_lock:
            lock_file(self.fd, True)
            try:
                self._recover_if_torn()
                self._reserve_disk(n)   # may refuse the batch: nothing is written yet
                g = f.generation
                self.h = &f.state[(g + 1) & 1]
                memcpy(self.h, &f.state[g & 1], sizeof(SymbolHeader))
                f.writing = g + 1
                ts_fence_full()         # `writing` is set before any slot can change
                if self._sync:
                    # ...and on disk first, or a power cut could keep torn deques unmarked.
                    self._synced_or_rolled_back(msync(f, f.header_bytes, MS_SYNC), g, False)
                self._append(values, n)
                crash_point()
                if self._sync:          # the batch is on disk before anyone can see it...
                    self._synced_or_rolled_back(fdatasync(self.fd), g, False)
                self._publish(g + 1)
                if self._sync:          # ...and so is its publication before the 200
                    self._synced_or_rolled_back(msync(f, f.header_bytes, MS_SYNC), g, True)
            finally:
                lock_file(self.fd, False)
        return 0

    cdef int _synced_or_rolled_back(self, int result, uint64_t g, bint published) except -1:
        """After a sync in sync mode: if it failed, the batch is undone (unpublished if it was
        published, its deques rebuilt for generation g) and the error raised, so that a retry
        stores it exactly once. A reader may have seen it meanwhile; it was never acknowledged."""
        cdef int failed = sync_result(result)
        if failed == 0:
            return 0
        if published:
            ts_store_release(&self.file.generation, g)
        self._recover_if_torn()
        raise sync_failure(failed, self.path)

    cdef int _own_description(self) except -1:
        """Before taking the writers' lock: a process forked from the one that opened the file
        shares its open file description, and an OFD lock belongs to the description, so parent
        and child would both hold it at once and lose each other's batches. The first lock in a
        new process reopens the file (a description, and a lock, of its own) and replaces the
        thread lock (another thread may have held it at the fork)."""
        cdef int pid = getpid()
        if pid == self._owner_pid:
            return 0
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        os.close(self.fd)   # the parent's description lives on in the parent
        self.fd = fd
        self._thread_lock = threading.Lock()
        self._owner_pid = pid
        return 0

    cdef int _recover_if_torn(self) except -1:
        """Under the file lock: if a writer died mid-batch, rebuild the committed state's deques
        from the ring (its sums and ring slots were never touched). 1 if it did."""
        cdef SymbolFile* f = self.file
        cdef uint64_t g = f.generation
        if f.writing == g:
            return 0
        self.h = &f.state[g & 1]
        rebuild_deques(self.h, self.ring, self.low_slots, self.high_slots)
        f.recoveries += 1
        f.writing = g
        return 1

    cdef int _reserve_disk(self, Py_ssize_t n) except -1:
        """Allocate disk blocks for the ring and deque slots the next n prices may touch."""
        cdef SymbolFile* f = self.file
        cdef int64_t needed = min(f.state[f.generation & 1].count + n, f.ring_size)
        cdef int64_t target, before = f.reserved
        if needed <= before:
            return 0
        # Doubling, like the heap's arrays, but at most RESERVE_MAX_STEP at once: one call
        # reserving hundreds of megabytes would stall its batch for milliseconds.
        target = min(max((needed + RESERVE_STEP - 1) // RESERVE_STEP * RESERVE_STEP,
                         before + min(before, RESERVE_MAX_STEP)), f.ring_size)
        reserve(self.fd, f.ring_offset + before * <int64_t>sizeof(double),
                (target - before) * <int64_t>sizeof(double), self.path)
        before = min(before, f.capacity)
        for offset in (f.lows_offset, f.highs_offset):
            reserve(self.fd, offset + before * <int64_t>sizeof(uint32_t),
                    (min(target, f.capacity) - before) * <int64_t>sizeof(uint32_t), self.path)
        f.reserved = target
        return 0

    cdef void _publish(self, uint64_t generation) noexcept:
        """Write the readers' snapshot of the new state, then commit it with one release store."""
        cdef SymbolFile* f = self.file
        cdef Snapshot* snap = &f.snapshot[generation & 1]
        cdef SymbolHeader* h = self.h
        cdef int i
        memset(snap, 0, sizeof(Snapshot))
        snap.count = h.count
        snap.last = self.ring[newest_slot(h)] if h.count else 0.0
        for i in range(h.max_k):
            snap.recomputes[i] = h.sums[i].recomputes
            if h.count >= h.window[i]:
                self._window_values(i, &snap.min[i], &snap.max[i], &snap.avg[i], &snap.var[i])
        ts_store_release(&f.generation, generation)

    cdef bint _read_snapshot(self, Snapshot* out) noexcept:
        """Copy the published snapshot without a lock; False if commits kept overlapping."""
        cdef SymbolFile* f = self.file
        cdef uint64_t g
        cdef int attempt
        for attempt in range(MAX_READ_TRIES):
            g = ts_load_acquire(&f.generation)
            memcpy(out, &f.snapshot[g & 1], sizeof(Snapshot))
            ts_fence_acquire()
            if ts_load_relaxed(&f.generation) == g:
                return True
        return False

    cdef int _snapshot(self, Snapshot* out) except -1:
        if self._read_snapshot(out):
            return 0
        self._own_description()
        with self._thread_lock:   # writers never paused: queue up with them
            lock_file(self.fd, True)
            memcpy(out, &self.file.snapshot[self.file.generation & 1], sizeof(Snapshot))
            lock_file(self.fd, False)
        return 0

    # -- appending --------------------------------------------------------------------------

    cdef int _append(self, const double* values, Py_ssize_t n) except -1:
        cdef Py_ssize_t done = 0, c
        cdef SymbolHeader* h = self.h
        cdef int64_t chunk_limit = min(<int64_t>CHUNK, h.capacity)
        if h.max_k > 1:
            chunk_limit = min(chunk_limit, h.capacity - h.window[h.max_k - 2])
        self._reserve_ring(n)
        while done < n:
            c = min(n - done, chunk_limit)
            grow_deque(&h.lows.at, &self.low_slots, min(deque_size(&h.lows.at) + c, h.capacity),
                       h.capacity)
            grow_deque(&h.highs.at, &self.high_slots,
                       min(deque_size(&h.highs.at) + c, h.capacity), h.capacity)
            crash_point()
            self._append_chunk(values + done, c)
            done += c
        return 0

    cdef int _reserve_ring(self, Py_ssize_t n) except -1:
        cdef SymbolHeader* h = self.h
        cdef int64_t needed = min(h.count + n, h.ring_size), new_size
        if needed <= h.ring_allocated:
            return 0
        new_size = grown_capacity(h.ring_allocated, needed, h.ring_size)
        self.ring = <double*>_reallocate(self.ring, new_size * sizeof(double))
        h.ring_allocated = new_size
        return 0

    cdef void _append_chunk(self, const double* xs, Py_ssize_t c) noexcept:
        cdef SymbolHeader* h = self.h
        cdef int i
        # Sums first: the prices leaving every window are still in the ring.
        for i in range(h.max_k):
            self._slide_sums(i, xs, c)
        self._slide_deques(xs, c)
        for i in range(h.max_k):
            if h.count >= h.window[i] and self._sums_unreliable(i):
                self._rebuild_sums(i)

    cdef void _slide_deques(self, const double* xs, Py_ssize_t c) noexcept:
        cdef SymbolHeader* h = self.h
        cdef int64_t capacity = h.capacity, ring_size = h.ring_size, run
        cdef int64_t first_slot = h.count % ring_size
        cdef int32_t survivors[CHUNK]
        cdef uint64_t lowest_low, lowest_high
        if h.count + c > capacity:
            expire_before_chunk(&h.lows.at, self.low_slots, newest_slot(h), capacity - c,
                                ring_size)
            expire_before_chunk(&h.highs.at, self.high_slots, newest_slot(h), capacity - c,
                                ring_size)
        lowest_low = merge_chunk(&h.lows.at, self.low_slots, self.ring, xs, c, first_slot,
                                 ring_size, False, survivors)
        lowest_high = merge_chunk(&h.highs.at, self.high_slots, self.ring, xs, c, first_slot,
                                  ring_size, True, survivors)
        run = min(c, ring_size - first_slot)
        memcpy(self.ring + first_slot, xs, run * sizeof(double))
        memcpy(self.ring, xs + run, (c - run) * sizeof(double))
        h.count += c
        advance_fronts(&h.lows, self.low_slots, h, lowest_low, newest_slot(h))
        advance_fronts(&h.highs, self.high_slots, h, lowest_high, newest_slot(h))

    cdef void _slide_sums(self, int i, const double* xs, Py_ssize_t c) noexcept:
        """Add the chunk's prices to window i's block sums and its leavers to the gone sums."""
        cdef SymbolHeader* h = self.h
        cdef WindowSums* w = &h.sums[i]
        cdef int64_t size = h.window[i], start = h.count, p = start, leaver, slot
        cdef Py_ssize_t done = 0, run
        cdef const double* leaving
        while done < c:
            if p == 0:
                w.block_ref = xs[0]
            run = min(c - done, size - p % size)
            if p >= size:
                leaver = p - size
                if leaver >= start:
                    leaving = xs + (leaver - start)
                else:
                    slot = leaver % h.ring_size
                    run = min(run, h.ring_size - slot, start - leaver)
                    leaving = self.ring + slot
                add_shifted_terms(leaving, run, w.tail_ref, &w.gone1, &w.gone2)
            add_shifted_terms(xs + done, run, w.block_ref, &w.block1, &w.block2)
            done += run
            p += run
            if p % size == 0:
                # The block is complete and is exactly the window: it becomes the tail. The next
                # block is shifted by this window's mean, which one outlier cannot drag far.
                w.tail_ref = w.block_ref
                w.tail1 = w.block1
                w.tail2 = w.block2
                clear_sums(&w.gone1, &w.gone2)
                clear_sums(&w.block1, &w.block2)
                w.block_ref = w.tail_ref + total(&w.tail1) / size

    # -- numerical safety valve ----------------------------------------------------------------

    cdef bint _sums_unreliable(self, int i) noexcept:
        """True when the rounding error the sums may carry is too large for this window's spread.

        The error of each sum is below SUM_ERROR times the mass (sum of |terms|) that went into
        it; a volatile stretch that has left the window leaves that mass behind.
        """
        cdef SymbolHeader* h = self.h
        cdef WindowSums* w = &h.sums[i]
        cdef double lo = window_min(self, i), hi = window_max(self, i)
        cdef double mean, m2, error, scale
        cdef int64_t size = h.window[i], in_block = h.count % size
        if lo == hi:
            return False    # reported exactly from min and max
        self._mean_m2(i, &mean, &m2)
        # M2 moves one-for-one with the square sums and by 2|mean - ref| with the plain sums,
        # whose error Cauchy-Schwarz bounds by the square sums' mass.
        error = SUM_ERROR * (
            2.0 * w.tail2.s + w.block2.s
            + 4.0 * fabs(mean - w.tail_ref) * sqrt(size * w.tail2.s)
            + 2.0 * fabs(mean - w.block_ref) * sqrt(in_block * w.block2.s))
        scale = max(fabs(lo), fabs(hi))
        return error > REBUILD_RELATIVE * m2 + REBUILD_ABSOLUTE * size * scale * scale

    cdef void _rebuild_sums(self, int i) noexcept:
        """Recompute window i's sums from the ring around a fresh reference: its mean."""
        cdef SymbolHeader* h = self.h
        cdef WindowSums* w = &h.sums[i]
        cdef int64_t size = h.window[i], in_block = h.count % size
        cdef int64_t first = h.count - size
        cdef double ref = self.ring[newest_slot(h)]
        cdef CompensatedSum s1, s2
        clear_sums(&s1, &s2)
        self._ring_terms(first, size, ref, &s1, &s2)
        ref = ref + total(&s1) / size
        w.tail_ref = w.block_ref = ref
        clear_sums(&w.tail1, &w.tail2)
        clear_sums(&w.gone1, &w.gone2)
        clear_sums(&w.block1, &w.block2)
        if in_block == 0:
            self._ring_terms(first, size, ref, &w.tail1, &w.tail2)
        else:
            # Only the part of the tail still in the window is summed; gone starts afresh.
            self._ring_terms(first, size - in_block, ref, &w.tail1, &w.tail2)
            self._ring_terms(h.count - in_block, in_block, ref, &w.block1, &w.block2)
        w.recomputes += 1

    cdef void _ring_terms(self, int64_t first, int64_t n, double ref,
                          CompensatedSum* s1, CompensatedSum* s2) noexcept:
        """Add the shifted terms of the prices at positions first .. first+n-1 (in the ring)."""
        cdef int64_t slot = first % self.h.ring_size, run
        while n > 0:
            run = min(n, self.h.ring_size - slot)
            add_shifted_terms(self.ring + slot, run, ref, s1, s2)
            n -= run
            slot = 0

    # -- answering ---------------------------------------------------------------------------

    cdef void _mean_m2(self, int i, double* mean, double* m2) noexcept:
        """Mean and sum of squared deviations of window i, merging tail and block (Chan et al.)."""
        cdef SymbolHeader* h = self.h
        cdef WindowSums* w = &h.sums[i]
        cdef int64_t size = h.window[i], in_block = h.count % size, in_tail = size - in_block
        cdef double tail1 = difference(&w.tail1, &w.gone1)
        cdef double tail2 = difference(&w.tail2, &w.gone2)
        cdef double tail_mean = tail1 / in_tail
        cdef double tail_m2 = max(tail2 - tail1 * tail_mean, 0.0)
        cdef double block1, block_mean, block_m2, delta, share
        if in_block == 0:
            mean[0] = w.tail_ref + tail_mean
            m2[0] = tail_m2
            return
        block1 = total(&w.block1)
        block_mean = block1 / in_block
        block_m2 = max(total(&w.block2) - block1 * block_mean, 0.0)
        delta = (w.block_ref - w.tail_ref) + (block_mean - tail_mean)
        share = <double>in_block / size
        mean[0] = w.tail_ref + (tail_mean + delta * share)
        m2[0] = tail_m2 + block_m2 + delta * delta * in_tail * share

    cdef Stats _stats(self, int k):
        cdef SymbolHeader* h = self.h
        cdef int i = k - 1
        cdef Stats result
        if h.count < h.window[i]:
            raise NotEnoughDataError()
        result = Stats.__new__(Stats)
        result.last = self.ring[newest_slot(h)]
        self._window_values(i, &result.min, &result.max, &result.avg, &result.var)
        return result

    cdef void _window_values(self, int i, double* low, double* high, double* avg,
                             double* var) noexcept:
        """min, max, avg, var of window i, which must be full."""
        cdef double mean, m2, spread
        low[0] = window_min(self, i)
        high[0] = window_max(self, i)
        if low[0] == high[0]:
            # A constant window: exact, whatever came before.
            avg[0] = low[0]
            var[0] = 0.0
            return
        self._mean_m2(i, &mean, &m2)
        # Rounding can only push these outside what the exact min and max allow.
        avg[0] = min(max(mean, low[0]), high[0])
        spread = high[0] - low[0]
        var[0] = min(max(m2 / self.h.window[i], 0.0), 0.25 * spread * spread)


cdef class Store:
    """Symbols to SymbolStats, each created on its first add.

    ``path=None``: in this process's heap; not thread-safe (guard it with a lock).
    ``path=DIR``: in memory-mapped files under DIR (see storage.py), shared by every process and
    thread that opens DIR: one writer per symbol at a time, readers never wait, a batch is
    committed whole or not at all even if its writer is killed, and the data outlives every
    process. ``max_batch`` (file stores) is the largest batch, fixed when DIR is created
    (default 10,000); ``sync=True`` also makes every batch durable against power loss before
    `add` returns. What a file store creates is private to its owner (0600/0700) unless
    ``shared_group=True`` (0660/0770).
    """

    def __cinit__(self, max_symbols=DEFAULT_MAX_SYMBOLS, max_k=DEFAULT_MAX_K, path=None, *,
                  max_batch=None, sync=False, shared_group=False):
        self.max_symbols = integer_in_range("max_symbols", max_symbols, 1, INT_MAX)
        self.max_k = integer_in_range("max_k", max_k, 1, MAX_MAX_K)
        self._symbols = {}
        self._directory = None
        if path is not None:
            from tradestats.storage import SymbolDirectory
            self._directory = SymbolDirectory(path, max_k=self.max_k, max_batch=max_batch,
                                              sync=bool(sync), shared_group=bool(shared_group))

    @property
    def path(self):
        """The store's directory, or None for a heap store."""
        return None if self._directory is None else self._directory.root

    @property
    def max_batch(self):
        """The largest batch a file store takes; None (no limit) in the heap."""
        return None if self._directory is None else self._directory.max_batch

    def add(self, symbol, values):
        """Validate the batch, create the symbol if new (within max_symbols), then append."""
        cdef array prices = as_prices(values)
        cdef SymbolStats target = self._symbols.get(symbol)
        if target is None:
            target = self._create(symbol)
        if target.file is NULL:
            target._append(prices.data.as_doubles, len(prices))
        else:
            target._write_file_batch(prices.data.as_doubles, len(prices))

    cdef SymbolStats _create(self, symbol):
        cdef SymbolStats target
        if self._directory is not None:
            target = self._directory.open(symbol, create_within=self.max_symbols)
        else:
            if len(self._symbols) >= self.max_symbols:
                raise TooManySymbolsError(self.max_symbols)
            target = SymbolStats(self.max_k)
        self._symbols[symbol] = target
        return target

    def stats(self, symbol, k):
        return self[symbol].stats(k)

    def prices(self, symbol, n):
        """The last n prices of symbol, oldest first (KeyError for an unknown symbol)."""
        return self[symbol].prices(n)

    def symbols(self):
        """Every symbol with its count and last price (of one commit), sorted by symbol."""
        listed = []
        for symbol in sorted(self):
            count, last = self[symbol].count_and_last()
            listed.append({"symbol": symbol, "count": count, "last": last})
        return listed

    def recover(self):
        """Open every symbol and roll back any torn batch; the symbols that had one."""
        return [symbol for symbol in self if self[symbol].recover()]

    @property
    def nbytes(self):
        return sum(self[symbol].nbytes for symbol in self)

    def __getitem__(self, symbol):
        cdef SymbolStats found = self._symbols.get(symbol)
        if found is None:
            if self._directory is None:
                raise KeyError(symbol)
            found = self._directory.open(symbol)   # KeyError if no process created it
            self._symbols[symbol] = found
        return found

    def __contains__(self, symbol):
        return symbol in self._symbols or (
            self._directory is not None and self._directory.exists(symbol))

    def __len__(self):
        return len(self._symbols) if self._directory is None else len(self._directory.symbols())

    def __iter__(self):
        return iter(list(self._symbols) if self._directory is None else self._directory.symbols())

    def __repr__(self):
        where = "" if self._directory is None else f", path={str(self.path)!r}"
        return (f"Store(max_symbols={self.max_symbols}, max_k={self.max_k}{where}, "
                f"symbols={len(self)})")
