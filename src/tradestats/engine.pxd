# What other Cython code may cimport from the engine. The state's layout is layout.pxd.

from cpython.array cimport array
from libc.stdint cimport int64_t, uint32_t, uint64_t

from tradestats.layout cimport BlockRecord, Snapshot, SymbolFile, SymbolHeader

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
    cdef int64_t max_batch_
    cdef SymbolHeader* h           # the state the kernels work on
    cdef double* ring
    cdef uint32_t* low_slots
    cdef uint32_t* high_slots
    cdef BlockRecord* records
    cdef int fd                    # -1 in the heap
    cdef readonly object path      # the symbol file, or None
    cdef object _thread_lock       # with the file's lock: one writer per symbol
    cdef int _owner_pid            # the process whose open file description self.fd is
    cdef bint _sync                # fdatasync before a batch is acknowledged
    cdef bint _checked             # keeps and checks checksums (a file)
    cdef bint _loading             # filling a new file (migration): departed sums set at the end

    cdef void _bind(self, SymbolFile* f) noexcept
    cdef void _attach(self, SymbolFile* f, int fd, object path, bint sync) noexcept
    cdef int _add_prices(self, const double* values, Py_ssize_t n) except -1
    cdef int _append(self, const double* values, Py_ssize_t n) except -1
    cdef int _append_chunk(self, const double* xs, Py_ssize_t c) except -1
    cdef void _slide_deques(self, const double* xs, Py_ssize_t c) noexcept
    cdef int _enter(self, int64_t start, int64_t c) except -1
    cdef int _close_block(self, int64_t b) except -1
    cdef int _depart(self, int i, int64_t start, int64_t c) except -1
    cdef int _check_block_prices(self, int64_t b) except -1
    cdef int _check_size(self) except -1
    cdef int _check_copied_prices(self, array out, int64_t count, uint32_t open_crc) except -1
    cdef void _compute_snapshot(self, Snapshot* snap) noexcept
    cdef int _snapshot(self, Snapshot* out) except -1
    cdef int _verify_state(self, bint recompute) except -1
    cdef int _write_file_batch(self, const double* values, Py_ssize_t n) except -1
    cdef int _prepare_commit(self, uint64_t generation) except -1
    cdef int _synced_or_rolled_back(self, int result, uint64_t g, bint published) except -1
    cdef int _own_description(self) except -1
    cdef int _recover_if_torn(self) except -1
    cdef int _reserve_disk(self, Py_ssize_t n) except -1
    cdef int _load(self, const double* ring, int64_t ring_size, int64_t count) except -1


cdef class Store:
    cdef dict _symbols
    cdef object _directory         # storage.SymbolDirectory for a file store, else None
    cdef readonly int max_symbols
    cdef readonly int max_k

    cdef SymbolStats _create(self, symbol)
