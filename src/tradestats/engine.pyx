# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, embedsignature=True
"""The tradestats engine: per-symbol rolling statistics over the windows 10**1 .. 10**max_k.

Per symbol: a ring of the last 10**max_k prices, two monotonic deques of ring slots (one for the
minimum, one for the maximum) with one front per window, and exact sums of the prices and their
squares (exact.h) from which each window's mean and variance are rounded once, correctly. `add`
costs amortized O(1) per value per window, no call rebuilds or copies anything of a window's
size, and `stats(k)` reads a snapshot written at the end of the last `add`. The state has one
layout (layout.pxd), in anonymous memory (the heap store: SymbolStats here) or in a shared
file (FileSymbolStats: filestore.pyx, which adds the commit protocol over symbolfile.pyx).
See README.md, "Numerical method".
"""
import numbers

from cpython.array cimport array, clone
from cpython.float cimport PyFloat_AS_DOUBLE
from libc.limits cimport INT_MAX
from libc.math cimport fabs, isfinite
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset
from posix.mman cimport munmap
from posix.signal cimport kill
from posix.unistd cimport getpid

from tradestats.exact cimport (
    add_positions, ts_exact_add, ts_exact_clear, ts_exact_merge, ts_mean, ts_variance, ts_window,
    ts_window_of,
)
from tradestats.kernels cimport (
    CHUNK, advance_fronts, expire_before_chunk, merge_chunk, newest_slot, physical, ring_slot,
    ring_span,
)
from tradestats.layout cimport (
    BLOCK_PRICES, SNAPSHOT_DELETED, BlockRecord, ExactSums, Snapshot, SymbolFile, SymbolHeader,
)
from tradestats.symbolfile cimport (
    BLOCK_INTACT, block_fault, crc_extend, fault_problem, map_anonymous, record_crc, record_fault,
)

from tradestats.errors import (  # noqa: F401  (re-exported: the engine's public exceptions)
    DiskFullError, InvalidPriceError, NotEnoughDataError, StorageSyncError, StoreCorruptionError,
    StoreFormatError, SymbolDeletedError, TooManySymbolsError,
)
from tradestats.limits import DEFAULT_MAX_K, DEFAULT_MAX_SYMBOLS, MAX_ABS_PRICE, MAX_MAX_K
from tradestats.symbolfile import symbol_file_size  # noqa: F401  (re-exported for the server)

cdef extern from "<signal.h>":
    enum: SIGKILL

cdef double _MAX_ABS_PRICE = MAX_ABS_PRICE
cdef int64_t[9] WINDOWS = [10, 100, 1000, 10**4, 10**5, 10**6, 10**7, 10**8, 10**9]
cdef array _DOUBLE_TEMPLATE = array("d")

# The heap store takes batches of any size, a chunk at a time: its ring has room for one.
cdef int64_t HEAP_MAX_BATCH = CHUNK
#: A full window's memory per price when both deques are full: ring slot plus two deque slots.
WORST_CASE_BYTES_PER_PRICE = sizeof(double) + 2 * sizeof(uint32_t)
#: Bytes of exact sums per price kept for the windows (one BlockRecord per BLOCK_PRICES).
RECORD_BYTES_PER_PRICE = sizeof(BlockRecord) / BLOCK_PRICES

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




# ---------------------------------------------------------------------------------------------
# Test hooks of the file store.

cdef int64_t _crash_countdown = -1


def _crash_after_chunks(int64_t chunks):
    """Test hook: SIGKILL this process after `chunks` more chunks of a batch have been appended
    (a batch of c chunks that reaches 0 at its end dies just before publishing). -1 disarms."""
    global _crash_countdown
    _crash_countdown = chunks


cdef void crash_point() noexcept nogil:
    global _crash_countdown
    if _crash_countdown < 0:
        return
    if _crash_countdown == 0:
        kill(getpid(), SIGKILL)
    _crash_countdown -= 1


# ---------------------------------------------------------------------------------------------
# Reading a symbol's state.

