"""Per-layer speed of the C kernels (``l3ic_jax.cpu_backend``) against XLA's convolution, 1920x1080, one model.

For every conv layer of the encoder and decoder at the shapes a 1920x1080 image gives: seconds (median of
``--repeats`` after a warm-up) and GMAC/s counted as a direct convolution (so Winograd layers can exceed the FMA
peak), for our kernel (with its fused epilogue, as the network runs it) and for ``jax.lax.conv_general_dilated``
(jitted, bias added, ``Precision.HIGHEST``, as the model runs it). Also the whole encoder and decoder both ways.
Writes JSON (``--out``); pytest does not collect it.

Usage: ``python tools/bench_conv.py [--model 32c] [--winograd 4,decoder=2] [--repeats 5] [--out docs/bench_conv.json]``.
Time it on a quiet machine (the project's timing lock, training paused).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _time(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv=None) -> int:
    import jax
    import jax.numpy as jnp

    from l3ic_jax import _cpu, cpu_backend
    from l3ic_jax.codec import load, tensors_from_model

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="32c")
    p.add_argument("--winograd", default=None, help="Winograd plan (default: cpu_backend.DEFAULT_WINOGRAD)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--out", default="", help="JSON output file ('' for none)")
    args = p.parse_args(argv)

    codec = load(args.model, cpu_kernels=False)
    tensors = tensors_from_model(codec.model)
    net = cpu_backend.CpuNetwork(tensors, codec.n_features, winograd_m=args.winograd)
    B = cpu_backend._Buffer
    h, w = args.height, args.width
    h1, w1 = -(-h // 2), -(-w // 2)
    h2, w2 = -(-h1 // 2), -(-w1 // 2)
    h3, w3 = -(-h2 // 2), -(-w2 // 2)
    c = codec.n_features
    rng = np.random.default_rng(0)

    def filled(n, hh, ww, cc):
        b = B(n, hh, ww, cc)
        b.interior()[...] = rng.standard_normal((n, hh, ww, cc), dtype=np.float32)
        return b

    rows = []

    def xla_conv(kernel, bias, x, stride):
        f = jax.jit(lambda x, k, b: jax.lax.conv_general_dilated(
            x, k, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=jax.lax.Precision.HIGHEST) + b)
        k, b = jnp.asarray(kernel), jnp.asarray(bias)
        xd = jnp.asarray(x)
        return lambda: f(xd, k, b).block_until_ready()

    def add(name, src, run_ours, out_hw, stride):
        kernel, bias = tensors[f"{name}/kernel"], tensors[f"{name}/bias"]
        kh, kw, cin, cout = kernel.shape
        macs = out_hw[0] * out_hw[1] * kh * kw * cin * cout
        t_ours = _time(run_ours, args.repeats)
        t_xla = _time(xla_conv(kernel, bias, src.interior().copy(), stride), args.repeats)
        L = net.layers[name]
        kind = f"Winograd F({L['m']}x{L['m']},3x3)" if L["kind"] == "wino" else "implicit GEMM 5x5/2"
        row = {"layer": name, "shape": f"{src.h}x{src.w}x{cin} -> {out_hw[0]}x{out_hw[1]}x{cout}", "kind": kind,
               "gmac": macs / 1e9, "ours_s": t_ours, "xla_s": t_xla,
               "ours_gmacps": macs / t_ours / 1e9, "xla_gmacps": macs / t_xla / 1e9}
        rows.append(row)
        print(f"{name:16s} {row['shape']:28s} {kind:22s} {row['gmac']:6.2f} GMAC  ours {t_ours * 1e3:7.1f} ms "
              f"{row['ours_gmacps']:6.0f} GMAC/s  XLA {t_xla * 1e3:7.1f} ms {row['xla_gmacps']:6.0f} GMAC/s",
              flush=True)

    # encoder
    b0, b1, bn, bt = filled(1, h, w, 3), filled(1, h1, w1, 64), filled(1, h2, w2, 128), B(1, h2, w2, 128)
    e1 = B(1, h1, w1, 64)
    add("encoder/conv_0", b0, lambda: net._conv5("encoder/conv_0", b0, h1, w1, e1.flat, e1.off, e1.sn, e1.sy,
                                                  lrelu=True), (h1, w1), 2)
    e2 = B(1, h2, w2, 128)
    add("encoder/conv_1", b1, lambda: net._conv5("encoder/conv_1", b1, h2, w2, e2.flat, e2.off, e2.sn, e2.sy),
        (h2, w2), 2)
    add("encoder/conv_2", bn, lambda: net._wino("encoder/conv_2", bn, bt, in_lrelu=True, lrelu=True), (h2, w2), 1)
    z = np.empty((1, h3, w3, c), np.float32)
    add("encoder/conv_8", bn, lambda: net._conv5("encoder/conv_8", bn, h3, w3, z.reshape(-1), 0, h3 * w3 * c, w3 * c,
                                                  scale=net.latent_scaling), (h3, w3), 2)
    # decoder
    zb, xb, tb = filled(1, h3, w3, c), filled(1, 2 * h3, 2 * w3, 128), B(1, 2 * h3, 2 * w3, 128)
    yb = filled(1, 4 * h3, 4 * w3, 64)
    add("decoder/conv_0", zb, lambda: net._wino("decoder/conv_0", zb, B(1, 2 * h3, 2 * w3, 128), mode=_cpu.OUT_D2S),
        (h3, w3), 1)
    add("decoder/conv_1", xb, lambda: net._wino("decoder/conv_1", xb, tb, lrelu=True), (2 * h3, 2 * w3), 1)
    yo = B(1, 4 * h3, 4 * w3, 64)
    add("decoder/tconv_7", xb, lambda: net._wino("decoder/tconv_7", xb, yo, mode=_cpu.OUT_D2S, lrelu=True),
        (2 * h3, 2 * w3), 1)
    img = np.empty((1, 8 * h3, 8 * w3, 3), np.float32)
    add("decoder/tconv_8", yb, lambda: net._wino("decoder/tconv_8", yb, img, mode=_cpu.OUT_IMAGE),
        (4 * h3, 4 * w3), 1)

    x = rng.random((1, h, w, 3), dtype=np.float32)
    zq = np.round(net.encode(x))
    whole = {
        "encoder": {"ours_s": _time(lambda: net.encode(x), args.repeats),
                    "xla_s": _time(lambda: codec._encode(codec._state, x).block_until_ready(), args.repeats)},
        "decoder": {"ours_s": _time(lambda: net.decode(zq), args.repeats),
                    "xla_s": _time(lambda: codec._decode(codec._state, zq).block_until_ready(), args.repeats)},
    }
    for k, v in whole.items():
        print(f"whole {k}: ours {v['ours_s']:.4f} s, XLA {v['xla_s']:.4f} s", flush=True)
    result = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": "python tools/bench_conv.py " + " ".join(argv or sys.argv[1:]),
              "model": args.model, "size": f"{w}x{h}", "winograd": net.m, "threads": net.threads,
              "layers": rows, "whole": whole}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
