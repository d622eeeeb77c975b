/*
 * test_fse_core.c -- test driver for fse_core.c (plain C, no Python).
 *
 *   test_fse_core [--iters N] [--seed S] [DIR ...]
 *       1. the reference vectors in each DIR (X.in, X.fse, X.pyfse.fse):
 *          byte-identical compress (both table-log rules), exact decompress,
 *          capacity n - 1 fails;
 *       2. random histograms (empty, one, two, 32, 256 symbols, skewed,
 *          flat, lengths 0..70000): the optimized coder is checked against a
 *          slow, spec-literal model in this file (header writer, encoder,
 *          header reader, decoder written straight from FORMAT.md);
 *       3. mutated streams (every truncation of small streams, bit flips,
 *          byte overwrites, appended bytes, pure garbage, random capacities):
 *          the decoder must give exactly the model's result (error code, or
 *          length and bytes) and never touch memory outside its buffers
 *          (buffers are exact-size heap blocks, so ASan/valgrind see any
 *          overrun).
 *   test_fse_core --bench FILE [--seconds S]
 *       C-level throughput of compress/decompress on FILE, printed as JSON.
 *
 * Exit status 0 when every check passed.
 */
#define _POSIX_C_SOURCE 200809L
#include "fse_core.h"

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long g_failures = 0;
static long g_checks = 0;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        g_checks++;                                                            \
        if (!(cond)) {                                                         \
            g_failures++;                                                      \
            if (g_failures <= 50) {                                            \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);           \
                fprintf(stderr, __VA_ARGS__);                                  \
                fputc('\n', stderr);                                           \
            }                                                                  \
        }                                                                      \
    } while (0)

/* ------------------------------------------------------------------ */
/* helpers                                                              */
/* ------------------------------------------------------------------ */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    /* xorshift64* */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 2685821657736338717ull;
}
static size_t rnd_below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }
static double rnd_unit(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(2); }
    return p;
}

static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long len;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return NULL;
    }
    buf = (uint8_t *)xmalloc((size_t)len);
    if (len > 0 && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        fclose(f); free(buf); return NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return buf;
}

static unsigned hb(uint64_t x) { unsigned r = 0; while (x >>= 1) r++; return r; }

/* ------------------------------------------------------------------ */
/* Spec-literal model (slow on purpose: one bit at a time)              */
/* ------------------------------------------------------------------ */

typedef struct { uint8_t *buf; size_t cap; uint64_t nbits; } mbits;

static void m_put(mbits *w, uint32_t v, unsigned k)
{
    unsigned i;
    for (i = 0; i < k; i++, w->nbits++) {
        size_t byte = (size_t)(w->nbits >> 3);
        if (byte >= w->cap) { fprintf(stderr, "model buffer overflow\n"); exit(2); }
        if ((w->nbits & 7) == 0) w->buf[byte] = 0;
        w->buf[byte] |= (uint8_t)(((v >> i) & 1u) << (w->nbits & 7));
    }
}

/* §3 */
static unsigned m_table_log(size_t n, unsigned M, int legacy)
{
    uint32_t max_src = (uint32_t)hb((uint32_t)(n - 1)) - 2u;
    uint32_t min_src = legacy ? hb(n - 1) + 1 : hb(n) + 1;
    uint32_t min_sym = hb(M) + 2, min_bits = min_src < min_sym ? min_src : min_sym;
    uint32_t L = 11;
    if (max_src < L) L = max_src;
    if (min_bits > L) L = min_bits;
    if (L < 5) L = 5;
    if (L > 12) L = 12;
    return L;
}

/* §6: cells in increasing order for every symbol; returns 0 on success */
static int m_spread(uint8_t *cell, const short *norm, unsigned M, unsigned L)
{
    uint32_t T = 1u << L, step = T / 2 + T / 8 + 3, pos = 0;
    int64_t H = (int64_t)T - 1;
    unsigned s;
    int k;
    for (s = 0; s <= M; s++)
        if (norm[s] == -1) cell[H--] = (uint8_t)s;
    for (s = 0; s <= M; s++)
        for (k = 0; k < norm[s]; k++) {
            cell[pos] = (uint8_t)s;
            do pos = (pos + step) % T; while ((int64_t)pos > H);
        }
    return pos == 0 ? 0 : -1;
}

