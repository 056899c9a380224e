# A file store's symbol: what other Cython code may cimport (the module: filestore.pyx).

from cpython.array cimport array
from libc.stdint cimport int64_t, uint32_t, uint64_t

from tradestats.engine cimport SymbolStats
from tradestats.layout cimport SymbolFile


cdef class FileSymbolStats(SymbolStats):
    cdef int fd
    cdef object _thread_lock       # with the file's lock: one writer per symbol
    cdef int _owner_pid            # the process whose open file description self.fd is
    cdef bint _sync                # fdatasync before a batch is acknowledged
    cdef int64_t max_batch_
    cdef int64_t capacity_, ring_size_, blocks_   # of the file's layout, checked at open
    cdef int _write_errno          # of the ring write that failed (a WRITE_FAILED fault)

    cdef void _attach(self, SymbolFile* f, int fd, object path, bint sync) noexcept
    cdef int _check_size(self) except -1
    cdef int _faulted(self) except -1
    cdef uint32_t _mapped_crc(self, uint32_t crc, const void* data, size_t n) except? 0xFFFFFFFF
    cdef array _copy_prices(self, int64_t count, int64_t wanted)
    cdef int _check_copied_prices(self, array out, int64_t count, uint32_t open_crc) except -1
    cdef int _write_file_batch(self, const double* values, Py_ssize_t n) except -1
    cdef int _write_and_publish(self, const double* values, Py_ssize_t n,
                                uint64_t g) noexcept nogil
    cdef void _mark_writing(self, uint64_t g) noexcept nogil
    cdef int _append_and_prepare(self, const double* values, Py_ssize_t n,
                                 uint64_t generation) noexcept nogil
    cdef int _prepare_commit(self, uint64_t generation, int64_t batch_start) noexcept nogil
    cdef int _write_ring(self, int64_t first_slot, const double* xs, Py_ssize_t c) noexcept nogil
    cdef int raise_fault(self) except -1
    cdef int _synced_or_rolled_back(self, int result, uint64_t g, bint published) except -1
    cdef int _own_description(self) except -1
    cdef int _recover_if_torn(self) except -1
    cdef uint64_t _live_generation(self) except? 0
    cdef int _publish_deleted(self) except -1
    cdef int _reserve_disk(self, Py_ssize_t n) except -1
    cdef int _load(self, const double* ring, int64_t ring_size, int64_t count) except -1
