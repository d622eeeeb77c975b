/*
 * fse_core.c -- FSE (tANS) coder for bytes, byte-identical to the reference
 * FSE library's one-shot FSE_compress()/FSE_decompress().
 *
 * Written from /work/shared/reference/fse/FORMAT.md (section numbers "§n"
 * below) and RFC 8878 §4.1.  See fse_core.h for the API contract.
 *
 * Layout of the implementation:
 *   - bit helpers and a little-endian 64-bit load/store;
 *   - histogram (four counting tables, so that runs of one byte value do not
 *     serialize on one counter);
 *   - table-log choice (§3) and normalization (§4.1, fallback §4.2);
 *   - header writer/reader (§5);
 *   - symbol spreading (§6), encoder transform table, decoder table;
 *   - encoder (§7): two states, 64-bit bit container flushed every four
 *     symbols (4 * 12 bits + 7 leftover bits < 64);
 *   - decoder (§8): a fast loop that only runs while at least 57 real bits
 *     are in the container and 4 output bytes are free, and an exact tail
 *     that implements the end-of-stream and capacity rules bit by bit.
 */
#include "fse_core.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__)
#define L3_LIKELY(x) __builtin_expect(!!(x), 1)
#define L3_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define L3_INLINE static inline __attribute__((always_inline))
#else
#define L3_LIKELY(x) (x)
#define L3_UNLIKELY(x) (x)
#define L3_INLINE static inline
#endif

#define TABLE_MAX (1u << L3FSE_MAX_TABLELOG)
#define ERR(name) L3FSE_ERROR(L3FSE_ERR_##name)

/* ------------------------------------------------------------------ */
/* Errors                                                               */
/* ------------------------------------------------------------------ */

int l3fse_is_error(size_t r) { return r > L3FSE_ERROR(L3FSE_ERR_MAX_CODE); }

l3fse_error_t l3fse_error_code(size_t r)
{
    if (!l3fse_is_error(r)) return L3FSE_OK;
    return (l3fse_error_t)(0 - r);
}

const char *l3fse_error_name(size_t r)
{
    switch (l3fse_error_code(r)) {
    case L3FSE_OK: return "no_error";
    case L3FSE_ERR_GENERIC: return "GENERIC";
    case L3FSE_ERR_DST_SIZE_TOO_SMALL: return "dstSize_tooSmall";
    case L3FSE_ERR_SRC_SIZE_WRONG: return "srcSize_wrong";
    case L3FSE_ERR_CORRUPTION_DETECTED: return "corruption_detected";
    case L3FSE_ERR_TABLELOG_TOO_LARGE: return "tableLog_tooLarge";
    case L3FSE_ERR_MAXSYMBOLVALUE_TOO_LARGE: return "maxSymbolValue_tooLarge";
    case L3FSE_ERR_MAXSYMBOLVALUE_TOO_SMALL: return "maxSymbolValue_tooSmall";
    default: return "unknown";
    }
}

const char *l3fse_error_message(size_t r)
{
    switch (l3fse_error_code(r)) {
    case L3FSE_OK: return "No error detected";
    case L3FSE_ERR_GENERIC: return "Error (generic)";
    case L3FSE_ERR_DST_SIZE_TOO_SMALL: return "Destination buffer is too small";
    case L3FSE_ERR_SRC_SIZE_WRONG: return "Src size is incorrect";
    case L3FSE_ERR_CORRUPTION_DETECTED: return "Corrupted block detected";
    case L3FSE_ERR_TABLELOG_TOO_LARGE:
        return "tableLog requires too much memory : unsupported";
    case L3FSE_ERR_MAXSYMBOLVALUE_TOO_LARGE:
        return "Unsupported max Symbol Value : too large";
    case L3FSE_ERR_MAXSYMBOLVALUE_TOO_SMALL:
        return "Specified maxSymbolValue is too small";
    default: return "Unspecified error code";
    }
}

/* ------------------------------------------------------------------ */
/* Bit helpers                                                          */
/* ------------------------------------------------------------------ */

/* hb(x) = floor(log2 x); REQUIRES x > 0. */
L3_INLINE unsigned hb32(uint32_t x)
{
#if defined(__GNUC__)
    return 31u - (unsigned)__builtin_clz(x);
#else
    unsigned r = 0;
    while (x >>= 1) r++;
    return r;
#endif
}

static int is_little_endian(void)
{
    const union { uint32_t u; uint8_t c[4]; } one = {1};
    return one.c[0];
}

