/* An /add_batch/ body read by simdjson (libsimdjson, a maintained SIMD JSON parser) straight into
 * a malloc'd array of doubles, with no Python object made and no Python API called, so the
 * caller may hold no GIL.
 *
 * Contract, relied on by batchparse.pyx and web/batch_body.py:
 * - TS_BATCH_OK: the body is one JSON object, nothing but whitespace around it (no byte-order
 *   mark), with each key at most once, "symbol" a string and "values" an array of numbers only.
 *   out->symbol/out->symbol_len is the unescaped UTF-8 symbol, valid until the parser's next
 *   parse; out->values (malloc'd, the caller frees it) holds out->count doubles: each number
 *   correctly rounded, an integer as the nearest double, as Python's float(int) makes it.
 * - TS_BATCH_DECLINED: anything else, including what simdjson refuses (invalid JSON or UTF-8,
 *   NaN, 1e400, integers beyond 64 bits, escaped lone surrogates, too deep) and objects of more
 *   than TS_BATCH_MAX_KEYS keys. The caller reads such a body the ordinary way, which names
 *   the problem; nothing here decides an error the client sees.
 * - TS_BATCH_NO_MEMORY: an allocation failed.
 */
#ifndef TRADESTATS_BATCHPARSE_H
#define TRADESTATS_BATCHPARSE_H

#include <cstdlib>
#include <cstring>
#include <new>
#include <string_view>

#include <simdjson.h>

enum { TS_BATCH_OK = 0, TS_BATCH_DECLINED = 1, TS_BATCH_NO_MEMORY = 2 };

/* Beyond this many keys the repeated-key check (quadratic) is not worth it: decline. */
enum { TS_BATCH_MAX_KEYS = 16 };

typedef struct ts_batch {
    const char *symbol;
    size_t symbol_len;
    double *values;
    size_t count;
} ts_batch;

typedef struct ts_batch_parser {
    simdjson::dom::parser parser;
} ts_batch_parser;

static inline ts_batch_parser *ts_batch_parser_new(void) noexcept {
    return new (std::nothrow) ts_batch_parser();
}

static inline void ts_batch_parser_free(ts_batch_parser *self) noexcept {
    delete self;
}

/* simdjson skips a UTF-8 byte-order mark, which the ordinary path refuses. */
static inline bool ts_batch_starts_with_object(const char *body, size_t len) noexcept {
    for (size_t i = 0; i < len; i++) {
        char c = body[i];
        if (c == '{') return true;
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return false;
    }
    return false;
}

static inline int ts_batch_read_values(simdjson::dom::array values, ts_batch *out) noexcept {
    size_t count = values.size();
    double *numbers = static_cast<double *>(std::malloc(count ? count * sizeof(double) : 1));
    if (numbers == nullptr) return TS_BATCH_NO_MEMORY;
    size_t i = 0;
    for (simdjson::dom::element value : values) {
        /* get_double takes int64 and uint64 too (converted to the nearest double); anything
         * else, nested arrays included, is the ordinary path's to read or refuse. */
        if (i == count || value.get_double().get(numbers[i])) {
            std::free(numbers);
            return TS_BATCH_DECLINED;
        }
        i++;
    }
    if (i != count) {
        std::free(numbers);
        return TS_BATCH_DECLINED;
    }
    out->values = numbers;
    out->count = count;
    return TS_BATCH_OK;
}

static inline int ts_parse_batch(ts_batch_parser *self, const char *body, size_t len,
                                 ts_batch *out) noexcept {
    out->symbol = nullptr;
    out->symbol_len = 0;
    out->values = nullptr;
    out->count = 0;
    if (!ts_batch_starts_with_object(body, len)) return TS_BATCH_DECLINED;
    try {
        simdjson::dom::object document;
        auto parsed = self->parser.parse(body, len, true);
        if (parsed.error() == simdjson::MEMALLOC) return TS_BATCH_NO_MEMORY;
        if (parsed.get_object().get(document)) return TS_BATCH_DECLINED;

        std::string_view keys[TS_BATCH_MAX_KEYS];
        size_t key_count = 0;
        std::string_view symbol;
        simdjson::dom::array values;
        bool have_symbol = false, have_values = false;
        for (simdjson::dom::key_value_pair field : document) {
            if (key_count == TS_BATCH_MAX_KEYS) return TS_BATCH_DECLINED;
            for (size_t i = 0; i < key_count; i++) {
                /* simdjson keeps the first of a repeated key, json and orjson the last. */
                if (keys[i] == field.key) return TS_BATCH_DECLINED;
            }
            keys[key_count++] = field.key;
            if (field.key == "symbol") {
                if (field.value.get_string().get(symbol)) return TS_BATCH_DECLINED;
                have_symbol = true;
            } else if (field.key == "values") {
                if (field.value.get_array().get(values)) return TS_BATCH_DECLINED;
                have_values = true;
            }
        }
        if (!have_symbol || !have_values) return TS_BATCH_DECLINED;
        int status = ts_batch_read_values(values, out);
        if (status != TS_BATCH_OK) return status;
        out->symbol = symbol.data();
        out->symbol_len = symbol.size();
        return TS_BATCH_OK;
    } catch (const std::bad_alloc &) {
        return TS_BATCH_NO_MEMORY;
    } catch (...) {
        return TS_BATCH_DECLINED;
    }
}

#endif
