/* Exact sums of prices and of their squares; the correctly rounded mean and variance.
 *
 * Every finite double is an integer multiple of 2**-1074, and its square of 2**-2148. A price
 * x = m * 2**(e - 1075) (m the 53-bit significand with its hidden bit, e the biased exponent, a
 * subnormal read with e = 1 and no hidden bit) is therefore the integer m << (e - 1) in units of
 * 2**-1074, and x*x the integer (m*m) << 2(e - 1) in units of 2**-2148. A ts_exact holds the sums
 * of such integers exactly, in fixed-width little-endian uint64 limbs: positive and negative
 * prices apart (so no limb ever borrows) and the squares. Nothing is rounded until a window's
 * mean or variance is read, and then exactly once: the answers are the correctly rounded values
 * of the exact ones, whatever the prices and however they were batched.
 *
 * Limits, for |x| <= 1e100 < 2**333 (tradestats' price domain) and at most 2**63 prices:
 *   sum of |x|   < 2**(333 + 1074 + 63) = 2**1470   -> TS_LINEAR_LIMBS  = 24 (1,536 bits)
 *   sum of x*x   < 2**(666 + 2148 + 63) = 2**2877   -> TS_SQUARE_LIMBS  = 46 (2,944 bits)
 * (a few limbs spare, so a run register never writes past the last limb).
 *
 * Adding prices: consecutive prices almost always share an exponent, so they are summed in two
 * registers (128-bit) relative to the run's base exponent, and a register is added into the limbs
 * only when the exponent moves by more than 3 binades or after 4,096 prices. The significand
 * shifted by the distance to the base stays below 2**56, so 4,096 of them sum below 2**68 and
 * their squares below 2**124: no register overflows.
 *
 * Reading: a window's sums are combined into (|S1|, sign, S2); the mean is S1 / n and the
 * variance (n*S2 - S1**2) / n**2, both divided with their top 128 bits and a sticky bit for the
 * rest, which is enough to round once, correctly, to nearest-even (subnormal results included).
 */
#ifndef TRADESTATS_EXACT_H
#define TRADESTATS_EXACT_H

#include <stdint.h>
#include <string.h>
#include <math.h>

#define TS_LINEAR_LIMBS 24
#define TS_SQUARE_LIMBS 46
#define TS_RUN_LIMIT 4096
/* The largest biased exponent of a price (1e100 has 1355). A value read from a damaged file may
 * have any bits: its exponent is clamped so that it can only give a wrong sum, never a write
 * past the limbs. */
#define TS_MAX_EXPONENT 1356

typedef unsigned __int128 ts_u128;
typedef __int128 ts_i128;

typedef struct {
    uint64_t positive[TS_LINEAR_LIMBS];   /* sum of the prices > 0, units 2**-1074 */
    uint64_t negative[TS_LINEAR_LIMBS];   /* sum of |x| of the prices < 0 */
    uint64_t squares[TS_SQUARE_LIMBS];    /* sum of x*x, units 2**-2148 */
} ts_exact;

/* One window's exact sums, ready to divide: |S1| with its sign, and S2. */
typedef struct {
    uint64_t s1[TS_LINEAR_LIMBS];
    int s1_negative;
    uint64_t s2[TS_SQUARE_LIMBS];
} ts_window;

static inline void ts_exact_clear(ts_exact *acc) { memset(acc, 0, sizeof(*acc)); }

/* limbs += value << bit (value < 2**128, bit + 128 within the limbs). */
static inline void ts_limbs_add_at(uint64_t *limbs, int count, ts_u128 value, int bit) {
    int i = bit >> 6, shift = bit & 63, j;
    uint64_t low = (uint64_t)value, mid = (uint64_t)(value >> 64), high = 0, carry;
    ts_u128 t;
    if (shift) {
        high = mid >> (64 - shift);
        mid = (mid << shift) | (low >> (64 - shift));
        low <<= shift;
    }
    t = (ts_u128)limbs[i] + low;
    limbs[i] = (uint64_t)t;
    t = (ts_u128)limbs[i + 1] + mid + (uint64_t)(t >> 64);
    limbs[i + 1] = (uint64_t)t;
    t = (ts_u128)limbs[i + 2] + high + (uint64_t)(t >> 64);
    limbs[i + 2] = (uint64_t)t;
    carry = (uint64_t)(t >> 64);
    for (j = i + 3; carry && j < count; j++) {
        limbs[j] += 1;
        carry = limbs[j] == 0;
    }
}

