/* Convolution kernels of the l3ic network: see cpu_core.h. Written for this project from the Winograd minimal
 * filtering algorithm (Lavin & Gray 2016) and the Intel intrinsics guide. */
#define _POSIX_C_SOURCE 200809L

#include "cpu_core.h"

#include <stdlib.h>
#include <string.h>

#if !defined(L3IC_NO_X86) && (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define L3IC_HAVE_X86 1
#else
#define L3IC_HAVE_X86 0
#endif

#if L3IC_HAVE_X86 && !defined(_WIN32)
#include <pthread.h>
#define L3IC_HAVE_PTHREADS 1
#else
#define L3IC_HAVE_PTHREADS 0
#endif

/* -- threads: run fn(ctx, tid) on nthreads threads (the caller's is thread 0) --------------------------------- */
typedef void (*l3ic_task)(void *ctx, int tid);

#if L3IC_HAVE_X86
#define L3IC_MAX_THREADS 64

typedef struct {
    l3ic_task fn;
    void *ctx;
    int tid;
} l3ic_thread_arg;

#if L3IC_HAVE_PTHREADS
static void *thread_main(void *p) {
    l3ic_thread_arg *a = (l3ic_thread_arg *)p;
    a->fn(a->ctx, a->tid);
    return NULL;
}
#endif

static void run_threads(int nthreads, l3ic_task fn, void *ctx) {
    if (nthreads < 1) nthreads = 1;
    if (nthreads > L3IC_MAX_THREADS) nthreads = L3IC_MAX_THREADS;
#if L3IC_HAVE_PTHREADS
    pthread_t th[L3IC_MAX_THREADS];
    l3ic_thread_arg args[L3IC_MAX_THREADS];
    int started[L3IC_MAX_THREADS];
    for (int t = 1; t < nthreads; t++) {
        args[t].fn = fn;
        args[t].ctx = ctx;
        args[t].tid = t;
        started[t] = pthread_create(&th[t], NULL, thread_main, &args[t]) == 0;
    }
    fn(ctx, 0);
    for (int t = 1; t < nthreads; t++) {
        if (started[t])
            pthread_join(th[t], NULL);
        else
            fn(ctx, t); /* could not start a thread: its share of the queue is taken here */
    }
#else
    for (int t = 0; t < nthreads; t++) fn(ctx, t);
#endif
}

static float *alloc_floats(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, (n ? n : 1) * sizeof(float)) != 0) return NULL;
    return (float *)p;
}

#include <immintrin.h>

#define TGT __attribute__((target("avx512f")))
#define INL static inline __attribute__((always_inline))

int l3ic_cpu_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 1 : 0;
}

/* -- GEMM micro-kernel -----------------------------------------------------------------------------------------
 * c[i][0:16*NV] = sum over taps t and k < K of a[aoff[t] + i*lda + k] * b[t][k][0:16*NV], i < L3IC_MR.
 * 14 x 32 outputs live in 28 zmm accumulators; A is broadcast from memory, B read as 1 or 2 vectors per k. */
