# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, embedsignature=True
"""The symbol file as storage: what a mapping of one symbol's state is, and how it is checked.

The format is layout.pxd (version 2; layout_v1.pxd only to migrate). This module maps a symbol's
state (anonymous memory for the heap store, a shared file for a file store), formats a new one,
computes and checks its CRC32C checksums and validates every size, offset, index and count read
from a file before anything uses it. It holds no state of its own: engine.pyx's SymbolStats
runs the commit protocol on what it maps.

Guarantees (a file that passes layout_problem): the identity (sizes, offsets, symbol) is the one
its CRC was taken of and matches what the store expects; the committed header and snapshot are
the ones their writer published (their CRCs match); every deque cursor, front and the disk
reservation are inside the file. prices_problem further checks the prices of the largest window
against the CRCs written with them: that reads the window (about 0.1 s per 10**8 prices), so
it is run at start-up, on a roll-back and by verify(), not on every open.
"""
import os

import crc32c as _crc32c

from cpython.buffer cimport PyBUF_READ
from cpython.memoryview cimport PyMemoryView_FromMemory
from libc.errno cimport EINTR, ENOMEM
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset
from posix.mman cimport (
    MAP_ANONYMOUS, MAP_FAILED, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap,
)
from posix.unistd cimport ftruncate, pwrite

from tradestats.kernels cimport init_header
from tradestats.layout cimport (
    BLOCK_PRICES, FILE_PAGE, FORMAT_VERSION, MAX_SYMBOL_BYTES, BlockRecord, DequeCursor,
    DequeHeader, Snapshot, SymbolFile, SymbolHeader, plan_layout,
)

from tradestats.errors import DiskFullError

cdef extern from "<sys/mman.h>" nogil:
    enum: MAP_NORESERVE
    enum: MADV_RANDOM
    int madvise(void *addr, size_t length, int advice)

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

cdef extern from "<errno.h>":
    int errno

cdef extern from "checksum.h" nogil:
    uint32_t ts_crc32c_extend(uint32_t crc, const void* data, size_t n)
    int ts_crc32c_without_gil()
    const char* TS_CRC32C_IMPLEMENTATION

cdef const char* FILE_MAGIC = b"TSTATSYM"
cdef object _crc32c_of = _crc32c.crc32c
cdef bint CRC32C_WITHOUT_GIL = ts_crc32c_without_gil()
#: What computes CRC32C here: "isa-l", "sse4.2" or (needing the GIL) "crc32c package".
CRC32C_IMPLEMENTATION = (TS_CRC32C_IMPLEMENTATION.decode() if CRC32C_WITHOUT_GIL
                         else "crc32c package")


# ---------------------------------------------------------------------------------------------
# Checksums: CRC32C, with the CPU's instruction (checksum.h) so that writers need no GIL, else
# with the crc32c package (which takes the GIL).

cdef uint32_t package_crc(uint32_t crc, const void* data, size_t n) except? 0xFFFFFFFF:
    return _crc32c_of(PyMemoryView_FromMemory(<char*>data, n, PyBUF_READ), crc)


cdef uint32_t crc_extend(uint32_t crc, const void* data, size_t n) noexcept nogil:
    """The CRC32C of what `crc` covered followed by data[:n]."""
    if n == 0:
        return crc
    if CRC32C_WITHOUT_GIL:
        return ts_crc32c_extend(crc, data, n)
    with gil:   # the package cannot fail on a valid buffer; if it did, the sum would mismatch
        return package_crc(crc, data, n)


cdef uint32_t header_crc(const SymbolHeader* h) noexcept nogil:
    return crc_extend(0, h, <size_t>(<const char*>&h.crc - <const char*>h))


cdef uint32_t snapshot_crc(const Snapshot* s) noexcept nogil:
    return crc_extend(0, s, <size_t>(<const char*>&s.crc - <const char*>s))


cdef uint32_t record_crc(const BlockRecord* r) noexcept nogil:
    return crc_extend(0, r, <size_t>(<const char*>&r.crc - <const char*>r))


cdef uint32_t identity_crc(const SymbolFile* f) noexcept nogil:
    return crc_extend(0, f, <size_t>(<const char*>&f.identity_crc - <const char*>f))


# ---------------------------------------------------------------------------------------------
# Mapping and formatting.

cdef inline int errno_value() noexcept:
    return errno


def raise_map_failed(path):
    """An address-space or memory limit is a MemoryError; anything else an OSError."""
    cdef int code = errno_value()
    if code == ENOMEM:
        raise MemoryError(f"cannot map {path}: {os.strerror(code)}")
    raise OSError(code, f"cannot map {path}", str(path))