static inline void ts_flush_run(ts_exact *acc, int base, ts_i128 linear, ts_u128 squares) {
    if (linear > 0)
        ts_limbs_add_at(acc->positive, TS_LINEAR_LIMBS, (ts_u128)linear, base - 1);
    else if (linear < 0)
        ts_limbs_add_at(acc->negative, TS_LINEAR_LIMBS, (ts_u128)(-linear), base - 1);
    if (squares)
        ts_limbs_add_at(acc->squares, TS_SQUARE_LIMBS, squares, 2 * (base - 1));
}

/* acc += the prices xs[0..n) and their squares, exactly. */
static inline void ts_exact_add(ts_exact *acc, const double *xs, int64_t n) {
    int64_t done = 0, j, end;
    while (done < n) {
        int base = -1000;
        ts_i128 linear = 0;
        ts_u128 squares = 0;
        end = n - done < TS_RUN_LIMIT ? n : done + TS_RUN_LIMIT;
        for (j = done; j < end; j++) {
            uint64_t bits, m, shifted;
            int64_t sign;
            int e;
            unsigned distance;
            memcpy(&bits, &xs[j], sizeof(bits));
            e = (int)((bits >> 52) & 0x7ff);
            m = bits & ((UINT64_C(1) << 52) - 1);
            if (e)
                m |= UINT64_C(1) << 52;
            else
                e = 1;
            if (__builtin_expect(e > TS_MAX_EXPONENT, 0))
                e = TS_MAX_EXPONENT;
            distance = (unsigned)(e - base);
            if (__builtin_expect(distance > 3, 0)) {
                if (base > 0)
                    ts_flush_run(acc, base, linear, squares);
                linear = 0;
                squares = 0;
                base = e > 1 ? e - 1 : 1;
                distance = (unsigned)(e - base);
            }
            shifted = m << distance;
            sign = (int64_t)bits >> 63;
            linear += (int64_t)((shifted ^ (uint64_t)sign) - (uint64_t)sign);
            squares += (ts_u128)shifted * shifted;
        }
        if (base > 0)
            ts_flush_run(acc, base, linear, squares);
        done = end;
    }
}

static inline void ts_limbs_add(uint64_t *acc, const uint64_t *other, int count) {
    uint64_t carry = 0;
    int i;
    for (i = 0; i < count; i++) {
        ts_u128 t = (ts_u128)acc[i] + other[i] + carry;
        acc[i] = (uint64_t)t;
        carry = (uint64_t)(t >> 64);
    }
}

/* a - b over count limbs, two's complement; returns the borrow out. */
static inline uint64_t ts_limbs_sub(uint64_t *a, const uint64_t *b, int count) {
    uint64_t borrow = 0;
    int i;
    for (i = 0; i < count; i++) {
        uint64_t x = a[i], y = b[i];
        uint64_t d = x - y - borrow;
        borrow = (x < y) || (x == y && borrow);
        a[i] = d;
    }
    return borrow;
}

/* acc += other. */
static inline void ts_exact_merge(ts_exact *acc, const ts_exact *other) {
    ts_limbs_add(acc->positive, other->positive, TS_LINEAR_LIMBS);
    ts_limbs_add(acc->negative, other->negative, TS_LINEAR_LIMBS);
    ts_limbs_add(acc->squares, other->squares, TS_SQUARE_LIMBS);
}

