"""Tests for l3ic_jax.metrics: TF-free properties, and agreement with TensorFlow's own functions.

The TensorFlow comparisons are the definition of "SSIM / MS-SSIM as the literature reports them"; they are
skipped when TensorFlow is not installed (the `tf` extra). TF runs on the CPU only.
"""

from __future__ import annotations

import numpy as np
import pytest

from l3ic_jax.metrics import MS_SSIM_WEIGHTS, ms_ssim, ms_ssim_terms, psnr, ssim

# ----------------------------------------------------------------------------------------------------------------
# Image pairs


def _smooth(h, w, rng):
    """A structured, natural-ish image: smooth gradients, a few sinusoids and edges, plus mild noise."""
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    chans = []
    for c in range(3):
        f1, f2 = rng.uniform(2, 12, size=2)
        ch = 0.5 + 0.25 * np.sin(xx / f1 + c) * np.cos(yy / f2) + 0.2 * (xx / w - 0.5)
        ch += 0.15 * ((xx + 2 * yy) % 97 < 40)  # hard edges
        chans.append(ch)
    img = np.stack(chans, axis=-1) + 0.02 * rng.standard_normal((h, w, 3))
    return np.clip(img, 0, 1)


def _pair(kind, h, w, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "random":  # independent uniform noise: SSIM near 0
        a, b = rng.random((h, w, 3)), rng.random((h, w, 3))
    elif kind == "noisy":  # a structured image and a noisy copy
        a = _smooth(h, w, rng)
        b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    elif kind == "blurred":  # a JPEG-like loss of detail plus a brightness shift
        a = _smooth(h, w, rng)
        b = np.clip(0.25 * (a + np.roll(a, 1, 0) + np.roll(a, 1, 1) + np.roll(a, (1, 1), (0, 1))) + 0.03, 0, 1)
    elif kind == "inverted":  # negative correlation: SSIM < 0, MS-SSIM clipped to 0 by the relu
        a = _smooth(h, w, rng)
        b = 1.0 - a
    elif kind == "quantized":  # uint8 round trip of a low-bit image, as the rd evaluation measures
        a = np.round(_smooth(h, w, rng) * 255) / 255
        b = np.round(np.round(a * 15) / 15 * 255) / 255
    else:
        raise ValueError(kind)
    return a.astype(np.float32), b.astype(np.float32)


SHAPES = [(509, 381), (256, 256), (200, 300), (161, 161)]
KINDS = ["random", "noisy", "blurred", "inverted", "quantized"]

# ----------------------------------------------------------------------------------------------------------------
# TF-free properties


def test_identical_images():
    a, _ = _pair("noisy", 200, 240)
    assert psnr(a, a) == np.inf
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("fn", [psnr, ssim, ms_ssim])
def test_symmetric(fn):
    a, b = _pair("blurred", 170, 190, seed=3)
    assert fn(a, b) == pytest.approx(fn(b, a), rel=1e-12)


def test_known_psnr():
    a = np.zeros((16, 16, 3))
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-9)  # MSE 0.01 -> 20 dB
    assert psnr(a, a + 25.5, max_val=255.0) == pytest.approx(20.0, abs=1e-9)
    b = a.copy()
    b[0, 0, 0] = 1.0  # MSE = 1/768
    assert psnr(a, b) == pytest.approx(10 * np.log10(768), abs=1e-9)


def test_max_val_scaling():
    a, b = (x.astype(np.float64) for x in _pair("noisy", 180, 180, seed=5))
    assert ssim(a * 255, b * 255, max_val=255.0) == pytest.approx(ssim(a, b), abs=1e-9)
    assert ms_ssim(a * 255, b * 255, max_val=255.0) == pytest.approx(ms_ssim(a, b), abs=1e-9)


def test_batch_matches_single():
    pairs = [_pair(k, 170, 165, seed=i) for i, k in enumerate(["noisy", "blurred", "inverted"])]
    a = np.stack([p[0] for p in pairs])
    b = np.stack([p[1] for p in pairs])
    for fn in (psnr, ssim, ms_ssim):
        batched = fn(a, b)
        assert batched.shape == (3,)
        np.testing.assert_allclose(batched, [fn(x, y) for x, y in pairs], rtol=0, atol=1e-12)


def test_ordering_and_range():
    a, _ = _pair("noisy", 200, 200, seed=7)
    rng = np.random.default_rng(7)
    values = []
    for sigma in (0.01, 0.05, 0.2):
        b = np.clip(a + sigma * rng.standard_normal(a.shape), 0, 1)
        values.append((psnr(a, b), ssim(a, b), ms_ssim(a, b)))
    for worse, better in zip(values[1:], values[:-1]):
        assert all(w < b for w, b in zip(worse, better))
    assert all(0 <= m <= 1 for _, s, m in values for m in (s, m))
    a, b = _pair("inverted", 200, 200)
    assert ssim(a, b) < 0 and ms_ssim(a, b) == 0.0  # relu on the scales' terms


