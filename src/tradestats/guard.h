/* A reader's copy of a published snapshot, without a system call and without dying on a file
 * truncated from outside.
 *
 * A page of a shared mapping past the end of its (truncated) file raises SIGBUS on access. A
 * writer checks the file's size (fstat) before each batch; a reader copying a few hundred bytes
 * cannot afford that system call on every read (it costs more than the read), so its copy runs
 * under a SIGBUS handler instead: the handler jumps back out of the copy (pure C: no lock, no
 * Python frame in between) and the copy reports the fault. A SIGBUS anywhere else is not ours:
 * the previous action is restored and the access faults again into it (the default: death).
 *
 * ts_guarded_crc32c is checksum.h's CRC32C under the same guard.
 */
#ifndef TRADESTATS_GUARD_H
#define TRADESTATS_GUARD_H

#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include "checksum.h"

/* volatile, and fenced by compiler barriers where it is set and cleared: the copies in between
 * are plain loads the compiler could otherwise move out of the guarded stretch (or drop the
 * store that arms it as dead). */
static __thread jmp_buf *volatile ts_guard_target;
#define TS_BARRIER() __asm__ __volatile__("" ::: "memory")
/* Between TS_ARM(target) and TS_DISARM() a SIGBUS jumps to `target` (whose setjmp, in the
 * guarded function's own frame, then returns 1). */
#define TS_ARM(target) do { ts_guard_target = &(target); TS_BARRIER(); } while (0)
#define TS_DISARM() do { TS_BARRIER(); ts_guard_target = NULL; } while (0)
static struct sigaction ts_previous_bus;
static volatile sig_atomic_t ts_guard_ready;

static void ts_bus_handler(int signal_number, siginfo_t *info, void *context) {
    jmp_buf *target = ts_guard_target;
    (void)signal_number; (void)info; (void)context;
    if (target) {
        ts_guard_target = NULL;
        longjmp(*target, 1);
    }
    sigaction(SIGBUS, &ts_previous_bus, NULL);   /* not ours: fault again, into the old action */
    ts_guard_ready = 0;
}

/* Install the handler (once per process; again if someone replaced it). 0, or -1 (errno). */
static int ts_guard_install(void) {
    struct sigaction action, current;
    if (ts_guard_ready && sigaction(SIGBUS, NULL, &current) == 0
            && current.sa_sigaction == ts_bus_handler)
        return 0;
    memset(&action, 0, sizeof(action));
    action.sa_sigaction = ts_bus_handler;
    /* SA_NODEFER: SIGBUS stays unblocked after the jump out of the handler, so a plain setjmp
     * (no signal mask saved, no system call) is enough. */
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGBUS, &action, &ts_previous_bus) != 0)
        return -1;
    ts_guard_ready = 1;
    return 0;
}

/* Copy the snapshot published at *generation (slot generation & 1 of `slots`, each `size`
 * bytes apart) into out, retrying while a commit overlaps: 1 copied, 0 commits kept
 * overlapping for `tries` attempts, -1 the mapping faulted (the file was truncated). */
static int ts_guarded_snapshot(const uint64_t *generation, const char *slots, size_t size,
                               void *out, int tries) {
    jmp_buf target;
    volatile int attempt = 0;
    if (setjmp(target)) {
        return -1;
    }
    TS_ARM(target);
    for (; attempt < tries; attempt++) {
        uint64_t g = __atomic_load_n(generation, __ATOMIC_ACQUIRE);
        memcpy(out, slots + (g & 1) * size, size);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(generation, __ATOMIC_RELAXED) == g) {
            TS_DISARM();
            return 1;
        }
    }
    TS_DISARM();
    return 0;
}

/* memcpy under the guard: 0, or -1 if the source faulted (its file was truncated). */
static int ts_guarded_copy(void *out, const void *source, size_t n) {
    jmp_buf target;
    if (setjmp(target)) {
        return -1;
    }
    TS_ARM(target);
    memcpy(out, source, n);
    TS_DISARM();
    return 0;
}

/* ts_crc32c_extend under the guard: 0, or -1 if data faulted. */
static int ts_guarded_crc32c(uint32_t *crc, const void *data, size_t n) {
    jmp_buf target;
    if (setjmp(target)) {
        return -1;
    }
    TS_ARM(target);
    *crc = ts_crc32c_extend(*crc, data, n);
    TS_DISARM();
    return 0;
}

#endif
