"""Encoder-side refinement (l3ic_jax.refine): it keeps the format, and on a trained model it lowers the objective
it searches on, measured on the real file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import l3ic_jax
from l3ic_jax import bitstream as bs
from l3ic_jax import pipeline
from l3ic_jax import refine as R
from l3ic_jax.codec import Codec

SAMPLE = Path(__file__).parent / "data" / "sample.png"


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """A 96x120 crop of the sample photo: smooth and textured parts."""
    with Image.open(SAMPLE) as im:
        a = np.asarray(im.convert("RGB"))
    top, left = (a.shape[0] - 96) // 2, (a.shape[1] - 120) // 2
    return np.ascontiguousarray(a[top : top + 96, left : left + 120])


def objective(codec, img: np.ndarray, data: bytes) -> float:
    """What refinement minimizes, on the real file: l2_loss of the decoded 8-bit image plus weight x bits."""
    rec = np.clip(np.round(pipeline.decompress(data, codec) * 255.0), 0, 255)
    err = (img.astype(np.float64) - rec) / 255.0
    return 0.5 * float(np.sum(err**2)) + R.rate_weight(codec) * 8 * len(data)


def test_rate_weight_is_the_checkpoints_training_trade_off():
    codec = l3ic_jax.load("16c")
    hp = codec.metadata["provenance"]["hyperparameters"]
    assert R.rate_weight(codec) == pytest.approx(hp["entropy_weight"] / (hp["distortion_batch"] * 16 * 16 * 16))
    # a checkpoint without provenance falls back to the original objective (weight 250, 50 patches of 128 px)
    assert R.rate_weight(Codec.random(8)) == pytest.approx(250.0 / (50 * 256 * 8))


def test_zero_steps_is_plain_rounding(crop):
    codec = Codec.random(4, seed=3)
    x = crop.astype(np.float32) / 255.0
    np.testing.assert_array_equal(R.refine_indices(codec, x, steps=0), np.asarray(codec.encode_indices(x))[0])


def test_refined_file_is_better_on_the_objective_and_decodes_anywhere(crop):
    codec = l3ic_jax.load("16c")
    plain = pipeline.compress(crop, codec)
    refined = pipeline.compress(crop, codec, refine=12)
    assert refined != plain
    assert bs.info(refined).height == 96 and bs.info(refined).width == 120
    before, after = objective(codec, crop, plain), objective(codec, crop, refined)
    assert after < before * 0.995, (before, after)
    out = pipeline.decompress(refined)  # the model is found from the stream, as for any file
    assert out.shape == crop.shape


def test_batches_refine_each_image_as_compress_does(crop):
    codec = l3ic_jax.load("16c")
    images = [crop[:64, :64], crop[32:96, 40:120]]
    got = pipeline.compress_batch(images, codec, refine=3)
    assert got == [pipeline.compress(im, codec, refine=3) for im in images]


def test_tiles_and_padding(crop):
    """A 90x117 image (padded to 96x120) in 32 px tiles: padded pixels do not count, every tile is searched."""
    codec = l3ic_jax.load("16c")
    img = crop[:90, :117]
    x = img.astype(np.float32)[None] / 255.0
    padded, _ = pipeline.pad_to_multiple(x)
    plain = np.asarray(codec.encode_indices(padded))[0]
    tiled = R.refine_indices(codec, padded[0], height=90, width=117, steps=12, lr=0.01, tile=32)
    assert tiled.shape == plain.shape and tiled.dtype == np.uint8
    changed = tiled != plain
    assert all(changed[a : a + 4, b : b + 4].any() for a in range(0, 12, 4) for b in range(0, 15, 4))
    mid = pipeline.model_id(codec)
    files = [bs.pack(i, height=90, width=117, model_id=mid) for i in (plain, tiled)]
    assert objective(codec, img, files[1]) < objective(codec, img, files[0])


def test_legacy_streams_can_be_refined(crop):
    codec = l3ic_jax.load("16c")
    data = pipeline.compress(crop[:96, :112], codec, legacy=True, refine=4)
    assert pipeline.decompress(data, codec).shape == (96, 112, 3)


def test_bad_arguments(crop):
    codec = Codec.random(4)
    x = crop.astype(np.float32) / 255.0
    with pytest.raises(ValueError, match="multiples of 8"):
        R.refine_indices(codec, x[:90])
    with pytest.raises(ValueError, match="steps"):
        R.refine_indices(codec, x, steps=-1)
    with pytest.raises(ValueError, match="tile"):
        R.refine_indices(codec, x, tile=12)
    with pytest.raises(ValueError, match="refine"):
        pipeline.compress(crop, codec, refine=-2)
