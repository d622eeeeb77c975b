"""Image quality metrics: PSNR, SSIM and MS-SSIM, in NumPy.

The learned-compression literature (and the l3ic paper's figures) reports SSIM and MS-SSIM as TensorFlow's
``tf.image.ssim`` / ``tf.image.ssim_multiscale`` compute them, so these functions follow that recipe rather
than, e.g., scikit-image's (which differs in window, variance estimator and channel handling):

* images are ``[..., H, W, C]`` floats in ``[0, max_val]``; channels are treated independently (no colour
  transform) and averaged at the end;
* an 11-tap Gaussian window with sigma 1.5, normalised to sum 1, applied with 'valid' filtering (no padding,
  so the map is ``(H-10) x (W-10)``);
* local (co)variances are the biased ``E[xy] - E[x]E[y]``; ``C1 = (0.01 max_val)^2``, ``C2 = (0.03 max_val)^2``;
* MS-SSIM uses 5 scales with weights ``[0.0448, 0.2856, 0.3001, 0.2363, 0.1333]``; between scales the image is
  2x2 average-pooled, after padding odd heights/widths by repeating the last row/column; the contrast-structure
  term of scales 1-4 and the full SSIM of scale 5 are clipped at 0 (``relu``) before the weighted product, which
  is taken per channel and then averaged over channels.

Everything is computed in float64; agreement with TensorFlow (float32) is checked in ``tests/test_metrics.py``.
NumPy keeps the metrics free of device placement and JIT warm-up, which matters for a per-image evaluation loop.
"""

from __future__ import annotations

import numpy as np

__all__ = ["psnr", "ssim", "ms_ssim", "ms_ssim_terms", "MS_SSIM_WEIGHTS"]

#: Scale weights of Wang, Simoncelli & Bovik (2003), finest scale first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

_FILTER_SIZE = 11
_FILTER_SIGMA = 1.5
_K1 = 0.01
_K2 = 0.03


def _as_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Validates two image (batches) ``[..., H, W, C]`` and returns them as float64 arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim < 3 or b.ndim < 3:
        raise ValueError(f"expected images shaped [..., H, W, C], got {a.shape} and {b.shape}")
    if a.shape[-3:] != b.shape[-3:]:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    return a, b


def _reduce(x: np.ndarray):
    """Returns a Python float for a single image, an array for a batch."""
    return float(x) if x.ndim == 0 else x


def psnr(a, b, max_val: float = 1.0):
    """Peak signal-to-noise ratio in dB, ``10 log10(max_val^2 / MSE)``, MSE over H, W and C.

    Returns ``inf`` for identical images. For a batch ``[N, H, W, C]`` returns one value per image (average those
    per-image values for a dataset figure, as is conventional, rather than pooling the MSE).
    """
    a, b = _as_pair(a, b)
    mse = np.mean(np.square(a - b), axis=(-3, -2, -1))
    with np.errstate(divide="ignore"):
        out = 20.0 * np.log10(max_val) - 10.0 * np.log10(mse)
    return _reduce(out)


def _gaussian_1d(size: int = _FILTER_SIZE, sigma: float = _FILTER_SIGMA) -> np.ndarray:
    # The 2-D window TF uses is the outer product of this normalised 1-D window with itself.
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-0.5 * np.square(x / sigma))
    return g / g.sum()


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of ``[..., H, W, C]`` along H and W with the 1-D window ``w``."""
    k = len(w)
    h, wd = x.shape[-3], x.shape[-2]
    rows = sum(w[i] * x[..., i : h - k + 1 + i, :, :] for i in range(k))
    return sum(w[i] * rows[..., :, i : wd - k + 1 + i, :] for i in range(k))


def _ssim_and_cs(a: np.ndarray, b: np.ndarray, max_val: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and mean contrast-structure term, shaped ``[..., C]``."""
    h, w = a.shape[-3], a.shape[-2]
    if h < _FILTER_SIZE or w < _FILTER_SIZE:
        raise ValueError(f"SSIM needs images of at least {_FILTER_SIZE}x{_FILTER_SIZE} pixels, got {h}x{w}")
    win = _gaussian_1d()
    c1 = (_K1 * max_val) ** 2
    c2 = (_K2 * max_val) ** 2
    mu_a = _filter_valid(a, win)
    mu_b = _filter_valid(b, win)
    mu_ab = mu_a * mu_b
    mu_aa_bb = np.square(mu_a) + np.square(mu_b)
    var_sum = _filter_valid(np.square(a) + np.square(b), win) - mu_aa_bb
    cov = _filter_valid(a * b, win) - mu_ab
    luminance = (2.0 * mu_ab + c1) / (mu_aa_bb + c1)
    cs = (2.0 * cov + c2) / (var_sum + c2)
    return np.mean(luminance * cs, axis=(-3, -2)), np.mean(cs, axis=(-3, -2))