INL TGT void ukr_body(const int NV, const float *a, ptrdiff_t lda, const ptrdiff_t *aoff, int ntap, int K,
                      const float *b, float *c, ptrdiff_t ldc) {
    __m512 acc0[L3IC_MR], acc1[L3IC_MR];
#pragma GCC unroll 14
    for (int i = 0; i < L3IC_MR; i++) {
        acc0[i] = _mm512_setzero_ps();
        acc1[i] = _mm512_setzero_ps();
    }
    const float *bp = b;
    for (int t = 0; t < ntap; t++) {
        const float *a0 = a + aoff[t];
        const float *a7 = a0 + 7 * lda;
        for (int k = 0; k < K; k++) {
            __m512 b0 = _mm512_loadu_ps(bp);
            __m512 b1 = NV == 2 ? _mm512_loadu_ps(bp + 16) : b0;
            bp += 16 * NV;
#pragma GCC unroll 7
            for (int i = 0; i < 7; i++) {
                __m512 av = _mm512_set1_ps(a0[i * lda + k]);
                acc0[i] = _mm512_fmadd_ps(av, b0, acc0[i]);
                if (NV == 2) acc1[i] = _mm512_fmadd_ps(av, b1, acc1[i]);
            }
#pragma GCC unroll 7
            for (int i = 0; i < 7; i++) {
                __m512 av = _mm512_set1_ps(a7[i * lda + k]);
                acc0[7 + i] = _mm512_fmadd_ps(av, b0, acc0[7 + i]);
                if (NV == 2) acc1[7 + i] = _mm512_fmadd_ps(av, b1, acc1[7 + i]);
            }
        }
    }
#pragma GCC unroll 14
    for (int i = 0; i < L3IC_MR; i++) {
        _mm512_storeu_ps(c + i * ldc, acc0[i]);
        if (NV == 2) _mm512_storeu_ps(c + i * ldc + 16, acc1[i]);
    }
}

TGT static void ukr32(const float *a, ptrdiff_t lda, const ptrdiff_t *aoff, int ntap, int K, const float *b,
                      float *c, ptrdiff_t ldc) {
    ukr_body(2, a, lda, aoff, ntap, K, b, c, ldc);
}

TGT static void ukr16(const float *a, ptrdiff_t lda, const ptrdiff_t *aoff, int ntap, int K, const float *b,
                      float *c, ptrdiff_t ldc) {
    ukr_body(1, a, lda, aoff, ntap, K, b, c, ldc);
}

/* -- epilogue: bias, residual, activation, scale, and the destination layout ------------------------------------ */
INL TGT __mmask16 lane_mask(int count) { return count >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << count) - 1u); }

INL TGT void store16(const l3ic_out *o, int n, int y, int x, int c0, __m512 v) {
    __mmask16 mask = lane_mask(o->cout - c0);
    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, o->bias + c0));
    if (o->mode == L3IC_OUT_PLAIN) {
        float *p = o->base + n * o->sn + y * o->sy + (ptrdiff_t)x * o->cout + c0;
        if (o->residual) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, p));
        if (o->lrelu) v = _mm512_max_ps(v, _mm512_mul_ps(v, _mm512_set1_ps(0.2f)));
        if (o->scale != 1.0f) v = _mm512_mul_ps(v, _mm512_set1_ps(o->scale));
        _mm512_mask_storeu_ps(p, mask, v);
    } else if (o->mode == L3IC_OUT_D2S) {
        int q = o->cout >> 2, blk = c0 / q, cc = c0 - blk * q;
        float *p = o->base + n * o->sn + (ptrdiff_t)(2 * y + (blk >> 1)) * o->sy + (ptrdiff_t)(2 * x + (blk & 1)) * q + cc;
        if (o->lrelu) v = _mm512_max_ps(v, _mm512_mul_ps(v, _mm512_set1_ps(0.2f)));
        if (o->scale != 1.0f) v = _mm512_mul_ps(v, _mm512_set1_ps(o->scale));
        _mm512_mask_storeu_ps(p, mask, v);
    } else { /* IMAGE: 12 channels -> 2x2 pixels of 3; lanes 0..5 to row 2y, lanes 6..11 to row 2y+1 */
        if (o->lrelu) v = _mm512_max_ps(v, _mm512_mul_ps(v, _mm512_set1_ps(0.2f)));
        v = _mm512_mul_ps(_mm512_add_ps(v, _mm512_set1_ps(1.0f)), _mm512_set1_ps(0.5f));
        v = _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(1.0f));
        float *r0 = o->base + n * o->sn + (ptrdiff_t)(2 * y) * o->sy + (ptrdiff_t)(2 * x) * 3;
        _mm512_mask_storeu_ps(r0, (__mmask16)0x003F, v);
        _mm512_mask_storeu_ps(r0 + o->sy - 6, (__mmask16)0x0FC0, v);
    }
}