def test_ms_ssim_terms_make_up_ms_ssim_and_locate_the_loss():
    a, noisy = _pair("noisy", 256, 320)
    terms = ms_ssim_terms(a, noisy)
    assert terms.shape == (3, 5)
    weighted = np.mean(np.prod(terms ** np.asarray(MS_SSIM_WEIGHTS), axis=-1))
    assert ms_ssim(a, noisy) == pytest.approx(weighted, abs=1e-12)
    # White noise is a fine-scale loss: 2x2 pooling averages it away, so each coarser term is closer to 1.
    assert np.all(np.diff(terms.mean(axis=0)) > 0)
    # A smooth error field of 64 px wavelength leaves scale 1 nearly intact and costs most at scales 4-5.
    y, x = np.mgrid[:256, :320]
    field = 0.02 * np.sin(2 * np.pi * x / 64)[..., None] * np.cos(2 * np.pi * y / 64)[..., None]
    drift = ms_ssim_terms(a, np.clip(a + field, 0, 1)).mean(axis=0)
    assert drift[0] > drift[3] and drift[0] > drift[4]
    assert ms_ssim_terms(a, a) == pytest.approx(np.ones((3, 5)), abs=1e-12)
    batch = ms_ssim_terms(np.stack([a, a]), np.stack([a, noisy]))
    assert batch.shape == (2, 3, 5) and np.allclose(batch[1], terms)
    with pytest.raises(ValueError, match="at least 81x81"):
        ms_ssim_terms(a[:80], a[:80], scales=4)


def test_too_small_raises():
    a = np.zeros((160, 400, 3))
    with pytest.raises(ValueError, match="at least 161x161"):
        ms_ssim(a, a)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a[:10], a[:10])
    ssim(a[:11, :11], a[:11, :11])  # the smallest SSIM accepts
    ms_ssim(np.zeros((161, 161, 3)), np.zeros((161, 161, 3)))  # the smallest MS-SSIM accepts


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="differ"):
        ssim(np.zeros((20, 20, 3)), np.zeros((20, 21, 3)))
    with pytest.raises(ValueError, match="H, W, C"):
        psnr(np.zeros((20, 20)), np.zeros((20, 20)))


# ----------------------------------------------------------------------------------------------------------------
# Agreement with TensorFlow


@pytest.fixture(scope="module")
def tf():
    tf = pytest.importorskip("tensorflow", reason="TensorFlow (the `tf` extra) defines the reference metrics")
    tf.config.set_visible_devices([], "GPU")  # pin to CPU
    return tf


def _tf_metrics(tf, a, b):
    with tf.device("/CPU:0"):
        return (
            float(tf.image.psnr(a, b, 1.0)),
            float(tf.image.ssim(a, b, 1.0)),
            float(tf.image.ssim_multiscale(a, b, 1.0)),
        )


@pytest.mark.tf
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("kind", KINDS)
def test_matches_tensorflow(tf, kind, shape):
    a, b = _pair(kind, *shape, seed=KINDS.index(kind))
    ours = (psnr(a, b), ssim(a, b), ms_ssim(a, b))
    ref = _tf_metrics(tf, a, b)
    # TF computes in float32 and we in float64: 1e-4 absolute covers its round-off (seen: <3e-5, worst on the
    # negative SSIM of the inverted pair), PSNR relative since it is in dB.
    assert ours[0] == pytest.approx(ref[0], rel=1e-5)
    np.testing.assert_allclose(ours[1:], ref[1:], rtol=0, atol=1e-4)


@pytest.mark.tf
def test_matches_tensorflow_batch(tf):
    pairs = [_pair(k, 200, 300, seed=11) for k in ("noisy", "blurred")]
    a = np.stack([p[0] for p in pairs])
    b = np.stack([p[1] for p in pairs])
    with tf.device("/CPU:0"):
        np.testing.assert_allclose(ssim(a, b), tf.image.ssim(a, b, 1.0).numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(ms_ssim(a, b), tf.image.ssim_multiscale(a, b, 1.0).numpy(), rtol=0, atol=1e-4)


@pytest.mark.tf
def test_odd_size_padding_matches_tensorflow(tf):
    """161x161 is odd at every scale (161, 81, 41, 21, 11), so the way odd sizes are padded before pooling shows.

    Repeating the last row/column (what TF does) agrees to ~1e-7 here; reflect padding would be off by ~3e-5 and
    zero padding by ~7e-4, hence the tighter tolerance for this one.
    """
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:161, :161]
    a = (0.5 + 0.4 * np.sin(xx / 3.0) * np.cos(yy / 5.0))[..., None].repeat(3, -1)
    a = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    b = np.clip(a * 0.7 + 0.2 * rng.random(a.shape), 0, 1).astype(np.float32)
    with tf.device("/CPU:0"):
        ref = float(tf.image.ssim_multiscale(a, b, 1.0))
    assert ms_ssim(a, b) == pytest.approx(ref, abs=5e-6)


@pytest.mark.tf
def test_tensorflow_rejects_what_we_reject(tf):
    """TF also refuses MS-SSIM below 161 px (its assert fires at the coarsest scale); we say so up front."""
    a = np.zeros((160, 200, 3), np.float32)
    with pytest.raises(Exception):
        _tf_metrics(tf, a, a)
    with pytest.raises(ValueError):
        ms_ssim(a, a)
