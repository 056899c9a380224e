# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# The rolling kernels: monotonic deques over one symbol's state (exact sums: exact.h).
#
# Small inline helpers with their state passed explicitly (a SymbolHeader and its arrays), no
# Python objects, no allocation, no GIL: engine.pyx drives them over the heap or a mapped file,
# and other Cython code may cimport them. Their slow, obvious references are in tests/.

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memset

from tradestats.layout cimport DequeCursor, DequeHeader, SymbolHeader

# Prices are appended in chunks: sums and deque fronts are brought up to date once per chunk.
# A chunk is at most capacity - 10**(max_k-1) prices (at most capacity if max_k is 1), so that no
# price inside a smaller window at the start of a chunk can leave the largest window before the
# chunk ends, and at most a store's max_batch, so it never overwrites a ring slot still in use.
cdef enum:
    CHUNK = 4096

# ---------------------------------------------------------------------------------------------
# Deques of ring slots.

cdef inline int64_t ring_slot(uint32_t entry, int64_t ring_size) noexcept nogil:
    """A deque entry as a ring slot. A file's entries are not checked at open (that would read
    every one); an entry out of the ring (a flipped bit) reads slot 0 instead of memory past the
    mapping: a wrong number, never a signal."""
    return entry if entry < ring_size else 0


cdef inline int64_t physical(const DequeCursor* at, uint64_t v) noexcept nogil:
    cdef int64_t p = at.head_phys + <int64_t>(v - at.head_virtual)
    if p >= at.capacity:
        p -= at.capacity
    return p


cdef inline int64_t deque_size(const DequeCursor* at) noexcept nogil:
    return <int64_t>(at.tail_virtual - at.head_virtual)


cdef inline int64_t age_of(uint32_t slot, int64_t newest_slot, int64_t ring_size) noexcept nogil:
    cdef int64_t age = newest_slot - <int64_t>slot
    if age < 0:
        age += ring_size
    return age


cdef inline void expire_before_chunk(DequeCursor* at, const uint32_t* slots, int64_t newest_slot,
                                     int64_t min_age, int64_t ring_size) noexcept nogil:
    """Drop the oldest elements whose age (before the chunk) is at least min_age: the prices the
    chunk pushes out of the largest window. Runs before the chunk overwrites their ring slots."""
    while at.tail_virtual != at.head_virtual and \
            age_of(slots[at.head_phys], newest_slot, ring_size) >= min_age:
        at.head_virtual += 1
        at.head_phys += 1
        if at.head_phys == at.capacity:
            at.head_phys = 0


cdef inline bint stays(const DequeCursor* at, const uint32_t* slots, const double* ring,
                       int64_t ring_size, uint64_t v, double extreme, bint keeps_max) noexcept nogil:
    """Whether the element at virtual index v survives a new price `extreme`."""
    cdef double x = ring[ring_slot(slots[physical(at, v)], ring_size)]
    return (x > extreme) if keeps_max else (x < extreme)


cdef inline uint64_t first_popped(const DequeCursor* at, const uint32_t* slots, const double* ring,
                                  int64_t ring_size, double extreme, bint keeps_max) noexcept nogil:
    """The virtual index from which `extreme` pops every element. The deque is strictly
    monotone, so the popped elements are a suffix: a galloping search from the tail finds where
    it starts in O(log pops) reads, so one price below a whole window of rising prices costs
    microseconds, not a pass over the window (81 ms at 10**8 with the pop-by-pop loop)."""
    cdef uint64_t low = at.head_virtual, high = at.tail_virtual, step = 1, probe, middle
    if high == low or stays(at, slots, ring, ring_size, high - 1, extreme, keeps_max):
        return high
    high -= 1                       # high: popped; the first popped is in [low, high]
    while high - low > step:
        probe = high - step
        if stays(at, slots, ring, ring_size, probe, extreme, keeps_max):
            low = probe + 1
            break
        high = probe
        step *= 2
    while low < high:
        middle = low + (high - low) // 2
        if stays(at, slots, ring, ring_size, middle, extreme, keeps_max):
            low = middle + 1
        else:
            high = middle
    return low