/* -- Winograd F(m x m, 3x3) -------------------------------------------------------------------------------------- */
typedef struct {
    int m, alpha, T;
    const l3ic_in *in;
    int in_lrelu;
    const float *U;
    int nr, P, coutp;
    const l3ic_out *out;
    int th, tw, ntiles, mb, nblocks;
    int next, err;
} wino_ctx;

/* B^T d B of one alpha x alpha tile, 16 channels; v[t] for t = a*alpha + b at vout + t*vstride. */
INL TGT void input_tile(const int m, int in_lrelu, const float *src, ptrdiff_t sy, ptrdiff_t sx, __mmask16 mask,
                        float *vout, ptrdiff_t vstride) {
    const int alpha = m + 2;
    __m512 tmp[6][6];
    const __m512 k02 = _mm512_set1_ps(0.2f);
    for (int c = 0; c < alpha; c++) {
        __m512 d[6];
        for (int r = 0; r < alpha; r++) {
            d[r] = _mm512_maskz_loadu_ps(mask, src + r * sy + c * sx);
            if (in_lrelu) d[r] = _mm512_max_ps(d[r], _mm512_mul_ps(d[r], k02));
        }
        if (alpha == 4) {
            tmp[0][c] = _mm512_sub_ps(d[0], d[2]);
            tmp[1][c] = _mm512_add_ps(d[1], d[2]);
            tmp[2][c] = _mm512_sub_ps(d[2], d[1]);
            tmp[3][c] = _mm512_sub_ps(d[1], d[3]);
        } else {
            const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f), two = _mm512_set1_ps(2.0f);
            __m512 t0 = _mm512_fnmadd_ps(four, d[2], d[4]); /* d4 - 4 d2 */
            __m512 t1 = _mm512_fnmadd_ps(four, d[1], d[3]); /* d3 - 4 d1 */
            __m512 t2 = _mm512_sub_ps(d[4], d[2]);
            __m512 t3 = _mm512_mul_ps(two, _mm512_sub_ps(d[3], d[1]));
            tmp[0][c] = _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4]));
            tmp[1][c] = _mm512_add_ps(t0, t1);
            tmp[2][c] = _mm512_sub_ps(t0, t1);
            tmp[3][c] = _mm512_add_ps(t2, t3);
            tmp[4][c] = _mm512_sub_ps(t2, t3);
            tmp[5][c] = _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5]));
        }
    }
    for (int a = 0; a < alpha; a++) {
        const __m512 *d = tmp[a];
        float *vo = vout + (ptrdiff_t)(a * alpha) * vstride;
        if (alpha == 4) {
            _mm512_mask_storeu_ps(vo, mask, _mm512_sub_ps(d[0], d[2]));
            _mm512_mask_storeu_ps(vo + vstride, mask, _mm512_add_ps(d[1], d[2]));
            _mm512_mask_storeu_ps(vo + 2 * vstride, mask, _mm512_sub_ps(d[2], d[1]));
            _mm512_mask_storeu_ps(vo + 3 * vstride, mask, _mm512_sub_ps(d[1], d[3]));
        } else {
            const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f), two = _mm512_set1_ps(2.0f);
            __m512 t0 = _mm512_fnmadd_ps(four, d[2], d[4]);
            __m512 t1 = _mm512_fnmadd_ps(four, d[1], d[3]);
            __m512 t2 = _mm512_sub_ps(d[4], d[2]);
            __m512 t3 = _mm512_mul_ps(two, _mm512_sub_ps(d[3], d[1]));
            _mm512_mask_storeu_ps(vo, mask, _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4])));
            _mm512_mask_storeu_ps(vo + vstride, mask, _mm512_add_ps(t0, t1));
            _mm512_mask_storeu_ps(vo + 2 * vstride, mask, _mm512_sub_ps(t0, t1));
            _mm512_mask_storeu_ps(vo + 3 * vstride, mask, _mm512_add_ps(t2, t3));
            _mm512_mask_storeu_ps(vo + 4 * vstride, mask, _mm512_sub_ps(t2, t3));
            _mm512_mask_storeu_ps(vo + 5 * vstride, mask, _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5])));
        }
    }
}