L3_INLINE uint64_t bswap64(uint64_t x)
{
#if defined(__GNUC__)
    return __builtin_bswap64(x);
#else
    x = ((x & 0x00000000FFFFFFFFull) << 32) | (x >> 32);
    x = ((x & 0x0000FFFF0000FFFFull) << 16) | ((x >> 16) & 0x0000FFFF0000FFFFull);
    x = ((x & 0x00FF00FF00FF00FFull) << 8) | ((x >> 8) & 0x00FF00FF00FF00FFull);
    return x;
#endif
}

L3_INLINE uint64_t load_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return is_little_endian() ? v : bswap64(v);
}

L3_INLINE void store_le64(uint8_t *p, uint64_t v)
{
    if (!is_little_endian()) v = bswap64(v);
    memcpy(p, &v, 8);
}

L3_INLINE uint32_t load_le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    if (!is_little_endian())
        v = (v >> 24) | ((v >> 8) & 0xFF00u) | ((v << 8) & 0xFF0000u) | (v << 24);
    return v;
}

/* ------------------------------------------------------------------ */
/* Histogram                                                            */
/* ------------------------------------------------------------------ */

/* count[0..255] = occurrences of each byte value in src[0..n). */
static void histogram(uint32_t count[256], const uint8_t *src, size_t n)
{
    uint32_t c[4][256];
    size_t i = 0;
    memset(c, 0, sizeof(c));
    for (; i + 16 <= n; i += 16) {
        uint32_t w0 = load_le32(src + i), w1 = load_le32(src + i + 4);
        uint32_t w2 = load_le32(src + i + 8), w3 = load_le32(src + i + 12);
        c[0][w0 & 0xFF]++; c[1][(w0 >> 8) & 0xFF]++;
        c[2][(w0 >> 16) & 0xFF]++; c[3][w0 >> 24]++;
        c[0][w1 & 0xFF]++; c[1][(w1 >> 8) & 0xFF]++;
        c[2][(w1 >> 16) & 0xFF]++; c[3][w1 >> 24]++;
        c[0][w2 & 0xFF]++; c[1][(w2 >> 8) & 0xFF]++;
        c[2][(w2 >> 16) & 0xFF]++; c[3][w2 >> 24]++;
        c[0][w3 & 0xFF]++; c[1][(w3 >> 8) & 0xFF]++;
        c[2][(w3 >> 16) & 0xFF]++; c[3][w3 >> 24]++;
    }
    for (; i < n; i++) c[0][src[i]]++;
    for (i = 0; i < 256; i++) count[i] = c[0][i] + c[1][i] + c[2][i] + c[3][i];
}

/* ------------------------------------------------------------------ */
/* §3 table log, §4 normalization                                       */
/* ------------------------------------------------------------------ */

/* REQUIRES 2 <= n <= L3FSE_MAX_SRC_SIZE, 1 <= M <= 255. */
static unsigned optimal_table_log(size_t n, unsigned M, int legacy)
{
    /* unsigned 32-bit arithmetic: wraps to "no limit" for n <= 4 */
    uint32_t max_bits_src = hb32((uint32_t)(n - 1)) - 2u;
    uint32_t min_bits_src = legacy ? hb32((uint32_t)(n - 1)) + 1u : hb32((uint32_t)n) + 1u;
    uint32_t min_bits_sym = hb32(M) + 2u;
    uint32_t min_bits = min_bits_src < min_bits_sym ? min_bits_src : min_bits_sym;
    uint32_t L = L3FSE_DEFAULT_TABLELOG;
    if (max_bits_src < L) L = max_bits_src;
    if (min_bits > L) L = min_bits;
    if (L < L3FSE_MIN_TABLELOG) L = L3FSE_MIN_TABLELOG;
    if (L > L3FSE_MAX_TABLELOG) L = L3FSE_MAX_TABLELOG;
    return L;
}

#define NORM_UNASSIGNED (-2)

