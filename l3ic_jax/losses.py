"""Differentiable distortion terms for training: the original ``l2_loss``, SSIM and MS-SSIM, in JAX.

``l3ic_jax.metrics`` measures images in float64 NumPy; training needs the same SSIM as a JAX function it can
differentiate. :func:`ssim` and :func:`ms_ssim` follow the same TensorFlow recipe (11-tap Gaussian window with
sigma 1.5, 'valid' filtering, biased local statistics, K1 0.01, K2 0.03, RGB channels independent and averaged,
2x2 average pooling between scales), so a model tuned on them is tuned for the figures that ``tools/rd_eval.py``
reports; ``tests/test_losses.py`` checks them against ``metrics``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from . import metrics as _metrics

__all__ = ["l2_loss", "lowpass_l2", "ms_ssim", "ms_ssim_scales", "ssim"]


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


def _check_pair(x, y, need: int, what: str) -> None:
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(f"expected two equal [N, H, W, C] batches, got {x.shape} and {y.shape}")
    if min(x.shape[1:3]) < need:
        raise ValueError(f"{what} needs images of at least {need}x{need} pixels, got {x.shape[1]}x{x.shape[2]}")


def _ssim_and_cs(x, y, max_val: float):
    """Per-image, per-channel means of the SSIM map and of its contrast-structure part, each ``[N, C]``."""
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
    cs_map = (2.0 * cov + c2) / (var_sum + c2)
    s_map = (2.0 * mu_xy + c1) / (mu_sq + c1) * cs_map
    return jnp.mean(s_map, axis=(1, 2)), jnp.mean(cs_map, axis=(1, 2))


def ssim(x, y, max_val: float = 1.0):
    """Per-image SSIM of two ``[N, H, W, C]`` batches, TensorFlow's ``tf.image.ssim`` recipe; shape ``[N]``."""
    _check_pair(x, y, _metrics._FILTER_SIZE, "SSIM")
    s, _ = _ssim_and_cs(x, y, max_val)
    return jnp.mean(s, axis=-1)


def ms_ssim_scales(side: int) -> int:
    """How many of MS-SSIM's five scales fit a patch of this side (the coarsest must hold the 11-tap window)."""
    scales = 0
    while scales < len(_metrics.MS_SSIM_WEIGHTS) and side >= _metrics._min_ms_ssim_size(scales + 1):
        scales += 1
    return scales


def _downsample(x):
    """2x2 average pooling of ``[N, H, W, C]`` with even H and W."""
    n, h, w, c = x.shape
    return jnp.mean(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def ms_ssim(x, y, max_val: float = 1.0, scales: int | None = None):
    """Per-image MS-SSIM of two ``[N, H, W, C]`` batches, TensorFlow's ``tf.image.ssim_multiscale`` recipe with
    the first ``scales`` of its five weights (default: as many as the patch holds); shape ``[N]``.

    A 128 px training patch holds four scales (the fifth needs 161 px); their weights are used as they are, not
    renormalized, as TensorFlow does for a shorter list. Sides must be even at every scale but the last. The
    terms are clipped at 1e-6 rather than 0, so the power's gradient stays finite."""
    side = min(x.shape[1:3])
    scales = ms_ssim_scales(side) if scales is None else scales
    if scales < 1:
        raise ValueError(f"MS-SSIM needs images of at least {_metrics._FILTER_SIZE} pixels, got {side}")
    _check_pair(x, y, _metrics._min_ms_ssim_size(scales), f"MS-SSIM with {scales} scales")
    if any((d // 2**k) % 2 for d in x.shape[1:3] for k in range(scales - 1)):
        raise ValueError(f"MS-SSIM here needs sides that halve evenly {scales - 1} times, got {x.shape[1:3]}")
    weights = jnp.asarray(_metrics.MS_SSIM_WEIGHTS[:scales], jnp.float32)
    terms = []
    for k in range(scales):
        if k:
            x, y = _downsample(x), _downsample(y)
        s, cs = _ssim_and_cs(x, y, max_val)
        terms.append(s if k == scales - 1 else cs)
    stacked = jnp.maximum(jnp.stack(terms, axis=-1), 1e-6)  # [N, C, scales]
    return jnp.mean(jnp.prod(stacked**weights, axis=-1), axis=-1)