/* §5 writer */
static void m_write_header(mbits *w, const short *norm, unsigned M, unsigned L)
{
    int remaining = (1 << L) + 1, threshold = 1 << L;
    unsigned nb = L + 1, s = 0;
    int prev0 = 0;
    m_put(w, L - 5, 4);
    while (remaining > 1) {
        int value, max;
        if (prev0) {
            unsigned z = 0;
            while (s <= M && norm[s] == 0) { z++; s++; }
            while (z >= 3) { m_put(w, 3, 2); z -= 3; }
            m_put(w, z, 2);
        }
        value = norm[s] + 1;
        max = 2 * threshold - 1 - remaining;
        remaining -= norm[s] < 0 ? -norm[s] : norm[s];
        if (value >= threshold) value += max;
        m_put(w, (uint32_t)value, value < max ? nb - 1 : nb);
        while (remaining < threshold) { nb--; threshold /= 2; }
        prev0 = norm[s] == 0;
        s++;
    }
    while (w->nbits & 7) m_put(w, 0, 1);
}

/* §1 + §7: model compress; returns 0, 1, size, or (size_t)-1 on error */
static size_t m_compress(uint8_t *out, size_t out_cap, const uint8_t *x, size_t n,
                         int legacy)
{
    unsigned count[256] = {0}, M = 0, L, L2, s, maxc = 0;
    short norm[256];
    uint8_t cell[4096];
    uint32_t T;
    size_t i, r;
    mbits w;
    uint32_t XA, XB, *X;
    uint16_t *cl[256];
    uint16_t store[4096];
    unsigned kcount[256];

    if (n <= 1) return 0;
    for (i = 0; i < n; i++) count[x[i]]++;
    for (s = 0; s < 256; s++) {
        if (count[s]) M = s;
        if (count[s] > maxc) maxc = count[s];
    }
    if (maxc == n) return 1;
    if (maxc == 1) return 0;
    if (maxc < n / 128) return 0;
    L = m_table_log(n, M, legacy);
    r = l3fse_normalize(norm, &L2, count, n, M, legacy);
    if (l3fse_is_error(r)) return (size_t)-1;
    CHECK(L2 == L, "table log %u vs model %u (n=%zu M=%u)", L2, L, n, M);
    T = 1u << L;
    /* normalization invariants */
    {
        uint32_t sum = 0;
        for (s = 0; s <= M; s++) {
            CHECK((count[s] == 0) == (norm[s] == 0), "norm zero mismatch s=%u", s);
            sum += norm[s] < 0 ? 1u : (uint32_t)norm[s];
        }
        CHECK(sum == T, "norm sum %u != %u", sum, T);
    }
    if (m_spread(cell, norm, M, L) != 0) return (size_t)-1;
    {
        unsigned off = 0;
        for (s = 0; s < 256; s++) { kcount[s] = 0; cl[s] = store + off; if (s <= M) off += norm[s] < 0 ? 1u : (unsigned)norm[s]; }
        for (i = 0; i < T; i++) { s = cell[i]; cl[s][kcount[s]++] = (uint16_t)i; }
    }
    w.buf = out; w.cap = out_cap; w.nbits = 0;
    m_write_header(&w, norm, M, L);
    XA = XB = 0;
    for (i = n - 2; i < n; i++) {
        uint32_t st = T + cl[x[i]][0];
        if (i & 1) XB = st; else XA = st;
    }
    for (i = n - 2; i-- > 0;) {
        unsigned k, b = 0;
        X = (i & 1) ? &XB : &XA;
        k = kcount[x[i]];
        while (!((*X >> b) >= k && (*X >> b) < 2 * k)) b++;
        m_put(&w, *X & ((1u << b) - 1u), b);
        *X = T + cl[x[i]][(*X >> b) - k];
    }
    m_put(&w, XB - T, L);
    m_put(&w, XA - T, L);
    m_put(&w, 1, 1);
    while (w.nbits & 7) m_put(&w, 0, 1);
    if (w.nbits / 8 >= n - 1) return 0;
    return (size_t)(w.nbits / 8);
}