/* out = a + b - c, each of the three numbers apart; c sums a subset of the prices of a and b. */
static inline void ts_exact_rest(ts_exact *out, const ts_exact *a, const ts_exact *b,
                                 const ts_exact *c) {
    *out = *a;
    ts_exact_merge(out, b);
    ts_limbs_sub(out->positive, c->positive, TS_LINEAR_LIMBS);
    ts_limbs_sub(out->negative, c->negative, TS_LINEAR_LIMBS);
    ts_limbs_sub(out->squares, c->squares, TS_SQUARE_LIMBS);
}

/* The window (a + b) - c: b and c may be NULL. c must be a sum of a subset of a + b's prices. */
static inline void ts_window_of(ts_window *w, const ts_exact *a, const ts_exact *b,
                                const ts_exact *c) {
    uint64_t minus[TS_LINEAR_LIMBS];
    int i;
    memcpy(w->s1, a->positive, sizeof(w->s1));
    memcpy(minus, a->negative, sizeof(minus));
    memcpy(w->s2, a->squares, sizeof(w->s2));
    if (b) {
        ts_limbs_add(w->s1, b->positive, TS_LINEAR_LIMBS);
        ts_limbs_add(minus, b->negative, TS_LINEAR_LIMBS);
        ts_limbs_add(w->s2, b->squares, TS_SQUARE_LIMBS);
    }
    if (c) {
        ts_limbs_add(w->s1, c->negative, TS_LINEAR_LIMBS);
        ts_limbs_add(minus, c->positive, TS_LINEAR_LIMBS);
        ts_limbs_sub(w->s2, c->squares, TS_SQUARE_LIMBS);
    }
    w->s1_negative = (int)ts_limbs_sub(w->s1, minus, TS_LINEAR_LIMBS);
    if (w->s1_negative) {           /* two's complement back to a magnitude */
        uint64_t carry = 1;
        for (i = 0; i < TS_LINEAR_LIMBS; i++) {
            w->s1[i] = ~w->s1[i] + carry;
            carry = carry && w->s1[i] == 0;
        }
    }
}

static inline int ts_top_limb(const uint64_t *limbs, int count) {
    int i;
    for (i = count - 1; i >= 0; i--)
        if (limbs[i])
            return i;
    return -1;
}

static inline int ts_bottom_limb(const uint64_t *limbs, int count) {
    int i;
    for (i = 0; i < count; i++)
        if (limbs[i])
            return i;
    return count;
}

/* The top 128 bits of a nonzero number (shifted up if it has fewer), the power of two they
 * stand for (value = top * 2**shift + rest) and whether the rest is nonzero. */
static inline ts_u128 ts_top_bits(const uint64_t *limbs, int count, int *shift, int *sticky) {
    int top = ts_top_limb(limbs, count), bits, i;
    int length = 64 * top + (64 - __builtin_clzll(limbs[top]));
    int low_bit = length - 128;       /* bit index of the top's lowest bit */
    ts_u128 result = 0;
    *sticky = 0;
    *shift = low_bit;
    if (low_bit <= 0) {
        for (i = top; i >= 0; i--)
            result = (result << 64) | limbs[i];   /* fits: length <= 128 */
        return result << (-low_bit);
    }
    for (i = 0; i < (low_bit >> 6); i++)
        if (limbs[i]) {
            *sticky = 1;
            break;
        }
    bits = low_bit & 63;
    {
        int k = low_bit >> 6;
        uint64_t l0 = limbs[k], l1 = k + 1 < count ? limbs[k + 1] : 0,
                 l2 = k + 2 < count ? limbs[k + 2] : 0;
        if (bits) {
            if (l0 << (64 - bits))
                *sticky = 1;
            result = ((ts_u128)((l2 << (64 - bits)) | (l1 >> bits)) << 64)
                     | ((l1 << (64 - bits)) | (l0 >> bits));
        } else {
            result = ((ts_u128)l1 << 64) | l0;
        }
    }
    return result;
}

/* (q + f) * 2**scale rounded to the nearest double, ties to even, where 0 <= f < 1 and f > 0
 * exactly when sticky; q >= 2**55. */
