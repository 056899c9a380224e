# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# The layout of one symbol's state, which is also a file format (see FORMAT_VERSION).
#
# A symbol's whole state is one header of plain scalars and exact sums (SymbolHeader) plus four
# flat arrays: the price ring, the two monotonic deques of ring slots, and one BlockRecord per
# BLOCK_PRICES ring slots. Nothing in it is a pointer or a Python object and everything is
# addressed by index, so the same state lives in an anonymous mapping (Store(path=None)) or in a
# memory-mapped file shared by processes (Store(path=DIR); the protocol: filestore.pyx).
#
# A symbol file, in native byte order (files move only between machines of one architecture):
#
#   offset 0             SymbolFile: identity (magic, version, sizes, the symbol; identity_crc),
#                        the commit words (generation, writing), two SymbolHeader slots and two
#                        Snapshot slots, padded to whole pages
#   ring_offset          ring_size float64: the prices, slot = position % ring_size
#   lows_offset          capacity uint32: the minimum deque's ring slots
#   highs_offset         capacity uint32: the maximum deque's ring slots
#   blocks_offset        blocks BlockRecord: record b % blocks describes the prices at positions
#                        b*BLOCK_PRICES .. (b+1)*BLOCK_PRICES - 1 (ring_size is a multiple of
#                        BLOCK_PRICES, so a block never wraps the ring)
#
# Exact sums (exact.h): a window of W prices ending at `count` sums exactly to
#   settled + open_block - departed[i]     (W >= BLOCK_PRICES)
# where settled holds every complete block, open_block the rest, and departed[i] every position
# before count - W. departed[i] moves forward by adding the leaving prices, a whole block at a
# time from its BlockRecord where it can: no sum is ever rebuilt and nothing drifts. Windows
# smaller than a block are summed from the ring when a batch is published.
#
# Checksums (CRC32C): identity_crc over the identity; each SymbolHeader's and each Snapshot's
# `crc` over the rest of it, written before the commit that publishes it; each BlockRecord over
# its sums and the CRC32C of its block's prices (open_crc, in the header, covers the part of the
# newest block written so far). A file store checks them on open, readers check the snapshot on
# every read, the writer checks the committed header before each batch and each BlockRecord it
# reads; the prices themselves are checked on open by verify(), and on every roll-back.
#
# Commit protocol (one writer at a time holds the file's lock): with `generation` = g published,
#   the writer sets `writing` = g + 1, copies state[g & 1] into state[(g + 1) & 1], appends the
#   batch there (ring slots past the committed ones, records of the blocks it completes, deques in
#   place), writes snapshot[(g + 1) & 1] and the two checksums, and publishes by storing
#   generation = g + 1: one final 8-byte write. A writer that dies before it leaves state[g & 1],
#   snapshot[g & 1], the committed window's ring slots and every record the committed state still
#   needs intact (the ring has `slack` slots more than the largest window: at least the largest
#   batch plus a block); only the deques may be torn, and the next writer sees writing !=
#   generation and rebuilds them from the ring.
# Readers never lock: they copy snapshot[g & 1] and retry if `generation` moved meanwhile.
# Deleting (storage.py, under the store's lock and the file's): one more commit whose snapshot
#   says SNAPSHOT_DELETED (state copied unchanged), published like a batch, then the file is
#   unlinked. From the publication on, every reader and writer in every process sees the symbol
#   gone; a kill before it leaves the symbol whole, after it gone (the next open of the file
#   finishes the unlink under the store's lock).

from libc.stdint cimport int64_t, uint32_t, uint64_t

cdef enum:
    # Windows are 10**1 .. 10**max_k; ring slots are uint32, so 10**9 prices is the ceiling.
    MAX_WINDOWS = 9


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


cdef extern from "exact.h" nogil:
    ctypedef struct ExactSums "ts_exact":
        pass


ctypedef struct SymbolHeader:
    int64_t max_k
    int64_t capacity               # 10**max_k: the largest window
    int64_t ring_size              # ring slots: capacity plus slack, a multiple of BLOCK_PRICES
    int64_t count                  # prices added so far
    int64_t window[MAX_WINDOWS]    # 10**(i+1)
    DequeHeader lows               # increasing values: its front is the window minimum
    DequeHeader highs              # decreasing values: its front is the window maximum
    ExactSums settled              # every complete block: positions < count - count % BLOCK_PRICES
    ExactSums open_block           # positions count - count % BLOCK_PRICES .. count - 1
    ExactSums departed[MAX_WINDOWS]    # positions < count - window[i] (windows of a block or more)
    uint32_t open_crc              # CRC32C of the open block's prices
    uint32_t crc                   # CRC32C of everything above in this struct