/* §4.2: the fallback method. */
static size_t normalize_fallback(short *norm, unsigned L, const uint32_t *count,
                                 uint64_t n, unsigned M, int legacy)
{
    const uint32_t T = 1u << L;
    uint32_t distributed = 0, D;
    uint64_t rem = n;
    const uint64_t low_threshold = n >> L;
    uint64_t low_one = (n * 3) >> (L + 1);
    unsigned s;

    for (s = 0; s <= M; s++) {
        uint64_t c = count[s];
        if (c == 0) {
            norm[s] = 0;
        } else if (c <= low_threshold) {
            norm[s] = -1; distributed++; rem -= c;
        } else if (c <= low_one) {
            norm[s] = 1; distributed++; rem -= c;
        } else {
            norm[s] = NORM_UNASSIGNED;
        }
    }
    D = T - distributed;
    if (D == 0) {
        /* The current reference stops here.  The pyfse-bundled copy divides
         * by D next; that cannot happen for inputs compress() accepts (it
         * needs T symbols of count 1, which is rejected as "all distinct"),
         * so the legacy mode reports GENERIC instead of dividing by zero. */
        return legacy ? ERR(GENERIC) : 0;
    }
    if (rem / D > low_one) {
        low_one = (rem * 3) / ((uint64_t)D * 2);
        for (s = 0; s <= M; s++) {
            if (norm[s] == NORM_UNASSIGNED && count[s] <= low_one) {
                norm[s] = 1; distributed++; rem -= count[s];
            }
        }
        D = T - distributed;
    }
    if (distributed == M + 1) {
        unsigned max_v = 0;
        uint32_t max_c = 0;
        for (s = 0; s <= M; s++)
            if (count[s] > max_c) { max_c = count[s]; max_v = s; }
        norm[max_v] = (short)(norm[max_v] + (short)D);
        return 0;
    }
    if (rem == 0) {
        /* round robin over the symbols that already have a positive norm */
        int any = 0;
        for (s = 0; s <= M; s++) any |= norm[s] > 0;
        if (D > 0 && !any) return ERR(GENERIC); /* would never terminate */
        for (s = 0; D > 0; s = (s + 1) % (M + 1))
            if (norm[s] > 0) { D--; norm[s]++; }
        return 0;
    }
    {
        const unsigned v = 62 - L;
        const uint64_t mid = (1ull << (v - 1)) - 1;
        const uint64_t r_step = (((uint64_t)D << v) + mid) / rem;
        uint64_t acc = mid;
        for (s = 0; s <= M; s++) {
            if (norm[s] == NORM_UNASSIGNED) {
                uint64_t end = acc + (uint64_t)count[s] * r_step;
                uint64_t w = (end >> v) - (acc >> v);
                if (w < 1) return ERR(GENERIC);
                norm[s] = (short)w;
                acc = end;
            }
        }
    }
    return 0;
}

/* §4.1 primary method, falling back to §4.2. */
static size_t normalize_counts(short *norm, unsigned L, const uint32_t *count,
                               uint64_t n, unsigned M, int legacy)
{
    static const uint32_t rtb[8] = {0, 473195, 504333, 520860,
                                    550000, 700000, 750000, 830000};
    const unsigned scale = 62 - L;
    const uint64_t step = (1ull << 62) / n;
    const uint64_t v_step = 1ull << (scale - 20);
    const uint64_t low_threshold = n >> L;
    int64_t still = (int64_t)1 << L;
    unsigned s, largest = 0;
    uint64_t largest_p = 0;

    for (s = 0; s <= M; s++) {
        uint64_t c = count[s];
        if (c == 0) {
            norm[s] = 0;
        } else if (c <= low_threshold) {
            norm[s] = -1;
            still--;
        } else {
            uint64_t q = c * step;
            uint64_t p = q >> scale;
            if (p < 8) {
                uint64_t r = q - (p << scale);
                if (r > v_step * rtb[p]) p++;
            }
            if (p > largest_p) { largest_p = p; largest = s; }
            norm[s] = (short)p;
            still -= (int64_t)p;
        }
    }
    /* floor(norm/2), as an arithmetic shift of the (possibly -1) short */
    {
        int64_t half = norm[largest] >= 0 ? norm[largest] / 2
                                          : -((1 - (int64_t)norm[largest]) / 2);
        if (-still >= half)
            return normalize_fallback(norm, L, count, n, M, legacy);
    }
    norm[largest] = (short)(norm[largest] + still);
    return 0;
}

size_t l3fse_normalize(short *norm, unsigned *table_log, const unsigned *count,
                       size_t n, unsigned max_symbol, int legacy)
{
    uint32_t c32[256];
    unsigned L, s;
    uint64_t sum = 0, total;
    size_t r;
    if (n < 2 || max_symbol < 1 || max_symbol > 255) return ERR(GENERIC);
#if SIZE_MAX > 0xFFFFFFFFu
    if (n > L3FSE_MAX_SRC_SIZE) return ERR(GENERIC);
#endif
    for (s = 0; s < 256; s++) {
        c32[s] = s <= max_symbol ? (uint32_t)count[s] : 0;
        sum += c32[s];
    }
    if (sum != n || c32[max_symbol] == 0) return ERR(GENERIC);
    L = optimal_table_log(n, max_symbol, legacy);
    for (s = 0; s < 256; s++) norm[s] = 0;
    r = normalize_counts(norm, L, c32, n, max_symbol, legacy);
    if (l3fse_is_error(r)) return r;
    for (s = 0, total = 0; s <= max_symbol; s++)
        total += norm[s] < 0 ? 1u : (unsigned)norm[s];
    if (total != (1u << L)) return ERR(GENERIC);
    *table_log = L;
    return 0;
}