cdef array last_prices(const double* ring, int64_t count, int64_t capacity, int64_t ring_size,
                       int64_t wanted):
    """The last min(wanted, count, capacity) prices before position count, oldest first."""
    cdef int64_t start, first
    cdef int64_t n = ring_span(count, capacity, ring_size, wanted, &start, &first)
    cdef array out = clone(_DOUBLE_TEMPLATE, n, False)
    memcpy(out.data.as_doubles, ring + start, first * sizeof(double))
    memcpy(out.data.as_doubles + first, ring, (n - first) * sizeof(double))
    return out


cdef int64_t state_bytes(const SymbolFile* f, int64_t slots) noexcept:
    """Bytes a symbol's state takes with its first `slots` ring slots (and as many deque slots
    and block records) in use: memory in the heap, disk blocks in a file."""
    cdef int64_t records = min((slots + BLOCK_PRICES - 1) // BLOCK_PRICES, f.blocks)
    return (f.header_bytes + slots * sizeof(double)
            + 2 * min(slots, f.capacity) * sizeof(uint32_t) + records * sizeof(BlockRecord))


cdef inline double window_min(SymbolStats s, int i) noexcept nogil:
    return s.ring[ring_slot(s.low_slots[physical(&s.h.lows.at, s.h.lows.front[i])],
                            s.h.ring_size)]


cdef inline double window_max(SymbolStats s, int i) noexcept nogil:
    return s.ring[ring_slot(s.high_slots[physical(&s.h.highs.at, s.h.highs.front[i])],
                            s.h.ring_size)]


cdef class SymbolStats:
    """One symbol's rolling store: min, max, last, avg and var over the last 10**k prices.

    This class keeps its state in anonymous memory (the heap store): not thread-safe, guard it
    with a lock. A file store's symbols are FileSymbolStats (filestore.pyx): the same state and
    kernels in a shared file, one writer at a time, readers that never wait.
    """

    def __cinit__(self, max_k=DEFAULT_MAX_K, *, bint _mapped_later=False):
        max_k = integer_in_range("max_k", max_k, 1, MAX_MAX_K)
        if not _mapped_later:
            self._bind(map_anonymous(max_k, HEAP_MAX_BATCH))

    cdef void _bind(self, SymbolFile* f) noexcept:
        """Work on the state at f: the heap's anonymous mapping, or a file's."""
        cdef char* base = <char*>f
        self.file = f
        self.mapped_bytes = f.file_size
        self.max_k_ = <int>f.max_k   # kept: a call reads no page of a file before its checks
        self.h = &f.state[f.generation & 1]
        self.ring = <double*>(base + f.ring_offset)
        self.low_slots = <uint32_t*>(base + f.lows_offset)
        self.high_slots = <uint32_t*>(base + f.highs_offset)
        self.records = <BlockRecord*>(base + f.blocks_offset)

    def __dealloc__(self):
        if self.file is not NULL:
            munmap(self.file, self.mapped_bytes)

    @property
    def max_k(self):
        return self.max_k_

    @property
    def nbytes(self):
        """Bytes held now: memory in the heap (a file: disk blocks), ring, deques and records."""
        cdef SymbolFile* f = self.file
        cdef int64_t slots = min(self.h.count, f.ring_size)
        return state_bytes(f, slots)

    @property
    def recoveries(self):
        """Torn batches (a writer killed mid-batch) rolled back in this symbol's file; 0 in the heap."""
        return 0

    def __len__(self):
        cdef Snapshot snap
        self._snapshot(&snap)
        return snap.count

    def add(self, values):
        """Append prices, oldest first. All or nothing: InvalidPriceError names the first bad index.
        The prices are validated with the GIL held, then appended with it released (in the heap,
        batches of NOGIL_PRICES or more), so other threads run meanwhile."""
        cdef array prices = as_prices(values)
        self._add_prices(prices.data.as_doubles, len(prices))

    cdef int _add_prices(self, const double* values, Py_ssize_t n) except -1:
        cdef Snapshot fresh
        if self.file.snapshot[0].flags & SNAPSHOT_DELETED:
            raise SymbolDeletedError(self.path)
        if n >= NOGIL_PRICES:
            with nogil:
                self._append_into(values, n, &fresh)
        else:
            self._append_into(values, n, &fresh)
        if self.file.snapshot[0].flags & SNAPSHOT_DELETED:   # deleted meanwhile (no lock held)
            raise SymbolDeletedError(self.path)
        # Published with the GIL held: a thread calling stats() meanwhile sees whole batches.
        memcpy(&self.file.snapshot[0], &fresh, sizeof(Snapshot))
        return 0

    def stats(self, k):
        """Statistics over the last 10**k prices, in O(1)."""
        cdef int i = integer_in_range("k", k, 1, self.max_k_) - 1
        cdef Snapshot snap
        cdef Stats result
        self._snapshot(&snap)
        if snap.count < WINDOWS[i]:
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
        self._snapshot(&snap)
        return snap.count, (snap.last if snap.count else None)

    def prices(self, n):
        """The last n prices (fewer if fewer are held), oldest first, as array('d'), in one copy."""
        cdef int64_t wanted = integer_in_range("n", n, 1, INT_MAX)
        if self.file.snapshot[0].flags & SNAPSHOT_DELETED:
            raise SymbolDeletedError(self.path)
        # The published count: an add running meanwhile (GIL released) writes only slots past it.
        return last_prices(self.ring, self.file.snapshot[0].count, self.h.capacity,
                           self.h.ring_size, wanted)

    def recover(self):
        """Roll back a torn batch now, if there is one (the next writer would); True if there was."""
        return False

    def verify(self, recompute=True):
        """Check everything this symbol holds: the checksums of its header, its snapshot and the
        prices of its largest window, and (recompute) every window's statistics recomputed from
        the prices. Raises StoreCorruptionError naming the first difference. Reads the whole
        window; a file's writers wait meanwhile."""
        self._verify_state(recompute)

    def __repr__(self):
        return f"SymbolStats(max_k={self.max_k_}, len={len(self)})"

    # -- appending --------------------------------------------------------------------------

    cdef void _append_into(self, const double* values, Py_ssize_t n,
                           Snapshot* snap) noexcept nogil:
        """(The heap) Append and compute the new snapshot into snap. Cannot fail in the heap:
        nothing is checked or allocated."""
        self._append(values, n)
        self._compute_snapshot(snap)

    cdef int _append(self, const double* values, Py_ssize_t n) noexcept nogil:
        """Append n prices a chunk at a time: 0, or the fault of a checked block (raise_fault
        says which; a file's writer then rolls the batch back)."""
        cdef Py_ssize_t done = 0, c
        cdef int fault
        cdef SymbolHeader* h = self.h
        cdef int64_t chunk_limit = min(<int64_t>CHUNK, h.capacity)
        if h.max_k > 1:
            chunk_limit = min(chunk_limit, h.capacity - h.window[h.max_k - 2])
        # A chunk overwrites ring slots only the slack holds: never one a window or block needs.
        chunk_limit = min(chunk_limit, self.file.slack - BLOCK_PRICES)
        while done < n:
            c = min(n - done, chunk_limit)
            if chunk_limit >= BLOCK_PRICES:
                # Chunks end on block boundaries, so prices leave windows of whole blocks in
                # whole blocks (from their records) except at a batch's two ends. (CHUNK is no
                # multiple of BLOCK_PRICES: cutting at chunk_limit - count % BLOCK_PRICES ended
                # chunks mid-block, and every window then read, and a file checksummed, a
                # partial block twice per chunk: first fills ran 15-20 % slower.)
                c = min(c, chunk_limit - (h.count + chunk_limit) % BLOCK_PRICES)
            crash_point()
            fault = self._append_chunk(values + done, c)
            if fault != BLOCK_INTACT:
                return fault
            done += c
        return BLOCK_INTACT

    cdef int _append_chunk(self, const double* xs, Py_ssize_t c) noexcept nogil:
        """Append c prices: ring first (the slack keeps every slot it overwrites out of every
        window), then the deques, then the exact sums: in and out of every window."""
        cdef SymbolHeader* h = self.h
        cdef int64_t start = h.count
        cdef int i
        cdef int fault = self._write_ring(start % h.ring_size, xs, c)
        if fault != BLOCK_INTACT:
            return fault
        self._slide_deques(xs, c)
        self._enter(xs, start, c)
        if self._loading:
            return BLOCK_INTACT
        for i in range(h.max_k):
            if h.window[i] >= BLOCK_PRICES:
                fault = self._depart(i, start, c)
                if fault != BLOCK_INTACT:
                    return fault
        return BLOCK_INTACT

    cdef int _write_ring(self, int64_t first_slot, const double* xs, Py_ssize_t c) noexcept nogil:
        """Store c prices from ring slot first_slot on, wrapping: BLOCK_INTACT (the heap cannot
        fail; a file's override can)."""
        cdef int64_t run = min(<int64_t>c, self.h.ring_size - first_slot)
        memcpy(self.ring + first_slot, xs, run * sizeof(double))
        memcpy(self.ring, xs + run, (c - run) * sizeof(double))
        return BLOCK_INTACT

    cdef void _slide_deques(self, const double* xs, Py_ssize_t c) noexcept nogil:
        cdef SymbolHeader* h = self.h
        cdef int64_t capacity = h.capacity, ring_size = h.ring_size
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
        h.count += c
        advance_fronts(&h.lows, self.low_slots, h, lowest_low, newest_slot(h))
        advance_fronts(&h.highs, self.high_slots, h, lowest_high, newest_slot(h))

    cdef void _enter(self, const double* xs, int64_t start, int64_t c) noexcept nogil:
        """Add the prices xs[:c], at positions start .. start + c - 1, to the open block, closing
        each block they complete. (Summed from xs, not read back from the ring: the same values,
        without a file's page faults.)"""
        cdef SymbolHeader* h = self.h
        cdef int64_t p = start, end = start + c, block_end, run
        while p < end:
            block_end = (p // BLOCK_PRICES + 1) * BLOCK_PRICES
            run = min(end, block_end) - p
            ts_exact_add(&h.open_block, xs + (p - start), run)
            if self._checked:
                h.open_crc = crc_extend(h.open_crc, xs + (p - start), run * sizeof(double))
            p += run
            if p == block_end:
                self._close_block(p // BLOCK_PRICES - 1)

    cdef void _close_block(self, int64_t b) noexcept nogil:
        """Block b is complete: its record is written and its sums settle."""
        cdef SymbolHeader* h = self.h
        cdef BlockRecord* record = &self.records[b % self.file.blocks]
        record.sums = h.open_block
        record.prices_crc = h.open_crc
        if self._checked:
            record.crc = record_crc(record)
        ts_exact_merge(&h.settled, &h.open_block)
        ts_exact_clear(&h.open_block)
        h.open_crc = 0

    cdef int _depart(self, int i, int64_t start, int64_t c) noexcept nogil:
        """Window i's departed sums take the prices that left it in this chunk: whole blocks
        from their records, the rest from the ring."""
        cdef SymbolHeader* h = self.h
        cdef int64_t size = h.window[i], p = max(0, start - size), end = start + c - size
        cdef int64_t offset, run
        cdef BlockRecord* record
        while p < end:
            offset = p % BLOCK_PRICES
            if offset == 0 and p + BLOCK_PRICES <= end:
                record = &self.records[(p // BLOCK_PRICES) % self.file.blocks]
                if self._checked and self._faulted_at(p // BLOCK_PRICES,
                                                      record_fault(record)) != BLOCK_INTACT:
                    return self._fault
                ts_exact_merge(&h.departed[i], &record.sums)
                p += BLOCK_PRICES
            else:
                run = min(end, p - offset + BLOCK_PRICES) - p
                if self._checked and self._check_block_prices(p // BLOCK_PRICES) != BLOCK_INTACT:
                    return self._fault
                ts_exact_add(&h.departed[i], self.ring + p % h.ring_size, run)
                p += run
        return BLOCK_INTACT

    cdef int _check_block_prices(self, int64_t b) noexcept nogil:
        """Before prices of block b are read from the ring into a sum: are they the ones written?
        BLOCK_INTACT, or the fault (kept for raise_fault)."""
        return self._faulted_at(b, block_fault(self.file, self.h, b))

    cdef int _faulted_at(self, int64_t b, int fault) noexcept nogil:
        self._fault, self._fault_block = fault, b
        return fault

    cdef int raise_fault(self) except -1:
        """The StoreCorruptionError of the last fault a check without the GIL found."""
        raise StoreCorruptionError(self.path, fault_problem(self._fault, self.h, self._fault_block))

    # -- answering ---------------------------------------------------------------------------

    cdef void _compute_snapshot(self, Snapshot* snap) noexcept nogil:
        """Every full window's statistics, rounded once from the exact sums. Windows smaller
        than a block are summed from the ring (nested: at most BLOCK_PRICES - 1 prices)."""
        cdef SymbolHeader* h = self.h
        cdef ExactSums direct
        cdef ts_window sums
        cdef int64_t covered = 0, size
        cdef int i
        memset(snap, 0, sizeof(Snapshot))
        snap.count = h.count
        snap.last = self.ring[newest_slot(h)] if h.count else 0.0
        ts_exact_clear(&direct)
        for i in range(h.max_k):
            size = h.window[i]
            if h.count < size:
                break
            if size < BLOCK_PRICES:
                add_positions(&direct, self.ring, h.ring_size, h.count - size, size - covered)
                covered = size
                ts_window_of(&sums, &direct, NULL, NULL)
            else:
                ts_window_of(&sums, &h.settled, &h.open_block, &h.departed[i])
            snap.min[i] = window_min(self, i)
            snap.max[i] = window_max(self, i)
            snap.avg[i] = ts_mean(&sums, size)
            snap.var[i] = ts_variance(&sums, size)

    cdef int _snapshot(self, Snapshot* out) except -1:
        """The published snapshot (a file store's: filestore.pyx)."""
        memcpy(out, &self.file.snapshot[0], sizeof(Snapshot))
        if out.flags & SNAPSHOT_DELETED:
            raise SymbolDeletedError(self.path)
        return 0

    def _delete(self):
        """(Store.delete) Mark this symbol deleted, for every process that reads it."""
        self._mark_deleted()

    cdef int _mapped_copy(self, void* out, const void* source, size_t n) except -1:
        """A reader's copy out of the state (a file store's is guarded: filestore.pyx)."""
        memcpy(out, source, n)
        return 0

    def envelope(self, k, buckets=200):
        """The last 10**k prices in about `buckets` buckets (at most 2,000), each with its lowest
        and highest price: an Envelope (envelope.pyx), in O(buckets) once this process has
        built the symbol's pyramid (newest first, at most 1,000 blocks a call: until then it
        is not `complete` and its oldest buckets are NaN)."""
        from tradestats.envelope import envelope
        return envelope(self, k, buckets)

    cdef int _mark_deleted(self) except -1:
        """(Store.delete) From now on every read and add of this SymbolStats raises
        SymbolDeletedError (a file store's: filestore.pyx)."""
        self.file.snapshot[0].flags |= SNAPSHOT_DELETED
        return 0

    cdef int _verify_state(self, bint recompute) except -1:
        """(verify) Every window's published statistics against the prices themselves."""
        cdef Snapshot published, fresh
        cdef int i
        self._snapshot(&published)
        if not recompute:
            return 0
        recompute_snapshot(self, &fresh)
        for i in range(self.h.max_k):
            if self.h.count >= self.h.window[i] and (
                    published.min[i] != fresh.min[i] or published.max[i] != fresh.max[i]
                    or memcmp(&published.avg[i], &fresh.avg[i], sizeof(double)) != 0
                    or memcmp(&published.var[i], &fresh.var[i], sizeof(double)) != 0):
                raise StoreCorruptionError(
                    self.path, f"corrupt: the statistics of window {i + 1} differ from its "
                    f"prices' (min, max, avg, var {published.min[i]!r}, {published.max[i]!r}, "
                    f"{published.avg[i]!r}, {published.var[i]!r}; recomputed {fresh.min[i]!r}, "
                    f"{fresh.max[i]!r}, {fresh.avg[i]!r}, {fresh.var[i]!r})")
        return 0


cdef int check_prices(const double* xs, int64_t n, int64_t first_position) except -1:
    """Prices read from a file (to migrate it) are checked like a batch before they are used."""
    cdef int64_t i
    for i in range(n):
        if not acceptable(xs[i]):
            raise ValueError(f"corrupt: the price at position {first_position + i} is "
                             f"{xs[i]!r}, not a price")
    return 0


# ---------------------------------------------------------------------------------------------
# Opening and migrating symbol files (the directory: storage.py).


cdef void recompute_snapshot(SymbolStats s, Snapshot* out) noexcept:
    """(verify) Every full window's statistics straight from the ring: the slow, obvious way."""
    cdef SymbolHeader* h = s.h
    cdef ExactSums sums
    cdef ts_window window
    cdef int64_t p = h.count, size, slot
    cdef double low = 0.0, high = 0.0, x
    cdef int i
    memset(out, 0, sizeof(Snapshot))
    ts_exact_clear(&sums)
    for i in range(h.max_k):
        size = h.window[i]
        if h.count < size:
            break
        while p > h.count - size:
            p -= 1
            x = s.ring[p % h.ring_size]
            if p == h.count - 1 or x < low:
                low = x
            if p == h.count - 1 or x > high:
                high = x
        add_positions(&sums, s.ring, h.ring_size, h.count - size,
                      size - (h.window[i - 1] if i else 0))
        ts_window_of(&window, &sums, NULL, NULL)
        out.min[i], out.max[i] = low, high
        out.avg[i] = ts_mean(&window, size)
        out.var[i] = ts_variance(&window, size)


#: A symbol deleted and made again this many times during one call is given up on (KeyError).
DELETED_RETRIES = 8


def still_there(SymbolStats target):
    """target, once one read of it (SymbolDeletedError if it was deleted) says so."""
    len(target)
    return target


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
        cdef SymbolStats target
        cdef int attempt
        for attempt in range(DELETED_RETRIES):
            target = self._symbols.get(symbol)
            if target is None:
                if self._directory is not None and len(prices) > self._directory.max_batch:
                    # Refused before the symbol exists: a refused batch creates nothing.
                    raise ValueError(
                        f"a batch of {len(prices)} prices is more than this file store takes "
                        f"at once ({self._directory.max_batch}, fixed when the store was created)")
                target = self._create(symbol)
            try:
                target._add_prices(prices.data.as_doubles, len(prices))
                return
            except SymbolDeletedError:
                # Deleted since we opened it (here or in another process): the batch belongs to
                # the symbol made afresh, as it would had the delete come a moment sooner.
                self._symbols.pop(symbol, None)
        raise SymbolDeletedError(symbol)

    cdef SymbolStats _create(self, symbol):
        cdef SymbolStats target
        if self.admit is not None:   # e.g. a cluster node: is the symbol still ours?
            self.admit(symbol)
        if self._directory is not None:
            self._forget_deleted()
            target = self._directory.open(symbol, create_within=self.max_symbols)
        else:
            if len(self._symbols) >= self.max_symbols:
                raise TooManySymbolsError(self.max_symbols)
            target = SymbolStats(self.max_k)
        self._symbols[symbol] = target
        return target

    def delete(self, symbol):
        """Remove symbol and its prices; its slot is free for a new symbol. KeyError if it has
        none. In a file store every process sees it gone at once, and a process killed while
        deleting leaves the symbol whole or gone (layout.pxd)."""
        cdef SymbolStats target
        if self._directory is None:
            target = self._symbols.pop(symbol)
            target._mark_deleted()
            return
        self._symbols.pop(symbol, None)
        self._directory.delete(symbol)

    def _forget_deleted(self):
        """Let go of the mappings of symbols deleted by other processes: an unlinked file's
        disk space returns only when its last mapping goes."""
        for symbol, target in list(self._symbols.items()):
            try:
                len(target)
            except SymbolDeletedError:
                del self._symbols[symbol]
            except StoreFormatError:
                pass

    cdef SymbolStats _open(self, symbol):
        """The symbol's SymbolStats, opened again if it was deleted since (KeyError if gone)."""
        cdef SymbolStats found = self._symbols.get(symbol)
        if found is None:
            if self._directory is None:
                raise KeyError(symbol)
            found = self._directory.open(symbol)   # KeyError if no process created it
            self._symbols[symbol] = found
        return found

    def _read(self, symbol, read):
        """read(SymbolStats of symbol), opening it again if it was deleted since we opened it."""
        cdef int attempt
        for attempt in range(DELETED_RETRIES):
            try:
                return read(self._open(symbol))
            except SymbolDeletedError:
                self._symbols.pop(symbol, None)
        raise KeyError(symbol)

    def stats(self, symbol, k):
        return self._read(symbol, lambda target: target.stats(k))

    def prices(self, symbol, n):
        """The last n prices of symbol, oldest first (KeyError for an unknown symbol)."""
        return self._read(symbol, lambda target: target.prices(n))

    def count_and_last(self, symbol):
        """(prices added, the most recent price or None) of symbol, of one commit."""
        return self._read(symbol, lambda target: target.count_and_last())

    def envelope(self, symbol, k, buckets=200):
        """SymbolStats.envelope of symbol (KeyError for an unknown symbol)."""
        return self._read(symbol, lambda target: target.envelope(k, buckets))

    def symbols(self):
        """Every symbol with its count and last price (of one commit), sorted by symbol. A symbol
        whose file fails a check is left out (its own reads say why), as is one deleted while
        this runs."""
        listed = []
        if self._directory is not None:
            self._forget_deleted()
        for symbol in sorted(self):
            try:
                count, last = self.count_and_last(symbol)
            except (StoreFormatError, KeyError):
                continue
            listed.append({"symbol": symbol, "count": count, "last": last})
        return listed

    def recover(self):
        """Open every symbol and roll back any torn batch; the symbols that had one."""
        return [symbol for symbol in self if self._read(symbol, lambda target: target.recover())]

    def verify(self):
        """SymbolStats.verify() for every symbol: {symbol: the reason} for each that failed."""
        damaged = {}
        for symbol in self:
            try:
                self._read(symbol, lambda target: target.verify())
            except StoreFormatError as error:
                damaged[symbol] = error.reason
            except KeyError:   # deleted meanwhile
                pass
        return damaged

    @property
    def nbytes(self):
        return sum(self._read(symbol, lambda target: target.nbytes) for symbol in self)

    def __getitem__(self, symbol):
        """The symbol's SymbolStats (KeyError if it has none). It keeps answering for that symbol
        until the symbol is deleted; then it raises SymbolDeletedError, a KeyError."""
        return self._read(symbol, still_there)

    def __delitem__(self, symbol):
        self.delete(symbol)

    def __contains__(self, symbol):
        if self._directory is None:
            return symbol in self._symbols
        return self._directory.exists(symbol)

    def __len__(self):
        return len(self._symbols) if self._directory is None else len(self._directory.symbols())

    def __iter__(self):
        return iter(list(self._symbols) if self._directory is None else self._directory.symbols())

    def __repr__(self):
        where = "" if self._directory is None else f", path={str(self.path)!r}"
        return (f"Store(max_symbols={self.max_symbols}, max_k={self.max_k}{where}, "
                f"symbols={len(self)})")
