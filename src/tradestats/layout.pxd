# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# The layout of one symbol's state, which is also a file format (see FORMAT_VERSION).
#
# A symbol's whole state is one header of plain scalars (SymbolHeader) plus three flat arrays
# (the price ring and the two monotonic deques of ring slots). Nothing in it is a pointer or a
# Python object and everything is addressed by index, so the same state lives in the heap
# (Store(path=None)) or in a memory-mapped file shared by processes (Store(path=DIR)).
#
# A symbol file, in native byte order (files move only between machines of one architecture):
#
#   offset 0             SymbolFile: identity (magic, version, sizes, the symbol), the commit
#                        (generation, writing), two SymbolHeader slots and two Snapshot slots,
#                        padded to whole pages
#   ring_offset          ring_size float64: the prices, slot = position % ring_size
#   lows_offset          capacity uint32: the minimum deque's ring slots
#   highs_offset         capacity uint32: the maximum deque's ring slots
#
# Commit protocol (one writer at a time holds the file's lock): with `generation` = g published,
#   the writer sets `writing` = g + 1, copies state[g & 1] into state[(g + 1) & 1], appends the
#   batch there (ring slots past the committed ones, deques in place), writes snapshot[(g + 1) & 1]
#   and publishes by storing generation = g + 1: one final 8-byte write. A writer that dies before
#   it leaves state[g & 1], snapshot[g & 1] and the committed window's ring slots intact (the ring
#   has `slack` slots more than the largest window, at least the largest batch); only the deques
#   may be torn, and the next writer sees writing != generation and rebuilds them from the ring.
# Readers never lock: they copy snapshot[g & 1] and retry if `generation` moved meanwhile.

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



cdef enum:
    FORMAT_VERSION = 1
    FILE_PAGE = 4096
    MAX_SYMBOL_BYTES = 256     # 64 characters of at most 4 bytes of UTF-8 each


ctypedef struct Snapshot:
    # What readers need, computed by the writer at commit: statistics of every full window.
    int64_t count
    double last
    double min[MAX_WINDOWS]
    double max[MAX_WINDOWS]
    double avg[MAX_WINDOWS]
    double var[MAX_WINDOWS]
    int64_t recomputes[MAX_WINDOWS]


ctypedef struct SymbolFile:
    char magic[8]                  # b"TSTATSYM"
    uint32_t version               # FORMAT_VERSION
    uint32_t header_bytes          # this struct, padded to whole pages
    int64_t max_k
    int64_t capacity               # 10**max_k
    int64_t slack                  # ring slots beyond capacity: the largest batch
    int64_t ring_size              # capacity + slack
    int64_t ring_offset
    int64_t lows_offset
    int64_t highs_offset
    int64_t file_size
    int64_t symbol_bytes
    char symbol[MAX_SYMBOL_BYTES]  # UTF-8, not terminated
    uint64_t generation            # commits published; atomic, release/acquire
    uint64_t writing               # generation being built; == generation when none is torn
    int64_t reserved               # leading elements of ring and deques with disk blocks
    int64_t recoveries             # torn batches rolled back
    SymbolHeader state[2]
    Snapshot snapshot[2]


# --- layout arithmetic: where each array of a symbol file starts ---------------------------

cdef inline int64_t page_round(int64_t n) noexcept nogil:
    return (n + FILE_PAGE - 1) // FILE_PAGE * FILE_PAGE


cdef inline void plan_layout(SymbolFile* f, int max_k, int64_t slack) noexcept nogil:
    """Sizes and offsets of a file for max_k and slack (written at creation, checked at open)."""
    cdef int i
    cdef int64_t capacity = 1
    for i in range(max_k):
        capacity *= 10
    f.max_k = max_k
    f.capacity = capacity
    f.slack = slack
    f.ring_size = capacity + slack
    f.header_bytes = <uint32_t>page_round(sizeof(SymbolFile))
    f.ring_offset = f.header_bytes
    f.lows_offset = page_round(f.ring_offset + f.ring_size * <int64_t>sizeof(double))
    f.highs_offset = page_round(f.lows_offset + capacity * <int64_t>sizeof(uint32_t))
    f.file_size = page_round(f.highs_offset + capacity * <int64_t>sizeof(uint32_t))
