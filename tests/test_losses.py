"""The training-side SSIM (JAX, differentiable) against the evaluation-side one (NumPy, float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from l3ic_jax import losses, metrics


def _pair(seed, shape=(3, 40, 33, 3)):
    rng = np.random.default_rng(seed)
    x = rng.random(shape)
    # a smooth image plus noise of varying strength, so SSIM spans a useful range
    y = np.clip(x + rng.normal(0, 1, shape) * rng.uniform(0.01, 0.3, (shape[0], 1, 1, 1)), 0, 1)
    return x, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_matches_metrics(seed):
    x, y = _pair(seed)
    got = np.asarray(losses.ssim(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)))
    want = metrics.ssim(x, y)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert np.ptp(want) > 0.05  # the cases differ, so the test can tell images apart


@pytest.mark.parametrize("name, side", [("ssim", 24), ("ms_ssim", 96)])
def test_identical_is_one_and_gradient_points_back(name, side):
    fn = getattr(losses, name)
    x, y = _pair(3, (1, side, side, 3))
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    np.testing.assert_allclose(np.asarray(fn(x, x)), [1.0], atol=1e-5)
    g = jax.grad(lambda v: jnp.sum(1.0 - fn(x, v)))(y)
    assert np.all(np.isfinite(np.asarray(g)))
    # a small step against the gradient improves the index
    before = float(fn(x, y)[0])
    after = float(fn(x, y - 1e-3 * g / jnp.max(jnp.abs(g)))[0])
    assert after > before


def test_l2_loss_is_tf_definition():
    x, y = _pair(4, (2, 12, 12, 3))
    np.testing.assert_allclose(float(losses.l2_loss(jnp.asarray(x), jnp.asarray(y))), 0.5 * np.sum((x - y) ** 2), rtol=1e-5)


def test_ssim_rejects_bad_shapes():
    with pytest.raises(ValueError, match="11x11"):
        losses.ssim(jnp.zeros((1, 10, 20, 3)), jnp.zeros((1, 10, 20, 3)))
    with pytest.raises(ValueError, match="equal"):
        losses.ssim(jnp.zeros((1, 20, 20, 3)), jnp.zeros((2, 20, 20, 3)))


def test_lowpass_l2_keeps_block_constant_errors_and_drops_zero_mean_ones():
    rng = np.random.default_rng(5)
    x = rng.random((2, 16, 24, 3))
    drift = np.kron(rng.normal(0, 0.1, (2, 4, 6, 3)), np.ones((1, 4, 4, 1)))  # constant over 4x4 blocks
    wiggle = rng.normal(0, 0.1, x.shape)
    blocks = wiggle.reshape(2, 4, 4, 6, 4, 3)
    wiggle = (blocks - blocks.mean(axis=(2, 4), keepdims=True)).reshape(x.shape)  # zero mean in every block
    lp = lambda e: float(losses.lowpass_l2(jnp.asarray(x + e), jnp.asarray(x), 4))  # noqa: E731
    np.testing.assert_allclose(lp(drift), 0.5 * np.sum(drift**2), rtol=1e-5)
    assert lp(wiggle) < 1e-9 * np.sum(wiggle**2)
    np.testing.assert_allclose(lp(drift + wiggle), lp(drift), rtol=1e-5)  # the two parts are orthogonal
    # a factor of 1 is the plain l2_loss
    np.testing.assert_allclose(
        float(losses.lowpass_l2(jnp.asarray(x + wiggle), jnp.asarray(x), 1)), 0.5 * np.sum(wiggle**2), rtol=1e-5
    )


def test_lowpass_l2_rejects_a_factor_that_does_not_divide_the_patch():
    with pytest.raises(ValueError, match="must divide"):
        losses.lowpass_l2(jnp.zeros((1, 20, 24, 3)), jnp.zeros((1, 20, 24, 3)), 8)


@pytest.mark.parametrize("side, scales", [(96, 4), (128, 4), (176, 5)])
def test_ms_ssim_matches_metrics(side, scales):
    x, y = _pair(side, (3, side, side, 3))
    assert losses.ms_ssim_scales(side) == scales
    got = np.asarray(losses.ms_ssim(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)))
    want = metrics.ms_ssim(x, y, weights=metrics.MS_SSIM_WEIGHTS[:scales])
    assert got.shape == (3,)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert np.ptp(want) > 0.05


def test_ms_ssim_rejects_patches_too_small_or_odd():
    with pytest.raises(ValueError, match="at least 11"):
        losses.ms_ssim(jnp.zeros((1, 10, 10, 3)), jnp.zeros((1, 10, 10, 3)))
    with pytest.raises(ValueError, match="halve evenly"):
        losses.ms_ssim(jnp.zeros((1, 90, 90, 3)), jnp.zeros((1, 90, 90, 3)))
    with pytest.raises(ValueError, match="81x81"):
        losses.ms_ssim(jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 64, 64, 3)), scales=4)