/* ------------------------------------------------------------------ */
/* §5 header                                                            */
/* ------------------------------------------------------------------ */

#define HEADER_MAX 512 /* 4 + 256 * 13 + zero-run fields < 4096 bits */

typedef struct {
    uint8_t *buf;
    size_t cap;   /* bytes */
    uint64_t acc; /* pending bits, LSB first */
    unsigned nacc;
    size_t pos;   /* bytes written */
    int overflow;
} small_writer;

static void sw_put(small_writer *w, uint32_t value, unsigned nbits)
{
    w->acc |= (uint64_t)value << w->nacc;
    w->nacc += nbits;
    while (w->nacc >= 8) {
        if (w->pos < w->cap) w->buf[w->pos++] = (uint8_t)w->acc;
        else w->overflow = 1;
        w->acc >>= 8;
        w->nacc -= 8;
    }
}

/* REQUIRES norm valid for L, norm[M] != 0. Returns header bytes or error. */
static size_t write_header(uint8_t *dst, size_t cap, const short *norm,
                           unsigned M, unsigned L)
{
    small_writer w = {dst, cap, 0, 0, 0, 0};
    int remaining = (1 << L) + 1;
    int threshold = 1 << L;
    unsigned nb = L + 1;
    unsigned s = 0;
    int prev0 = 0;

    sw_put(&w, L - L3FSE_MIN_TABLELOG, 4);
    while (remaining > 1) {
        int count, value, max;
        if (prev0) {
            unsigned z = 0;
            while (s + z <= M && norm[s + z] == 0) z++;
            s += z;
            while (z >= 3) { sw_put(&w, 3, 2); z -= 3; }
            sw_put(&w, z, 2);
        }
        if (s > M) return ERR(GENERIC); /* norm does not sum to T */
        count = norm[s];
        value = count + 1;
        max = 2 * threshold - 1 - remaining;
        remaining -= count < 0 ? -count : count;
        if (value >= threshold) value += max;
        sw_put(&w, (uint32_t)value, value < max ? nb - 1 : nb);
        while (remaining < threshold) { nb--; threshold >>= 1; }
        prev0 = (count == 0);
        s++;
    }
    if (w.nacc) sw_put(&w, 0, 8 - w.nacc);
    if (w.overflow) return ERR(DST_SIZE_TOO_SMALL);
    return w.pos;
}

/* Zero-padded little-endian bit reader over a bounded buffer. */
typedef struct {
    const uint8_t *buf;
    size_t len;
    uint64_t pos; /* bits consumed */
} header_reader;

static uint32_t hr_peek(const header_reader *r, unsigned nbits)
{
    uint64_t byte = r->pos >> 3;
    unsigned shift = (unsigned)(r->pos & 7);
    uint32_t v = 0;
    unsigned k;
    for (k = 0; k < 3; k++) /* shift + nbits <= 7 + 13 <= 24 */
        if (byte + k < r->len) v |= (uint32_t)r->buf[byte + k] << (8 * k);
    return (v >> shift) & ((1u << nbits) - 1u);
}