cdef void format_layout(SymbolFile* f, bytes symbol, int max_k, int64_t max_batch) noexcept:
    """An empty symbol's identity, header and snapshot at f (whose bytes are all zero). The
    checksums are written by the caller, which may raise."""
    plan_layout(f, max_k, max_batch)
    memcpy(f.magic, FILE_MAGIC, 8)
    f.version = FORMAT_VERSION
    f.symbol_bytes = len(symbol)
    memcpy(f.symbol, <const char*>symbol, len(symbol))
    init_header(&f.state[0], max_k, f.ring_size)


cdef int write_checksums(SymbolFile* f) except -1:
    f.identity_crc = identity_crc(f)
    f.state[0].crc = header_crc(&f.state[0])
    f.snapshot[0].crc = snapshot_crc(&f.snapshot[0])
    return 0


cdef SymbolFile* map_anonymous(int max_k, int64_t max_batch) except NULL:
    """A heap symbol: the file layout in private memory, reserved but not committed, so memory
    follows the data and nothing is ever grown by copying."""
    cdef SymbolFile plan
    plan_layout(&plan, max_k, max_batch)
    cdef void* mapped = mmap(NULL, plan.file_size, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    if mapped == MAP_FAILED:
        raise_map_failed("memory for a symbol")
    format_layout(<SymbolFile*>mapped, b"", max_k, max_batch)
    return <SymbolFile*>mapped


cdef SymbolFile* map_file(int fd, int64_t size, object path) except NULL:
    cdef void* mapped = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
    if mapped == MAP_FAILED:
        raise_map_failed(path)
    return <SymbolFile*>mapped


cdef inline void _no_readahead(SymbolFile* f, int64_t offset, int64_t end) noexcept nogil:
    """MADV_RANDOM over the whole pages of offset..end of the mapping."""
    cdef int64_t start = (offset + FILE_PAGE - 1) // FILE_PAGE * FILE_PAGE
    if end > start:
        madvise(<char*>f + start, <size_t>(end - start), MADV_RANDOM)


cdef void advise_unwritten(SymbolFile* f, int64_t count) noexcept nogil:
    """No readahead on page faults in the parts of each array no price has reached yet
    (count prices are committed): the writer's first stores there fault page by page, and
    the kernel's readahead for such a fault (reading unwritten or never-allocated blocks:
    allocating and zeroing large folios of the page cache) is what made a worker's queries
    wait while it filled new files (GET p99 under 4 POSTing connections 16-22 ms, against
    5.7-7.7 ms without it: benchmarks/bench_http.py --cases mixed). Written parts keep
    readahead, so a cold read of a window (prices(n), an envelope, verify) stays sequential."""
    cdef int64_t written = min(count, f.ring_size)
    cdef int64_t deque_written = min(count, f.capacity)
    cdef int64_t records_written = min((count + BLOCK_PRICES - 1) // BLOCK_PRICES, f.blocks)
    _no_readahead(f, f.ring_offset + written * <int64_t>sizeof(double),
                  f.ring_offset + f.ring_size * <int64_t>sizeof(double))
    _no_readahead(f, f.lows_offset + deque_written * <int64_t>sizeof(uint32_t),
                  f.lows_offset + f.capacity * <int64_t>sizeof(uint32_t))
    _no_readahead(f, f.highs_offset + deque_written * <int64_t>sizeof(uint32_t),
                  f.highs_offset + f.capacity * <int64_t>sizeof(uint32_t))
    _no_readahead(f, f.blocks_offset + records_written * <int64_t>sizeof(BlockRecord),
                  f.blocks_offset + f.blocks * <int64_t>sizeof(BlockRecord))


cdef char ZERO_PAGES[65536]


cdef int prewrite_records(SymbolFile* f, int fd, int64_t first, int64_t end) noexcept nogil:
    """Write zeros over block records first .. end - 1 (unwritten: past every record in use)
    when their disk blocks are reserved, 64 KB per pwrite: their page-cache pages then exist,
    dirty, and the writer's first store into each only maps it. Else that store faults into a
    read of the unwritten page, its zeroing, and ext4 making it writable (MADV_POPULATE_WRITE,
    used before, did the same ahead of time: 8 us a page, 6 % of a first fill). The first fill
    of a 10**8 window went from 0.86-0.89 to 0.91-0.93 of the heap store's speed. 0, or the
    errno of the write that failed. The deques are not written ahead: a batch touches few of
    their pages."""
    cdef int64_t offset = f.blocks_offset + first * <int64_t>sizeof(BlockRecord)
    cdef int64_t left = (end - first) * <int64_t>sizeof(BlockRecord), piece
    cdef int code
    while left > 0:
        piece = min(left, <int64_t>sizeof(ZERO_PAGES))
        code = write_fully(fd, ZERO_PAGES, piece, offset)
        if code != 0:
            return code
        offset += piece
        left -= piece
    return 0


def symbol_file_size(int max_k, int64_t max_batch):
    """Bytes a symbol file spans (sparse: disk blocks follow the data)."""
    cdef SymbolFile plan
    plan_layout(&plan, max_k, max_batch)
    return plan.file_size


def format_symbol_file(int fd, bytes symbol, int max_k, int64_t max_batch, path):
    """Make the empty file behind fd a symbol file: sparse at full size, header on disk."""
    cdef SymbolFile plan
    cdef SymbolFile* f
    if len(symbol) > MAX_SYMBOL_BYTES:
        raise ValueError(f"a symbol is at most {MAX_SYMBOL_BYTES} bytes of UTF-8")
    plan_layout(&plan, max_k, max_batch)
    if ftruncate(fd, plan.file_size) != 0:
        raise OSError(errno_value(), f"cannot size {path}", str(path))
    reserve(fd, 0, plan.header_bytes, path)
    f = map_file(fd, plan.header_bytes, path)
    try:
        format_layout(f, symbol, max_k, max_batch)
        write_checksums(f)
    finally:
        munmap(f, plan.header_bytes)


# ---------------------------------------------------------------------------------------------
# Validation: a file's every field is checked before anything uses it.

cdef str layout_problem(const SymbolFile* f, int64_t size, bytes symbol, int max_k,
                        int64_t max_batch):
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
    if f.identity_crc != identity_crc(f):
        return "corrupt: the checksum of its identity (sizes, offsets, symbol) does not match"
    if f.max_k != max_k:
        return f"created with max_k={f.max_k}, opened with max_k={max_k}"
    if f.max_batch != max_batch:
        return f"created for batches of {f.max_batch} prices, opened with {max_batch}"
    plan_layout(&plan, max_k, max_batch)
    if (f.header_bytes != plan.header_bytes or f.ring_offset != plan.ring_offset
            or f.lows_offset != plan.lows_offset or f.highs_offset != plan.highs_offset
            or f.blocks_offset != plan.blocks_offset or f.blocks != plan.blocks
            or f.file_size != plan.file_size or f.capacity != plan.capacity
            or f.slack != plan.slack or f.ring_size != plan.ring_size):
        return "corrupt: its layout does not match its max_k"
    if size != f.file_size:
        return f"truncated or extended: {size} bytes, its layout needs {f.file_size}"
    if f.symbol_bytes != len(symbol) or memcmp(f.symbol, <const char*>symbol, len(symbol)) != 0:
        return f"holds symbol {f.symbol[:max(0, min(f.symbol_bytes, MAX_SYMBOL_BYTES))]!r}, not {symbol!r}"
    if f.writing != g and f.writing != g + 1:
        return "corrupt: its commit words disagree"
    h = &f.state[g & 1]
    if h.crc != header_crc(h):
        return "corrupt: the checksum of its committed header does not match"
    if f.snapshot[g & 1].crc != snapshot_crc(&f.snapshot[g & 1]):
        return "corrupt: the checksum of its committed snapshot does not match"
    # The checksums match: what follows finds files a writer of another build wrote wrongly.
    if (h.max_k != max_k or h.capacity != plan.capacity or h.ring_size != plan.ring_size
            or h.count < 0 or f.snapshot[g & 1].count != h.count):
        return "corrupt: its committed header does not match its layout"
    if deque_out_of_bounds(&h.lows.at, h) or deque_out_of_bounds(&h.highs.at, h):
        return "corrupt: its committed deques are out of bounds"
    size_of_window = 1
    for i in range(max_k):
        size_of_window *= 10
        if h.window[i] != size_of_window:
            return f"corrupt: window {i + 1} holds {h.window[i]} prices, not {size_of_window}"
        if fronts_out_of_bounds(&h.lows, i) or fronts_out_of_bounds(&h.highs, i):
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


cdef int record_fault(const BlockRecord* record) noexcept nogil:
    """Whether a block's record (its exact sums and its prices' CRC) is the one written:
    BLOCK_INTACT or RECORD_DAMAGED."""
    return BLOCK_INTACT if record.crc == record_crc(record) else RECORD_DAMAGED


cdef int block_fault(const SymbolFile* f, const SymbolHeader* h, int64_t b) noexcept nogil:
    """Whether the prices of block b are those their CRC was taken of: BLOCK_INTACT, or what is
    not. A complete block is checked against its record (itself checked first), the newest
    against the header's open_crc."""
    cdef const char* base = <const char*>f
    cdef const double* ring = <const double*>(base + f.ring_offset)
    cdef const BlockRecord* record = <const BlockRecord*>(base + f.blocks_offset) + b % f.blocks
    cdef uint32_t expected
    if b == h.count // BLOCK_PRICES:
        expected = h.open_crc
    elif record_fault(record) != BLOCK_INTACT:
        return RECORD_DAMAGED
    else:
        expected = record.prices_crc
    if crc_extend(0, ring + (b * BLOCK_PRICES) % f.ring_size,
                  block_length(h, b) * sizeof(double)) != expected:
        return PRICES_DAMAGED
    return BLOCK_INTACT


cdef inline int64_t block_length(const SymbolHeader* h, int64_t b) noexcept nogil:
    """Prices block b holds: all of them, but for the open block."""
    return h.count % BLOCK_PRICES if b == h.count // BLOCK_PRICES else BLOCK_PRICES


cdef str fault_problem(int fault, const SymbolHeader* h, int64_t b):
    """What a block_fault found, in words (None for BLOCK_INTACT)."""
    if fault == RECORD_DAMAGED:
        return f"corrupt: the checksum of the record of block {b} does not match"
    if fault == PRICES_DAMAGED:
        return (f"corrupt: the prices at positions {b * BLOCK_PRICES}.."
                f"{b * BLOCK_PRICES + block_length(h, b) - 1} do not match their checksum")
    return None


cdef str record_problem(const BlockRecord* record, int64_t b):
    """record_fault in words, or None."""
    return fault_problem(record_fault(record), NULL, b)


cdef str block_problem(const SymbolFile* f, const SymbolHeader* h, int64_t b):
    """block_fault in words, or None."""
    return fault_problem(block_fault(f, h, b), h, b)


cdef str prices_problem(const SymbolFile* f, const SymbolHeader* h):
    """Whether the prices of the largest window (and the rest of their blocks) are those their
    CRCs were taken of, or None: every block that holds a price of the window."""
    cdef int64_t b
    cdef str problem
    for b in range(max(0, h.count - h.capacity) // BLOCK_PRICES, h.count // BLOCK_PRICES + 1):
        problem = block_problem(f, h, b)
        if problem is not None:
            return problem
    return None


# ---------------------------------------------------------------------------------------------
# Locks and disk reservation.

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


def lock_fd(int fd):
    """Lock the whole file behind fd; closing fd releases it (storage.py relies on that)."""
    lock_file(fd, True)


cdef int reserve(int fd, int64_t offset, int64_t length, object path) except -1:
    cdef int result
    if length <= 0:
        return 0
    with nogil:
        result = posix_fallocate(fd, offset, length)
    if result != 0:
        raise DiskFullError(result, f"cannot reserve {length} bytes of disk for {path}", str(path))
    return 0


cdef int write_fully(int fd, const void* data, size_t n, int64_t offset) noexcept nogil:
    """pwrite all of data[:n] at offset (a short write is continued, EINTR retried): 0, or the
    errno of the write that failed."""
    cdef const char* p = <const char*>data
    cdef ssize_t written
    while n > 0:
        written = pwrite(fd, <void*>p, n, offset)
        if written < 0:
            if errno == EINTR:
                continue
            return errno
        p += written
        n -= <size_t>written
        offset += written
    return 0


def layout_of(int max_k, int64_t max_batch):
    """Where each part of a symbol file for max_k and max_batch starts, and its sizes (for tools
    and tests that read files byte by byte)."""
    cdef SymbolFile plan
    plan_layout(&plan, max_k, max_batch)
    return {
        "header_bytes": plan.header_bytes, "ring_offset": plan.ring_offset,
        "lows_offset": plan.lows_offset, "highs_offset": plan.highs_offset,
        "blocks_offset": plan.blocks_offset, "file_size": plan.file_size,
        "ring_size": plan.ring_size, "capacity": plan.capacity, "blocks": plan.blocks,
        "block_prices": BLOCK_PRICES, "record_bytes": sizeof(BlockRecord),
        "state_offsets": [<char*>&plan.state[i] - <char*>&plan for i in range(2)],
        "state_bytes": sizeof(SymbolHeader),
        "snapshot_offsets": [<char*>&plan.snapshot[i] - <char*>&plan for i in range(2)],
    }
