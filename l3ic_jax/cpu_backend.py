"""Inference of the l3ic network on x86-64 CPUs with the AVX-512 kernels of the ``l3ic_jax._cpu`` extension.

The same graph as :mod:`l3ic_jax.model` (encoder and decoder, NHWC float32, TensorFlow ``SAME`` padding including
the asymmetric stride-2 case, DCR depth_to_space, leaky ReLU 0.2 where the original has it, input scaling
``2 (x - 0.5)``, ``latent_scaling``, output ``(y + 1) / 2`` clipped to [0, 1]), without XLA:

- every 3x3 stride-1 convolution (the residual trunks, the decoder's ``conv_0``, ``tconv_7`` and ``tconv_8``) runs
  as Winograd F(m x m, 3x3) (Lavin & Gray 2016), m = 4 by default (``L3IC_CPU_WINOGRAD=2`` for F(2x2, 3x3)), with
  the kernels transformed once, in float64, when the network is built;
- the 5x5 stride-2 convolutions (encoder ``conv_0``, ``conv_1``, ``conv_8``) run as implicit GEMMs;
- bias, residual sums, leaky ReLU, the latent scaling, depth_to_space and the decoder's output mapping are fused
  into the kernels' epilogues; NumPy only scales the input and copies the latent into padded buffers.

Inference only (no gradients). :class:`l3ic_jax.codec.Codec` uses it by default when JAX's default backend is the
CPU and :func:`supported` is true; ``L3IC_CPU_KERNELS=0`` (or ``Codec(..., cpu_kernels=False)``) keeps XLA.
Threads: ``L3IC_CPU_THREADS`` (default: the CPUs this process may use).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np

from ._native import load_extension
from .model import ENCODER_STRIDES, N_RESIDUAL_BLOCKS

# The extension is optional: without it (or without AVX-512) the codec stays on XLA.
_cpu = load_extension("_cpu")

PAD_BEFORE = 2  # zero rows/columns before each activation (5x5 SAME needs up to 2, 3x3 needs 1)
PAD_AFTER = 4  # after: F(4x4) tiles read up to 3 past the last row/column, 5x5 up to 2
MR = 14 if _cpu is None else _cpu.MR
# F(4x4, 3x3) in the encoder (4x fewer multiplies than direct), F(2x2, 3x3) in the decoder: its output is the
# image itself, where F(4x4)'s rounding (up to ~1e-5 on random weights) would be visible next to the 1e-5 of
# tiled-vs-whole decoding; with F(2x2) tiled decoding stays bit-identical to one whole pass.
DEFAULT_WINOGRAD = "4,decoder=2"

# Winograd F(m, 3) kernel transforms G (m + 2 by 3), points 0, +-1, +-2 (and infinity) for m = 4 (Lavin & Gray
# 2016, eq. for F(4x4, 3x3)); the input (B^T) and output (A^T) transforms are written out in cpu_core.c.
WINOGRAD_G = {
    2: np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64),
    4: np.array(
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
        np.float64,
    ),
}


def winograd_plan(spec=None) -> dict:
    """Winograd tile size m per 3x3 layer: ``{"*": default, key: m, ...}``, a key being a layer (``decoder/conv_0``)
    or a half (``decoder``), from an int, a dict or ``L3IC_CPU_WINOGRAD`` (``4``, ``2``, ``4,decoder=2``, ...)."""
    if spec is None:
        spec = os.environ.get("L3IC_CPU_WINOGRAD") or DEFAULT_WINOGRAD
    if isinstance(spec, int):
        plan = {"*": spec}
    elif isinstance(spec, dict):
        plan = {"*": 4, **spec}
    else:
        plan = {}
        for part in str(spec).split(","):
            part = part.strip()
            if "=" in part:
                k, v = part.split("=", 1)
                plan[k.strip()] = int(v)
            elif part:
                plan["*"] = int(part)
        plan.setdefault("*", 4)
    for k, v in plan.items():
        if v not in (2, 4):
            raise ValueError(f"Winograd m must be 2 or 4, got {k}={v}")
    return plan


def supported() -> bool:
    """True when the extension is built and this CPU has AVX-512F."""
    return _cpu is not None and bool(_cpu.supported())


def default_threads() -> int:
    env = os.environ.get("L3IC_CPU_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _nr(cout: int) -> int:
    return 32 if cout % 32 == 0 else 16


def _pad_cout(w: np.ndarray, nr: int) -> np.ndarray:
    cout = w.shape[-1]
    p = -(-cout // nr) * nr
    return np.pad(w, [(0, 0)] * (w.ndim - 1) + [(0, p - cout)])


def pack_winograd(kernel: np.ndarray, m: int) -> tuple[np.ndarray, int]:
    """HWIO 3x3 kernel -> (U float32 [(m+2)^2, P, Cin, nr], nr), U = G g G^T computed in float64."""
    kh, kw, cin, cout = kernel.shape
    assert (kh, kw) == (3, 3), kernel.shape
    g = WINOGRAD_G[m]
    u = np.einsum("ai,ijco,bj->abco", g, np.asarray(kernel, np.float64), g).reshape((m + 2) ** 2, cin, cout)
    nr = _nr(cout)
    u = _pad_cout(u, nr)
    u = u.reshape(u.shape[0], cin, -1, nr).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(u, np.float32), nr


def pack_5x5(kernel: np.ndarray) -> tuple[np.ndarray, int]:
    """HWIO 5x5 kernel -> (W float32 [P, 25, Cin, nr], nr)."""
    kh, kw, cin, cout = kernel.shape
    assert (kh, kw) == (5, 5), kernel.shape
    nr = _nr(cout)
    w = _pad_cout(np.asarray(kernel, np.float32).reshape(25, cin, cout), nr)
    w = w.reshape(25, cin, -1, nr).transpose(2, 0, 1, 3)
    return np.ascontiguousarray(w, np.float32), nr


class _Buffer:
    """A zeroed NHWC activation with PAD_BEFORE / PAD_AFTER zero borders (kernels write the interior only)."""

    def __init__(self, n: int, h: int, w: int, c: int):
        self.n, self.h, self.w, self.c = n, h, w, c
        self.hp, self.wp = h + PAD_BEFORE + PAD_AFTER, w + PAD_BEFORE + PAD_AFTER
        size = n * self.hp * self.wp * c
        # slack: the 5x5 kernel's last block of 14 output columns may read past the last padded row
        self.flat = np.zeros(size + (2 * MR + 8) * c, np.float32)
        self.sn, self.sy = self.hp * self.wp * c, self.wp * c
        self.off = PAD_BEFORE * self.sy + PAD_BEFORE * c

    def interior(self) -> np.ndarray:
        full = self.flat[: self.n * self.sn].reshape(self.n, self.hp, self.wp, self.c)
        return full[:, PAD_BEFORE : PAD_BEFORE + self.h, PAD_BEFORE : PAD_BEFORE + self.w, :]


def _same_pad_before(size: int, k: int, s: int) -> int:
    out = -(-size // s)
    return max((out - 1) * s + k - size, 0) // 2


class CpuNetwork:
    """Encoder and decoder of one set of weights (flat ``/``-named checkpoint tensors) on the C kernels."""

    def __init__(self, tensors: dict, n_features: int, *, winograd_m: int | None = None, threads: int | None = None):
        if not supported():
            raise RuntimeError("the l3ic CPU kernels are not available here (l3ic_jax._cpu with AVX-512F)")
        self.n_features = int(n_features)
        self.m = winograd_plan(winograd_m)
        self.threads = int(threads or default_threads())
        self.layers = {}
        for name, value in tensors.items():
            if not name.endswith("/kernel"):
                continue
            layer = name[: -len("/kernel")]
            k = np.asarray(value, np.float32)
            bias = np.asarray(tensors[f"{layer}/bias"], np.float32)
            if k.shape[0] == 5:
                w, nr = pack_5x5(k)
                kind = "5x5s2"
            else:
                m = self.m.get(layer, self.m.get(layer.split("/")[0], self.m["*"]))
                w, nr = pack_winograd(k, m)
                kind = "wino"
            self.layers[layer] = dict(kind=kind, w=w, nr=nr, m=m if kind == "wino" else None, cin=k.shape[2], cout=k.shape[3],
                                      bias=np.ascontiguousarray(_pad_cout(bias, nr)))
        self.latent_scaling = np.float32(np.asarray(tensors["encoder/latent_scaling"]).reshape(()))
        self._buffers: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        assert ENCODER_STRIDES.get("conv_2", 1) == 1 and N_RESIDUAL_BLOCKS == 3

    # -- buffers ------------------------------------------------------------------------------------------------
    def _buffer(self, key, n, h, w, c) -> _Buffer:
        """A cached padded buffer (reused across calls of one shape; pads stay zero, interiors are rewritten)."""
        k = (key, n, h, w, c)
        buf = self._buffers.pop(k, None)
        if buf is None:
            buf = _Buffer(n, h, w, c)
        self._buffers[k] = buf
        while len(self._buffers) > 12:  # a few shapes (tiles, batches) at a time
            self._buffers.popitem(last=False)
        return buf

    # -- layers -------------------------------------------------------------------------------------------------
    def _wino(self, name, src: _Buffer, dst, *, mode=None, in_lrelu=False, residual=False, lrelu=False):
        L = self.layers[name]
        assert L["kind"] == "wino" and src.c == L["cin"], (name, src.c)
        if isinstance(dst, _Buffer):
            out, off, sn, sy = dst.flat, dst.off, dst.sn, dst.sy
        else:  # the decoder's final image, unpadded (N, 2h, 2w, 3)
            out, off, sn, sy = dst.reshape(-1), 0, dst.shape[1] * dst.shape[2] * 3, dst.shape[2] * 3
        mode = _cpu.OUT_PLAIN if mode is None else mode
        _cpu.winograd3x3(L["m"], src.flat, src.off, src.sn, src.sy, src.n, src.h, src.w, src.c, in_lrelu,
                         L["w"], L["nr"], out, off, sn, sy, mode, L["cout"], L["bias"], residual, lrelu, 1.0, 0,
                         self.threads)

    def _conv5(self, name, src: _Buffer, out_h, out_w, out, off, sn, sy, *, lrelu=False, scale=1.0):
        L = self.layers[name]
        assert L["kind"] == "5x5s2" and src.c == L["cin"], (name, src.c)
        _cpu.conv5x5s2(src.flat, src.off, src.sn, src.sy, src.n, src.h, src.w, src.c,
                       _same_pad_before(src.h, 5, 2), _same_pad_before(src.w, 5, 2), L["w"], L["nr"],
                       out, off, sn, sy, out_h, out_w, L["cout"], L["bias"], lrelu, float(scale), self.threads)

    # -- the two halves -----------------------------------------------------------------------------------------
    def encode(self, x: np.ndarray) -> np.ndarray:
        """Images (N, H, W, 3) float32 in [0, 1] -> latent (N, ceil(H/8), ceil(W/8), C), as ``Encoder.__call__``."""
        x = np.asarray(x, np.float32)
        n, h, w, _ = x.shape
        h1, w1 = -(-h // 2), -(-w // 2)
        h2, w2 = -(-h1 // 2), -(-w1 // 2)
        h3, w3 = -(-h2 // 2), -(-w2 // 2)
        with self._lock:
            b0 = self._buffer("e0", n, h, w, 3)
            b1 = self._buffer("e1", n, h1, w1, 64)
            nb = self._buffer("en", n, h2, w2, 128)
            tb = self._buffer("et", n, h2, w2, 128)
            v = b0.interior()
            np.subtract(x, np.float32(0.5), out=v)
            np.multiply(v, np.float32(2.0), out=v)  # 2 (x - 0.5), as the model
            self._conv5("encoder/conv_0", b0, h1, w1, b1.flat, b1.off, b1.sn, b1.sy, lrelu=True)
            self._conv5("encoder/conv_1", b1, h2, w2, nb.flat, nb.off, nb.sn, nb.sy)
            for blk in range(N_RESIDUAL_BLOCKS):  # n + conv_b(lrelu(conv_a(n))); the first block takes lrelu(n)
                a, b = 2 + 2 * blk, 3 + 2 * blk
                self._wino(f"encoder/conv_{a}", nb, tb, in_lrelu=(blk == 0), lrelu=True)
                self._wino(f"encoder/conv_{b}", tb, nb, residual=True)
            z = np.empty((n, h3, w3, self.n_features), np.float32)
            self._conv5("encoder/conv_8", nb, h3, w3, z.reshape(-1), 0, h3 * w3 * self.n_features,
                        w3 * self.n_features, scale=self.latent_scaling)
        return z

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Quantized latent values (N, h, w, C) -> images (N, 8h, 8w, 3) clipped to [0, 1], as ``Decoder``."""
        z = np.asarray(z, np.float32)
        n, h, w, c = z.shape
        with self._lock:
            zb = self._buffer("dz", n, h, w, c)
            zb.interior()[...] = z
            xb = self._buffer("dx", n, 2 * h, 2 * w, 128)
            tb = self._buffer("dt", n, 2 * h, 2 * w, 128)
            yb = self._buffer("dy", n, 4 * h, 4 * w, 64)
            self._wino("decoder/conv_0", zb, xb, mode=_cpu.OUT_D2S)
            for blk in range(N_RESIDUAL_BLOCKS):
                a, b = 1 + 2 * blk, 2 + 2 * blk
                self._wino(f"decoder/conv_{a}", xb, tb, lrelu=True)
                self._wino(f"decoder/conv_{b}", tb, xb, residual=True)
            self._wino("decoder/tconv_7", xb, yb, mode=_cpu.OUT_D2S, lrelu=True)
            img = np.empty((n, 8 * h, 8 * w, 3), np.float32)
            self._wino("decoder/tconv_8", yb, img, mode=_cpu.OUT_IMAGE)
        return img