size_t l3fse_read_header(short *norm, unsigned *max_symbol, unsigned *table_log,
                         const void *src, size_t src_size)
{
    header_reader r = {(const uint8_t *)src, src_size, 0};
    int remaining, threshold;
    unsigned nb, L, charnum = 0;
    int prev0 = 0;
    unsigned s;

    for (s = 0; s < 256; s++) norm[s] = 0;
    L = hr_peek(&r, 4) + L3FSE_MIN_TABLELOG;
    r.pos += 4;
    if (L > L3FSE_MAX_TABLELOG) return ERR(TABLELOG_TOO_LARGE);
    remaining = (1 << L) + 1;
    threshold = 1 << L;
    nb = L + 1;

    while (remaining > 1 && charnum <= L3FSE_MAX_SYMBOL) {
        int max, value, count;
        uint32_t bits;
        if (prev0) {
            unsigned n0 = charnum;
            for (;;) {
                uint32_t f = hr_peek(&r, 2);
                r.pos += 2;
                n0 += f;
                if (f != 3) break;
                if (n0 > L3FSE_MAX_SYMBOL) break; /* error either way */
            }
            if (n0 > L3FSE_MAX_SYMBOL) return ERR(MAXSYMBOLVALUE_TOO_SMALL);
            charnum = n0; /* norm[] is already 0 there */
        }
        max = 2 * threshold - 1 - remaining;
        bits = hr_peek(&r, nb);
        if ((int)(bits & (uint32_t)(threshold - 1)) < max) {
            value = (int)(bits & (uint32_t)(threshold - 1));
            r.pos += nb - 1;
        } else {
            value = (int)(bits & (uint32_t)(2 * threshold - 1));
            if (value >= threshold) value -= max;
            r.pos += nb;
        }
        count = value - 1; /* in [-1, remaining - 1] */
        remaining -= count < 0 ? -count : count;
        norm[charnum++] = (short)count;
        prev0 = (count == 0);
        while (remaining < threshold) { nb--; threshold >>= 1; }
    }
    if (remaining != 1) return ERR(CORRUPTION_DETECTED);
    if (r.pos > (uint64_t)src_size * 8) return ERR(CORRUPTION_DETECTED);
    *max_symbol = charnum - 1;
    *table_log = L;
    return (size_t)((r.pos + 7) >> 3);
}

/* ------------------------------------------------------------------ */
/* §6 spreading                                                         */
/* ------------------------------------------------------------------ */

/* cell_symbol[0..T) from norm[0..M]. REQUIRES sum(|norm|) == T.
 * Returns 0, or ERR(GENERIC) if the walk does not come back to 0. */
static size_t spread_symbols(uint8_t *cell_symbol, const short *norm, unsigned M,
                             unsigned L)
{
    const uint32_t T = 1u << L, mask = T - 1, step = (T >> 1) + (T >> 3) + 3;
    uint32_t high = T - 1, pos = 0;
    unsigned s;
    for (s = 0; s <= M; s++)
        if (norm[s] == -1) cell_symbol[high--] = (uint8_t)s;
    /* high wraps to 0xFFFFFFFF when every cell holds a -1 symbol */
    for (s = 0; s <= M; s++) {
        int k;
        for (k = 0; k < norm[s]; k++) {
            cell_symbol[pos] = (uint8_t)s;
            do pos = (pos + step) & mask; while (pos > high);
        }
    }
    return pos == 0 ? 0 : ERR(GENERIC);
}

/* ------------------------------------------------------------------ */
/* §7 encoder                                                           */
/* ------------------------------------------------------------------ */

typedef struct {
    uint32_t delta_nb_bits;   /* nbBits = (X + delta_nb_bits) >> 16 */
    int32_t delta_find_state; /* X' = state_table[(X >> nbBits) + delta_find_state] */
} enc_symbol;

typedef struct {
    uint16_t state_table[TABLE_MAX]; /* T + cell, grouped by symbol, cells ascending */
    enc_symbol sym[256];
    uint16_t first_state[256];       /* T + lowest cell of s */
} enc_table;

static size_t build_enc_table(enc_table *et, const short *norm, unsigned M,
                              unsigned L)
{
    const uint32_t T = 1u << L;
    uint8_t cell_symbol[TABLE_MAX];
    uint32_t cumul[257], next[256];
    unsigned s, u;
    size_t r;

    cumul[0] = 0;
    for (s = 0; s <= M; s++) {
        uint32_t k = norm[s] == -1 ? 1u : (norm[s] > 0 ? (uint32_t)norm[s] : 0u);
        cumul[s + 1] = cumul[s] + k;
    }
    if (cumul[M + 1] != T) return ERR(GENERIC);
    r = spread_symbols(cell_symbol, norm, M, L);
    if (l3fse_is_error(r)) return r;
    for (s = 0; s <= M; s++) next[s] = cumul[s];
    for (u = 0; u < T; u++) {
        unsigned sy = cell_symbol[u];
        et->state_table[next[sy]++] = (uint16_t)(T + u);
    }
    for (s = 0; s < 256; s++) {
        uint32_t k = 0;
        if (s <= M) k = cumul[s + 1] - cumul[s];
        if (k == 0) {
            /* never used; keeps any accidental use inside the table */
            et->sym[s].delta_nb_bits = ((L + 1) << 16) - T;
            et->sym[s].delta_find_state = 0;
            et->first_state[s] = (uint16_t)T;
        } else {
            /* b with k <= X >> b < 2k is max_bits or max_bits - 1 */
            uint32_t max_bits = L - (k > 1 ? hb32(k - 1) : 0);
            uint32_t min_state_plus = k << max_bits;
            et->sym[s].delta_nb_bits = (max_bits << 16) - min_state_plus;
            et->sym[s].delta_find_state = (int32_t)cumul[s] - (int32_t)k;
            et->first_state[s] = et->state_table[cumul[s]];
        }
    }
    return 0;
}

