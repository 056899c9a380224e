# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, embedsignature=True
"""A file store's symbol: SymbolStats (engine.pyx) in a shared, memory-mapped file.

The state and its kernels are SymbolStats'; what this module adds is the storage of LMDB's
kind: one writer per symbol at a time, readers that never wait, a commit published by one final
write, a batch whole or not at all however its writer dies, nothing read from the file used
before it is checked, and the migration of files of the previous format. The file format and
the commit protocol are written down at the top of layout.pxd; the checks are symbolfile.pyx.
"""
import os
import threading

from cpython.array cimport array, clone
from libc.limits cimport INT_MAX
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset
from posix.mman cimport MAP_FAILED, MAP_SHARED, MS_SYNC, PROT_READ, mmap, msync, munmap
from posix.stat cimport fstat, struct_stat
from posix.unistd cimport getpid

from tradestats.engine cimport (
    SymbolStats, check_prices, crash_point, integer_in_range, last_prices, state_bytes,
)
from tradestats.exact cimport add_positions, ts_exact_clear, ts_exact_rest
from tradestats.kernels cimport CHUNK, rebuild_deques, ring_span
from tradestats.layout cimport (
    BLOCK_PRICES, FORMAT_VERSION, SNAPSHOT_DELETED, BlockRecord, ExactSums, Snapshot, SymbolFile, SymbolHeader,
)
from tradestats.layout_v1 cimport V1SymbolFile
from tradestats.symbolfile cimport (
    BLOCK_INTACT, WRITE_FAILED, advise_unwritten, crc_extend, errno_value, header_crc,
    layout_problem, lock_file, map_file, prewrite_records, prices_problem, record_crc, reserve,
    snapshot_crc, write_fully,
)

from tradestats.errors import (
    StoreCorruptionError, StoreFormatError, SymbolDeletedError, sync_failure, write_failure,
)
from tradestats.symbolfile import format_symbol_file, raise_map_failed

cdef extern from "<unistd.h>" nogil:
    int fdatasync(int fd)

cdef extern from "guard.h" nogil:
    int ts_guard_install()
    int ts_guarded_snapshot(const uint64_t* generation, const char* slots, size_t size, void* out,
                            int tries)
    int ts_guarded_copy(void* out, const void* source, size_t n)
    int ts_guarded_crc32c(uint32_t* crc, const void* data, size_t n)
    uint32_t ts_crc32c(const void* data, size_t n)
    uint32_t ts_crc32c_extend(uint32_t crc, const void* data, size_t n)
    int ts_crc32c_without_gil()

# Acquire/release atomics for the commit word, straight from the compiler.
cdef extern from *:
    """
    static inline uint64_t ts_load_acquire(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline uint64_t ts_load_relaxed(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline void ts_store_release(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void ts_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
    static inline void ts_fence_full(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    """
    uint64_t ts_load_acquire(const uint64_t* p) noexcept nogil
    uint64_t ts_load_relaxed(const uint64_t* p) noexcept nogil
    void ts_store_release(uint64_t* p, uint64_t v) noexcept nogil
    void ts_fence_acquire() noexcept nogil
    void ts_fence_full() noexcept nogil

cdef bint CRC32C_WITHOUT_GIL = ts_crc32c_without_gil()
cdef array _DOUBLE_TEMPLATE = array("d")
# A file store allocates disk blocks ahead of the data, from RESERVE_STEP prices at a time
# doubling up to RESERVE_MAX_STEP, so a full disk is an error before a batch is written, never a
# SIGBUS while it is.
cdef int64_t RESERVE_STEP = 16384
cdef int64_t RESERVE_MAX_STEP = 1 << 20
# A reader retries a snapshot copy that a commit overlapped. Each retry means a whole batch was
# committed during a copy of a few hundred bytes, so this bound is reached only if writers commit
# without pause; the reader then waits for the writers' lock instead of spinning on.
cdef int MAX_READ_TRIES = 1000
# The windows below BLOCK_PRICES (10 and 100) are summed from the ring at every commit.
cdef int64_t DIRECTLY_SUMMED = 100


# ---------------------------------------------------------------------------------------------
# Test hook of sync mode.

cdef int _sync_countdown = -1
cdef int _sync_errno = 0


def _fail_sync(int after, int error):
    """Test hook: in sync mode, the sync after `after` more successful ones reports `error` (a
    batch syncs three times: the torn-batch mark, the data, the publish). -1 disarms."""
    global _sync_countdown, _sync_errno
    _sync_countdown, _sync_errno = after, error