/* A^T M A of one tile, 16 output channels starting at c0, then the epilogue for the valid pixels. */
INL TGT void output_tile(const int m, const l3ic_out *o, const float *msrc, ptrdiff_t mstride, int n, int y0, int x0,
                         int c0) {
    const int alpha = m + 2;
    __m512 tmp[4][6];
    for (int b = 0; b < alpha; b++) {
        __m512 d[6];
        for (int a = 0; a < alpha; a++) d[a] = _mm512_loadu_ps(msrc + (ptrdiff_t)(a * alpha + b) * mstride);
        if (m == 2) {
            tmp[0][b] = _mm512_add_ps(_mm512_add_ps(d[0], d[1]), d[2]);
            tmp[1][b] = _mm512_sub_ps(_mm512_sub_ps(d[1], d[2]), d[3]);
        } else {
            __m512 s1 = _mm512_add_ps(d[1], d[2]), d1 = _mm512_sub_ps(d[1], d[2]);
            __m512 s2 = _mm512_add_ps(d[3], d[4]), d2 = _mm512_sub_ps(d[3], d[4]);
            tmp[0][b] = _mm512_add_ps(_mm512_add_ps(d[0], s1), s2);
            tmp[1][b] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d2, d1);
            tmp[2][b] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), s2, s1);
            tmp[3][b] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), d2, d1), d[5]);
        }
    }
    int hv = o->h - y0 < m ? o->h - y0 : m, wv = o->w - x0 < m ? o->w - x0 : m;
    for (int r = 0; r < hv; r++) {
        const __m512 *d = tmp[r];
        __m512 res[4];
        if (m == 2) {
            res[0] = _mm512_add_ps(_mm512_add_ps(d[0], d[1]), d[2]);
            res[1] = _mm512_sub_ps(_mm512_sub_ps(d[1], d[2]), d[3]);
        } else {
            __m512 s1 = _mm512_add_ps(d[1], d[2]), d1 = _mm512_sub_ps(d[1], d[2]);
            __m512 s2 = _mm512_add_ps(d[3], d[4]), d2 = _mm512_sub_ps(d[3], d[4]);
            res[0] = _mm512_add_ps(_mm512_add_ps(d[0], s1), s2);
            res[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d2, d1);
            res[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), s2, s1);
            res[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), d2, d1), d[5]);
        }
        for (int c = 0; c < wv; c++) store16(o, n, y0 + r, x0 + c, c0, res[c]);
    }
}