#define ENC_STEP(X, sy)                                                        \
    do {                                                                       \
        const enc_symbol tt_ = sym[(sy)];                                      \
        const uint32_t nb_ = ((X) + tt_.delta_nb_bits) >> 16;                  \
        acc |= (uint64_t)((X) & ((1u << nb_) - 1u)) << nacc;                   \
        nacc += nb_;                                                           \
        (X) = stt[(int32_t)((X) >> nb_) + tt_.delta_find_state];               \
    } while (0)

#define ENC_FLUSH()                                                            \
    do {                                                                       \
        store_le64(op, acc);                                                   \
        op += nacc >> 3;                                                       \
        acc >>= (nacc & ~7u);                                                  \
        nacc &= 7u;                                                            \
        op = op > olimit ? olimit : op;                                        \
    } while (0)

/* Encode src[0..n) (n >= 2) after the header.  Output may use bytes up to
 * olimit + 8; reaching olimit means "n - 1 bytes or more": returns 0.
 * Otherwise returns the end of the stream. */
static uint8_t *encode_stream(uint8_t *op, uint8_t *const olimit,
                              const uint8_t *src, size_t n, const enc_table *et,
                              unsigned L)
{
    const enc_symbol *const sym = et->sym;
    const uint16_t *const stt = et->state_table;
    const uint32_t T = 1u << L;
    uint64_t acc = 0;
    unsigned nacc = 0;
    uint32_t xa, xb; /* A: even positions, B: odd positions */
    ptrdiff_t i;

    if ((n - 1) & 1) {
        xb = et->first_state[src[n - 1]];
        xa = et->first_state[src[n - 2]];
    } else {
        xa = et->first_state[src[n - 1]];
        xb = et->first_state[src[n - 2]];
    }
    i = (ptrdiff_t)n - 3;
    while (i >= 0 && ((i + 1) & 3)) {
        if (i & 1) ENC_STEP(xb, src[i]);
        else ENC_STEP(xa, src[i]);
        i--;
    }
    ENC_FLUSH();
    for (; i >= 3; i -= 4) { /* i is odd here: B, A, B, A */
        ENC_STEP(xb, src[i]);
        ENC_STEP(xa, src[i - 1]);
        ENC_STEP(xb, src[i - 2]);
        ENC_STEP(xa, src[i - 3]);
        ENC_FLUSH();
    }
    /* final states: B then A, L bits each, then the end mark */
    acc |= (uint64_t)(xb - T) << nacc;
    nacc += L;
    acc |= (uint64_t)(xa - T) << nacc;
    nacc += L;
    acc |= (uint64_t)1 << nacc;
    nacc += 1;
    store_le64(op, acc);
    if (op >= olimit) return NULL;
    op += (nacc + 7) >> 3;
    return op;
}

/* Everything after the histogram; dst has at least n + 8 bytes. */
static size_t compress_into(uint8_t *dst, const uint8_t *src, size_t n,
                            const uint32_t *count, unsigned M, int legacy)
{
    short norm[256];
    uint8_t header[HEADER_MAX];
    enc_table et;
    unsigned L = optimal_table_log(n, M, legacy);
    size_t hsize, r;
    uint8_t *end;

    memset(norm, 0, sizeof(norm));
    r = normalize_counts(norm, L, count, n, M, legacy);
    if (l3fse_is_error(r)) return r;
    hsize = write_header(header, sizeof(header), norm, M, L);
    if (l3fse_is_error(hsize)) return ERR(GENERIC);
    /* a bitstream has at least 2L + 1 > 8 bits: 2 bytes */
    if (hsize + 2 >= n - 1) return L3FSE_NOT_COMPRESSIBLE;
    r = build_enc_table(&et, norm, M, L);
    if (l3fse_is_error(r)) return r;
    memcpy(dst, header, hsize);
    end = encode_stream(dst + hsize, dst + (n - 2), src, n, &et, L);
    if (end == NULL || (size_t)(end - dst) >= n - 1) return L3FSE_NOT_COMPRESSIBLE;
    return (size_t)(end - dst);
}