/* §5 reader; returns header size or an error code */
static size_t m_read_header(short *norm, unsigned *M, unsigned *Lp, const uint8_t *b,
                            size_t m)
{
    uint64_t pos = 0;
    int remaining, threshold;
    unsigned nb, L, s = 0, i;
    int prev0 = 0;
#define MBIT(q) ((q) < (uint64_t)m * 8 ? (uint32_t)((b[(q) >> 3] >> ((q) & 7)) & 1u) : 0u)
#define MGET(k, out)                                                           \
    do {                                                                       \
        unsigned j_;                                                           \
        (out) = 0;                                                             \
        for (j_ = 0; j_ < (k); j_++) (out) |= MBIT(pos + j_) << j_;            \
    } while (0)
    for (i = 0; i < 256; i++) norm[i] = 0;
    MGET(4, L);
    pos += 4;
    L += 5;
    if (L > 12) return L3FSE_ERROR(L3FSE_ERR_TABLELOG_TOO_LARGE);
    remaining = (1 << L) + 1;
    threshold = 1 << L;
    nb = L + 1;
    while (remaining > 1 && s <= 255) {
        uint32_t low, full;
        int value, max;
        if (prev0) {
            uint32_t f;
            do {
                MGET(2, f);
                pos += 2;
                s += f;
            } while (f == 3 && s <= 255);
            if (s > 255) return L3FSE_ERROR(L3FSE_ERR_MAXSYMBOLVALUE_TOO_SMALL);
        }
        max = 2 * threshold - 1 - remaining;
        MGET(nb - 1, low);
        if ((int)low < max) {
            value = (int)low;
            pos += nb - 1;
        } else {
            MGET(nb, full);
            value = (int)full;
            if (value >= threshold) value -= max;
            pos += nb;
        }
        norm[s] = (short)(value - 1);
        remaining -= norm[s] < 0 ? -norm[s] : norm[s];
        prev0 = norm[s] == 0;
        s++;
        while (remaining < threshold) { nb--; threshold /= 2; }
    }
    if (remaining != 1) return L3FSE_ERROR(L3FSE_ERR_CORRUPTION_DETECTED);
    if (pos > (uint64_t)m * 8) return L3FSE_ERROR(L3FSE_ERR_CORRUPTION_DETECTED);
    *M = s - 1;
    *Lp = L;
    return (size_t)((pos + 7) / 8);
#undef MGET
#undef MBIT
}

/* backward read of k bits below p; p < k reads 0 (see fse_core.c) */
static uint32_t m_read_back(const uint8_t *b, int64_t *p, unsigned k)
{
    uint32_t v = 0;
    unsigned j;
    int64_t lo = *p - (int64_t)k;
    if (lo >= 0)
        for (j = 0; j < k; j++) v |= (uint32_t)((b[(lo + j) >> 3] >> ((lo + j) & 7)) & 1) << j;
    *p = lo;
    return v;
}

/* §8; returns N (bytes in out) or an error code. out has cap bytes. */
static size_t m_decompress(uint8_t *out, size_t cap, const uint8_t *src, size_t m)
{
    short norm[256];
    unsigned M = 0, L = 0, s, u;
    uint8_t cell[4096];
    uint8_t sym[4096], nbb[4096];
    uint32_t base[4096], next[256];
    size_t h = m_read_header(norm, &M, &L, src, m), N = 0, bm;
    const uint8_t *bs;
    int64_t p;
    uint32_t st[2];
    int cur = 0;
    uint32_t T;
    if (l3fse_is_error(h)) return h;
    T = 1u << L;
    if (m_spread(cell, norm, M, L) != 0) return L3FSE_ERROR(L3FSE_ERR_GENERIC);
    for (s = 0; s <= M; s++) next[s] = norm[s] < 0 ? 1u : (uint32_t)norm[s];
    for (u = 0; u < T; u++) {
        uint32_t xx = next[cell[u]]++;
        sym[u] = cell[u];
        nbb[u] = (uint8_t)(L - hb(xx));
        base[u] = (xx << nbb[u]) - T;
    }
    if (h >= m) return L3FSE_ERROR(L3FSE_ERR_SRC_SIZE_WRONG);
    bs = src + h;
    bm = m - h;
    if (bs[bm - 1] == 0)
        return L3FSE_ERROR(bm >= 8 ? L3FSE_ERR_GENERIC : L3FSE_ERR_CORRUPTION_DETECTED);
    p = (int64_t)(8 * (bm - 1) + hb(bs[bm - 1]));
    st[0] = m_read_back(bs, &p, L);
    st[1] = m_read_back(bs, &p, L);
    for (;;) {
        if (N >= cap) return L3FSE_ERROR(L3FSE_ERR_DST_SIZE_TOO_SMALL);
        out[N++] = sym[st[cur]];
        st[cur] = base[st[cur]] + m_read_back(bs, &p, nbb[st[cur]]);
        if (p < 0) {
            if (N >= cap) return L3FSE_ERROR(L3FSE_ERR_DST_SIZE_TOO_SMALL);
            out[N++] = sym[st[1 - cur]];
            return N;
        }
        cur = 1 - cur;
    }
}

