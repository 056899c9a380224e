# What other Cython code may cimport from the engine. The state's layout is layout.pxd; a file
# store's symbol (FileSymbolStats) is filestore.pxd.

from cpython.array cimport array
from libc.stdint cimport int64_t, uint32_t, uint64_t

from tradestats.layout cimport BlockRecord, Snapshot, SymbolFile, SymbolHeader

# The heap store appends batches of at least this many prices with the GIL released; smaller
# ones keep it (releasing and taking it back costs more than they take). A file store always
# releases it: its stores into the mapping may wait in the file system (filestore.pyx).
cdef enum:
    NOGIL_PRICES = 256


cdef class Stats:
    cdef readonly double min
    cdef readonly double max
    cdef readonly double last
    cdef readonly double avg
    cdef readonly double var


cdef class SymbolStats:
    cdef SymbolFile* file          # the mapping: anonymous (heap) or a symbol file
    cdef size_t mapped_bytes
    cdef int max_k_                # the file's max_k, kept here: a reader touches no page first
    cdef SymbolHeader* h           # the state the kernels work on
    cdef double* ring
    cdef uint32_t* low_slots
    cdef uint32_t* high_slots
    cdef BlockRecord* records
    cdef readonly object path      # the symbol file, or None
    cdef bint _checked             # keeps and checks checksums (a file)
    cdef bint _loading             # filling a new file (migration): departed sums set at the end

    cdef object pyramid            # envelope.Pyramid, made at the first envelope() call
    cdef int _fault                # what the last check without the GIL found (symbolfile)
    cdef int64_t _fault_block      # ... and in which block

    cdef void _bind(self, SymbolFile* f) noexcept
    cdef int _add_prices(self, const double* values, Py_ssize_t n) except -1
    # The append path runs without the GIL: it returns a fault instead of raising.
    cdef void _append_into(self, const double* values, Py_ssize_t n,
                           Snapshot* snap) noexcept nogil
    cdef int _append(self, const double* values, Py_ssize_t n) noexcept nogil
    cdef int _append_chunk(self, const double* xs, Py_ssize_t c) noexcept nogil
    # Stores prices into the ring: into the mapping here, with pwrite in a file (filestore.pyx).
    cdef int _write_ring(self, int64_t first_slot, const double* xs, Py_ssize_t c) noexcept nogil
    cdef void _slide_deques(self, const double* xs, Py_ssize_t c) noexcept nogil
    cdef void _enter(self, const double* xs, int64_t start, int64_t c) noexcept nogil
    cdef void _close_block(self, int64_t b) noexcept nogil
    cdef int _depart(self, int i, int64_t start, int64_t c) noexcept nogil
    cdef int _check_block_prices(self, int64_t b) noexcept nogil
    cdef int _faulted_at(self, int64_t b, int fault) noexcept nogil
    cdef int raise_fault(self) except -1
    cdef void _compute_snapshot(self, Snapshot* snap) noexcept nogil
    cdef int _snapshot(self, Snapshot* out) except -1
    cdef int _mapped_copy(self, void* out, const void* source, size_t n) except -1
    cdef int _mark_deleted(self) except -1
    cdef int _verify_state(self, bint recompute) except -1


cdef class Store:
    cdef dict _symbols
    cdef object _directory         # storage.SymbolDirectory for a file store, else None
    cdef readonly int max_symbols
    cdef readonly int max_k
    cdef public object admit       # admit(symbol) before a write opens or creates it, or None

    cdef SymbolStats _create(self, symbol)
    cdef SymbolStats _open(self, symbol)


cdef int integer_in_range(str name, object value, int low, int high) except? -1
cdef int check_prices(const double* xs, int64_t n, int64_t first_position) except -1
cdef void crash_point() noexcept nogil
cdef array last_prices(const double* ring, int64_t count, int64_t capacity, int64_t ring_size,
                       int64_t wanted)
cdef int64_t state_bytes(const SymbolFile* f, int64_t slots) noexcept