size_t l3fse_compress(void *dst, size_t dst_capacity, const void *src, size_t n,
                      int legacy)
{
    const uint8_t *in = (const uint8_t *)src;
    uint32_t count[256];
    uint32_t max_count = 0;
    unsigned M = 0, s;
    size_t r;

    if (n <= 1) return L3FSE_NOT_COMPRESSIBLE;
#if SIZE_MAX > 0xFFFFFFFFu
    if (n > L3FSE_MAX_SRC_SIZE) return ERR(SRC_SIZE_WRONG);
#endif
    histogram(count, in, n);
    for (s = 0; s < 256; s++) {
        if (count[s]) M = s;
        if (count[s] > max_count) max_count = count[s];
    }
    if (max_count == n) return L3FSE_RLE;
    if (max_count == 1) return L3FSE_NOT_COMPRESSIBLE;
    if (max_count < (n >> 7)) return L3FSE_NOT_COMPRESSIBLE;

    if (dst_capacity >= L3FSE_COMPRESS_FAST_CAPACITY(n)) {
        return compress_into((uint8_t *)dst, in, n, count, M, legacy);
    } else {
        uint8_t *tmp = (uint8_t *)malloc(L3FSE_COMPRESS_FAST_CAPACITY(n));
        if (tmp == NULL) return ERR(GENERIC);
        r = compress_into(tmp, in, n, count, M, legacy);
        if (!l3fse_is_error(r) && r > L3FSE_RLE) {
            if (r > dst_capacity) r = ERR(DST_SIZE_TOO_SMALL);
            else memcpy(dst, tmp, r);
        }
        free(tmp);
        return r;
    }
}

/* ------------------------------------------------------------------ */
/* §8 decoder                                                           */
/* ------------------------------------------------------------------ */

typedef struct {
    uint16_t base;   /* next state = base + read(nb_bits) */
    uint8_t symbol;
    uint8_t nb_bits;
} dec_entry;

static size_t build_dec_table(dec_entry *dt, const short *norm, unsigned M,
                              unsigned L)
{
    const uint32_t T = 1u << L;
    uint8_t cell_symbol[TABLE_MAX];
    uint32_t next[256];
    unsigned s, u;
    size_t r = spread_symbols(cell_symbol, norm, M, L);
    if (l3fse_is_error(r)) return r;
    for (s = 0; s <= M; s++) next[s] = norm[s] == -1 ? 1u : (uint32_t)(norm[s] > 0 ? norm[s] : 0);
    for (u = 0; u < T; u++) {
        unsigned sy = cell_symbol[u];
        uint32_t x = next[sy]++;          /* in [k, 2k) */
        unsigned nb = L - hb32(x);
        dt[u].symbol = (uint8_t)sy;
        dt[u].nb_bits = (uint8_t)nb;
        dt[u].base = (uint16_t)((x << nb) - T);
    }
    return 0;
}

/* Bits [p - k, p) of the stream (p counts unread bits from the stream
 * start), and *p -= k.  A read that runs past the start (p < k) returns 0:
 * after such a read in the tail only the other state is used, so its value
 * does not matter there; for the two initial reads of a stream shorter than
 * 2L bits it does, and 0 is what the reference decoder reads there (its
 * 64-bit container holds zeros above a short stream).
 * REQUIRES *p <= 8 * (stream length), k <= 16. */
L3_INLINE uint32_t read_bits_tail(const uint8_t *buf, int64_t *p, unsigned k)
{
    const int64_t hi = *p, lo = hi - (int64_t)k;
    uint32_t w = 0;
    int64_t b;
    *p = lo;
    if (k == 0 || lo < 0) return 0;
    for (b = lo >> 3; b <= (hi - 1) >> 3; b++) /* at most 3 bytes */
        w |= (uint32_t)buf[b] << (8 * (unsigned)(b - (lo >> 3)));
    return (w >> (lo & 7)) & ((1u << k) - 1u);
}

/* One symbol of the fast loop.  `fast` (a compile-time constant after
 * inlining) means no cell reads 0 bits, so a single shift extracts the bits. */
#define DEC_STEP(S, i)                                                         \
    do {                                                                       \
        const dec_entry e_ = dt[(S)];                                          \
        op[(i)] = e_.symbol;                                                   \
        (S) = e_.base + (uint32_t)(fast ? (cont << c) >> (64 - e_.nb_bits)     \
                                        : ((cont << c) >> 1) >> (63 - e_.nb_bits)); \
        c += e_.nb_bits;                                                       \
    } while (0)

