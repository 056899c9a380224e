# What Cython code may cimport of the exact sums (exact.h: the method and its limits).

from libc.stdint cimport int64_t

from tradestats.layout cimport ExactSums

cdef extern from "exact.h" nogil:
    ctypedef struct ts_window:
        pass
    void ts_exact_clear(ExactSums* acc)
    void ts_exact_add(ExactSums* acc, const double* xs, int64_t n)
    void ts_exact_merge(ExactSums* acc, const ExactSums* other)
    void ts_exact_rest(ExactSums* out, const ExactSums* a, const ExactSums* b, const ExactSums* c)
    void ts_window_of(ts_window* w, const ExactSums* a, const ExactSums* b, const ExactSums* c)
    double ts_mean(const ts_window* w, int64_t n)
    double ts_variance(const ts_window* w, int64_t n)


cdef inline void add_positions(ExactSums* acc, const double* ring, int64_t ring_size,
                               int64_t first, int64_t n) noexcept nogil:
    """acc += the prices at positions first .. first + n - 1 (in the ring)."""
    cdef int64_t slot = first % ring_size, run
    while n > 0:
        run = min(n, ring_size - slot)
        ts_exact_add(acc, ring + slot, run)
        n -= run
        slot = 0
