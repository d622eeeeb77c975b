"""Experiment: Winograd 3x3 stride-1 SAME convolutions in JAX on CPU, against XLA's conv and TF's conv2d.

Scratch tool (time-boxed experiment). Transform matrices: Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks" (2015), F(2x2,3x3); F(3x3,3x3) built here from the interpolation points (0, 1, -1, 2, inf).

Usage: python tools/exp_winograd.py [--check] [--time] [--tf] [--variants a,b,...] [--h 270 --w 480]
XLA flags are read from the environment before jax is imported (set XLA_FLAGS yourself).
Variants: xla (lax.conv), f2_/f3_{dots,bdot,group} (2-D Winograd; element-wise stage as 16/25 plain dots, one
batched dot, or a grouped 1x1 conv), f2_band<k>/f3_band<k> (2-D, row bands in a lax.map), w1d_<k> (Winograd along
W only, F(m,3) from ONE_D[k], and a direct 3x1 conv along H per component: keeps XLA's fast conv path, K=384).

Result (2026-11-24, 2-CPU AMD EPYC AVX-512, jaxlib 0.10.2, TF 2.21, 1x270x480x128, training paused, medians):
XLA conv 100-114 ms, TF conv2d 93-123 ms (same process, noisy), w1d_4 99-108 ms, w1d_6 108 ms, w1d_2 124 ms,
f2_dots 141-150 ms, f2_band8 127 ms, f3_dots 137-169 ms, f3_band6 127 ms, f2_bdot 231-246 ms, f2_group 616 ms.
Nothing is clearly faster than TF's conv. Why: XLA:CPU's plain [T,128]@[128,128] dot runs at 62-98 GMAC/s
(both cores; 36 on one), whatever the flags or tiling, against ~190 for the 3x3 conv and 257 for TF's matmul; and
XLA's pad / strided-slice fusions are slow (pad of 66 MB: 16 ms; input transform 20-45 ms).
Errors (6-conv residual trunk vs float64, relative to max|out|): XLA 6.4e-7, f2 4.9e-7, w1d_2 6.8e-7,
w1d_4 2.2e-6, w1d_6 3.3e-6, f3 2.4e-6.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------
# Transform matrices
# F(2x2,3x3) (Lavin & Gray 2015)
BT2 = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G2 = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
AT2 = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)


def _cook_toom(points, m, r):
    """(AT, G, BT) of F(m, r) from m+r-2 finite points plus infinity (Toom-Cook / Winograd minimal filtering)."""
    n = m + r - 1
    pts = list(points)
    assert len(pts) == n - 1
    # Lagrange-based construction (standard): y = AT [(G g) * (BT d)]
    # A^T: m x n, rows powers of points; last column the point at infinity
    AT = np.zeros((m, n))
    for j, p in enumerate(pts):
        AT[:, j] = [p ** i for i in range(m)]
    AT[m - 1, n - 1] = 1.0
    G = np.zeros((n, r))
    for j, p in enumerate(pts):
        denom = np.prod([p - q for k, q in enumerate(pts) if k != j])
        G[j] = [p ** i / denom for i in range(r)]
    G[n - 1, r - 1] = 1.0
    # BT from the polynomial prod (x - p_j): BT rows are coefficients of the Lagrange numerators
    BT = np.zeros((n, n))
    full = np.poly1d([1.0])
    for p in pts:
        full = full * np.poly1d([1.0, -p])
    for j, p in enumerate(pts):
        num = np.poly1d([1.0])
        for k, q in enumerate(pts):
            if k != j:
                num = num * np.poly1d([1.0, -q])
        c = num.coeffs[::-1]  # ascending
        BT[j, : len(c)] = c
    c = full.coeffs[::-1]
    BT[n - 1, : len(c)] = c
    # With this convention y = AT [(G g) * (BT^T? ...)] -- verify numerically and transpose if needed.
    return AT, G, BT


def _check_1d(AT, G, BT, m, r):
    rng = np.random.default_rng(0)
    d = rng.normal(size=m + r - 1)
    g = rng.normal(size=r)
    ref = np.array([sum(d[i + k] * g[k] for k in range(r)) for i in range(m)])
    return np.abs(AT @ ((G @ g) * (BT @ d)) - ref).max()


def f33_matrices():
    m, r = 3, 3
    AT, G, BT = _cook_toom([0.0, 1.0, -1.0, 2.0], m, r)
    # the construction above yields the transposed-form (correlation) BT after transposition for the
    # "tranpose" convention; pick whichever is exact.
    for cand in (BT, BT.T):
        if _check_1d(AT, G, cand, m, r) < 1e-12:
            return AT, G, cand
    # fall back: solve for BT by least squares such that the identity holds for correlation
    n = m + r - 1
    # y_i = sum_j AT[i,j] (G g)_j (BT d)_j; need sum_j AT[i,j] G[j,k] BT[j,l] = [l == i + k]
    rows, rhs = [], []
    for i in range(m):
        for k in range(r):
            for l in range(n):
                row = np.zeros((n, n))
                for j in range(n):
                    row[j, l] = AT[i, j] * G[j, k]
                rows.append(row.ravel())
                rhs.append(1.0 if l == i + k else 0.0)
    sol, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    BTs = sol.reshape(n, n)
    assert _check_1d(AT, G, BTs, m, r) < 1e-10, _check_1d(AT, G, BTs, m, r)
    return AT, G, BTs


assert _check_1d(AT2, G2, BT2, 2, 3) < 1e-12
AT3, G3, BT3 = f33_matrices()


def f_m3_matrices(m, points):
    """F(m, 3) from m+1 finite points plus infinity; BT solved (exactly) when the construction's is transposed."""
    AT, G, BT = _cook_toom(points, m, 3)
    for cand in (BT, BT.T):
        if _check_1d(AT, G, cand, m, 3) < 1e-10:
            return AT, G, cand
    raise AssertionError(m)


