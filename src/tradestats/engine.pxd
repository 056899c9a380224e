# What other Cython code may cimport from the engine.
#
# A symbol's whole state is one header of plain scalars (SymbolHeader) plus three flat arrays
# (the price ring and the two monotonic deques of ring slots). Nothing in it is a pointer or a
# Python object and everything is addressed by index, so moving the state into a memory-mapped
# file is a change of allocator (see _reallocate in engine.pyx), not of layout.

from libc.stdint cimport int64_t, uint32_t, uint64_t

cdef enum:
    # Windows are 10**1 .. 10**max_k; ring slots are uint32, so 10**9 prices is the ceiling.
    MAX_WINDOWS = 9


ctypedef struct CompensatedSum:
    # Neumaier sum: the true sum is s + c.
    double s
    double c


ctypedef struct WindowSums:
    # Sums of (x - ref) and (x - ref)**2 for one window of W prices, split at block boundaries
    # (multiples of W): the window is the tail of the previous block plus the current block.
    #   tail  = the previous block, frozen when it completed, shifted by tail_ref
    #   gone  = the terms of that block that have since left the window (same tail_ref, so the
    #           terms are bit-identical to the ones added)
    #   block = the current, still-filling block, shifted by block_ref
    double tail_ref
    double block_ref
    CompensatedSum tail1, tail2
    CompensatedSum gone1, gone2
    CompensatedSum block1, block2
    int64_t recomputes    # times this window was rebuilt from the ring (diagnostics)


ctypedef struct DequeCursor:
    # Where a monotonic deque of ring slots sits in its circular buffer of `capacity` uint32s.
    # Virtual indices count pushes and never wrap; physical = head_phys + (v - head_virtual).
    uint64_t head_virtual
    uint64_t tail_virtual          # one past the newest element
    int64_t head_phys
    int64_t capacity


ctypedef struct DequeHeader:
    DequeCursor at
    uint64_t front[MAX_WINDOWS]    # virtual index of the oldest element inside each window


ctypedef struct SymbolHeader:
    int64_t max_k
    int64_t capacity               # 10**max_k: the largest window
    int64_t ring_size              # ring slots: capacity, plus slack for a batch in a file store
    int64_t count                  # prices added so far
    int64_t ring_allocated         # ring slots allocated (grows to capacity as data arrives)
    int64_t window[MAX_WINDOWS]    # 10**(i+1)
    WindowSums sums[MAX_WINDOWS]
    DequeHeader lows               # increasing values: its front is the window minimum
    DequeHeader highs              # decreasing values: its front is the window maximum


cdef class Stats:
    cdef readonly double min
    cdef readonly double max
    cdef readonly double last
    cdef readonly double avg
    cdef readonly double var


cdef class SymbolStats:
    cdef SymbolHeader* h           # the state the kernels work on: own_header, or in a file
    cdef SymbolHeader own_header
    cdef double* ring
    cdef uint32_t* low_slots
    cdef uint32_t* high_slots

    cdef int _append(self, const double* values, Py_ssize_t n) except -1
    cdef Stats _stats(self, int k)
    cdef int _reserve_ring(self, Py_ssize_t n) except -1
    cdef void _append_chunk(self, const double* xs, Py_ssize_t c) noexcept
    cdef void _slide_deques(self, const double* xs, Py_ssize_t c) noexcept
    cdef void _slide_sums(self, int i, const double* xs, Py_ssize_t c) noexcept
    cdef bint _sums_unreliable(self, int i) noexcept
    cdef void _rebuild_sums(self, int i) noexcept
    cdef void _ring_terms(self, int64_t first, int64_t n, double ref,
                          CompensatedSum* s1, CompensatedSum* s2) noexcept
    cdef void _mean_m2(self, int i, double* mean, double* m2) noexcept


cdef class Store:
    cdef dict _symbols
    cdef readonly int max_symbols
    cdef readonly int max_k