/* ------------------------------------------------------------------ */
/* checks                                                               */
/* ------------------------------------------------------------------ */

/* decoder vs model on one (possibly corrupt) stream, exact-size buffers */
static void check_decode_same(const uint8_t *stream, size_t m, size_t cap, const char *what)
{
    uint8_t *in = (uint8_t *)xmalloc(m);
    uint8_t *a = (uint8_t *)xmalloc(cap), *b = (uint8_t *)xmalloc(cap);
    size_t ra, rb;
    if (m) memcpy(in, stream, m);
    ra = l3fse_decompress(cap ? a : NULL, cap, m ? in : NULL, m);
    rb = m_decompress(b, cap, in, m);
    if (l3fse_is_error(rb)) {
        CHECK(l3fse_is_error(ra) && l3fse_error_code(ra) == l3fse_error_code(rb),
              "%s: m=%zu cap=%zu: got %s, model %s", what, m, cap,
              l3fse_is_error(ra) ? l3fse_error_name(ra) : "data", l3fse_error_name(rb));
    } else {
        CHECK(!l3fse_is_error(ra) && ra == rb && memcmp(a, b, ra) == 0,
              "%s: m=%zu cap=%zu: got %s/%zu, model data/%zu", what, m, cap,
              l3fse_is_error(ra) ? l3fse_error_name(ra) : "data", ra, rb);
    }
    free(in); free(a); free(b);
}

/* compress both ways, compare with the model, round trip, mutate */
static void check_input(const uint8_t *x, size_t n, int mutate)
{
    int legacy;
    for (legacy = 0; legacy <= 1; legacy++) {
        size_t cap = L3FSE_COMPRESS_FAST_CAPACITY(n);
        uint8_t *c = (uint8_t *)xmalloc(cap), *mc = (uint8_t *)xmalloc(n + 1024);
        size_t r = l3fse_compress(c, cap, x, n, legacy);
        size_t mr = m_compress(mc, n + 1024, x, n, legacy);
        CHECK(!l3fse_is_error(r), "compress error %s n=%zu", l3fse_error_name(r), n);
        if (mr == (size_t)-1) {
            CHECK(0, "model normalization failed n=%zu", n);
        } else {
            CHECK(r == mr && (r <= 1 || memcmp(c, mc, r) == 0),
                  "compress n=%zu legacy=%d: %zu vs model %zu", n, legacy, r, mr);
        }
        if (!l3fse_is_error(r) && r > 1) {
            uint8_t *d = (uint8_t *)xmalloc(n);
            size_t dr = l3fse_decompress(d, n, c, r);
            CHECK(dr == n && memcmp(d, x, n) == 0, "round trip n=%zu: %s", n,
                  l3fse_is_error(dr) ? l3fse_error_name(dr) : "wrong data");
            dr = l3fse_decompress(d, n - 1, c, r);
            CHECK(l3fse_error_code(dr) == L3FSE_ERR_DST_SIZE_TOO_SMALL, "cap n-1 accepted");
            free(d);
            /* a smaller dst: exact size works, one byte less fails */
            {
                uint8_t *small = (uint8_t *)xmalloc(r);
                size_t r2 = l3fse_compress(small, r, x, n, legacy);
                CHECK(r2 == r && memcmp(small, c, r) == 0, "compress into exact capacity");
                r2 = l3fse_compress(small, r - 1, x, n, legacy);
                CHECK(l3fse_error_code(r2) == L3FSE_ERR_DST_SIZE_TOO_SMALL,
                      "compress into capacity r-1: %zu", r2);
                free(small);
            }
            if (mutate && legacy == 0) {
                size_t k, i;
                uint8_t *mut = (uint8_t *)xmalloc(r + 16);
                /* truncations (all of them for small streams) */
                for (k = 0; k < r; k += (r <= 400 ? 1 : 1 + rnd_below(r / 50)))
                    check_decode_same(c, k, n + 16, "truncate");
                /* single bit flips */
                for (i = 0; i < 24; i++) {
                    memcpy(mut, c, r);
                    mut[rnd_below(r)] ^= (uint8_t)(1u << rnd_below(8));
                    check_decode_same(mut, r, (size_t)(n * (0.5 + rnd_unit())) + 2, "flip");
                }
                /* header bit flips (the first bytes) */
                for (i = 0; i < 16; i++) {
                    memcpy(mut, c, r);
                    mut[rnd_below(r < 8 ? r : 8)] ^= (uint8_t)(1u << rnd_below(8));
                    check_decode_same(mut, r, n + 64, "header flip");
                }
                /* byte overwrites */
                for (i = 0; i < 8; i++) {
                    memcpy(mut, c, r);
                    mut[rnd_below(r)] = (uint8_t)rnd();
                    check_decode_same(mut, r, n, "overwrite");
                }
                /* appended bytes, dropped first byte */
                for (i = 0; i < 4; i++) {
                    size_t extra = 1 + rnd_below(16), j;
                    memcpy(mut, c, r);
                    for (j = 0; j < extra; j++) mut[r + j] = (uint8_t)rnd();
                    check_decode_same(mut, r + extra, 4 * n + 8, "append");
                }
                check_decode_same(c + 1, r - 1, 4 * n + 8, "drop_first");
                /* random capacities around n */
                for (i = 0; i < 6; i++)
                    check_decode_same(c, r, rnd_below(n + 8), "capacity");
                free(mut);
            }
        }
        free(c);
        free(mc);
    }
}

