# cython: language_level=3, boundscheck=False, wraparound=False
# distutils: language = c++
# distutils: extra_compile_args = -std=c++17
# distutils: libraries = simdjson
"""An /add_batch/ body parsed into doubles without the GIL (libsimdjson through batchparse.h).

Built only where libsimdjson's header is found (Debian: libsimdjson-dev); without it
web/batch_body.py uses pysimdjson, which parses while holding the GIL. What a body must be for
this parser to answer, and what it declines, is written in batchparse.h.

A BatchParser is one simdjson parser and its buffers: it serves one parse at a time (the caller
holds a lock), and the symbol it returns is copied before the lock is let go.
"""

from cpython.buffer cimport PyBUF_FORMAT, PyBUF_WRITABLE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdlib cimport free


cdef extern from "batchparse.h" nogil:
    ctypedef struct ts_batch_parser:
        pass

    ctypedef struct ts_batch:
        const char *symbol
        size_t symbol_len
        double *values
        size_t count

    enum:
        TS_BATCH_OK
        TS_BATCH_DECLINED
        TS_BATCH_NO_MEMORY

    ts_batch_parser *ts_batch_parser_new() noexcept
    void ts_batch_parser_free(ts_batch_parser *parser) noexcept
    int ts_parse_batch(ts_batch_parser *parser, const char *body, size_t length,
                       ts_batch *out) noexcept


cdef char *_DOUBLE_FORMAT = b"d"


cdef class Prices:
    """A read-only 1-D float64 buffer over the parsed values, freed with this object."""
    cdef double *_values
    cdef Py_ssize_t _count
    cdef Py_ssize_t _shape[1]
    cdef Py_ssize_t _strides[1]

    def __len__(self) -> int:
        return self._count

    def __getbuffer__(self, Py_buffer *view, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("parsed prices are read-only")
        self._shape[0] = self._count
        self._strides[0] = sizeof(double)
        view.buf = <void *>self._values
        view.obj = self
        view.len = self._count * sizeof(double)
        view.readonly = 1
        view.itemsize = sizeof(double)
        view.format = _DOUBLE_FORMAT if flags & PyBUF_FORMAT else NULL
        view.ndim = 1
        view.shape = self._shape
        view.strides = self._strides
        view.suboffsets = NULL
        view.internal = NULL

    def __releasebuffer__(self, Py_buffer *view):
        pass

    def __dealloc__(self):
        free(self._values)


cdef Prices _adopt(double *values, size_t count):
    cdef Prices prices = Prices.__new__(Prices)
    prices._values = values
    prices._count = <Py_ssize_t>count
    return prices


cdef class BatchParser:
    cdef ts_batch_parser *_parser

    def __cinit__(self):
        self._parser = ts_batch_parser_new()
        if self._parser is NULL:
            raise MemoryError()

    def __dealloc__(self):
        ts_batch_parser_free(self._parser)

    def parse(self, bytes body not None):
        """(symbol, values as a float64 memoryview), or None when the body is not for this
        parser (batchparse.h says which). The GIL is released for the whole parse."""
        cdef const char *data = PyBytes_AS_STRING(body)
        cdef size_t length = <size_t>PyBytes_GET_SIZE(body)
        cdef ts_batch batch
        cdef int status
        with nogil:
            status = ts_parse_batch(self._parser, data, length, &batch)
        if status == TS_BATCH_NO_MEMORY:
            raise MemoryError()
        if status != TS_BATCH_OK:
            return None
        prices = _adopt(batch.values, batch.count)
        try:
            symbol = batch.symbol[:batch.symbol_len].decode("utf-8")
        except UnicodeDecodeError:
            return None  # an escaped lone surrogate, should simdjson ever let one through
        return symbol, memoryview(prices)
