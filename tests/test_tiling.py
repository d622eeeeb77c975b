"""Tiled coding equals one whole pass: indices identical except at counted ties, pixels within 1e-5."""

import numpy as np
import pytest

from l3ic_jax import pipeline, tiling
from l3ic_jax.codec import Codec

TIE_BAND = 1e-4  # a latent this close to a half-integer may round either way under a different summation order
PIXEL_TOL = 1e-5


@pytest.fixture(scope="module")
def codec():
    return Codec.random(8, seed=3)


def _near_tie(latent):
    return np.abs(np.abs(latent - np.floor(latent)) - 0.5) < TIE_BAND


@pytest.mark.parametrize("shape", [(203, 301), (240, 160), (77, 131), (64, 64), (9, 200)])
def test_tiled_encode_equals_whole(codec, shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.random((*shape, 3), dtype=np.float32)
    whole = np.asarray(codec.encode_indices(image))[0]
    latent = np.asarray(codec.encode(image))[0]
    tiled = tiling.encode_indices_tiled(codec, image, tile=64)
    differ = whole != tiled
    assert not np.any(differ & ~_near_tie(latent)), "tiled indices differ away from a decision boundary"
    assert differ.sum() <= 2, f"{differ.sum()} ties moved"


@pytest.mark.parametrize("latent_shape", [(26, 38), (8, 8), (1, 40), (17, 3)])
def test_tiled_decode_equals_whole(codec, latent_shape):
    rng = np.random.default_rng(latent_shape[0])
    indices = rng.integers(10, 22, size=(*latent_shape, codec.n_features), dtype=np.uint8)
    whole = np.asarray(codec.decode_indices(indices))[0]
    tiled = tiling.decode_indices_tiled(codec, indices, tile=64)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=PIXEL_TOL)


def test_window_geometry_keeps_same_padding_grid():
    # Every encoder window starts on a multiple of 8 and has the image's size modulo 8, and covers its tile with
    # at least the receptive field's margin (38 px before, 37 after) unless it reaches the image border.
    for size in (1, 7, 8, 9, 100, 509, 2041):
        spans = tiling._encoder_spans(size, 64)
        assert spans[0][0] == 0 and spans[-1][1] == -(-size // 8)
        for a, b, start, stop in spans:
            assert start % 8 == 0 and (stop - start) % 8 == size % 8
            assert start == 0 or 8 * a - start >= 38
            assert stop == size or stop - 8 * b >= 37


def test_pipeline_tiles_large_images_with_the_same_stream(codec, monkeypatch):
    rng = np.random.default_rng(5)
    image = (rng.random((150, 190, 3)) * 255).astype(np.uint8)
    whole = pipeline.compress(image, codec)
    monkeypatch.setattr(pipeline, "TILE_ABOVE_PIXELS", 64 * 64)
    monkeypatch.setattr(tiling, "DEFAULT_TILE", 64)
    tiled = pipeline.compress(image, codec)
    assert tiled == whole
    np.testing.assert_allclose(pipeline.decompress(tiled, codec), pipeline.decompress(whole, codec), atol=PIXEL_TOL)
