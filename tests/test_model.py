"""The Flax model and Codec without TensorFlow: TF SAME padding, depth_to_space order, shapes for any size and
width, compilation caching, and input validation."""

from __future__ import annotations

import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from l3ic_jax import model as model_lib
from l3ic_jax.codec import Codec
from l3ic_jax.model import Decoder, Encoder, TwitterDCN, depth_to_space


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME (ORIGINAL_MODEL.md §1): out = ceil(in / stride); half the padding before, the rest after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_reference(x, kernel, bias, stride, pads):
    """Explicitly padded convolution in float64 NumPy (NHWC, HWIO)."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), pads[0], pads[1], (0, 0)))
    kh, kw, _, cout = kernel.shape
    oh = (x.shape[1] - kh) // stride + 1
    ow = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], oh, ow, cout))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride, :]
            out += np.einsum("nhwc,co->nhwo", patch, np.asarray(kernel[i, j], np.float64))
    return out + np.asarray(bias, np.float64)


@pytest.fixture(scope="module")
def codec():
    return Codec.random(8, seed=0)


# ------------------------------------------------------------------------------------------------------------
# Padding and depth_to_space


def test_same_padding_rule():
    assert tf_same_pads(8, 5, 2) == (1, 2)  # the asymmetric case: even size, stride 2, 5x5
    assert tf_same_pads(7, 5, 2) == (2, 2)
    assert tf_same_pads(16, 3, 1) == (1, 1)


@pytest.mark.parametrize("height, width", [(8, 8), (10, 6), (7, 9), (1, 2)])
def test_strided_conv_pads_like_tensorflow(height, width):
    """encoder.conv_0 (5x5, stride 2) against an explicit reference with TF's pads (1 before, 2 after on even)."""
    enc = Encoder(4, rngs=nnx.Rngs(0))
    conv = enc.conv_0
    kernel = np.asarray(conv.kernel[...])
    bias = np.random.default_rng(0).normal(size=conv.bias.shape).astype(np.float32)
    conv.bias[...] = jnp.asarray(bias)
    x = np.random.default_rng(1).standard_normal((2, height, width, 3)).astype(np.float32)
    pads = (tf_same_pads(height, 5, 2), tf_same_pads(width, 5, 2))
    ours = np.asarray(conv(jnp.asarray(x)))
    np.testing.assert_allclose(ours, conv_reference(x, kernel, bias, 2, pads), rtol=0, atol=1e-5)
    lax_ref = jax.lax.conv_general_dilated(
        x, kernel, (2, 2), list(pads), dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest"
    )
    np.testing.assert_allclose(ours, np.asarray(lax_ref) + bias, rtol=0, atol=1e-5)
    if height % 2 == 0 and height > 2:  # symmetric padding (2, 2) would give other values: the test can tell
        wrong = conv_reference(x, kernel, bias, 2, ((2, 2), pads[1]))
        assert np.abs(ours - wrong).max() > 1e-2


def test_depth_to_space_dcr_order_known_tensor():
    x = jnp.arange(8, dtype=jnp.float32).reshape(1, 1, 1, 8)  # C_out = 2
    out = np.asarray(depth_to_space(x, 2))
    # out[0, i, j, c] = in[0, 0, 0, (i * 2 + j) * 2 + c]
    np.testing.assert_array_equal(out[0, :, :, 0], [[0, 2], [4, 6]])
    np.testing.assert_array_equal(out[0, :, :, 1], [[1, 3], [5, 7]])


def test_depth_to_space_formula():
    b, block = 2, 2
    x = np.random.default_rng(0).standard_normal((b, 3, 4, 12)).astype(np.float32)
    out = np.asarray(depth_to_space(jnp.asarray(x), block))
    c_out = 12 // block**2
    assert out.shape == (b, 6, 8, c_out)
    for n in range(b):
        for h in range(3):
            for w in range(4):
                for i in range(block):
                    for j in range(block):
                        k = (i * block + j) * c_out
                        np.testing.assert_array_equal(out[n, h * block + i, w * block + j], x[n, h, w, k : k + c_out])


def test_lrelu():
    x = jnp.array([-2.0, -0.0, 0.0, 3.0])
    np.testing.assert_allclose(np.asarray(model_lib.lrelu(x)), [-0.4, 0.0, 0.0, 3.0], rtol=1e-7)


# ------------------------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("height, width", [(1, 1), (7, 13), (8, 8), (9, 17), (30, 5)])
def test_latent_shape_is_ceil_h_over_8(codec, height, width):
    x = np.random.default_rng(0).random((height, width, 3)).astype(np.float32)
    z = codec.encode(x)
    assert z.shape == (1, math.ceil(height / 8), math.ceil(width / 8), 8)
    assert codec.decode(codec.dequantize(codec.quantize(z))).shape == (1, 8 * z.shape[1], 8 * z.shape[2], 3)


@pytest.mark.parametrize("n_features", [4, 7, 33, 128])
def test_any_width_and_batch(n_features):
    model = TwitterDCN(n_features, rngs=nnx.Rngs(n_features))
    for batch in (1, 3):
        x = jax.random.uniform(jax.random.key(batch), (batch, 12, 20, 3))
        z = model.encoder(x)
        assert z.shape == (batch, 2, 3, n_features)
        y = model.decoder(z)
        assert y.shape == (batch, 16, 24, 3) and y.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(y)))