cdef enum:
    FORMAT_VERSION = 2
    FILE_PAGE = 4096
    MAX_SYMBOL_BYTES = 256     # 64 characters of at most 4 bytes of UTF-8 each
    BLOCK_PRICES = 1000        # prices per BlockRecord; windows below it are summed directly


ctypedef struct BlockRecord:
    ExactSums sums                 # the block's prices, exactly
    uint32_t prices_crc            # CRC32C of the block's prices
    uint32_t crc                   # CRC32C of the two fields above


ctypedef struct Snapshot:
    # What readers need, computed by the writer at commit: statistics of every full window.
    int64_t count
    double last
    double min[MAX_WINDOWS]
    double max[MAX_WINDOWS]
    double avg[MAX_WINDOWS]
    double var[MAX_WINDOWS]
    uint32_t flags                 # SNAPSHOT_DELETED, or 0 (what every commit of prices writes)
    uint32_t crc                   # CRC32C of everything above


cdef enum:
    # A symbol is deleted by one more commit: a snapshot that says so. Every process's mapping
    # sees it at once; then the file is unlinked (a file left with it by a kill is removed by
    # the next open). Readers and writers of a deleted snapshot raise SymbolDeletedError.
    SNAPSHOT_DELETED = 1


ctypedef struct SymbolFile:
    char magic[8]                  # b"TSTATSYM"
    uint32_t version               # FORMAT_VERSION
    uint32_t header_bytes          # this struct, padded to whole pages
    int64_t max_k
    int64_t capacity               # 10**max_k
    int64_t max_batch              # the largest batch (fixes the slack)
    int64_t slack                  # ring slots beyond capacity
    int64_t ring_size              # capacity + slack
    int64_t blocks                 # ring_size / BLOCK_PRICES
    int64_t ring_offset
    int64_t lows_offset
    int64_t highs_offset
    int64_t blocks_offset
    int64_t file_size
    int64_t symbol_bytes
    char symbol[MAX_SYMBOL_BYTES]  # UTF-8, not terminated
    uint32_t unused
    uint32_t identity_crc          # CRC32C of everything above
    uint64_t generation            # commits published; atomic, release/acquire
    uint64_t writing               # generation being built; == generation when none is torn
    int64_t reserved               # leading ring slots (and deque slots, records) with disk blocks
    int64_t recoveries             # torn batches rolled back
    SymbolHeader state[2]
    Snapshot snapshot[2]


# --- layout arithmetic: where each array of a symbol file starts ---------------------------

cdef inline int64_t page_round(int64_t n) noexcept nogil:
    return (n + FILE_PAGE - 1) // FILE_PAGE * FILE_PAGE


cdef inline int64_t ring_slack(int64_t capacity, int64_t max_batch) noexcept nogil:
    """Slots beyond the largest window: a whole batch plus a block (what a torn batch may
    overwrite is then outside every window and every block a window still needs), rounded so
    that the ring is a whole number of blocks."""
    cdef int64_t ring = capacity + max_batch + BLOCK_PRICES
    ring = (ring + BLOCK_PRICES - 1) // BLOCK_PRICES * BLOCK_PRICES
    return ring - capacity


cdef inline void plan_layout(SymbolFile* f, int max_k, int64_t max_batch) noexcept nogil:
    """Sizes and offsets of a file for max_k and max_batch (written at creation, checked at open)."""
    cdef int i
    cdef int64_t capacity = 1
    for i in range(max_k):
        capacity *= 10
    f.max_k = max_k
    f.capacity = capacity
    f.max_batch = max_batch
    f.slack = ring_slack(capacity, max_batch)
    f.ring_size = capacity + f.slack
    f.blocks = f.ring_size // BLOCK_PRICES
    f.header_bytes = <uint32_t>page_round(sizeof(SymbolFile))
    f.ring_offset = f.header_bytes
    f.lows_offset = page_round(f.ring_offset + f.ring_size * <int64_t>sizeof(double))
    f.highs_offset = page_round(f.lows_offset + capacity * <int64_t>sizeof(uint32_t))
    f.blocks_offset = page_round(f.highs_offset + capacity * <int64_t>sizeof(uint32_t))
    f.file_size = page_round(f.blocks_offset + f.blocks * <int64_t>sizeof(BlockRecord))