ONE_D = {2: (AT2, G2, BT2), 3: (AT3, G3, BT3),
         4: f_m3_matrices(4, [0.0, 1.0, -1.0, 2.0, -2.0]),
         # alternative points for F(4,3): 0, +-1, +-1/2 (smaller transform entries)
         5: f_m3_matrices(4, [0.0, 1.0, -1.0, 0.5, -0.5]),
         6: f_m3_matrices(6, [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5])}


# ---------------------------------------------------------------------------------------------------------------
def build(jax, jnp, lax):
    HI = lax.Precision.HIGHEST

    def xla_conv(x, w, b):
        return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        precision=HI) + b

    def kernel_transform(w, G):
        """HWIO 3x3 kernel -> [n*n, Ci, Co] (float32; computed in float64 on the host when given numpy)."""
        U = np.einsum("ai,ijco,bj->abco", G, np.asarray(w, np.float64), G)
        n = G.shape[0]
        return jnp.asarray(U.reshape(n * n, *U.shape[2:]), jnp.float32)

    def _tiles(x, m, n):
        """Padded input and the n x n strided slices d[a][b]: [N, th, tw, C] each."""
        N, H, W, C = x.shape
        th, tw = -(-H // m), -(-W // m)
        xp = jnp.pad(x, ((0, 0), (1, 1 + th * m - H), (1, 1 + tw * m - W), (0, 0)))
        d = [[lax.slice(xp, (0, a, bb, 0), (N, a + m * (th - 1) + 1, bb + m * (tw - 1) + 1, C), (1, m, m, 1))
              for bb in range(n)] for a in range(n)]
        return d, th, tw

    def _lin(M, rows):
        """sum_k M[k] * rows[k], skipping zeros, with +-1 as add/sub."""
        acc = None
        for coef, r in zip(M, rows):
            if coef == 0:
                continue
            t = r if coef == 1 else (-r if coef == -1 else coef * r)
            acc = t if acc is None else acc + t
        return acc

    def input_transform(x, BT, m):
        n = BT.shape[0]
        d, th, tw = _tiles(x, m, n)
        t = [[_lin(BT[a2], [d[a][bb] for a in range(n)]) for bb in range(n)] for a2 in range(n)]
        V = [[_lin(BT[b2], [t[a2][bb] for bb in range(n)]) for b2 in range(n)] for a2 in range(n)]
        return [v for row in V for v in row], th, tw

    def output_transform(Ms, AT, shape, th, tw, m):
        N, H, W, Co = shape
        n = AT.shape[1]
        M = [[Ms[a * n + bb] for bb in range(n)] for a in range(n)]
        t = [[_lin(AT[i], [M[a][bb] for a in range(n)]) for bb in range(n)] for i in range(m)]
        Y = [[_lin(AT[j], [t[i][bb] for bb in range(n)]) for j in range(m)] for i in range(m)]
        # Y[i][j]: [N, th, tw, Co] -> out[N, th*m + i, tw*m + j]
        y = jnp.stack([jnp.stack(r, axis=3) for r in Y], axis=2)  # [N, th, m, tw, m, Co]
        return y.reshape(N, th * m, tw * m, Co)[:, :H, :W, :]

    def wino(x, U, b, AT, BT, m, mode="dots"):
        N, H, W, C = x.shape
        Co = U.shape[-1]
        Vs, th, tw = input_transform(x, BT, m)
        nn_ = len(Vs)
        if mode == "dots":
            Ms = [jnp.dot(v.reshape(-1, C), U[k], precision=HI).reshape(N, th, tw, Co) for k, v in enumerate(Vs)]
        elif mode == "bdot":
            V = jnp.stack([v.reshape(-1, C) for v in Vs])
            M = jnp.einsum("ktc,kco->kto", V, U, precision=HI)
            Ms = [M[k].reshape(N, th, tw, Co) for k in range(nn_)]
        elif mode == "group":  # grouped 1x1 conv: channels = nn*C, groups = nn
            V = jnp.concatenate([v.reshape(1, -1, 1, C) for v in Vs], axis=-1)  # [1, T, 1, nn*C]
            Wg = jnp.concatenate([U[k] for k in range(nn_)], axis=-1).reshape(1, 1, C, nn_ * Co)
            M = lax.conv_general_dilated(V, Wg, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         feature_group_count=nn_, precision=HI)
            Ms = [M[0, :, 0, k * Co:(k + 1) * Co].reshape(N, th, tw, Co) for k in range(nn_)]
        else:
            raise ValueError(mode)
        return output_transform(Ms, AT, (N, H, W, Co), th, tw, m) + b

    def wino_banded(x, U, b, AT, BT, m, band_tiles, mode="dots"):
        """Row bands of ``band_tiles`` tile rows each, one band per loop iteration (working set in cache)."""
        N, H, W, C = x.shape
        Co = U.shape[-1]
        th = -(-H // m)
        nb = -(-th // band_tiles)
        rows = nb * band_tiles * m  # padded output rows
        xp = jnp.pad(x, ((0, 0), (1, 1 + rows - H), (0, 0), (0, 0)))  # rows only; cols handled inside

        def body(i):
            r0 = i * band_tiles * m
            xb = lax.dynamic_slice_in_dim(xp, r0, band_tiles * m + 2, axis=1)
            # treat as a VALID-in-rows, SAME-in-cols conv: strip the row padding the inner call adds
            yb = wino_valid_rows(xb, U, AT, BT, m, mode)
            return yb

        ys = lax.map(body, jnp.arange(nb))  # [nb, N, band*m, W, Co]
        y = jnp.moveaxis(ys, 0, 1).reshape(N, rows, W, Co)[:, :H]
        return y + b

    def wino_valid_rows(xb, U, AT, BT, m, mode):
        # xb already has the 1 row of top padding and enough bottom padding: rows = band*m + 2
        N, R, W, C = xb.shape
        n = BT.shape[0]
        Co = U.shape[-1]
        th = (R - 2) // m
        tw = -(-W // m)
        xp = jnp.pad(xb, ((0, 0), (0, 0), (1, 1 + tw * m - W), (0, 0)))
        d = [[lax.slice(xp, (0, a, bb, 0), (N, a + m * (th - 1) + 1, bb + m * (tw - 1) + 1, C), (1, m, m, 1))
              for bb in range(n)] for a in range(n)]
        t = [[_lin(BT[a2], [d[a][bb] for a in range(n)]) for bb in range(n)] for a2 in range(n)]
        Vs = [_lin(BT[b2], [t[a2][bb] for bb in range(n)]) for a2 in range(n) for b2 in range(n)]
        if mode == "dots":
            Ms = [jnp.dot(v.reshape(-1, C), U[k], precision=HI).reshape(N, th, tw, Co) for k, v in enumerate(Vs)]
        else:
            V = jnp.stack([v.reshape(-1, C) for v in Vs])
            M = jnp.einsum("ktc,kco->kto", V, U, precision=HI)
            Ms = [M[k].reshape(N, th, tw, Co) for k in range(len(Vs))]
        return output_transform(Ms, AT, (N, th * m, W, Co), th, tw, m)

    def kernel_transform_w(w, G):
        """HWIO 3x3 kernel -> n kernels of shape [3, 1, Ci, Co]: the W axis transformed by G."""
        U = np.einsum("bj,ijco->bico", G, np.asarray(w, np.float64))
        return [jnp.asarray(U[k][:, None], jnp.float32) for k in range(G.shape[0])]

    def wino_w(x, Us, b, AT, BT):
        """Winograd F(m,3) along W only; along H a direct 3x1 conv per transformed component (XLA conv path)."""
        N, H, W, C = x.shape
        m, n = AT.shape
        Co = Us[0].shape[-1]
        tw = -(-W // m)
        # tile t reads columns m t - 1 .. m t + m: reshape (no strided slices, no pad of the whole array; XLA:CPU
        # runs pad + strided slice about 2x slower than this), neighbours shifted in with zeros
        xw = x if tw * m == W else jnp.pad(x, ((0, 0), (0, 0), (0, tw * m - W), (0, 0)))
        xr = xw.reshape(N, H, tw, m, C)
        cols = [xr[:, :, :, k] for k in range(m)]
        z = jnp.zeros((N, H, 1, C), x.dtype)
        d = [jnp.concatenate([z, cols[m - 1][:, :, :-1]], axis=2)] + cols + [
            jnp.concatenate([cols[0][:, :, 1:], z], axis=2)]
        Vs = [_lin(BT[j], d) for j in range(n)]
        Ms = [lax.conv_general_dilated(v, u, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                       precision=HI) for v, u in zip(Vs, Us)]
        Y = [_lin(AT[i], Ms) for i in range(m)]
        y = jnp.stack(Y, axis=3).reshape(N, H, tw * m, Co)[:, :, :W]
        return y + b

    return xla_conv, kernel_transform, wino, wino_banded, kernel_transform_w, wino_w


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--h", type=int, default=270)
    p.add_argument("--w", type=int, default=480)
    p.add_argument("--c", type=int, default=128)
    p.add_argument("--check", action="store_true")
    p.add_argument("--time", action="store_true")
    p.add_argument("--tf", action="store_true")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--variants", default="xla,f2_dots,f2_bdot,f2_group,f3_dots,f2_band8,f3_band6")
    p.add_argument("--precision", default="")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    from jax import lax

    if args.precision:
        jax.config.update("jax_default_matmul_precision", args.precision)
    print("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""), "jax", jax.__version__, flush=True)
    xla_conv, kt, wino, wino_banded, ktw, wino_w = build(jax, jnp, lax)

    C = args.c
    rng = np.random.default_rng(0)
    lim = np.sqrt(6.0 / (9 * C + 9 * C))
    ws = [rng.uniform(-lim, lim, (3, 3, C, C)).astype(np.float32) for _ in range(6)]
    bs = [rng.normal(0, 0.1, C).astype(np.float32) for _ in range(6)]
    x = rng.normal(size=(1, args.h, args.w, C)).astype(np.float32)

    U2 = [kt(w, G2) for w in ws]
    U3 = [kt(w, G3) for w in ws]

    def make(variant):
        if variant == "xla":
            return lambda x, i: xla_conv(x, ws[i], bs[i])
        if variant.startswith("w1d_"):  # w1d_<key of ONE_D>
            AT, G, BT = ONE_D[int(variant[4:])]
            Us = [ktw(w, G) for w in ws]
            return lambda x, i: wino_w(x, Us[i], bs[i], AT, BT)
        if variant.startswith("f2_band"):
            bt = int(variant[7:])
            return lambda x, i: wino_banded(x, U2[i], bs[i], AT2, BT2, 2, bt)
        if variant.startswith("f3_band"):
            bt = int(variant[7:])
            return lambda x, i: wino_banded(x, U3[i], bs[i], AT3, BT3, 3, bt)
        kind, mode = variant.split("_", 1)
        U, AT, BT, m = (U2, AT2, BT2, 2) if kind == "f2" else (U3, AT3, BT3, 3)
        return lambda x, i: wino(x, U[i], bs[i], AT, BT, m, mode)

    variants = [v for v in args.variants.split(",") if v]

    if args.check:
        # float64 reference of a 6-conv trunk: conv, lrelu, conv, + skip (3 blocks) as the model does
        def trunk(f, x):
            n = x
            for blk in range(3):
                h = f(n, 2 * blk)
                h = jnp.where(h > 0, h, 0.2 * h)
                n = n + f(h, 2 * blk + 1)
            return n

        with jax.default_device(jax.devices("cpu")[0]):
            xs = x[:, :64, :96]  # small crop for the float64 reference
            jax.config.update("jax_enable_x64", True)
            x64 = jnp.asarray(xs, jnp.float64)

            def conv64(h, i):
                return lax.conv_general_dilated(h, jnp.asarray(ws[i], jnp.float64), (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                precision=lax.Precision.HIGHEST) + bs[i].astype(np.float64)

            one64 = np.asarray(conv64(x64, 0))
            tr64 = np.asarray(trunk(conv64, x64))
            jax.config.update("jax_enable_x64", False)
            for v in variants:
                f = make(v)
                one = np.asarray(jax.jit(lambda x: f(x, 0))(jnp.asarray(xs)))
                tr = np.asarray(jax.jit(lambda x: trunk(f, x))(jnp.asarray(xs)))
                e1 = np.abs(one - one64).max() / np.abs(one64).max()
                e6 = np.abs(tr - tr64).max() / np.abs(tr64).max()
                print(f"check {v:10s} vs float64: 1 layer max|d|={np.abs(one - one64).max():.2e} "
                      f"(rel {e1:.2e}, scale {np.abs(one64).max():.2f}); 6-conv trunk max|d|="
                      f"{np.abs(tr - tr64).max():.2e} (rel {e6:.2e}, scale {np.abs(tr64).max():.2f})", flush=True)
            # full-size, float32 vs XLA conv (one layer)
            ref = np.asarray(jax.jit(lambda x: xla_conv(x, ws[0], bs[0]))(x))
            for v in variants:
                if v == "xla":
                    continue
                f = make(v)
                y = np.asarray(jax.jit(lambda x: f(x, 0))(x))
                print(f"check {v:10s} vs XLA f32 full size: max|d|={np.abs(y - ref).max():.2e} "
                      f"(scale {np.abs(ref).max():.2f})", flush=True)

    if args.time:
        xd = jax.device_put(x)
        res = {}
        fns = {}
        for v in variants:
            f = make(v)
            fns[v] = jax.jit(lambda x, f=f: f(x, 0))
            fns[v](xd).block_until_ready()
        tfconv = None
        if args.tf:
            import tensorflow as tf

            wt = tf.constant(ws[0])
            bt_ = tf.constant(bs[0])

            @tf.function
            def tfconv(x):
                return tf.nn.bias_add(tf.nn.conv2d(x, wt, 1, "SAME"), bt_)

            xt = tf.constant(x)
            tfconv(xt).numpy()
            tfconv(xt).numpy()
        order = variants + (["tf"] if tfconv else [])
        times = {k: [] for k in order}
        for _ in range(args.reps):
            for k in order:
                t0 = time.perf_counter()
                if k == "tf":
                    tfconv(xt).numpy()
                else:
                    fns[k](xd).block_until_ready()
                times[k].append(time.perf_counter() - t0)
        macs = args.h * args.w * 9 * C * C
        for k in order:
            med = statistics.median(times[k])
            print(f"time {k:10s} median {med * 1e3:7.1f} ms  min {min(times[k]) * 1e3:7.1f} ms  "
                  f"({macs / med / 1e9:.0f} direct-GMAC/s equiv)", flush=True)
        if tfconv is not None:
            yt = tfconv(xt).numpy()
            ref = np.asarray(fns[variants[0]](xd))
            print(f"TF vs {variants[0]}: max|d|={np.abs(yt - ref).max():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
