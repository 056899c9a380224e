# What other Cython code may cimport from the engine. The state's layout is layout.pxd.

from libc.stdint cimport int64_t, uint32_t, uint64_t

from tradestats.layout cimport CompensatedSum, Snapshot, SymbolFile, SymbolHeader

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
    cdef SymbolFile* file          # NULL for a heap symbol; else the mapped file's start
    cdef size_t mapped_bytes
    cdef int fd
    cdef readonly object path      # the symbol file, or None
    cdef object _thread_lock       # with the file's lock: one writer per symbol
    cdef int _owner_pid            # the process whose open file description self.fd is
    cdef bint _sync                # fdatasync before a batch is acknowledged

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
    cdef void _attach(self, SymbolFile* f, size_t nbytes, int fd, object path, bint sync) noexcept
    cdef void _window_values(self, int i, double* low, double* high, double* avg,
                             double* var) noexcept
    cdef int _snapshot(self, Snapshot* out) except -1
    cdef int _write_file_batch(self, const double* values, Py_ssize_t n) except -1
    cdef int _own_description(self) except -1
    cdef int _synced_or_rolled_back(self, int result, uint64_t g, bint published) except -1
    cdef int _recover_if_torn(self) except -1
    cdef int _reserve_disk(self, Py_ssize_t n) except -1
    cdef void _publish(self, uint64_t generation) noexcept
    cdef bint _read_snapshot(self, Snapshot* out) noexcept


cdef class Store:
    cdef dict _symbols
    cdef object _directory         # storage.SymbolDirectory for a file store, else None
    cdef readonly int max_symbols
    cdef readonly int max_k

    cdef SymbolStats _create(self, symbol)