/* random data with a random kind of histogram */
static size_t gen_input(uint8_t *x, size_t maxn)
{
    size_t n, i;
    int kind = (int)rnd_below(9);
    double u = rnd_unit();
    n = (size_t)(u * u * u * (double)maxn);
    if (rnd_below(8) == 0) n = rnd_below(80);
    switch (kind) {
    case 0: /* one symbol */
        memset(x, (int)rnd_below(256), n);
        break;
    case 1: { /* two symbols, random p */
        double p = rnd_unit();
        uint8_t a = (uint8_t)rnd(), b = (uint8_t)rnd();
        for (i = 0; i < n; i++) x[i] = rnd_unit() < p ? a : b;
        break;
    }
    case 2: { /* Laplacian over 32 symbols */
        double scale = 0.2 + 4 * rnd_unit();
        for (i = 0; i < n; i++) {
            double e = -scale * log(1e-12 + rnd_unit());
            int v = 15 + (rnd() & 1 ? (int)e : -(int)e);
            x[i] = (uint8_t)(v < 0 ? 0 : v > 31 ? 31 : v);
        }
        break;
    }
    case 3: /* uniform over k symbols (32 or 256 or random) */
    {
        size_t k = rnd_below(3) == 0 ? 32 : rnd_below(2) ? 256 : 1 + rnd_below(256);
        for (i = 0; i < n; i++) x[i] = (uint8_t)rnd_below(k);
        break;
    }
    case 4: { /* geometric over all 256 values */
        double r = 0.9 + 0.1 * rnd_unit();
        for (i = 0; i < n; i++) {
            double e = log(1e-12 + rnd_unit()) / log(r);
            x[i] = (uint8_t)((size_t)e % 256);
        }
        break;
    }
    case 5: { /* dominant symbol + rare ones */
        double p = 0.9 + 0.1 * rnd_unit();
        for (i = 0; i < n; i++) x[i] = rnd_unit() < p ? 7 : (uint8_t)rnd();
        break;
    }
    case 6: { /* random histogram (Dirichlet-like weights) */
        double w[256], tot = 0, acc;
        size_t k = 1 + rnd_below(256);
        for (i = 0; i < k; i++) { w[i] = -log(1e-12 + rnd_unit()); tot += w[i]; }
        for (i = 0; i < n; i++) {
            double t = rnd_unit() * tot;
            size_t s = 0;
            acc = w[0];
            while (acc < t && s + 1 < k) acc += w[++s];
            x[i] = (uint8_t)s;
        }
        break;
    }
    case 7: /* sparse alphabet: a few far-apart values */
        for (i = 0; i < n; i++) x[i] = (uint8_t)(rnd_below(4) * 80 + (rnd_below(5) == 0));
        break;
    default: /* plain random bytes */
        for (i = 0; i < n; i++) x[i] = (uint8_t)rnd();
        break;
    }
    return n;
}