INL TGT void wino_body(wino_ctx *w, const int m) {
    const l3ic_in *in = w->in;
    const int cin = in->c, T = (m + 2) * (m + 2), mb = w->mb, coutp = w->coutp;
    float *V = alloc_floats((size_t)T * mb * cin);
    float *M = alloc_floats((size_t)T * mb * coutp);
    if (!V || !M) {
        free(V);
        free(M);
        __atomic_store_n(&w->err, L3IC_ERR_NOMEM, __ATOMIC_RELAXED);
        return;
    }
    memset(V, 0, sizeof(float) * (size_t)T * mb * cin);
    const ptrdiff_t zero = 0;
    const ptrdiff_t vstride = (ptrdiff_t)mb * cin, mstride = (ptrdiff_t)mb * coutp;
    for (;;) {
        int blk = __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED);
        if (blk >= w->nblocks) break;
        int t0 = blk * mb, cnt = w->ntiles - t0 < mb ? w->ntiles - t0 : mb;
        for (int i = 0; i < cnt; i++) {
            int tile = t0 + i, n = tile / (w->th * w->tw), rem = tile - n * (w->th * w->tw);
            int ty = rem / w->tw, tx = rem - ty * w->tw;
            const float *src = in->base + n * in->sn + (ptrdiff_t)(ty * m - 1) * in->sy + (ptrdiff_t)(tx * m - 1) * cin;
            for (int c0 = 0; c0 < cin; c0 += 16)
                input_tile(m, w->in_lrelu, src + c0, in->sy, cin, lane_mask(cin - c0), V + (ptrdiff_t)i * cin + c0, vstride);
        }
        int rows = (cnt + L3IC_MR - 1) / L3IC_MR * L3IC_MR;
        /* rows cnt..rows-1 hold zeros or earlier tiles: finite, and their results are not used */
        for (int t = 0; t < T; t++)
            for (int pnl = 0; pnl < w->P; pnl++) {
                const float *b = w->U + ((ptrdiff_t)t * w->P + pnl) * cin * w->nr;
                for (int r = 0; r < rows; r += L3IC_MR) {
                    const float *a = V + (ptrdiff_t)t * vstride + (ptrdiff_t)r * cin;
                    float *c = M + (ptrdiff_t)t * mstride + (ptrdiff_t)r * coutp + pnl * w->nr;
                    if (w->nr == 32)
                        ukr32(a, cin, &zero, 1, cin, b, c, coutp);
                    else
                        ukr16(a, cin, &zero, 1, cin, b, c, coutp);
                }
            }
        for (int i = 0; i < cnt; i++) {
            int tile = t0 + i, n = tile / (w->th * w->tw), rem = tile - n * (w->th * w->tw);
            int ty = rem / w->tw, tx = rem - ty * w->tw;
            for (int c0 = 0; c0 < w->out->cout; c0 += 16)
                output_tile(m, w->out, M + (ptrdiff_t)i * coutp + c0, mstride, n, ty * m, tx * m, c0);
        }
    }
    free(V);
    free(M);
}

TGT static void wino_worker2(void *p, int tid) {
    (void)tid;
    wino_body((wino_ctx *)p, 2);
}

TGT static void wino_worker4(void *p, int tid) {
    (void)tid;
    wino_body((wino_ctx *)p, 4);
}

int l3ic_winograd3x3(int m, const l3ic_in *in, int in_lrelu, const float *U, int nr, const l3ic_out *out, int mb,
                     int nthreads) {
    if (!l3ic_cpu_supported()) return L3IC_ERR_UNSUPPORTED;
    if ((m != 2 && m != 4) || (nr != 16 && nr != 32) || in->c < 1 || out->cout < 1 || in->n < 1 ||
        out->h != in->h || out->w != in->w)
        return L3IC_ERR_ARG;
    if ((out->mode == L3IC_OUT_D2S && out->cout % 64) || (out->mode == L3IC_OUT_IMAGE && out->cout != 12))
        return L3IC_ERR_ARG;
    wino_ctx w;
    memset(&w, 0, sizeof w);
    w.m = m;
    w.alpha = m + 2;
    w.T = w.alpha * w.alpha;
    w.in = in;
    w.in_lrelu = in_lrelu;
    w.U = U;
    w.nr = nr;
    w.P = (out->cout + nr - 1) / nr;
    w.coutp = w.P * nr;
    w.out = out;
    w.th = (in->h + m - 1) / m;
    w.tw = (in->w + m - 1) / m;
    w.ntiles = in->n * w.th * w.tw;
    if (mb <= 0) mb = m == 2 ? 56 : 28;
    w.mb = (mb + L3IC_MR - 1) / L3IC_MR * L3IC_MR;
    w.nblocks = (w.ntiles + w.mb - 1) / w.mb;
    if (nthreads > w.nblocks) nthreads = w.nblocks;
    run_threads(nthreads, m == 2 ? wino_worker2 : wino_worker4, &w);
    return w.err;
}

