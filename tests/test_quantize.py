"""Quantization: the codec's hard quantizer (scipy ``vq`` semantics), dequantization, and the training side's
soft-codebook quantizer and entropy estimate against float64 NumPy transcriptions of ORIGINAL_MODEL.md §3."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l3ic_jax import quantize as q

CODEBOOK = q.default_codebook()


def vq_reference(values, codebook) -> np.ndarray:
    """Brute force with scipy vq's rule: the smallest distance wins, ties to the lower index (strict <)."""
    values = np.asarray(values, np.float32).ravel()
    out = np.empty(values.size, np.uint8)
    for i, v in enumerate(values):
        best, best_d = 0, np.inf
        for k, c in enumerate(np.asarray(codebook, np.float32)):
            d = (np.float64(v) - np.float64(c)) ** 2
            if d < best_d:
                best, best_d = k, d
        out[i] = best
    return out


def test_default_codebook():
    np.testing.assert_array_equal(CODEBOOK, np.arange(-15, 17, dtype=np.float32))
    assert CODEBOOK.dtype == np.float32
    np.testing.assert_array_equal(q.default_codebook(3), np.arange(-3, 5, dtype=np.float32))


@pytest.mark.parametrize(
    "value, entry",
    [(1.5, 1), (-0.5, -1), (15.5, 15), (0.5, 0), (-14.5, -15), (2.4999, 2), (2.5001, 3), (0.0, 0), (-0.0, 0),
     (16.0, 16), (17.0, 16), (1e6, 16), (-15.0, -15), (-15.7, -15), (-1e6, -15), (np.inf, 16), (-np.inf, -15),
     (float(np.nextafter(np.float32(-0.5), np.float32(0))), 0),  # -0.49999997: ceil(z - 0.5) in float32 says -1
     (float(np.nextafter(np.float32(-0.5), np.float32(-1))), -1)],
)
def test_nearest_entry_ties_to_lower_and_clamps(value, entry):
    idx = int(np.asarray(q.quantize_indices(jnp.float32(value), CODEBOOK)))
    assert CODEBOOK[idx] == entry
    assert idx == int(vq_reference([value], CODEBOOK)[0]) or not np.isfinite(value)


def test_matches_vq_on_every_half_integer_and_its_neighbours():
    halves = np.arange(-20, 21, dtype=np.float32) + 0.5
    up, down = np.nextafter(halves, np.float32(np.inf)), np.nextafter(halves, -np.float32(np.inf))
    values = np.concatenate([halves, up, down, np.arange(-20, 21, dtype=np.float32)])
    ours = np.asarray(q.quantize_indices(values, CODEBOOK))
    assert ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, vq_reference(values, CODEBOOK))
    # Round-half-to-even would be wrong: 0.5 -> 0 and 1.5 -> 1 here (not 0 and 2).
    np.testing.assert_array_equal(CODEBOOK[ours[20:22]], [0, 1])


def test_matches_scipy_vq():
    vq = pytest.importorskip("scipy.cluster.vq").vq
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 8, 5000), np.arange(-40, 40) / 2]).astype(np.float32)
    expected, _ = vq(values.reshape(-1, 1), CODEBOOK.reshape(-1, 1))
    np.testing.assert_array_equal(np.asarray(q.quantize_indices(values, CODEBOOK)), expected)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-40, 40, width=32), min_size=1, max_size=50))
def test_matches_vq_property(values):
    ours = np.asarray(q.quantize_indices(np.float32(values), CODEBOOK))
    np.testing.assert_array_equal(ours, vq_reference(values, CODEBOOK))


def test_non_integer_codebook_uses_the_first_minimum():
    codebook = np.array([-1.0, -0.25, 0.5, 2.0], np.float32)
    values = np.array([-0.625, 0.125, 1.25, 3.0, -2.0, 0.1], np.float32)
    np.testing.assert_array_equal(np.asarray(q.quantize_indices(values, codebook)), vq_reference(values, codebook))


def test_quantize_keeps_shape_and_jits():
    z = jax.random.normal(jax.random.key(0), (2, 5, 7, 16)) * 8
    idx = jax.jit(lambda z: q.quantize_indices(z, CODEBOOK))(z)
    assert idx.shape == z.shape and idx.dtype == jnp.uint8


def test_dequantize():
    idx = np.arange(32, dtype=np.uint8).reshape(4, 8)
    np.testing.assert_array_equal(np.asarray(q.dequantize(idx, CODEBOOK)), CODEBOOK.reshape(4, 8))
    z = np.array([-3.2, 0.49, 7.5, 40.0], np.float32)
    np.testing.assert_array_equal(np.asarray(q.dequantize(q.quantize_indices(z, CODEBOOK), CODEBOOK)), [-3, 0, 7, 16])


# ------------------------------------------------------------------------------------------------------------
# Training side: float64 NumPy transcriptions of §3


def soft_weights_np(z, codebook, gamma=25.0, nu=50.0):
    z = np.asarray(z, np.float64).reshape(-1, 1)
    d = gamma * (z - np.asarray(codebook, np.float64).reshape(1, -1))
    w = (1.0 + d**2 / nu) ** (-(nu + 1.0) / 2.0)
    w = w + 1e-72
    return w / w.sum(axis=1, keepdims=True)


def soft_value_np(z, codebook):
    return (soft_weights_np(z, codebook) @ np.asarray(codebook, np.float64).reshape(-1, 1)).mean(axis=1)


