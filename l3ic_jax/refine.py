"""Encoder-side latent refinement: rate-distortion optimized quantization for a fixed decoder.

Rounding the encoder's latent to the codebook gives indices that are good on average over the training data.
For one given image, better indices usually lie next to them: values near a decision boundary that the other
side of the boundary would decode with less error, or code in fewer bits. :func:`refine_indices` looks for them
by gradient descent on the objective the model was trained with, for this image alone: the L2 distortion of the
decoded image plus the rate weight times the code length. As in training, the decoder sees hard codebook values
and the gradient passes the quantizer as the identity (Theis et al. 2017); the search starts from the encoder's
latent and moves it by Adam steps of ``lr``. Campos et al. (2019) and Yang et al. (2020) refine the latents of
learned codecs the same way.

The rate term is the per-channel code length under the image's own index histogram, as the FSE coder sees it
(``-log2 p``, linearly interpolated between neighbouring codebook entries so it has a gradient), with the
histogram recounted at every step. The rate weight is the checkpoint's training trade-off,
``entropy_weight / (distortion_batch * values per 128 px patch)``, so a refined file sits at the point of the
rate-distortion curve the model was trained for, and usually both smaller and better. The distortion here is L2
alone: a checkpoint trained with extra distortion terms (``--ms-ssim-weight``, ``--lowpass-weight``; the bundled
64c) had its entropy weight raised to balance them, so its refined files come out smaller than its plain ones by
more (64c: 1.9 % instead of 0.5 %, docs/rate-distortion.md).

Nothing else changes: the stream format, the decoder and decoding time are the same; only compressing costs
``steps`` decoder passes forward and backward. The indices with the lowest objective seen are kept, so the
result never scores worse than plain rounding on the objective (as measured with the histogram of the step).
Large images are refined tile by tile (latent tiles of ``tile / 8``, with the neighbouring latents as fixed
context), in bounded memory.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import quantize as _q
from .tiling import DEFAULT_TILE, STRIDE, _decoder_spans

__all__ = ["DEFAULT_LR", "DEFAULT_STEPS", "rate_weight", "refine_indices"]

#: Adam steps and step size: measured on the validation photos (docs/training.md §8.18), not on Kodak.
DEFAULT_STEPS = 40
DEFAULT_LR = 0.002
#: The original objective's trade-off, for checkpoints that do not record their own.
_ORIGINAL = {"entropy_weight": 250.0, "distortion_batch": 50, "patch": 128}
_B1, _B2, _EPS = 0.9, 0.999, 1e-8


def rate_weight(codec) -> float:
    """Distortion units (``l2_loss`` of images in [0, 1]) per bit, from the checkpoint's training trade-off.

    Training minimizes ``distortion_batch * l2_loss(patch) + entropy_weight * H`` per patch, ``H`` in bits per
    latent value, so one bit of one patch weighs ``entropy_weight / (distortion_batch * values per patch)``.
    Extra distortion terms of the training objective (SSIM, MS-SSIM, low-pass) are not counted: see the module's
    docstring.
    """
    hp = (codec.metadata.get("provenance") or {}).get("hyperparameters") or {}
    ew = float(hp.get("entropy_weight") or _ORIGINAL["entropy_weight"])
    db = float(hp.get("distortion_batch") or hp.get("batch_size") or _ORIGINAL["distortion_batch"])
    patch = int(hp.get("patch") or _ORIGINAL["patch"])
    values = (patch // STRIDE) ** 2 * codec.n_features
    return ew / (db * values)


def _channel_histogram(indices: np.ndarray, k: int) -> np.ndarray:
    """Per-channel histogram of ``(h, w, C)`` indices, ``[C, k]`` float32 (NumPy, between tiles)."""
    flat = indices.reshape(-1, indices.shape[-1])
    return np.stack([np.bincount(flat[:, c], minlength=k) for c in range(flat.shape[1])]).astype(np.float32)


def _counts(indices, k: int):
    """Per-channel histogram of ``[..., C]`` indices: ``[C, k]`` float32."""
    onehot = jax.nn.one_hot(indices.reshape(-1, indices.shape[-1]), k, dtype=jnp.float32)
    return jnp.sum(onehot, axis=0)


@functools.lru_cache(maxsize=16)
def _refiner(graphdef, codebook: tuple):
    """The search for one model structure: ``(state, x, z0, free, base_counts, pix_w, lam, lr, steps) -> indices``."""
    cb = np.asarray(codebook, np.float32)
    k = len(cb)

    def code_lengths(counts):
        p = (counts + 0.5) / jnp.sum(counts + 0.5, axis=1, keepdims=True)
        return -jnp.log2(p)  # [C, k] bits

    def objective(z, state, x, table, pix_w, free):
        y = nnx.merge(graphdef, state).decoder(_q.identity_quantize(z, cb))
        y = y + jax.lax.stop_gradient(jnp.clip(y, 0.0, 1.0) - y)  # as decoded: clipped, identity gradient
        d = 0.5 * jnp.sum(pix_w * jnp.square(x - y))
        zc = jnp.clip(z - cb[0], 0.0, k - 1.0)  # position on the codebook, in steps
        lo = jnp.minimum(jnp.floor(zc).astype(jnp.int32), k - 2)
        f = zc - lo
        ch = jnp.arange(z.shape[-1])
        soft_bits = table[ch, lo] * (1.0 - f) + table[ch, lo + 1] * f
        idx = _q.quantize_indices(z, cb).astype(jnp.int32)
        hard_bits = jnp.sum(free * table[ch, idx])
        return d, jnp.sum(free * soft_bits), hard_bits

    def table_of(z, free, base_counts):
        return code_lengths(base_counts + _counts(jnp.where(free > 0, _q.quantize_indices(z, cb), k), k + 1)[:, :k])

    def loss(z, state, x, table, pix_w, free, lam):
        d, soft_bits, hard_bits = objective(z, state, x, table, pix_w, free)
        return d + lam * soft_bits, d + lam * hard_bits

    grad = jax.value_and_grad(loss, has_aux=True)

    @jax.jit
    def step(carry, state, x, free, base_counts, pix_w, lam, lr):
        # one Adam step; a Python loop over it runs 5x faster on XLA's CPU backend than a fori_loop
        t, z, m, v, best_z, best = carry
        (_, hard), g = grad(z, state, x, table_of(z, free, base_counts), pix_w, free, lam)
        better = hard < best
        best_z = jnp.where(better, z, best_z)
        best = jnp.where(better, hard, best)
        g = g * free
        m = _B1 * m + (1 - _B1) * g
        v = _B2 * v + (1 - _B2) * jnp.square(g)
        t = t + 1.0
        z = z - lr * (m / (1 - _B1**t)) / (jnp.sqrt(v / (1 - _B2**t)) + _EPS)
        return t, z, m, v, best_z, best

    @jax.jit
    def finish(carry, state, x, free, base_counts, pix_w, lam):
        _, z, _, _, best_z, best = carry
        _, hard = loss(z, state, x, table_of(z, free, base_counts), pix_w, free, lam)
        return _q.quantize_indices(jnp.where(hard < best, z, best_z), cb)

    def run(state, x, z0, free, base_counts, pix_w, lam, lr, steps):
        zeros = jnp.zeros_like(z0)
        carry = (jnp.float32(0.0), z0, zeros, zeros, z0, jnp.float32(jnp.inf))
        consts = (state, x, free, base_counts, pix_w, lam)
        for _ in range(steps):
            carry = step(carry, *consts, lr)
        return finish(carry, *consts)

    return run


def refine_indices(
    codec,
    image,
    *,
    height: int | None = None,
    width: int | None = None,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    weight: float | None = None,
    latent=None,
    tile: int = DEFAULT_TILE,
) -> np.ndarray:
    """Refined codebook indices ``(H/8, W/8, C)`` uint8 for one image ``(H, W, 3)``, float in [0, 1], with H and
    W multiples of 8 (``pipeline.pad_to_multiple``).

    ``height``/``width``: the image's size before padding; padded pixels do not count in the distortion.
    ``weight``: distortion units per bit (default :func:`rate_weight` of the codec). ``latent``: the encoder's
    output if already computed. ``steps=0`` returns plain rounding.
    """
    x = np.asarray(image, np.float32)
    if x.ndim != 3 or x.shape[-1] != 3 or x.shape[0] % STRIDE or x.shape[1] % STRIDE:
        raise ValueError(f"expected an (H, W, 3) image with H and W multiples of {STRIDE}, got {x.shape}")
    if steps < 0 or lr <= 0:
        raise ValueError(f"steps must be >= 0 and lr > 0, got {steps} and {lr}")
    if tile < STRIDE or tile % STRIDE:
        raise ValueError(f"tile must be a positive multiple of {STRIDE}, got {tile}")
    z = np.asarray(codec.encode(x) if latent is None else latent, np.float32)
    z = z[0] if z.ndim == 4 else z
    cb = np.asarray(codec.codebook, np.float32)
    indices = np.array(_q.quantize_indices(z, cb))  # a writable copy
    if steps == 0:
        return indices
    lam = np.float32(rate_weight(codec) if weight is None else weight)
    height, width = height or x.shape[0], width or x.shape[1]
    pix_w = np.zeros(x.shape[:2] + (1,), np.float32)
    pix_w[:height, :width] = 1.0
    run = _refiner(codec._graphdef, tuple(cb.tolist()))
    k = len(cb)
    total = _channel_histogram(indices, k)
    h, w = z.shape[:2]
    t = tile // STRIDE
    for a0, a1, wa0, wa1 in _decoder_spans(h, t):
        for b0, b1, wb0, wb1 in _decoder_spans(w, t):
            win = (slice(wa0, wa1), slice(wb0, wb1))
            free = np.zeros((wa1 - wa0, wb1 - wb0, 1), np.float32)
            free[a0 - wa0 : a1 - wa0, b0 - wb0 : b1 - wb0] = 1.0
            own = indices[a0:a1, b0:b1]
            base = total - _channel_histogram(own, k)
            pw = np.zeros(((wa1 - wa0) * STRIDE, (wb1 - wb0) * STRIDE, 1), np.float32)
            pw[(a0 - wa0) * STRIDE : (a1 - wa0) * STRIDE, (b0 - wb0) * STRIDE : (b1 - wb0) * STRIDE] = 1.0
            pw *= pix_w[wa0 * STRIDE : wa1 * STRIDE, wb0 * STRIDE : wb1 * STRIDE]
            xs = x[wa0 * STRIDE : wa1 * STRIDE, wb0 * STRIDE : wb1 * STRIDE]
            zw = np.where(free > 0, z[win], _q.dequantize(indices[win], cb))  # context: the indices as coded
            new = np.asarray(run(codec._state, xs[None], zw[None], free[None], base, pw[None], lam, np.float32(lr), int(steps)))[0]
            own_new = new[a0 - wa0 : a1 - wa0, b0 - wb0 : b1 - wb0]
            indices[a0:a1, b0:b1] = own_new
            total = base + _channel_histogram(own_new, k)
    return indices
