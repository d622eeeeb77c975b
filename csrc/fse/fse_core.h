/*
 * fse_core.h -- FSE (tabled asymmetric numeral system) coder for bytes.
 *
 * Plain C99, no Python.h, no global state, no allocation on the hot paths
 * (all tables live on the stack, under 32 KiB per call), so every function
 * is safe to call from any number of threads at once.
 *
 * The output is byte-identical to the one-shot FSE_compress() of the
 * reference FSE library (Cyan4973/FiniteStateEntropy, lib/, commit 9f30e09):
 * a normalized-count header (RFC 8878 section 4.1.1 layout) followed by a
 * bitstream coded with two interleaved tANS states.  See
 * /work/shared/reference/fse/FORMAT.md for the exact rules; the section
 * numbers in fse_core.c refer to that document.  This implementation was
 * written from that text, not from the reference sources.
 *
 * Return convention (mirrors the reference so results can be compared
 * one to one): functions return a size_t that is either a result or an
 * error code; test it with l3fse_is_error() first.
 */
#ifndef L3IC_FSE_CORE_H
#define L3IC_FSE_CORE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes.  Errors are returned as (size_t)-code, like the reference. */
typedef enum {
    L3FSE_OK = 0,
    L3FSE_ERR_GENERIC = 1,                 /* "Error (generic)" */
    L3FSE_ERR_DST_SIZE_TOO_SMALL = 2,      /* "Destination buffer is too small" */
    L3FSE_ERR_SRC_SIZE_WRONG = 3,          /* "Src size is incorrect" */
    L3FSE_ERR_CORRUPTION_DETECTED = 4,     /* "Corrupted block detected" */
    L3FSE_ERR_TABLELOG_TOO_LARGE = 5,      /* "tableLog requires too much memory : unsupported" */
    L3FSE_ERR_MAXSYMBOLVALUE_TOO_LARGE = 6,/* "Unsupported max Symbol Value : too large" */
    L3FSE_ERR_MAXSYMBOLVALUE_TOO_SMALL = 7,/* "Specified maxSymbolValue is too small" */
    L3FSE_ERR_MAX_CODE = 8
} l3fse_error_t;

#define L3FSE_ERROR(code) ((size_t) - (size_t)(code))

/* Special results of l3fse_compress() (not errors, nothing is written). */
#define L3FSE_NOT_COMPRESSIBLE ((size_t)0) /* store the input raw */
#define L3FSE_RLE ((size_t)1)              /* all n >= 2 bytes equal */

/* Limits of the format. */
#define L3FSE_MIN_TABLELOG 5
#define L3FSE_DEFAULT_TABLELOG 11
#define L3FSE_MAX_TABLELOG 12
#define L3FSE_MAX_SYMBOL 255
/* Largest input l3fse_compress() accepts (counts and the table-log rule use
 * 32-bit arithmetic, as in the reference).  Larger inputs: SRC_SIZE_WRONG. */
#define L3FSE_MAX_SRC_SIZE ((size_t)0xFFFFFFFFu)

/* Capacity with which l3fse_compress() encodes straight into dst; any
 * smaller dst costs one temporary heap buffer of this size. */
#define L3FSE_COMPRESS_FAST_CAPACITY(n) ((size_t)(n) + 8)
/* The reference's FSE_compressBound(n); always enough, never needed. */
#define L3FSE_COMPRESS_BOUND(n) ((size_t)(n) + ((size_t)(n) >> 7) + 524)

/* Nonzero when r is an error code. */
int l3fse_is_error(size_t r);
/* The error code of r (L3FSE_OK when r is not an error). */
l3fse_error_t l3fse_error_code(size_t r);
/* Reference error name (e.g. "corruption_detected"), or "no_error". Static string. */
const char *l3fse_error_name(size_t r);
/* Reference message, as FSE_getErrorName() returns it. Static string. */
const char *l3fse_error_message(size_t r);

/*
 * l3fse_compress: one-shot FSE compression of n bytes (FSE_compress()).
 *
 * REQUIRES: src points to n readable bytes (src may be NULL when n == 0).
 * REQUIRES: dst points to dst_capacity writable bytes (may be NULL when
 *           dst_capacity == 0).  src and dst do not overlap.
 * legacy:   0 = current reference table-log rule; nonzero = the older FSE
 *           copy bundled in pkorus/pyfse (minBitsSrc = hb(n-1)+1, fallback
 *           normalization without the D == 0 early exit).
 *
 * Returns:
 *   L3FSE_NOT_COMPRESSIBLE (0): n <= 1, all bytes distinct, the largest
 *       count is below n/128, or the result would be >= n-1 bytes;
 *   L3FSE_RLE (1): n >= 2 and all bytes equal (the caller stores byte and n);
 *   the compressed size (4 .. n-2) written at dst;
 *   an error: DST_SIZE_TOO_SMALL when the result does not fit dst_capacity
 *       (a capacity of n-2 is always enough), SRC_SIZE_WRONG when
 *       n > L3FSE_MAX_SRC_SIZE, GENERIC when the fallback normalization fails
 *       (never observed) or a temporary buffer cannot be allocated.
 * Nothing outside dst[0 .. dst_capacity) is written, whatever the result.
 */
size_t l3fse_compress(void *dst, size_t dst_capacity, const void *src, size_t n,
                      int legacy);

/*
 * l3fse_decompress: one-shot FSE decompression (FSE_decompress()).
 *
 * REQUIRES: src points to src_size readable bytes: the exact compressed
 *           stream (header + bitstream), no more, no less; src may be NULL
 *           when src_size == 0.
 * REQUIRES: dst points to dst_capacity writable bytes (may be NULL when
 *           dst_capacity == 0).  src and dst do not overlap.
 *
 * Returns the decoded size N (N <= dst_capacity) or an error.  The stream
 * alone determines N; N > dst_capacity gives DST_SIZE_TOO_SMALL.  Any input
 * is safe: malformed data returns an error (or, since the format has no
 * checksum, wrong bytes of some length -- exactly what the reference decoder
 * returns), never reads outside src or writes outside dst, and runs in
 * O(src_size + dst_capacity) time.  On error the contents of dst are
 * unspecified.
 */
size_t l3fse_decompress(void *dst, size_t dst_capacity, const void *src,
                        size_t src_size);

/*
 * l3fse_read_header: parse only the normalized-count header (for tests and
 * tools).  norm must have room for 256 entries; entries above *max_symbol
 * are set to 0.  Returns the header size in bytes or an error.
 * REQUIRES: src points to src_size readable bytes; norm, max_symbol and
 *           table_log are valid pointers.
 */
size_t l3fse_read_header(short *norm, unsigned *max_symbol, unsigned *table_log,
                         const void *src, size_t src_size);

/*
 * l3fse_normalize: the table-log choice and normalization that
 * l3fse_compress() uses, exposed for tests.  count has 256 entries, n is
 * their sum (2 <= n <= L3FSE_MAX_SRC_SIZE) and max_symbol the largest value
 * with a nonzero count (at least two values must be present).  Writes
 * norm[0..255] and *table_log; returns 0 or an error.
 */
size_t l3fse_normalize(short *norm, unsigned *table_log, const unsigned *count,
                       size_t n, unsigned max_symbol, int legacy);

#ifdef __cplusplus
}
#endif

#endif /* L3IC_FSE_CORE_H */
