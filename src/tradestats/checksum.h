/* CRC32C callable without the GIL: the writer's checksums and the reader's checks of a file.
 *
 * Where tradestats was built with Intel's ISA-L (setup.py defines TS_HAVE_ISAL where it finds
 * isa-l/crc.h: Debian's libisal-dev), its crc32_iscsi, which picks the CPU's fastest method when
 * first called (carry-less multiplication folding 16 streams at once). Otherwise the SSE4.2
 * crc32 instruction, one 8-byte word at a time: one dependent chain, several times slower
 * (README, "Dependencies"). Without either, symbolfile.pyx falls back to the crc32c package,
 * which needs the GIL. All are the same CRC32C: tests/test_store_corruption.py checks them
 * against the crc32c package bit for bit.
 */
#ifndef TRADESTATS_CHECKSUM_H
#define TRADESTATS_CHECKSUM_H

#include <stdint.h>
#include <string.h>

#if defined(TS_HAVE_ISAL)
#include <isa-l/crc.h>

#define TS_CRC32C_IMPLEMENTATION "isa-l"
/* crc32_iscsi takes an int length: longer data goes in pieces of this many bytes. */
#define TS_ISAL_PIECE (1 << 30)

/* The CRC32C of what `crc` covered followed by data[:n] (the crc32c package's crc32c(data,
 * crc)). crc32_iscsi works on the register without the final inversion, hence the flips. */
static uint32_t ts_crc32c_extend(uint32_t crc, const void *data, size_t n) {
    unsigned char *p = (unsigned char *)data;
    uint32_t state = crc ^ 0xFFFFFFFFu;
    while (n > 0) {
        int piece = n > TS_ISAL_PIECE ? TS_ISAL_PIECE : (int)n;
        state = crc32_iscsi(p, piece, state);
        p += piece;
        n -= (size_t)piece;
    }
    return state ^ 0xFFFFFFFFu;
}

static int ts_crc32c_without_gil(void) { return 1; }

#elif defined(__x86_64__)
#define TS_CRC32C_IMPLEMENTATION "sse4.2"

__attribute__((target("sse4.2")))
static uint32_t ts_crc32c_extend(uint32_t crc, const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    uint64_t state = crc ^ 0xFFFFFFFFu;
    uint64_t word;
    while (n >= 8) {
        memcpy(&word, p, 8);
        state = __builtin_ia32_crc32di(state, word);
        p += 8;
        n -= 8;
    }
    while (n--)
        state = __builtin_ia32_crc32qi((uint32_t)state, *p++);
    return (uint32_t)state ^ 0xFFFFFFFFu;
}

static int ts_crc32c_without_gil(void) { return __builtin_cpu_supports("sse4.2"); }

#else
#define TS_CRC32C_IMPLEMENTATION "sse4.2"   /* never used: ts_crc32c_without_gil() is 0 */
static uint32_t ts_crc32c_extend(uint32_t crc, const void *data, size_t n) {
    (void)data; (void)n; return crc;
}
static int ts_crc32c_without_gil(void) { return 0; }
#endif

static inline uint32_t ts_crc32c(const void *data, size_t n) {
    return ts_crc32c_extend(0, data, n);
}

#endif
