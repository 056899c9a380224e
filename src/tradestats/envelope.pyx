# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Min/max envelopes of a symbol's window, for charts: a whole window of up to 10**8 prices in a
few hundred buckets, in O(buckets) from a pyramid of block minima and maxima.

The pyramid: level 0 holds each complete block's (BLOCK_PRICES prices) min and max, level L
those of 10**L consecutive blocks, aligned (node j covers blocks j*10**L .. (j+1)*10**L - 1).
Each level is a ring of nodes, like the prices. Nothing of it is stored in the symbol's file
(the format stays as it is, and writers pay nothing): a process builds it from the ring as it
is asked for a symbol's envelopes, newest blocks first, at most 1,000 blocks per call (so
no call's work grows with the window; until the pyramid reaches a window's oldest blocks, the
buckets it does not cover yet are NaN and the envelope says it is not complete), then folds in
only the blocks completed since (measured in benchmarks/bench_envelope.py).

A query picks a bucket width W of the form m * 10**e (m in 1, 2, 5) near window / buckets and
buckets aligned to multiples of W. A bucket of a block or more is a few nodes (at most 9 per
level); the partial blocks at its ends (the open block, the window's oldest) are read from the
ring. Below a block, the buckets are read from the ring directly (at most buckets * W prices).

Reading beside writers: every block is copied out of the mapping under the SIGBUS guard and, in
a file store, checked against its record's CRC32C before it is folded in. A writer in another
process only writes over the slots of positions older than the published count plus max_batch
minus the ring size (outside every window), so each copy is checked against the count
published after it: an answer is the exact envelope of the window at the count it names, or,
if a writer overtook a read (the window moved on), computed again for the new window. In a heap
store, as for any heap read of the ring, no add may run at the same time (the web layer's heap
lock).
"""

from cpython.array cimport array, clone
from libc.stdint cimport int64_t, uint32_t
from libc.math cimport NAN

from tradestats.engine cimport SymbolStats, integer_in_range
from tradestats.layout cimport BLOCK_PRICES, BlockRecord, SymbolFile
from tradestats.symbolfile cimport crc_extend, record_crc

from tradestats.errors import NotEnoughDataError, StoreCorruptionError

#: Most buckets one envelope has (each a min and a max).
MAX_BUCKETS = 2000

cdef int MAX_LEVELS = 6            # blocks of 10**3 .. 10**8 prices, for max_k up to 8 (9: 10**9)
cdef int ANSWER_TRIES = 8
cdef array _DOUBLES = array("d")
cdef array _INT64S = array("q")
#: Blocks one call folds into the pyramid at most (about 5 ms of reading): no call does work
#: that grows with the window. A cold 10**8 window is whole after 100 calls.
cdef int64_t _fold_budget = 1000


def _set_fold_budget(int64_t blocks):
    """(tests) Blocks one call may fold in; the previous value."""
    global _fold_budget
    previous, _fold_budget = _fold_budget, blocks
    return previous


class _Overtaken(Exception):
    """A writer overwrote ring slots while they were read: read again from what it holds now."""


cdef class Envelope:
    """Bucket i covers positions max(start, (start // bucket_prices + i) * bucket_prices) ..
    min(count, (start // bucket_prices + i + 1) * bucket_prices) - 1: the window is positions
    start .. count - 1 (position: index since the symbol's first price). min/max: array('d').
    Not `complete` while this process's pyramid is still growing back over the window: the
    oldest buckets are then NaN (the newest are always there)."""
    cdef readonly int64_t count, start, bucket_prices
    cdef readonly array min, max
    cdef readonly bint complete

    def __repr__(self):
        return (f"Envelope(count={self.count}, start={self.start}, "
                f"bucket_prices={self.bucket_prices}, buckets={len(self.min)})")


cdef inline double lower(double a, double b) noexcept nogil:
    return a if a < b else b


cdef inline double higher(double a, double b) noexcept nogil:
    return a if a > b else b


cdef int64_t bucket_width(int64_t window, int64_t buckets) noexcept:
    """The smallest m * 10**e (m in 1, 2, 5) that covers the window in at most `buckets`."""
    cdef int64_t scale = 1, m
    while True:
        for m in (1, 2, 5):
            if m * scale * buckets >= window:
                return m * scale
        scale *= 10


cdef class Pyramid:
    """One symbol's pyramid in this process (see the module doc). Kept on its SymbolStats."""
    cdef SymbolStats symbol
    cdef int64_t ring_size, blocks, max_batch
    cdef bint checked
    cdef int levels
    cdef int64_t slots[9]
    cdef double* lows[9]
    cdef double* highs[9]
    cdef int64_t* tags[9]              # which node each slot holds now
    cdef list storage                  # the arrays behind lows, highs and tags
    cdef int64_t lo, hi                # blocks lo .. hi - 1 are folded in (-1: none yet)
    cdef double block[BLOCK_PRICES]    # the block being read, copied out of the mapping

    def __cinit__(self, SymbolStats symbol):
        cdef SymbolFile identity
        cdef int level
        cdef int64_t span = 1
        cdef array lows, highs, tags
        symbol._mapped_copy(&identity, symbol.file, sizeof(SymbolFile))
        self.symbol = symbol
        self.ring_size, self.blocks = identity.ring_size, identity.blocks
        self.max_batch, self.checked = identity.max_batch, symbol._checked
        self.levels = 0
        self.storage = []
        while span <= self.blocks and self.levels < MAX_LEVELS:
            level = self.levels
            self.slots[level] = self.blocks // span + 2   # more than the ring: never aliased
            lows = clone(_DOUBLES, self.slots[level], False)
            highs = clone(_DOUBLES, self.slots[level], False)
            tags = clone(_INT64S, self.slots[level], True)
            self.storage += [lows, highs, tags]
            self.lows[level], self.highs[level] = lows.data.as_doubles, highs.data.as_doubles
            self.tags[level] = <int64_t*>tags.data.as_voidptr
            self.levels += 1
            span *= 10
        self.lo = self.hi = -1

    # -- reading the ring --------------------------------------------------------------------

    cdef int _read(self, int64_t position, int64_t n) except -1:
        """Copy prices position .. position + n - 1 (within one block) into self.block; then,
        in a file store, _Overtaken if a writer may have been writing over them meanwhile."""
        cdef SymbolStats s = self.symbol
        s._mapped_copy(self.block, s.ring + position % self.ring_size, n * sizeof(double))
        if self.checked and self._overwritable(position):
            raise _Overtaken()
        return 0

    cdef int _read_block(self, int64_t b) except -1:
        """Block b into self.block, checked against its record in a file store."""
        cdef SymbolStats s = self.symbol
        cdef BlockRecord record
        self._read(b * BLOCK_PRICES, BLOCK_PRICES)
        if not self.checked:
            return 0
        s._mapped_copy(&record, s.records + b % self.blocks, sizeof(BlockRecord))
        if record.crc != record_crc(&record) or record.prices_crc != crc_extend(
                0, self.block, BLOCK_PRICES * sizeof(double)):
            if self._overwritable(b * BLOCK_PRICES):
                raise _Overtaken()   # not damage: a writer got to the record first
            raise StoreCorruptionError(
                s.path, f"corrupt: block {b} of its prices does not match its checksum")
        return 0

    cdef bint _overwritable(self, int64_t position) except -1:
        """Whether a writer may now be writing over the ring slot of position: one writing the
        batch after the published count writes the slots of the positions up to max_batch
        after it, less the ring size."""
        return position < len(self.symbol) + self.max_batch - self.ring_size

    cdef void _extremes(self, int64_t n, double* low, double* high) noexcept:
        cdef int64_t i
        for i in range(n):
            low[0] = lower(low[0], self.block[i])
            high[0] = higher(high[0], self.block[i])

    # -- the pyramid -------------------------------------------------------------------------

    cdef int _fold_until(self, int64_t count, int64_t oldest) except -1:
        """Fold in the blocks completed before position count, then older ones back towards
        block `oldest` (the oldest the ring holds whole), at most FOLD_BUDGET blocks in all: a
        call's work is bounded whatever the window, and the pyramid grows from the newest
        prices back. Starts afresh at the newest when what it holds is too far behind."""
        cdef int64_t complete = count // BLOCK_PRICES, budget = _fold_budget
        if self.hi < 0 or complete - self.hi > budget or self.hi < oldest:
            self.lo = self.hi = complete
        while self.hi < complete:
            self._fold(self.hi)
            self.hi += 1
            budget -= 1
        while self.lo > oldest and budget > 0:
            self._fold(self.lo - 1)
            self.lo -= 1
            budget -= 1
        self.lo = max(self.lo, oldest)   # older blocks may be written over: never used again
        return 0

    cdef int _fold(self, int64_t b) except -1:
        """Block b's extremes into the node of every level that covers it. A slot holding
        another node starts over with this block (blocks arrive newest first, then oldest
        first, so a node's blocks may come in either order)."""
        cdef int64_t span = 1, j, slot
        cdef double low, high
        cdef int level
        self._read_block(b)
        low, high = self.block[0], self.block[0]
        self._extremes(BLOCK_PRICES, &low, &high)
        for level in range(self.levels):
            j = b // span
            slot = j % self.slots[level]
            if self.tags[level][slot] != j + 1:   # tags hold j + 1: 0 is a slot never used
                self.tags[level][slot] = j + 1
                self.lows[level][slot], self.highs[level][slot] = low, high
            else:
                self.lows[level][slot] = lower(self.lows[level][slot], low)
                self.highs[level][slot] = higher(self.highs[level][slot], high)
            span *= 10
        return 0

    cdef void _blocks(self, int64_t x, int64_t y, double* low, double* high) noexcept:
        """Extremes of blocks x .. y - 1 (all folded in): the largest aligned nodes first."""
        cdef int level
        cdef int64_t span, slot
        while x < y:
            level, span = 0, 1
            while (level + 1 < self.levels and x % (span * 10) == 0
                   and x + span * 10 <= y):
                level += 1
                span *= 10
            slot = (x // span) % self.slots[level]
            low[0] = lower(low[0], self.lows[level][slot])
            high[0] = higher(high[0], self.highs[level][slot])
            x += span

    cdef int _range(self, int64_t a, int64_t z, double* low, double* high) except -1:
        """Extremes of positions a .. z - 1: whole blocks from the pyramid, the rest read."""
        cdef int64_t x = (a + BLOCK_PRICES - 1) // BLOCK_PRICES, y = z // BLOCK_PRICES
        if x >= y:   # within one block or two neighbours: read directly
            while a < z:
                self._read(a, min(z, (a // BLOCK_PRICES + 1) * BLOCK_PRICES) - a)
                self._extremes(min(z, (a // BLOCK_PRICES + 1) * BLOCK_PRICES) - a, low, high)
                a = min(z, (a // BLOCK_PRICES + 1) * BLOCK_PRICES)
            return 0
        if a < x * BLOCK_PRICES:
            self._read(a, x * BLOCK_PRICES - a)
            self._extremes(x * BLOCK_PRICES - a, low, high)
        self._blocks(x, y, low, high)
        if y * BLOCK_PRICES < z:
            self._read(y * BLOCK_PRICES, z - y * BLOCK_PRICES)
            self._extremes(z - y * BLOCK_PRICES, low, high)
        return 0

    cdef Envelope _answer(self, int64_t count, int64_t window, int64_t buckets):
        cdef Envelope result = Envelope.__new__(Envelope)
        cdef int64_t width = bucket_width(window, buckets), start = count - window
        cdef int64_t first = start // width, last = (count - 1) // width, i, a, z, x, y
        cdef double low, high
        result.count, result.start, result.bucket_prices = count, start, width
        result.complete = True
        result.min = clone(_DOUBLES, last - first + 1, False)
        result.max = clone(_DOUBLES, last - first + 1, False)
        if width >= BLOCK_PRICES:   # from the oldest whole block no writer can reach yet
            self._fold_until(count, (max(0, count - (self.ring_size - self.max_batch
                                                     - BLOCK_PRICES)) + BLOCK_PRICES - 1)
                             // BLOCK_PRICES)
        for i in range(last - first + 1):
            a, z = max(start, (first + i) * width), min(count, (first + i + 1) * width)
            x, y = (a + BLOCK_PRICES - 1) // BLOCK_PRICES, z // BLOCK_PRICES
            if x < y and x < self.lo:   # whole blocks the pyramid does not reach yet
                result.min.data.as_doubles[i] = result.max.data.as_doubles[i] = NAN
                result.complete = False
                continue
            self._read(a, 1)
            low = high = self.block[0]
            self._range(a, z, &low, &high)
            result.min.data.as_doubles[i], result.max.data.as_doubles[i] = low, high
        return result

    def envelope(self, int k, int64_t buckets):
        cdef int64_t window = 1, count
        cdef int attempt
        for attempt in range(k):
            window *= 10
        for attempt in range(ANSWER_TRIES):
            count = self.symbol.count_and_last()[0]
            if count < window:
                raise NotEnoughDataError()
            try:
                return self._answer(count, window, buckets)
            except _Overtaken:
                # The window moved on while it was read: answer for the new one. What was
                # folded in stays (each block was whole when read); only newer blocks are read.
                pass
        raise StoreCorruptionError(self.symbol.path, "its writers kept overwriting what an "
                                   "envelope read")


def envelope(SymbolStats symbol, k, buckets=200):
    """SymbolStats.envelope: see the module doc."""
    cdef int window_k = integer_in_range("k", k, 1, symbol.max_k_)
    cdef int64_t wanted = integer_in_range("buckets", buckets, 1, MAX_BUCKETS)
    if symbol.pyramid is None:
        symbol.pyramid = Pyramid(symbol)
    return (<Pyramid>symbol.pyramid).envelope(window_k, wanted)
