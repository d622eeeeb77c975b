/* Convolution kernels of the l3ic network for x86-64 CPUs with AVX-512 (plain C, no Python).
 *
 * Two layer kinds cover the whole network:
 *
 * - l3ic_winograd3x3: 3x3 stride-1 SAME convolution by Winograd's minimal filtering F(m x m, 3x3) (Lavin & Gray,
 *   "Fast algorithms for convolutional neural networks", 2016), m = 2 or 4: input tiles are transformed, multiplied
 *   by the pre-transformed kernels in (m+2)^2 independent GEMMs (tiles x Cin times Cin x Cout) and transformed back.
 * - l3ic_conv5x5s2: 5x5 stride-2 convolution as an implicit GEMM (25 taps of Cin each), no im2col copy.
 *
 * Activations are NHWC float32. Inputs live in zero-padded buffers: the caller guarantees zeros around the interior
 * (REQUIRES below); kernels read the padding instead of testing bounds. Outputs go through an epilogue that adds the
 * bias, optionally a residual (read from the output itself), applies leaky ReLU (alpha 0.2) or a scale, and writes
 * either plainly, with TensorFlow's depth_to_space (DCR) folded into the addressing, or as the decoder's final image
 * ((v + 1) / 2 clipped to [0, 1], depth_to_space of 12 channels to 3).
 *
 * Threads: every call splits its work over `nthreads` POSIX threads (dynamic block queue). */
#ifndef L3IC_CPU_CORE_H
#define L3IC_CPU_CORE_H

#include <stddef.h>

#define L3IC_MR 14 /* rows (tiles or output pixels) of the GEMM micro-kernel */

enum { L3IC_OUT_PLAIN = 0, L3IC_OUT_D2S = 1, L3IC_OUT_IMAGE = 2 };

enum {
    L3IC_OK = 0,
    L3IC_ERR_UNSUPPORTED = -1, /* no AVX-512F on this CPU, or not an x86-64 build */
    L3IC_ERR_NOMEM = -2,
    L3IC_ERR_ARG = -3
};

/* An NHWC input: element (n, y, x, c) at base[n*sn + y*sy + x*c_count + c]; y, x may be negative (padding). */
typedef struct {
    const float *base;
    ptrdiff_t sn, sy;
    int n, h, w, c;
} l3ic_in;

/* Where results go. The layer computes `cout` channels at (n, y, x), 0 <= y < h, 0 <= x < w.
 * PLAIN: element (n, y, x, c) at base[n*sn + y*sy + x*cout + c].
 * D2S:   channel c = (2i + j) * (cout/4) + c' goes to (n, 2y+i, 2x+j, c') at base[n*sn + (2y+i)*sy + (2x+j)*(cout/4) + c'];
 *        REQUIRES cout % 64 == 0.
 * IMAGE: cout == 12; as D2S with 3 channels, value (v + 1) / 2 clipped to [0, 1].
 * Epilogue: v = acc + bias[c]; if residual: v += (old value at the PLAIN destination); if lrelu: v = max(v, 0.2 v);
 * v *= scale (skipped when scale == 1). */
typedef struct {
    float *base;
    ptrdiff_t sn, sy;
    int mode, cout, h, w;
    const float *bias;
    int residual, lrelu;
    float scale;
} l3ic_out;

/* 1 when the kernels can run here (x86-64 with AVX-512F), else 0. */
int l3ic_cpu_supported(void);

/* 3x3, stride 1, SAME. m: 2 or 4. U: pre-transformed kernels, float32 [(m+2)^2][P][Cin][nr] with P = ceil(cout/nr),
 * U[a*(m+2)+b] = (G g G^T)[a][b] for the G of F(m, 3) used here (see cpu_backend.py), zero for channels >= cout.
 * nr: 16 or 32. in_lrelu: apply leaky ReLU to the input as it is read. mb: tiles per block (0: default).
 * REQUIRES: input zero at rows -1 and h .. m*ceil(h/m) and columns -1 and w .. m*ceil(w/m) (all readable);
 * the output must not overlap the input except for residual in place (out == the residual source). */
int l3ic_winograd3x3(int m, const l3ic_in *in, int in_lrelu, const float *U, int nr, const l3ic_out *out, int mb,
                     int nthreads);

/* 5x5, stride 2, output h x w (out->h, out->w), input padding pad_top / pad_left before (TF SAME).
 * W: float32 [P][25][Cin][nr] (tap = ky*5 + kx), zero for channels >= cout.
 * REQUIRES: input readable (zero where outside the image) at rows -pad_top .. 2*h+2-pad_top and columns
 * -pad_left .. 2*(ceil(w/14)*14 - 1) + 4 - pad_left (columns past 2*w+2-pad_left only feed discarded rows). */
int l3ic_conv5x5s2(const l3ic_in *in, int pad_top, int pad_left, const float *W, int nr, const l3ic_out *out,
                   int nthreads);

#endif