def entropy_np(z, codebook):
    hist = soft_weights_np(z, codebook).mean(axis=0)
    hist = np.clip(hist, 1e-9, None)
    hist = hist / hist.sum()
    return -np.sum(hist * np.log(hist)) / 0.6931


def test_soft_quantizer_forward_is_the_hard_value():
    z = np.concatenate([np.random.default_rng(1).normal(0, 6, 2000), [0.5, 1.5, -0.5, 15.5, 20.0, -20.0]])
    z = z.astype(np.float32)
    hard = np.asarray(q.dequantize(q.quantize_indices(z, CODEBOOK), CODEBOOK))
    np.testing.assert_array_equal(np.asarray(q.soft_quantize(z, CODEBOOK)), hard)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda z: q.soft_quantize(z, CODEBOOK))(z)), hard)


@pytest.mark.parametrize("z0", [0.45, 0.5, 0.52, 1.49, -3.5, 7.4, 15.47, 0.1])
def test_soft_quantizer_gradient_is_the_soft_one(z0):
    """d soft_quantize / dz equals the derivative of the soft value (central differences in float64)."""
    grad = float(jax.grad(lambda z: q.soft_quantize(z, CODEBOOK).sum())(jnp.float32(z0)))
    h = 1e-6
    expected = float((soft_value_np(z0 + h, CODEBOOK) - soft_value_np(z0 - h, CODEBOOK))[0] / (2 * h))
    # Far from a boundary the derivative is ~1e-5 and float32 resolves it only to ~2e-5 (the weights of the
    # neighbouring entries are ~1e-7 of the nearest one's); near a boundary it is O(1) to O(10).
    assert grad == pytest.approx(expected, rel=1e-3, abs=5e-5)


def test_identity_quantizer_forward_is_the_hard_value_and_its_gradient_is_one_inside_the_range():
    z = np.concatenate([np.random.default_rng(3).normal(0, 12, 4000),
                        [0.5, 1.5, -0.5, 15.5, 16.4, -15.4, 16.6, -15.6, 20.0, -20.0, 400.0, -400.0]])
    z = jnp.asarray(z.astype(np.float32))
    hard = np.asarray(q.dequantize(q.quantize_indices(z, CODEBOOK), CODEBOOK))
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda z: q.identity_quantize(z, CODEBOOK))(z)), hard)
    np.testing.assert_array_equal(np.asarray(q.identity_quantize(z, CODEBOOK)), np.asarray(q.soft_quantize(z, CODEBOOK)))
    grad = np.asarray(jax.grad(lambda z: jnp.sum(q.identity_quantize(z, CODEBOOK) * 3.0))(z))
    inside = (np.asarray(z) > -15.5) & (np.asarray(z) < 16.5)
    assert inside.sum() > 3000 and (~inside).sum() > 100
    # 1 where a move of z can move the output, 0 past the clamped ends (otherwise the latent runs away)
    np.testing.assert_array_equal(grad, np.where(inside, 3.0, 0.0).astype(np.float32))


def test_soft_quantizer_gradient_vanishes_away_from_boundaries():
    """Why identity_quantize exists: the soft gradient is ~0 at most points and large at the boundaries."""
    z = jnp.linspace(-3.0, 3.0, 6001, dtype=jnp.float32)
    grad = np.asarray(jax.vmap(jax.grad(lambda v: q.soft_quantize(v, CODEBOOK)))(z))
    assert np.mean(grad < 1e-3) > 0.8
    assert grad.max() > 20.0
    assert np.mean(grad) == pytest.approx(1.0, abs=0.05)  # a codebook step's integral is 1


def test_soft_weights_match_the_formula():
    z = np.random.default_rng(2).uniform(-18, 18, 500).astype(np.float32)
    np.testing.assert_allclose(np.asarray(q.soft_weights(z, CODEBOOK)), soft_weights_np(z, CODEBOOK), rtol=0, atol=1e-5)


@pytest.mark.parametrize("scale", [0.3, 3.0, 8.0])
def test_entropy_estimate_matches_the_formula(scale):
    """Within 1e-4 relative of the float64 transcription (latent values in the codebook's range)."""
    z = (np.random.default_rng(3).standard_normal((4, 6, 5, 16)) * scale).astype(np.float32)
    ours = float(q.entropy_estimate(z, CODEBOOK))
    assert ours == pytest.approx(entropy_np(z, CODEBOOK), rel=1e-4)


def test_entropy_estimate_extremes():
    # All values on one entry: one bin holds (almost) everything, the 31 others sit at the 1e-9 floor.
    # H ~ 1e-6 bits here; float32 rounds the main bin's 1 - 3e-8 to 1 and loses ~5e-8 of it (absolute).
    z = np.full((1000,), 3.0, np.float32)
    assert float(q.entropy_estimate(z, CODEBOOK)) == pytest.approx(entropy_np(z, CODEBOOK), rel=0, abs=1e-7)
    assert float(q.entropy_estimate(z, CODEBOOK)) < 1e-5
    # Evenly over all 32 entries: 5 bits (ln2 is rounded to 0.6931 in the original, hence ~5.0001).
    z = np.repeat(CODEBOOK, 10)
    assert float(q.entropy_estimate(z, CODEBOOK)) == pytest.approx(np.log(32) / 0.6931, rel=1e-5)