@pytest.mark.parametrize("n_features", [0, 3, 129])
def test_width_out_of_range(n_features):
    with pytest.raises(ValueError, match="n_features"):
        Encoder(n_features, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="n_features"):
        Decoder(n_features, rngs=nnx.Rngs(0))


def test_batch_items_are_independent(codec):
    x = np.random.default_rng(3).random((3, 16, 24, 3)).astype(np.float32)
    z = np.asarray(codec.encode(x))
    np.testing.assert_allclose(z[1:2], np.asarray(codec.encode(x[1])), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# Compilation caching


def test_jit_does_not_recompile_a_seen_shape(monkeypatch):
    traces = {"encoder": 0, "decoder": 0}

    def counting(cls, key):
        original = cls.__call__

        def call(self, x):
            traces[key] += 1
            return original(self, x)

        monkeypatch.setattr(cls, "__call__", call)

    counting(Encoder, "encoder")
    counting(Decoder, "decoder")
    codec = Codec.random(4, seed=1, cpu_kernels=False)  # jit caching is a property of the XLA path
    rng = np.random.default_rng(0)
    a = rng.random((16, 16, 3)).astype(np.float32)
    codec.encode(a)
    codec.encode(rng.random((16, 16, 3)).astype(np.float32))  # new values, same shape
    codec.encode((a * 255).astype(np.uint8))  # uint8 becomes the same float32 batch
    assert traces["encoder"] == 1
    codec.encode(rng.random((24, 16, 3)).astype(np.float32))
    codec.encode(a)
    assert traces["encoder"] == 2
    codec.encode(rng.random((2, 16, 16, 3)).astype(np.float32))  # a new batch size is a new shape
    assert traces["encoder"] == 3

    z = codec.dequantize(codec.quantize(codec.encode(a)))
    codec.decode(z)
    codec.decode(z + 1)
    codec.decode(np.asarray(z)[0])  # HWC is batched to the same shape
    assert traces["decoder"] == 1


# ------------------------------------------------------------------------------------------------------------
# Codec input validation


@pytest.mark.parametrize(
    "images, error, message",
    [
        (np.zeros((16, 16, 4), np.float32), ValueError, "RGB"),
        (np.zeros((16, 16), np.float32), ValueError, "RGB"),
        (np.zeros((1, 1, 16, 16, 3), np.float32), ValueError, "RGB"),
        (np.zeros((0, 16, 3), np.float32), ValueError, "empty"),
        (np.full((8, 8, 3), np.nan, np.float32), ValueError, "NaN"),
        (np.full((8, 8, 3), np.inf, np.float32), ValueError, "NaN or infinite"),
        (np.full((8, 8, 3), 1.5, np.float32), ValueError, r"\[0, 1\]"),
        (np.full((8, 8, 3), -0.25, np.float32), ValueError, r"\[0, 1\]"),
        (np.zeros((8, 8, 3), np.complex64), TypeError, "dtype"),
        (np.full((8, 8, 3), "a"), TypeError, "dtype"),
        (np.zeros((8, 8, 3), bool), TypeError, "dtype"),
    ],
)
def test_codec_rejects_bad_images(codec, images, error, message):
    with pytest.raises(error, match=message):
        codec.encode(images)
    with pytest.raises(error, match=message):
        codec.encode_indices(images)


def test_codec_rejects_bad_latents(codec):
    with pytest.raises(ValueError, match=r"latent must be \(N, h, w, 8\)"):
        codec.decode(np.zeros((1, 2, 2, 16), np.float32))
    with pytest.raises(ValueError, match="latent must be"):
        codec.decode(np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match="uint8"):
        codec.dequantize(np.zeros((1, 2, 2, 8), np.int32))
    with pytest.raises(ValueError, match="uint8"):
        codec.decode_indices(np.zeros((1, 2, 2, 8), np.int64))
    with pytest.raises(ValueError, match="uint8"):
        codec.decode_indices(np.zeros((1, 2, 2, 4), np.uint8))


def test_decode_is_clipped_and_indices_path_agrees(codec):
    x = np.random.default_rng(5).random((24, 16, 3)).astype(np.float32)
    idx = codec.encode_indices(x)
    assert idx.dtype == jnp.uint8
    np.testing.assert_array_equal(np.asarray(idx), np.asarray(codec.quantize(codec.encode(x))))
    y = np.asarray(codec.decode_indices(idx))
    np.testing.assert_allclose(y, np.asarray(codec.decode(codec.dequantize(idx))), rtol=0, atol=1e-6)
    assert y.min() >= 0.0 and y.max() <= 1.0


def test_no_tensorflow_in_the_package():
    """TensorFlow (and Keras, h5py) is imported only by convert/ and the tests, never by l3ic_jax."""
    for path in (Path(__file__).resolve().parents[1] / "l3ic_jax").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(tensorflow|keras|h5py)\b", text, re.M), path