/* Decode groups of 4 symbols while the container can be refilled with real
 * bits (>= 57 after a refill, 4 reads need <= 48) and 4 output bytes are
 * free.  Updates everything the exact tail continues from. */
L3_INLINE void decode_fast(const int fast, const dec_entry *dt, const uint8_t *in,
                           const uint8_t **pptr, uint64_t *pcont, unsigned *pc,
                           uint32_t *pA, uint32_t *pB, uint8_t **pop, uint8_t *oend)
{
    const uint8_t *ptr = *pptr;
    uint64_t cont = *pcont;
    unsigned c = *pc;
    uint32_t A = *pA, B = *pB;
    uint8_t *op = *pop;
    for (;;) {
        unsigned nbytes = c >> 3;
        if ((size_t)(ptr - in) < nbytes) break;
        ptr -= nbytes;
        c &= 7;
        cont = load_le64(ptr);
        if ((size_t)(oend - op) < 4) break;
        DEC_STEP(A, 0);
        DEC_STEP(B, 1);
        DEC_STEP(A, 2);
        DEC_STEP(B, 3);
        op += 4;
    }
    *pptr = ptr; *pcont = cont; *pc = c; *pA = A; *pB = B; *pop = op;
}

static size_t decode_stream(uint8_t *const ostart, size_t cap, const uint8_t *in,
                            size_t m, const dec_entry *dt, unsigned L, int zero_bit_cells)
{
    uint8_t *op = ostart;
    uint8_t *const oend = ostart + cap;
    uint8_t last;
    int64_t p; /* unread bits: [0, p) */
    uint32_t A, B;

    if (m == 0) return ERR(SRC_SIZE_WRONG);
    last = in[m - 1];
    if (last == 0) return m >= 8 ? ERR(GENERIC) : ERR(CORRUPTION_DETECTED);
    p = (int64_t)(8 * (m - 1)) + hb32(last);

    if (m >= 8) {
        /* container holds in[ptr .. ptr+8); c bits consumed from its top */
        const uint8_t *ptr = in + m - 8;
        uint64_t cont = load_le64(ptr);
        unsigned c = 8 - hb32(last);
        A = (uint32_t)((cont << c) >> (64 - L)); c += L;
        B = (uint32_t)((cont << c) >> (64 - L)); c += L;
        if (zero_bit_cells) decode_fast(0, dt, in, &ptr, &cont, &c, &A, &B, &op, oend);
        else decode_fast(1, dt, in, &ptr, &cont, &c, &A, &B, &op, oend);
        p = (int64_t)(8 * (size_t)(ptr - in)) + 64 - (int64_t)c;
    } else {
        A = read_bits_tail(in, &p, L);
        B = read_bits_tail(in, &p, L);
    }

    /* exact tail: stop when a read runs past the stream start (p < 0) */
    for (;;) {
        if ((size_t)(oend - op) < 2) return ERR(DST_SIZE_TOO_SMALL);
        *op++ = dt[A].symbol;
        A = dt[A].base + read_bits_tail(in, &p, dt[A].nb_bits);
        if (p < 0) { *op++ = dt[B].symbol; break; }
        if ((size_t)(oend - op) < 2) return ERR(DST_SIZE_TOO_SMALL);
        *op++ = dt[B].symbol;
        B = dt[B].base + read_bits_tail(in, &p, dt[B].nb_bits);
        if (p < 0) { *op++ = dt[A].symbol; break; }
    }
    return (size_t)(op - ostart);
}

size_t l3fse_decompress(void *dst, size_t dst_capacity, const void *src,
                        size_t src_size)
{
    short norm[256];
    dec_entry dt[TABLE_MAX];
    unsigned M, L;
    uint8_t dummy;
    const uint8_t *in = (const uint8_t *)src;
    size_t hsize = l3fse_read_header(norm, &M, &L, src, src_size);
    size_t r;
    if (l3fse_is_error(hsize)) return hsize;
    if (dst == NULL) { dst = &dummy; dst_capacity = 0; }
    r = build_dec_table(dt, norm, M, L);
    if (l3fse_is_error(r)) return r;
    if (hsize >= src_size) return ERR(SRC_SIZE_WRONG);
    {
        /* a symbol with more than T/2 cells has cells that read 0 bits */
        int zero_bit_cells = 0;
        unsigned s;
        for (s = 0; s <= M; s++) zero_bit_cells |= norm[s] > (1 << (L - 1));
        return decode_stream((uint8_t *)dst, dst_capacity, in + hsize, src_size - hsize, dt,
                             L, zero_bit_cells);
    }
}
