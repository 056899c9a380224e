# cython: language_level=3
# The symbol file of format version 1 (tradestats up to 0.1.0), kept only to migrate it: read,
# never written. Version 1 kept inexact compensated sums (the Neumaier sums below) that version 2
# replaces with exact ones recomputed from the ring, so only the identity, the commit words, the
# committed count and the ring are read from it.

from libc.stdint cimport int64_t, uint32_t, uint64_t

cdef enum:
    V1_WINDOWS = 9
    V1_SYMBOL_BYTES = 256


ctypedef struct V1CompensatedSum:
    # Neumaier sum: the true sum is s + c.
    double s
    double c


ctypedef struct V1WindowSums:
    # Sums of (x - ref) and (x - ref)**2 for one window of W prices, split at block boundaries
    # (multiples of W): the window is the tail of the previous block plus the current block.
    #   tail  = the previous block, frozen when it completed, shifted by tail_ref
    #   gone  = the terms of that block that have since left the window (same tail_ref, so the
    #           terms are bit-identical to the ones added)
    #   block = the current, still-filling block, shifted by block_ref
    double tail_ref
    double block_ref
    V1CompensatedSum tail1, tail2
    V1CompensatedSum gone1, gone2
    V1CompensatedSum block1, block2
    int64_t recomputes    # times this window was rebuilt from the ring (diagnostics)


ctypedef struct V1DequeCursor:
    # Where a monotonic deque of ring slots sits in its circular buffer of `capacity` uint32s.
    # Virtual indices count pushes and never wrap; physical = head_phys + (v - head_virtual).
    uint64_t head_virtual
    uint64_t tail_virtual          # one past the newest element
    int64_t head_phys
    int64_t capacity


ctypedef struct V1DequeHeader:
    V1DequeCursor at
    uint64_t front[V1_WINDOWS]    # virtual index of the oldest element inside each window


ctypedef struct V1SymbolHeader:
    int64_t max_k
    int64_t capacity               # 10**max_k: the largest window
    int64_t ring_size              # ring slots: capacity, plus slack for a batch in a file store
    int64_t count                  # prices added so far
    int64_t ring_allocated         # ring slots allocated (grows to capacity as data arrives)
    int64_t window[V1_WINDOWS]    # 10**(i+1)
    V1WindowSums sums[V1_WINDOWS]
    V1DequeHeader lows               # increasing values: its front is the window minimum
    V1DequeHeader highs              # decreasing values: its front is the window maximum





ctypedef struct V1Snapshot:
    # What readers need, computed by the writer at commit: statistics of every full window.
    int64_t count
    double last
    double min[V1_WINDOWS]
    double max[V1_WINDOWS]
    double avg[V1_WINDOWS]
    double var[V1_WINDOWS]
    int64_t recomputes[V1_WINDOWS]


ctypedef struct V1SymbolFile:
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
    char symbol[V1_SYMBOL_BYTES]  # UTF-8, not terminated
    uint64_t generation            # commits published; atomic, release/acquire
    uint64_t writing               # generation being built; == generation when none is torn
    int64_t reserved               # leading elements of ring and deques with disk blocks
    int64_t recoveries             # torn batches rolled back
    V1SymbolHeader state[2]
    V1Snapshot snapshot[2]
