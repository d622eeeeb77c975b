"""Differentiable distortion terms for training: the original ``l2_loss`` and SSIM, in JAX.

``l3ic_jax.metrics`` measures images in float64 NumPy; training needs the same SSIM as a JAX function it can
differentiate. :func:`ssim` follows the same TensorFlow recipe (11-tap Gaussian window with sigma 1.5, 'valid'
filtering, biased local statistics, K1 0.01, K2 0.03, RGB channels independent and averaged), so a model tuned
on it is tuned for the figure that ``tools/rd_eval.py`` reports; ``tests/test_losses.py`` checks it against
``metrics.ssim``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from . import metrics as _metrics

__all__ = ["l2_loss", "lowpass_l2", "ssim"]


def l2_loss(x, y):
    """``tf.nn.l2_loss(x - y)``: half the sum of squared differences over everything."""
    return 0.5 * jnp.sum(jnp.square(x - y))


def lowpass_l2(x, y, factor: int):
    """``l2_loss`` of the error's low-frequency part: its mean over each ``factor x factor`` block, spread back
    over the block.

    Equal to ``l2_loss(x - y)`` for an error constant over the blocks and about ``1 / factor**2`` of it for white
    noise, so a weight on it penalizes a slow drift (a colour or brightness error over tens of pixels) on top of
    the plain L2, which weighs it like any other error. MS-SSIM's coarse scales see such a drift more than SSIM
    or PSNR do (docs/training.md §8.18)."""
    n, h, w, c = x.shape
    if y.shape != x.shape:
        raise ValueError(f"expected two equal [N, H, W, C] batches, got {x.shape} and {y.shape}")
    if factor < 1 or h % factor or w % factor:
        raise ValueError(f"the low-pass factor {factor} must divide the patch size {h}x{w}")
    blocks = jnp.mean((x - y).reshape(n, h // factor, factor, w // factor, factor, c), axis=(2, 4))
    return 0.5 * factor * factor * jnp.sum(jnp.square(blocks))


def _band(n: int) -> np.ndarray:
    """The 'valid' Gaussian filtering of a length-``n`` axis as an ``(n - k + 1) x n`` banded matrix.

    A matrix product runs (forward and backward) on the matrix units, where 22 shifted slices per map cost a
    fifth of a training step on a CPU."""
    w = _metrics._gaussian_1d()
    k = len(w)
    band = np.zeros((n - k + 1, n), np.float32)
    for i in range(n - k + 1):
        band[i, i : i + k] = w
    return band


def _filter_valid(x):
    """Separable 'valid' Gaussian filtering of ``[N, H, W, C]`` along H and W (as ``metrics._filter_valid``)."""
    rows = jnp.einsum("ih,nhwc->niwc", _band(x.shape[1]), x, precision="highest")
    return jnp.einsum("jw,niwc->nijc", _band(x.shape[2]), rows, precision="highest")


def ssim(x, y, max_val: float = 1.0):
    """Per-image SSIM of two ``[N, H, W, C]`` batches, TensorFlow's ``tf.image.ssim`` recipe; shape ``[N]``."""
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(f"expected two equal [N, H, W, C] batches, got {x.shape} and {y.shape}")
    k = _metrics._FILTER_SIZE
    if min(x.shape[1:3]) < k:
        raise ValueError(f"SSIM needs images of at least {k}x{k} pixels, got {x.shape[1]}x{x.shape[2]}")
    c1 = (_metrics._K1 * max_val) ** 2
    c2 = (_metrics._K2 * max_val) ** 2
    c = x.shape[-1]
    # the four local statistics, filtered in one pass: E[x], E[y], E[x^2 + y^2], E[xy]
    stats = _filter_valid(jnp.concatenate([x, y, jnp.square(x) + jnp.square(y), x * y], axis=-1))
    mu_x, mu_y, e_sq, e_xy = (stats[..., i * c : (i + 1) * c] for i in range(4))
    mu_xy = mu_x * mu_y
    mu_sq = jnp.square(mu_x) + jnp.square(mu_y)
    var_sum = e_sq - mu_sq
    cov = e_xy - mu_xy
    s_map = (2.0 * mu_xy + c1) / (mu_sq + c1) * (2.0 * cov + c2) / (var_sum + c2)
    return jnp.mean(s_map, axis=(1, 2, 3))
