/* CRC32C with the CPU's crc32 instruction (SSE4.2), callable without the GIL.
 *
 * The same CRC32C as the crc32c package (tests/test_store_corruption.py checks it bit for bit),
 * which symbolfile.pyx falls back to where the CPU has no such instruction. The writer's
 * checksums run here so that a batch is appended and committed with the GIL released.
 */
#ifndef TRADESTATS_CHECKSUM_H
#define TRADESTATS_CHECKSUM_H

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
/* The CRC32C of what `crc` covered followed by data[:n] (the crc32c package's crc32c(data,
 * crc)), with the SSE4.2 instruction. */
__attribute__((target("sse4.2")))
static uint32_t ts_crc32c_extend_sse42(uint32_t crc, const void *data, size_t n) {
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

static int ts_crc32c_in_hardware(void) { return __builtin_cpu_supports("sse4.2"); }
#else
static uint32_t ts_crc32c_extend_sse42(uint32_t crc, const void *data, size_t n) {
    (void)data; (void)n; return crc;
}
static int ts_crc32c_in_hardware(void) { return 0; }
#endif

static inline uint32_t ts_crc32c_sse42(const void *data, size_t n) {
    return ts_crc32c_extend_sse42(0, data, n);
}

#endif