/* -- 5x5 stride 2 (implicit GEMM) ----------------------------------------------------------------------------- */
typedef struct {
    const l3ic_in *in;
    int pt, pl;
    const float *W;
    int nr, P;
    const l3ic_out *out;
    int nrows, next;
} c5_ctx;

TGT static void c5_worker(void *p, int tid) {
    c5_ctx *w = (c5_ctx *)p;
    (void)tid;
    const l3ic_in *in = w->in;
    const l3ic_out *o = w->out;
    const int cin = in->c;
    ptrdiff_t aoff[25];
    for (int ky = 0; ky < 5; ky++)
        for (int kx = 0; kx < 5; kx++) aoff[ky * 5 + kx] = ky * in->sy + (ptrdiff_t)kx * cin;
    float ctile[L3IC_MR * 32] __attribute__((aligned(64)));
    for (;;) {
        int row = __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED);
        if (row >= w->nrows) break;
        int n = row / o->h, oy = row - n * o->h;
        for (int ox0 = 0; ox0 < o->w; ox0 += L3IC_MR) {
            int cnt = o->w - ox0 < L3IC_MR ? o->w - ox0 : L3IC_MR;
            const float *a = in->base + n * in->sn + (ptrdiff_t)(2 * oy - w->pt) * in->sy + (ptrdiff_t)(2 * ox0 - w->pl) * cin;
            for (int pnl = 0; pnl < w->P; pnl++) {
                const float *b = w->W + (ptrdiff_t)pnl * 25 * cin * w->nr;
                if (w->nr == 32)
                    ukr32(a, 2 * cin, aoff, 25, cin, b, ctile, 32);
                else
                    ukr16(a, 2 * cin, aoff, 25, cin, b, ctile, 16);
                for (int i = 0; i < cnt; i++)
                    for (int v = 0; v < w->nr && pnl * w->nr + v < o->cout; v += 16)
                        store16(o, n, oy, ox0 + i, pnl * w->nr + v, _mm512_load_ps(ctile + i * w->nr + v));
            }
        }
    }
}

int l3ic_conv5x5s2(const l3ic_in *in, int pad_top, int pad_left, const float *W, int nr, const l3ic_out *out,
                   int nthreads) {
    if (!l3ic_cpu_supported()) return L3IC_ERR_UNSUPPORTED;
    if ((nr != 16 && nr != 32) || in->c < 1 || out->cout < 1 || in->n < 1 || out->mode != L3IC_OUT_PLAIN ||
        out->residual)
        return L3IC_ERR_ARG;
    c5_ctx w;
    memset(&w, 0, sizeof w);
    w.in = in;
    w.pt = pad_top;
    w.pl = pad_left;
    w.W = W;
    w.nr = nr;
    w.P = (out->cout + nr - 1) / nr;
    w.out = out;
    w.nrows = in->n * out->h;
    if (nthreads > w.nrows) nthreads = w.nrows;
    run_threads(nthreads, c5_worker, &w);
    return L3IC_OK;
}

#else /* not x86-64: the kernels are not available; the Python side falls back to XLA */

int l3ic_cpu_supported(void) { return 0; }

int l3ic_winograd3x3(int m, const l3ic_in *in, int in_lrelu, const float *U, int nr, const l3ic_out *out, int mb,
                     int nthreads) {
    (void)m; (void)in; (void)in_lrelu; (void)U; (void)nr; (void)out; (void)mb; (void)nthreads;
    return L3IC_ERR_UNSUPPORTED;
}

int l3ic_conv5x5s2(const l3ic_in *in, int pad_top, int pad_left, const float *W, int nr, const l3ic_out *out,
                   int nthreads) {
    (void)in; (void)pad_top; (void)pad_left; (void)W; (void)nr; (void)out; (void)nthreads;
    return L3IC_ERR_UNSUPPORTED;
}

#endif