static void run_fuzz(long iters)
{
    const size_t maxn = 70000;
    uint8_t *x = (uint8_t *)xmalloc(maxn);
    long it;
    size_t i;
    /* fixed degenerate cases */
    check_input(x, 0, 1);
    x[0] = 5;
    check_input(x, 1, 1);
    for (i = 2; i < 12; i++) {
        memset(x, 9, i);
        check_input(x, i, 1);
        x[i - 1] = 10;
        check_input(x, i, 1);
    }
    for (it = 0; it < iters; it++) {
        size_t n = gen_input(x, maxn);
        uint8_t *exact = (uint8_t *)xmalloc(n);
        memcpy(exact, x, n);
        check_input(exact, n, it % 4 == 0);
        free(exact);
    }
    /* pure garbage streams */
    for (it = 0; it < iters * 4; it++) {
        size_t m = rnd_below(64), j;
        for (j = 0; j < m; j++) x[j] = (uint8_t)rnd();
        if (m && rnd_below(2)) x[0] &= 0x07; /* a valid table log */
        check_decode_same(x, m, rnd_below(300), "garbage");
    }
    free(x);
}

/* ------------------------------------------------------------------ */
/* reference vectors                                                    */
/* ------------------------------------------------------------------ */

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static int run_vectors(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int nvec = 0;
    char path[4096];
    if (!d) { fprintf(stderr, "cannot open %s\n", dir); g_failures++; return 0; }
    while ((e = readdir(d)) != NULL) {
        size_t n, m, m2, base_len;
        uint8_t *x, *expect, *legacy_expect, *c, *out;
        int legacy;
        if (!ends_with(e->d_name, ".in")) continue;
        base_len = strlen(e->d_name) - 3;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        x = read_file(path, &n);
        if (!x) { CHECK(0, "cannot read %s", path); continue; }
        snprintf(path, sizeof(path), "%s/%.*s.fse", dir, (int)base_len, e->d_name);
        expect = read_file(path, &m);
        snprintf(path, sizeof(path), "%s/%.*s.pyfse.fse", dir, (int)base_len, e->d_name);
        legacy_expect = read_file(path, &m2);
        if (!legacy_expect) { legacy_expect = expect; m2 = m; }
        c = (uint8_t *)xmalloc(L3FSE_COMPRESS_BOUND(n));
        for (legacy = 0; legacy <= 1; legacy++) {
            const uint8_t *want = legacy ? legacy_expect : expect;
            size_t wm = legacy ? m2 : m;
            size_t r = l3fse_compress(c, L3FSE_COMPRESS_BOUND(n), x, n, legacy);
            if (want) {
                CHECK(r == wm && memcmp(c, want, wm) == 0, "vector %s legacy=%d: size %zu vs %zu",
                      e->d_name, legacy, r, wm);
            } else {
                int rle = n >= 2;
                size_t i;
                for (i = 1; i < n; i++) rle &= x[i] == x[0];
                CHECK(r == (size_t)(rle ? 1 : 0), "vector %s legacy=%d: special %zu", e->d_name,
                      legacy, r);
            }
            if (want) {
                size_t dr;
                uint8_t *in = (uint8_t *)xmalloc(wm);
                memcpy(in, want, wm);
                out = (uint8_t *)xmalloc(n);
                dr = l3fse_decompress(out, n, in, wm);
                CHECK(dr == n && memcmp(out, x, n) == 0, "vector %s decode", e->d_name);
                dr = l3fse_decompress(out, n - 1, in, wm);
                CHECK(l3fse_error_code(dr) == L3FSE_ERR_DST_SIZE_TOO_SMALL, "vector %s cap n-1",
                      e->d_name);
                check_decode_same(in, wm, n, "vector");
                free(out);
                free(in);
            }
        }
        if (legacy_expect != expect) free(legacy_expect);
        free(expect);
        free(c);
        free(x);
        nvec++;
    }
    closedir(d);
    return nvec;
}