def ssim(a, b, max_val: float = 1.0):
    """Structural similarity (Wang et al. 2004), TF ``tf.image.ssim`` recipe, averaged over channels.

    Images must be at least 11x11. Returns a float for one image, one value per image for a batch.
    """
    a, b = _as_pair(a, b)
    s, _ = _ssim_and_cs(a, b, max_val)
    return _reduce(np.mean(s, axis=-1))


def _min_ms_ssim_size(scales: int) -> int:
    # Each 2x downsampling rounds up (odd sizes are padded), so a side of n reaches ceil(n / 2^(s-1)).
    return (_FILTER_SIZE - 1) * 2 ** (scales - 1) + 1


def _downsample(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling; an odd height/width is first padded by repeating its last row/column."""
    h, w = x.shape[-3], x.shape[-2]
    if h % 2 or w % 2:
        pad = [(0, 0)] * (x.ndim - 3) + [(0, h % 2), (0, w % 2), (0, 0)]
        x = np.pad(x, pad, mode="edge")
    return 0.25 * (x[..., 0::2, 0::2, :] + x[..., 1::2, 0::2, :] + x[..., 0::2, 1::2, :] + x[..., 1::2, 1::2, :])


def ms_ssim_terms(a, b, max_val: float = 1.0, scales: int = len(MS_SSIM_WEIGHTS)) -> np.ndarray:
    """The per-scale factors of MS-SSIM, ``[..., C, scales]``, finest scale first, each clipped at 0.

    Scales 1 to ``scales - 1`` give the contrast-structure term, the coarsest the full SSIM (luminance too).
    :func:`ms_ssim` is their weighted product per channel, averaged over channels; the terms show at which scale
    a codec loses (``tools/error_scales.py``). Needs sides of at least ``10 * 2^(scales-1) + 1`` pixels.
    """
    a, b = _as_pair(a, b)
    h, w = a.shape[-3], a.shape[-2]
    need = _min_ms_ssim_size(scales)
    if h < need or w < need:
        raise ValueError(
            f"MS-SSIM with {scales} scales needs images of at least {need}x{need} pixels "
            f"(the coarsest scale must fit the {_FILTER_SIZE}x{_FILTER_SIZE} window), got {h}x{w}"
        )
    terms = []
    for scale in range(scales):
        if scale:
            a, b = _downsample(a), _downsample(b)
        s, cs = _ssim_and_cs(a, b, max_val)
        terms.append(cs)
    terms[-1] = s  # the coarsest scale contributes luminance too
    return np.maximum(np.stack(terms, axis=-1), 0.0)


def ms_ssim(a, b, max_val: float = 1.0, weights=MS_SSIM_WEIGHTS):
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003), TF ``tf.image.ssim_multiscale`` recipe.

    With the default 5 scales the coarsest scale must still fit the 11x11 window, so both sides must be at least
    161 pixels; smaller images raise ``ValueError`` (use :func:`ssim` for those). Returns a float for one image,
    one value per image for a batch.
    """
    weights = np.asarray(weights, dtype=np.float64)
    stacked = ms_ssim_terms(a, b, max_val, scales=len(weights))  # [..., C, scales]
    per_channel = np.prod(stacked**weights, axis=-1)
    return _reduce(np.mean(per_channel, axis=-1))