cdef inline uint64_t merge_chunk(DequeCursor* at, uint32_t* slots, const double* ring,
                                 const double* xs, Py_ssize_t c, int64_t first_slot,
                                 int64_t ring_size, bint keeps_max, int32_t* survivors) noexcept nogil:
    """The deque after a whole chunk, built at once; returns the virtual index the chunk's
    first survivor landed at (where fronts passed by pops restart).

    A chunk price survives iff no later chunk price dominates it: a scan from the end that keeps
    the running extreme. Its branch is rarely taken on real prices, unlike the per-price pops
    of the textbook deque. Old elements are popped once, against the chunk's extreme.
    """
    cdef Py_ssize_t j, kept = 1
    cdef double extreme = xs[c - 1]
    cdef int64_t slot
    survivors[0] = <int32_t>(c - 1)
    for j in range(c - 2, -1, -1):
        if (xs[j] > extreme) if keeps_max else (xs[j] < extreme):
            extreme = xs[j]
            survivors[kept] = <int32_t>j
            kept += 1
    at.tail_virtual = first_popped(at, slots, ring, ring_size, extreme, keeps_max)
    cdef uint64_t landed = at.tail_virtual
    while kept > 0:
        kept -= 1
        slot = first_slot + survivors[kept]
        if slot >= ring_size:
            slot -= ring_size
        slots[physical(at, at.tail_virtual)] = <uint32_t>slot
        at.tail_virtual += 1
    return landed


cdef inline void advance_fronts(DequeHeader* dq, const uint32_t* slots, const SymbolHeader* h,
                         uint64_t lowest, int64_t newest_slot) noexcept nogil:
    """Bring each smaller window's front up to date after a chunk.

    A front that a pop passed restarts where the first new element landed; from there it only
    moves forward over expired elements, so the work is amortized O(1) per price per window.
    """
    cdef int i
    cdef uint64_t v
    cdef const DequeCursor* at = &dq.at
    for i in range(h.max_k - 1):
        v = dq.front[i]
        if lowest < v:
            v = lowest
        if v < at.head_virtual:
            v = at.head_virtual
        while v < at.tail_virtual and \
                age_of(slots[physical(at, v)], newest_slot, h.ring_size) >= h.window[i]:
            v += 1
        dq.front[i] = v
    dq.front[h.max_k - 1] = at.head_virtual


# ---------------------------------------------------------------------------------------------
# A symbol's whole state.

cdef inline void empty_deque(DequeHeader* dq) noexcept nogil:
    dq.at.head_virtual = dq.at.tail_virtual = 0
    dq.at.head_phys = 0
    memset(dq.front, 0, sizeof(dq.front))




cdef inline int64_t newest_slot(const SymbolHeader* h) noexcept nogil:
    return (h.count - 1) % h.ring_size


cdef inline int64_t ring_span(int64_t count, int64_t capacity, int64_t ring_size, int64_t wanted,
                              int64_t* start, int64_t* first) noexcept nogil:
    """The last min(wanted, count, capacity) prices before position count: how many (returned),
    the ring slot of the oldest (start) and how many lie before the ring wraps (first)."""
    cdef int64_t n = min(wanted, count, capacity)
    start[0] = (count - n) % ring_size if n else 0
    first[0] = min(n, ring_size - start[0])
    return n


cdef inline void init_header(SymbolHeader* h, int max_k, int64_t ring_size) noexcept nogil:
    """An empty symbol: windows 10**1 .. 10**max_k, a ring of ring_size slots, zero sums."""
    cdef int i
    cdef int64_t size = 1
    memset(h, 0, sizeof(SymbolHeader))
    h.max_k = max_k
    for i in range(max_k):
        size *= 10
        h.window[i] = size
    h.capacity = size
    h.ring_size = ring_size
    h.lows.at.capacity = size
    h.highs.at.capacity = size


cdef inline void rebuild_deques(SymbolHeader* h, const double* ring, uint32_t* lows,
                         uint32_t* highs) noexcept nogil:
    """Lay both deques out afresh from the ring's last min(count, capacity) prices.

    The deque of a window is determined by its prices, so this is the deque the incremental
    merges built; a torn batch is rolled back with it (its sums come from the committed header).
    """
    cdef int32_t survivors[CHUNK]
    cdef int64_t n = min(h.count, h.capacity), position = h.count - n, slot, c
    empty_deque(&h.lows)
    empty_deque(&h.highs)
    while position < h.count:
        slot = position % h.ring_size
        c = min(<int64_t>CHUNK, h.count - position, h.ring_size - slot)
        merge_chunk(&h.lows.at, lows, ring, ring + slot, c, slot, h.ring_size, False, survivors)
        merge_chunk(&h.highs.at, highs, ring, ring + slot, c, slot, h.ring_size, True, survivors)
        position += c
    advance_fronts(&h.lows, lows, h, 0, newest_slot(h))
    advance_fronts(&h.highs, highs, h, 0, newest_slot(h))
