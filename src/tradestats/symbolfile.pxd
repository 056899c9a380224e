# The symbol file (layout.pxd) as storage: checksums, mapping, formatting, validation, locks.
# engine.pyx's SymbolStats drives the commit protocol over what these functions map and check.

from libc.stdint cimport int64_t, uint32_t

from tradestats.layout cimport BlockRecord, Snapshot, SymbolFile, SymbolHeader

# Writers compute and check checksums without the GIL.
cdef uint32_t crc_extend(uint32_t crc, const void* data, size_t n) noexcept nogil
cdef uint32_t header_crc(const SymbolHeader* h) noexcept nogil
cdef uint32_t snapshot_crc(const Snapshot* s) noexcept nogil
cdef uint32_t record_crc(const BlockRecord* r) noexcept nogil
cdef uint32_t identity_crc(const SymbolFile* f) noexcept nogil

# What block_fault finds; fault_problem says it in words. WRITE_FAILED is the append path's
# own: the file system refused a write of the ring (filestore.pyx raises it from errno).
cdef enum:
    BLOCK_INTACT = 0
    RECORD_DAMAGED = 1
    PRICES_DAMAGED = 2
    WRITE_FAILED = 3

cdef int record_fault(const BlockRecord* record) noexcept nogil
cdef int block_fault(const SymbolFile* f, const SymbolHeader* h, int64_t b) noexcept nogil
cdef str fault_problem(int fault, const SymbolHeader* h, int64_t b)

cdef SymbolFile* map_anonymous(int max_k, int64_t max_batch) except NULL
cdef SymbolFile* map_file(int fd, int64_t size, object path) except NULL
cdef void advise_unwritten(SymbolFile* f, int64_t count) noexcept nogil
cdef int prewrite_records(SymbolFile* f, int fd, int64_t first, int64_t end) noexcept nogil
cdef void format_layout(SymbolFile* f, bytes symbol, int max_k, int64_t max_batch) noexcept
cdef str layout_problem(const SymbolFile* f, int64_t size, bytes symbol, int max_k,
                        int64_t max_batch)
cdef str record_problem(const BlockRecord* record, int64_t b)
cdef str block_problem(const SymbolFile* f, const SymbolHeader* h, int64_t b)
cdef str prices_problem(const SymbolFile* f, const SymbolHeader* h)

cdef int lock_file(int fd, bint exclusive) except -1
cdef int reserve(int fd, int64_t offset, int64_t length, object path) except -1
cdef int write_fully(int fd, const void* data, size_t n, int64_t offset) noexcept nogil
cdef int errno_value() noexcept