static inline double ts_round(ts_u128 q, int sticky, int scale) {
    int length = 0, exponent, precision, drop;
    ts_u128 kept, rest, half;
    uint64_t hi = (uint64_t)(q >> 64);
    length = hi ? 128 - __builtin_clzll(hi) : 64 - __builtin_clzll((uint64_t)q);
    exponent = length - 1 + scale;
    if (exponent > 1023)
        return HUGE_VAL;
    precision = exponent >= -1022 ? 53 : exponent + 1075;
    if (precision <= 0) {
        if (precision < 0)
            return 0.0;
        /* in [2**-1075, 2**-1074): exactly half the smallest subnormal rounds to even (0) */
        if (!sticky && q == ((ts_u128)1 << (length - 1)))
            return 0.0;
        return ldexp(1.0, -1074);
    }
    drop = length - precision;
    kept = q >> drop;
    rest = q & (((ts_u128)1 << drop) - 1);
    half = (ts_u128)1 << (drop - 1);
    if (rest > half || (rest == half && (sticky || (kept & 1))))
        kept += 1;
    return ldexp((double)(uint64_t)kept, scale + drop);
}

/* The correctly rounded mean S1 / n. */
static inline double ts_mean(const ts_window *w, int64_t n) {
    int shift, sticky;
    ts_u128 top, q;
    double mean;
    if (ts_top_limb(w->s1, TS_LINEAR_LIMBS) < 0)
        return 0.0;
    top = ts_top_bits(w->s1, TS_LINEAR_LIMBS, &shift, &sticky);
    q = top / (uint64_t)n;
    sticky = sticky || (top % (uint64_t)n) != 0;
    mean = ts_round(q, sticky, shift - 1074);
    return w->s1_negative ? -mean : mean;
}

/* The correctly rounded population variance (n*S2 - S1**2) / n**2: never negative, exactly 0.0
 * when every price of the window is equal. */
static inline double ts_variance(const ts_window *w, int64_t n) {
    /* n*S2 and S1**2 are below 2**2904: 47 limbs; one spare for the carries. */
    uint64_t d[TS_SQUARE_LIMBS + 2], square[TS_SQUARE_LIMBS + 2];
    const int count = TS_SQUARE_LIMBS + 2;
    int lo = ts_bottom_limb(w->s1, TS_LINEAR_LIMBS), hi = ts_top_limb(w->s1, TS_LINEAR_LIMBS);
    int i, j, shift, sticky;
    uint64_t carry, divisor = (uint64_t)n * (uint64_t)n;
    ts_u128 top, q;
    memset(d, 0, sizeof(d));
    memset(square, 0, sizeof(square));
    carry = 0;
    for (i = 0; i < TS_SQUARE_LIMBS; i++) {             /* d = n * S2 */
        ts_u128 t = (ts_u128)w->s2[i] * (uint64_t)n + carry;
        d[i] = (uint64_t)t;
        carry = (uint64_t)(t >> 64);
    }
    d[TS_SQUARE_LIMBS] = carry;
    for (i = lo; i <= hi; i++) {                        /* square = S1 * S1 */
        carry = 0;
        for (j = lo; j <= hi; j++) {
            ts_u128 t = (ts_u128)w->s1[i] * w->s1[j] + square[i + j] + carry;
            square[i + j] = (uint64_t)t;
            carry = (uint64_t)(t >> 64);
        }
        for (j = i + hi + 1; carry && j < count; j++) {
            ts_u128 t = (ts_u128)square[j] + carry;
            square[j] = (uint64_t)t;
            carry = (uint64_t)(t >> 64);
        }
    }
    ts_limbs_sub(d, square, count);                     /* >= 0: Cauchy-Schwarz */
    if (ts_top_limb(d, count) < 0)
        return 0.0;
    top = ts_top_bits(d, count, &shift, &sticky);
    q = top / divisor;
    sticky = sticky || (top % divisor) != 0;
    return ts_round(q, sticky, shift - 2148);
}

#endif