cdef int sync_result(int result) noexcept:
    """0, or the errno of a failed sync (or of the one a test made fail)."""
    global _sync_countdown
    if _sync_countdown == 0:
        _sync_countdown = -1
        return _sync_errno
    if _sync_countdown > 0:
        _sync_countdown -= 1
    return errno_value() if result != 0 else 0


cdef class WritersLock:
    """``with WritersLock(symbol):`` holds a file symbol's writer locks (this process's thread
    lock, then the file's open-file-description lock, in a description of this process's own),
    with the file's size checked: what every writer, and a reader that gave up on the seqlock,
    needs before it touches the state."""
    cdef FileSymbolStats symbol

    def __cinit__(self, FileSymbolStats symbol):
        self.symbol = symbol

    def __enter__(self):
        cdef FileSymbolStats symbol = self.symbol
        symbol._own_description()
        symbol._thread_lock.acquire()
        try:
            lock_file(symbol.fd, True)
        except BaseException:
            symbol._thread_lock.release()
            raise
        try:
            symbol._check_size()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info):
        try:
            lock_file(self.symbol.fd, False)
        finally:
            self.symbol._thread_lock.release()
        return False


cdef class FileSymbolStats(SymbolStats):
    """A symbol of a file store: SymbolStats' state and kernels in a shared, memory-mapped file
    (layout.pxd), with the commit protocol that makes it one dataset for every process: one
    writer at a time (an open-file-description lock), readers that never wait (a seqlock over
    the published snapshot), a batch whole or not at all even if its writer is killed (two
    header slots, roll-back), and every byte it reads checked first (symbolfile.pyx)."""

    def __cinit__(self, *args, **kwargs):
        self.fd = -1

    cdef void _attach(self, SymbolFile* f, int fd, object path, bint sync) noexcept:
        """Work on the state in a mapped symbol file (checked by layout_problem)."""
        self._bind(f)
        # Kept here: a reader computes with them before its copies, which run under the guard.
        self.max_batch_ = f.max_batch
        self.capacity_, self.ring_size_, self.blocks_ = f.capacity, f.ring_size, f.blocks
        ts_guard_install()   # again at each open: something may have replaced it since
        self.fd = fd
        self.path = path
        self._sync = sync
        self._checked = True
        self._thread_lock = threading.Lock()
        self._owner_pid = getpid()

    def __dealloc__(self):
        if self.fd >= 0:
            os.close(self.fd)

    @property
    def nbytes(self):
        """Disk blocks held now: the reserved ring, deque slots and records, and the header."""
        self._check_size()
        return state_bytes(self.file, self.file.reserved)

    @property
    def recoveries(self):
        """Torn batches (a writer killed mid-batch) rolled back in this symbol's file."""
        self._check_size()
        return self.file.recoveries

    cdef int _add_prices(self, const double* values, Py_ssize_t n) except -1:
        return self._write_file_batch(values, n)

    def prices(self, n):
        """The last n prices (fewer if fewer are held), oldest first, as array('d'), in one copy."""
        cdef int64_t wanted = integer_in_range("n", n, 1, INT_MAX)
        cdef array out
        cdef SymbolFile* f = self.file
        cdef uint64_t g, again
        cdef int64_t count
        cdef uint32_t open_crc, flags
        cdef int attempt
        self._check_size()
        for attempt in range(MAX_READ_TRIES):   # the seqlock of _snapshot, over the ring
            # Every read of the mapping under the guard: a truncation now is an error, not a
            # crash. (An aligned 8-byte copy is one load; the fences make it an acquire.)
            self._mapped_copy(&g, &f.generation, sizeof(uint64_t))
            ts_fence_acquire()
            self._mapped_copy(&count, &f.snapshot[g & 1].count, sizeof(int64_t))
            self._mapped_copy(&flags, &f.snapshot[g & 1].flags, sizeof(uint32_t))
            self._mapped_copy(&open_crc, &f.state[g & 1].open_crc, sizeof(uint32_t))
            out = self._copy_prices(count, wanted)
            ts_fence_acquire()
            self._mapped_copy(&again, &f.generation, sizeof(uint64_t))
            if again == g:
                if flags & SNAPSHOT_DELETED:
                    raise SymbolDeletedError(self.path)
                self._check_copied_prices(out, count, open_crc)
                return out
        with WritersLock(self):   # writers never paused: queue up with them
            self._mapped_copy(&g, &f.generation, sizeof(uint64_t))
            if f.snapshot[g & 1].flags & SNAPSHOT_DELETED:
                raise SymbolDeletedError(self.path)
            self._mapped_copy(&count, &f.snapshot[g & 1].count, sizeof(int64_t))
            return self._copy_prices(count, wanted)

    def recover(self):
        """Roll back a torn batch now, if there is one (the next writer would); True if there was."""
        with WritersLock(self):
            return self._recover_if_torn() == 1

    def verify(self, recompute=True):
        """Check everything this symbol holds: the checksums of its header, its snapshot and the
        prices of its largest window, and (recompute) every window's statistics recomputed from
        the prices. Raises StoreCorruptionError naming the first difference. Reads the whole
        window; a file's writers wait meanwhile."""
        with WritersLock(self):
            self._recover_if_torn()
            self._verify_state(recompute)

    cdef int _snapshot(self, Snapshot* out) except -1:
        """The published snapshot, copied without a lock (a seqlock) and without a system call
        (guard.h: a file truncated meanwhile is a fault the copy reports, not a SIGBUS), then
        checked against its CRC."""
        cdef int copied
        cdef uint32_t crc
        cdef uint64_t g
        copied = ts_guarded_snapshot(&self.file.generation, <const char*>&self.file.snapshot[0],
                                     sizeof(Snapshot), out, MAX_READ_TRIES)
        if copied < 0:
            self._faulted()
        if copied == 0:
            with WritersLock(self):   # writers never paused: queue up with them
                self._mapped_copy(&g, &self.file.generation, sizeof(uint64_t))
                self._mapped_copy(out, &self.file.snapshot[g & 1], sizeof(Snapshot))
        if CRC32C_WITHOUT_GIL:
            crc = ts_crc32c(out, <size_t>(<char*>&out.crc - <char*>out))
        else:
            crc = snapshot_crc(out)
        if out.crc != crc:
            raise StoreCorruptionError(
                self.path, "corrupt: the checksum of its published snapshot does not match")
        if out.flags & SNAPSHOT_DELETED:
            raise SymbolDeletedError(self.path)
        return 0

    cdef int _mark_deleted(self) except -1:
        """(SymbolDirectory.delete, under the store's lock) Publish a snapshot that says the
        symbol is deleted (layout.pxd): one more commit, the state unchanged. Every mapping of
        the file in every process sees it at its next read or write. SymbolDeletedError if it
        already is."""
        with WritersLock(self):
            self._publish_deleted()
        return 0

    def _hand_over(self, copy):
        """(A cluster's move, under the store's lock) copy(path) of the file's committed state,
        then the symbol deleted, both under one hold of the writers' lock: no batch can be
        committed here after the copy was taken."""
        with WritersLock(self):
            self._live_generation()   # a deleted symbol has nothing to hand over
            copy(self.path)
            self._publish_deleted()

    cdef uint64_t _live_generation(self) except? 0:
        """(Under the writers' lock, before a writer touches anything) The committed generation,
        a torn batch rolled back first; SymbolDeletedError if that commit deleted the symbol."""
        self._recover_if_torn()
        if self.file.snapshot[self.file.generation & 1].flags & SNAPSHOT_DELETED:
            raise SymbolDeletedError(self.path)
        return self.file.generation

    cdef int _publish_deleted(self) except -1:
        """(Under the writers' lock) The deleting commit of _mark_deleted."""
        cdef SymbolFile* f = self.file
        cdef uint64_t g
        cdef Snapshot* deleted
        g = self._live_generation()
        self._mark_writing(g)
        deleted = &f.snapshot[(g + 1) & 1]
        memcpy(deleted, &f.snapshot[g & 1], sizeof(Snapshot))
        deleted.flags |= SNAPSHOT_DELETED
        deleted.crc = snapshot_crc(deleted)
        if self._sync:   # the new slot on disk before the word that publishes it
            self._synced_or_rolled_back(msync(f, f.header_bytes, MS_SYNC), g, False)
        crash_point()
        ts_store_release(&f.generation, g + 1)
        if self._sync:
            self._synced_or_rolled_back(msync(f, f.header_bytes, MS_SYNC), g, True)
        return 0

    cdef int _verify_state(self, bint recompute) except -1:
        """(verify) The committed state against its checksums, then (SymbolStats) against the
        prices themselves."""
        cdef str problem   # under WritersLock: the size was just checked
        problem = layout_problem(self.file, os.fstat(self.fd).st_size,
                                 bytes(self.file.symbol[:self.file.symbol_bytes]),
                                 self.file.max_k, self.file.max_batch)
        if problem is None:
            problem = prices_problem(self.file, self.h)
        if problem is not None:
            raise StoreCorruptionError(self.path, problem)
        return SymbolStats._verify_state(self, recompute)

    cdef int _check_size(self) except -1:
        """A file truncated from outside would be a SIGBUS at the first page past its end: it is
        refused instead, before any of it is read (one fstat)."""
        cdef struct_stat status
        if fstat(self.fd, &status) != 0:
            raise OSError(errno_value(), f"cannot stat {self.path}", str(self.path))
        if status.st_size < <int64_t>self.mapped_bytes:
            raise StoreCorruptionError(
                self.path, f"truncated: {status.st_size} bytes, its layout needs "
                f"{self.mapped_bytes}")
        return 0

    cdef int _faulted(self) except -1:
        """A guarded read of the mapping faulted: say why (the size, if it was truncated)."""
        self._check_size()
        raise StoreCorruptionError(self.path, "corrupt: its mapping faulted (truncated?)")

    cdef int _mapped_copy(self, void* out, const void* source, size_t n) except -1:
        """A reader's copy from the mapping, under the SIGBUS guard (guard.h): a file truncated
        since the last fstat is refused, not a crash."""
        if ts_guarded_copy(out, source, n) != 0:
            self._faulted()
        return 0

    cdef uint32_t _mapped_crc(self, uint32_t crc, const void* data, size_t n) except? 0xFFFFFFFF:
        """crc extended over mapped bytes, under the guard where checksum.h computes CRC32C
        (else with the crc32c package, after the reader's fstat)."""
        if not CRC32C_WITHOUT_GIL:
            return crc_extend(crc, data, n)
        if ts_guarded_crc32c(&crc, data, n) != 0:
            self._faulted()
        return crc

    cdef array _copy_prices(self, int64_t count, int64_t wanted):
        """The last min(wanted, count, capacity) prices before position count, oldest first,
        copied under the guard."""
        cdef int64_t start, first
        cdef int64_t n = ring_span(count, self.capacity_, self.ring_size_, wanted, &start, &first)
        cdef array out = clone(_DOUBLE_TEMPLATE, n, False)
        self._mapped_copy(out.data.as_doubles, self.ring + start, first * sizeof(double))
        self._mapped_copy(out.data.as_doubles + first, self.ring, (n - first) * sizeof(double))
        return out

    cdef int _check_copied_prices(self, array out, int64_t count, uint32_t open_crc) except -1:
        """The prices a reader copied (the newest len(out) of count) against their blocks'
        checksums, compared on the copy: a damaged price is refused, not served."""
        cdef int64_t n = len(out), first = count - n, b, lo, hi, offset, ring_size = self.ring_size_
        cdef uint32_t crc, expected
        cdef const BlockRecord* record
        b = first // BLOCK_PRICES
        while b * BLOCK_PRICES < count:
            lo = max(b * BLOCK_PRICES, first)
            hi = min((b + 1) * BLOCK_PRICES, count)
            # The part of the block outside the copy comes from the ring, the rest from the copy.
            offset = (b * BLOCK_PRICES) % ring_size
            crc = self._mapped_crc(0, self.ring + offset, (lo - b * BLOCK_PRICES) * sizeof(double))
            crc = crc_extend(crc, out.data.as_doubles + (lo - first), (hi - lo) * sizeof(double))
            if b == count // BLOCK_PRICES:
                expected = open_crc
            else:
                record = &self.records[b % self.blocks_]
                crc = self._mapped_crc(crc, self.ring + offset + (hi - b * BLOCK_PRICES),
                                       ((b + 1) * BLOCK_PRICES - hi) * sizeof(double))
                self._mapped_copy(&expected, &record.prices_crc, sizeof(uint32_t))
            if crc != expected:
                raise StoreCorruptionError(
                    self.path, f"corrupt: the prices at positions {b * BLOCK_PRICES}.."
                    f"{hi - 1} do not match their checksum")
            b += 1
        return 0

    # -- the file: one writer, readers without locks -------------------------------------------

    cdef int _write_file_batch(self, const double* values, Py_ssize_t n) except -1:
        """Under the writers' lock: check the committed header, reserve disk, then mark, append,
        commit and publish the batch without the GIL. Every store into the mapping runs without
        it: once writeback has cleaned a page, the next store into it faults into the file
        system (on ext4 a journal handle, for the file's mtime), which may wait milliseconds
        for a journal commit; other threads (a worker's GETs) must not wait with it."""
        cdef SymbolFile* f = self.file
        cdef uint64_t g
        cdef int fault, result
        if n > self.max_batch_:
            raise ValueError(
                f"a batch of {n} prices is more than this file store takes at once "
                f"({self.max_batch_}, fixed when the store was created)")
        if n == 0:
            return 0
        with WritersLock(self):
            g = self._live_generation()
            if f.state[g & 1].crc != header_crc(&f.state[g & 1]):
                raise StoreCorruptionError(
                    self.path, "corrupt: the checksum of its committed header does not match")
            self._reserve_disk(n)   # may refuse the batch: nothing is written yet
            if not self._sync:
                with nogil:
                    fault = self._write_and_publish(values, n, g)
                if fault != BLOCK_INTACT:
                    self._recover_if_torn()
                    self.raise_fault()
                return 0
            with nogil:
                self._mark_writing(g)
                # ...and on disk first, or a power cut could keep torn deques unmarked.
                result = msync(f, f.header_bytes, MS_SYNC)
            self._synced_or_rolled_back(result, g, False)
            with nogil:
                fault = self._append_and_prepare(values, n, g + 1)
            if fault != BLOCK_INTACT:
                self._recover_if_torn()
                self.raise_fault()
            with nogil:             # the batch is on disk before anyone can see it...
                result = fdatasync(self.fd)
            self._synced_or_rolled_back(result, g, False)
            with nogil:
                ts_store_release(&f.generation, g + 1)
                result = msync(f, f.header_bytes, MS_SYNC)   # ...and its publication before the 200
            self._synced_or_rolled_back(result, g, True)
        return 0

    cdef int _write_and_publish(self, const double* values, Py_ssize_t n,
                                uint64_t g) noexcept nogil:
        """(Without sync) The whole batch from the mark to the publication; a fault stops it
        unpublished, for the caller to roll back."""
        cdef int fault
        self._mark_writing(g)
        fault = self._append_and_prepare(values, n, g + 1)
        if fault == BLOCK_INTACT:
            ts_store_release(&self.file.generation, g + 1)
        return fault

    cdef void _mark_writing(self, uint64_t g) noexcept nogil:
        """The batch of generation g + 1 starts in the other header slot, a copy of the
        committed one, and `writing` says so (a roll-back's cue) before any slot can change."""
        cdef SymbolFile* f = self.file
        self.h = &f.state[(g + 1) & 1]
        memcpy(self.h, &f.state[g & 1], sizeof(SymbolHeader))
        f.writing = g + 1
        ts_fence_full()

    cdef int _append_and_prepare(self, const double* values, Py_ssize_t n,
                                 uint64_t generation) noexcept nogil:
        cdef int fault = self._append(values, n)
        if fault != BLOCK_INTACT:
            return fault
        crash_point()
        return self._prepare_commit(generation, self.h.count - n)

    cdef int _write_ring(self, int64_t first_slot, const double* xs, Py_ssize_t c) noexcept nogil:
        """The prices go into the ring with pwrite, not stores into the mapping: a store into a
        page the mapping has not written yet faults, and the kernel reads that page in (zeroing
        it: the range is unwritten) before ext4 makes it writable, page by page; pwrite fills
        whole pages of the page cache in one call, with nothing to read. The mapping sees the
        same pages. (A first fill of 10**8 prices went from 0.55 to 0.78 of the heap store's
        speed by this alone; README, "File store".) Deques, records and headers stay stores:
        they are small, or rewritten in place."""
        cdef SymbolFile* f = self.file
        cdef int64_t run = min(<int64_t>c, self.ring_size_ - first_slot)
        cdef int code = write_fully(self.fd, xs, run * sizeof(double),
                                    f.ring_offset + first_slot * <int64_t>sizeof(double))
        if code == 0 and c > run:
            code = write_fully(self.fd, xs + run, (c - run) * sizeof(double), f.ring_offset)
        if code == 0:
            return BLOCK_INTACT
        self._write_errno = code
        self._fault = WRITE_FAILED
        return WRITE_FAILED

    cdef int raise_fault(self) except -1:
        if self._fault == WRITE_FAILED:
            raise write_failure(self._write_errno, self.path)
        return SymbolStats.raise_fault(self)

    cdef int _prepare_commit(self, uint64_t generation, int64_t batch_start) noexcept nogil:
        """Write the readers' snapshot of the new state and both checksums: all that is left to
        publish it is one store of the generation. BLOCK_INTACT, or the fault that stops it."""
        cdef Snapshot* snap = &self.file.snapshot[generation & 1]
        cdef int64_t b, first = max(0, self.h.count - DIRECTLY_SUMMED)
        # The windows below a block are summed from the ring's newest prices: checked first,
        # up to the first block that holds only this batch's prices (from batch_start on): those
        # were checksummed from the batch itself a moment ago, by this writer, under its lock.
        cdef int64_t fresh_block = (batch_start + BLOCK_PRICES - 1) // BLOCK_PRICES
        if self.h.count:
            for b in range(first // BLOCK_PRICES,
                           min((self.h.count - 1) // BLOCK_PRICES + 1, fresh_block)):
                if self._check_block_prices(b) != BLOCK_INTACT:
                    return self._fault
        self._compute_snapshot(snap)
        snap.crc = snapshot_crc(snap)
        self.h.crc = header_crc(self.h)
        return BLOCK_INTACT

    cdef int _synced_or_rolled_back(self, int result, uint64_t g, bint published) except -1:
        """After a sync in sync mode: if it failed, the batch is undone (unpublished if it was
        published, its deques rebuilt for generation g) and the error raised, so that a retry
        stores it exactly once. A reader may have seen it meanwhile; it was never acknowledged."""
        cdef int failed = sync_result(result)
        if failed == 0:
            return 0
        if published:
            ts_store_release(&self.file.generation, g)
        self._recover_if_torn()
        raise sync_failure(failed, self.path)

    cdef int _own_description(self) except -1:
        """Before taking the writers' lock: a process forked from the one that opened the file
        shares its open file description, and an OFD lock belongs to the description, so parent
        and child would both hold it at once and lose each other's batches. The first lock in a
        new process reopens the file (a description, and a lock, of its own) and replaces the
        thread lock (another thread may have held it at the fork)."""
        cdef int pid = getpid()
        if pid == self._owner_pid:
            return 0
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        os.close(self.fd)   # the parent's description lives on in the parent
        self.fd = fd
        self._thread_lock = threading.Lock()
        self._owner_pid = pid
        return 0

    cdef int _recover_if_torn(self) except -1:
        """Under the file lock: if a writer died mid-batch, check the committed state's header
        and prices against their checksums and rebuild its deques from the ring (its sums, its
        records and its window's ring slots were never touched). 1 if it did."""
        cdef SymbolFile* f = self.file
        cdef uint64_t g = f.generation
        cdef str problem
        self.h = &f.state[g & 1]
        if f.writing == g:
            return 0
        if self.h.crc != header_crc(self.h):
            raise StoreCorruptionError(
                self.path, "corrupt: the checksum of its committed header does not match")
        problem = prices_problem(f, self.h)
        if problem is not None:
            raise StoreCorruptionError(self.path, problem)
        rebuild_deques(self.h, self.ring, self.low_slots, self.high_slots)
        self.h.crc = header_crc(self.h)
        f.recoveries += 1
        f.writing = g
        return 1

    cdef int _reserve_disk(self, Py_ssize_t n) except -1:
        """Allocate disk blocks for the ring slots, deque slots and records the next n prices
        may touch."""
        cdef SymbolFile* f = self.file
        cdef int64_t needed = min(f.state[f.generation & 1].count + n, f.ring_size)
        cdef int64_t target, before = f.reserved, records_before, records_after
        cdef int code
        if needed <= before:
            return 0
        # Doubling, like an array's, but at most RESERVE_MAX_STEP at once: one call reserving
        # hundreds of megabytes would stall its batch for milliseconds.
        target = min(max((needed + RESERVE_STEP - 1) // RESERVE_STEP * RESERVE_STEP,
                         before + min(before, RESERVE_MAX_STEP)), f.ring_size)
        reserve(self.fd, f.ring_offset + before * <int64_t>sizeof(double),
                (target - before) * <int64_t>sizeof(double), self.path)
        records_before = (before + BLOCK_PRICES - 1) // BLOCK_PRICES
        records_after = min((target + BLOCK_PRICES - 1) // BLOCK_PRICES, f.blocks)
        reserve(self.fd, f.blocks_offset + records_before * <int64_t>sizeof(BlockRecord),
                (records_after - records_before) * <int64_t>sizeof(BlockRecord), self.path)
        before = min(before, f.capacity)
        for offset in (f.lows_offset, f.highs_offset):
            reserve(self.fd, offset + before * <int64_t>sizeof(uint32_t),
                    (min(target, f.capacity) - before) * <int64_t>sizeof(uint32_t), self.path)
        with nogil:   # a store into the header page (see _write_file_batch)
            code = prewrite_records(f, self.fd, records_before, records_after)
            if code == 0:
                f.reserved = target
        if code != 0:
            raise write_failure(code, self.path)
        return 0

    def _reserve_held(self):
        """(A sparse copy of a file: backup, a cluster's move) Disk blocks again for all its
        header says are reserved: the copy skipped blocks allocated but never written, and a
        store into one of them on a full disk would be a SIGBUS."""
        cdef SymbolFile* f = self.file
        cdef int64_t held = f.reserved, offset
        reserve(self.fd, f.ring_offset, held * <int64_t>sizeof(double), self.path)
        reserve(self.fd, f.blocks_offset, min((held + BLOCK_PRICES - 1) // BLOCK_PRICES, f.blocks)
                * <int64_t>sizeof(BlockRecord), self.path)
        for offset in (f.lows_offset, f.highs_offset):
            reserve(self.fd, offset, min(held, f.capacity) * <int64_t>sizeof(uint32_t), self.path)

    # -- loading: a new file from another file's prices (migration) -----------------------------

    cdef int _load(self, const double* ring, int64_t ring_size, int64_t count) except -1:
        """Fill this new, empty file with the window of a ring holding `count` prices (the last
        min(count, capacity) of them, from the start of their first block): the exact sums
        recomputed, the departed sums set from the window's own direct sums."""
        cdef SymbolHeader* h = self.h
        cdef int64_t kept = min(count, h.capacity), start = count - kept
        cdef int64_t p = start - start % BLOCK_PRICES, slot, run, i
        cdef double zeros[BLOCK_PRICES]
        cdef ExactSums direct
        memset(zeros, 0, sizeof(zeros))
        self._reserve_disk(min(count + BLOCK_PRICES, h.ring_size))
        h.count = p
        self._loading = True
        try:
            # Positions before the window in its first block: not in any window, zeros here.
            # Loading checks nothing: only a write can fail.
            if self._append(zeros, start - p) != BLOCK_INTACT:
                self.raise_fault()
            p = start
            while p < count:
                slot = p % ring_size
                run = min(count - p, ring_size - slot, <int64_t>CHUNK)
                check_prices(ring + slot, run, p)
                if self._append(ring + slot, run) != BLOCK_INTACT:
                    self.raise_fault()
                p += run
        finally:
            self._loading = False
        # departed[i] = everything loaded minus the window, summed directly (nested windows).
        ts_exact_clear(&direct)
        p = 0
        for i in range(h.max_k):
            if h.window[i] < BLOCK_PRICES:
                continue
            if h.count < h.window[i]:
                ts_exact_clear(&h.departed[i])
                continue
            add_positions(&direct, self.ring, h.ring_size, h.count - h.window[i], h.window[i] - p)
            p = h.window[i]
            ts_exact_rest(&h.departed[i], &h.settled, &h.open_block, &direct)
        if self._prepare_commit(0, h.count) != BLOCK_INTACT:
            self.raise_fault()
        return 0


def _open_symbol_file(path, bytes symbol, int max_k, int64_t max_batch, bint sync):
    """The SymbolStats kept in an existing symbol file, mapped shared; StoreFormatError if the
    file cannot be used (it is left as it is)."""
    cdef FileSymbolStats stats = FileSymbolStats(max_k, _mapped_later=True)
    cdef int fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    cdef int64_t size
    cdef SymbolFile* f
    cdef str problem
    try:
        size = os.fstat(fd).st_size
        if size < <int64_t>sizeof(SymbolFile):
            raise StoreFormatError(path, f"truncated: {size} bytes, shorter than its header")
        f = map_file(fd, size, path)
        # Under the writers' lock: the committed header and its checksum do not move meanwhile.
        lock_file(fd, True)
        try:
            problem = layout_problem(f, size, symbol, max_k, max_batch)
            deleted = problem is None and f.snapshot[f.generation & 1].flags & SNAPSHOT_DELETED
        finally:
            lock_file(fd, False)
        if problem is not None or deleted:
            munmap(f, size)
            if deleted:   # a kill between the delete's commit and its unlink (storage.py)
                raise SymbolDeletedError(path)
            raise StoreFormatError(path, problem)
    except BaseException:
        os.close(fd)
        raise
    advise_unwritten(f, f.snapshot[f.generation & 1].count)
    stats._attach(f, fd, path, sync)
    return stats


def _crc32c_without_gil(bytes data, uint32_t crc=0):
    """(tests) checksum.h's CRC32C of data, extending crc, or None where it cannot run."""
    if not CRC32C_WITHOUT_GIL:
        return None
    return ts_crc32c_extend(crc, <const char*>data, len(data))


def symbol_file_deleted(path):
    """Whether a symbol file's published snapshot says its symbol was deleted (a kill left it
    between the delete's commit and its unlink), read without mapping it: the words that say
    so, not the whole 20 KB header (listings ask this of every file). False for a file that
    cannot say (too short, another version, a checksum off): opening it tells why."""
    cdef SymbolFile head   # only the fields read below are filled in
    cdef Snapshot published
    cdef char* base = <char*>&head
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        version = os.pread(fd, sizeof(uint32_t), <char*>&head.version - base)
        generation = os.pread(fd, sizeof(uint64_t), <char*>&head.generation - base)
        if len(version) < <Py_ssize_t>sizeof(uint32_t) \
                or len(generation) < <Py_ssize_t>sizeof(uint64_t):
            return False
        memcpy(&head.version, <const char*>version, sizeof(uint32_t))
        memcpy(&head.generation, <const char*>generation, sizeof(uint64_t))
        if head.version != FORMAT_VERSION:
            return False
        data = os.pread(fd, sizeof(Snapshot), <char*>&head.snapshot[head.generation & 1] - base)
    finally:
        os.close(fd)
    if len(data) < <Py_ssize_t>sizeof(Snapshot):
        return False
    memcpy(&published, <const char*>data, sizeof(Snapshot))
    return bool(published.flags & SNAPSHOT_DELETED) and published.crc == snapshot_crc(&published)


def symbol_file_version(path):
    """The format version a symbol file says it has (0 if it is too short to say)."""
    with open(path, "rb") as file:
        head = file.read(12)
    return int.from_bytes(head[8:12], "little") if len(head) == 12 else 0


cdef str v1_problem(const V1SymbolFile* old, int64_t size, bytes symbol, int max_k):
    cdef int64_t capacity = 1
    cdef uint64_t g = old.generation
    cdef int i
    for i in range(max_k):
        capacity *= 10
    if memcmp(old.magic, b"TSTATSYM", 8) != 0 or old.version != 1:
        return "not a version 1 symbol file"
    if old.max_k != max_k or old.capacity != capacity:
        return f"created with max_k={old.max_k}, opened with max_k={max_k}"
    if (old.slack < 0 or old.ring_size != capacity + old.slack or old.ring_size > 1 << 32
            or old.ring_offset < <int64_t>sizeof(V1SymbolFile) or old.symbol_bytes > 256
            or old.ring_offset + old.ring_size * <int64_t>sizeof(double) > size):
        return "corrupt: its ring is outside the file"
    if old.symbol_bytes != len(symbol) or memcmp(old.symbol, <const char*>symbol, len(symbol)) != 0:
        return f"does not hold symbol {symbol!r}"
    if old.writing != g and old.writing != g + 1:
        return "corrupt: its commit words disagree"
    if old.state[g & 1].count < 0:
        return "corrupt: a negative count"
    return None


def _migrate_v1_file(old_path, int new_fd, new_path, bytes symbol, int max_k,
                     int64_t max_batch):
    """Write, into the new empty file behind new_fd, the version 2 file of the version 1 file at
    old_path: the same count, the same window of prices, the exact sums recomputed, the deques
    rebuilt. The old file is only read (StoreFormatError if it cannot be)."""
    cdef int fd = os.open(old_path, os.O_RDONLY | os.O_CLOEXEC)
    cdef int64_t size = os.fstat(fd).st_size
    cdef void* mapped
    cdef const V1SymbolFile* old
    cdef FileSymbolStats target
    cdef str problem
    try:
        if size < <int64_t>sizeof(V1SymbolFile):
            raise StoreFormatError(old_path, f"truncated: {size} bytes")
        mapped = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0)
        if mapped == MAP_FAILED:
            raise_map_failed(old_path)
    finally:
        os.close(fd)
    old = <const V1SymbolFile*>mapped
    try:
        problem = v1_problem(old, size, symbol, max_k)
        if problem is not None:
            raise StoreFormatError(old_path, problem)
        format_symbol_file(new_fd, symbol, max_k, max_batch, new_path)
        target = _open_symbol_file(new_path, symbol, max_k, max_batch, False)
        try:
            target._load(<const double*>(<const char*>mapped + old.ring_offset), old.ring_size,
                         old.state[old.generation & 1].count)
        except ValueError as error:
            raise StoreFormatError(old_path, str(error)) from None
        target.file.recoveries = old.recoveries
    finally:
        munmap(mapped, size)
    return target