/* ------------------------------------------------------------------ */
/* benchmark                                                            */
/* ------------------------------------------------------------------ */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* CPU time of this thread: excludes time the scheduler gave to other
 * processes, so it stays meaningful on a busy machine. */
static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct { double median, best, cpu_median; } timing;

/* seconds per call over windows of >= 2 ms: median and best window (wall
 * clock) and median of the thread-CPU-time windows */
static timing time_calls(int decompress, uint8_t *dst, size_t cap, const uint8_t *src,
                         size_t n, double seconds)
{
    static double per[4000], cpu[4000];
    timing r;
    double t0;
    int reps = 1, w = 0, i;
    for (;;) { /* calibrate */
        t0 = now_s();
        for (i = 0; i < reps; i++)
            if (decompress) l3fse_decompress(dst, cap, src, n);
            else l3fse_compress(dst, cap, src, n, 0);
        if (now_s() - t0 > 0.002 || reps > (1 << 24)) break;
        reps *= 2;
    }
    t0 = now_s();
    while (w < 4000 && (now_s() - t0 < seconds || w < 5)) {
        double s = now_s(), c = cpu_s();
        for (i = 0; i < reps; i++)
            if (decompress) l3fse_decompress(dst, cap, src, n);
            else l3fse_compress(dst, cap, src, n, 0);
        cpu[w] = (cpu_s() - c) / reps;
        per[w++] = (now_s() - s) / reps;
    }
    qsort(per, (size_t)w, sizeof(double), cmp_double);
    qsort(cpu, (size_t)w, sizeof(double), cmp_double);
    r.median = per[w / 2];
    r.best = per[0];
    r.cpu_median = cpu[w / 2];
    return r;
}

static int run_bench(const char *file, double seconds)
{
    size_t n, cs, ds;
    uint8_t *x = read_file(file, &n), *c, *d;
    timing tc, td;
    if (!x) { fprintf(stderr, "cannot read %s\n", file); return 2; }
    c = (uint8_t *)xmalloc(L3FSE_COMPRESS_FAST_CAPACITY(n));
    d = (uint8_t *)xmalloc(n);
    cs = l3fse_compress(c, L3FSE_COMPRESS_FAST_CAPACITY(n), x, n, 0);
    if (l3fse_is_error(cs) || cs <= 1) { fprintf(stderr, "not compressible\n"); return 2; }
    ds = l3fse_decompress(d, n, c, cs);
    if (ds != n || memcmp(d, x, n) != 0) { fprintf(stderr, "round trip failed\n"); return 2; }
    tc = time_calls(0, c, L3FSE_COMPRESS_FAST_CAPACITY(n), x, n, seconds);
    td = time_calls(1, d, n, c, cs, seconds);
    printf("{\"file\": \"%s\", \"input_size\": %zu, \"compressed_size\": %zu, "
           "\"compress_MBps_median\": %.1f, \"compress_MBps_best\": %.1f, "
           "\"compress_MBps_cpu_median\": %.1f, "
           "\"decompress_MBps_median\": %.1f, \"decompress_MBps_best\": %.1f, "
           "\"decompress_MBps_cpu_median\": %.1f}\n",
           file, n, cs, n / tc.median / 1e6, n / tc.best / 1e6, n / tc.cpu_median / 1e6,
           n / td.median / 1e6, n / td.best / 1e6, n / td.cpu_median / 1e6);
    free(x); free(c); free(d);
    return 0;
}

int main(int argc, char **argv)
{
    long iters = 300;
    int i, ndirs = 0, nvec = 0;
    const char *dirs[64];
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--bench") == 0 && i + 1 < argc) {
            double seconds = 1.0;
            const char *file = argv[++i];
            if (i + 2 < argc && strcmp(argv[i + 1], "--seconds") == 0) seconds = atof(argv[i + 2]);
            return run_bench(file, seconds);
        } else if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc) {
            iters = atol(argv[++i]);
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            g_rng = strtoull(argv[++i], NULL, 0) | 1u;
        } else if (ndirs < 64) {
            dirs[ndirs++] = argv[i];
        }
    }
    for (i = 0; i < ndirs; i++) nvec += run_vectors(dirs[i]);
    printf("vectors: %d inputs checked\n", nvec);
    run_fuzz(iters);
    printf("fuzz: %ld iterations; %ld checks, %ld failures\n", iters, g_checks, g_failures);
    return g_failures ? 1 : 0;
}
