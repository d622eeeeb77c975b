"""The batch API (`pipeline.compress_batch` / `decompress_batch`): the same bytes and images as one call per image.

A small random model (4 channels) keeps this fast. Byte equality is the contract: a stacked device call must not
change a single index, and the streams are then packed exactly as `compress` packs them.
"""

from __future__ import annotations

import numpy as np
import pytest

from l3ic_jax.codec import Codec
from l3ic_jax.pipeline import compress, compress_batch, decompress, decompress_batch


@pytest.fixture(scope="module")
def codec():
    return Codec.random(4, seed=3)


def _images(shapes, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for h, w in shapes:
        yy, xx = np.mgrid[0:h, 0:w]
        smooth = np.stack([np.sin(xx / 7.0 + c) * np.cos(yy / 5.0 - c) for c in range(3)], axis=-1)
        img = 127.5 + 90 * smooth + rng.normal(0, 12, (h, w, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def test_same_size_batch_is_byte_identical(codec):
    images = _images([(40, 48)] * 5)
    streams = compress_batch(images, codec)
    assert streams == [compress(im, codec) for im in images]
    decoded = decompress_batch(streams, codec)
    for data, got in zip(streams, decoded):
        np.testing.assert_array_equal(got, decompress(data, codec))  # same device math per image: exact


def test_mixed_sizes_keep_order_and_match(codec):
    shapes = [(40, 48), (17, 30), (40, 48), (8, 8), (33, 61), (17, 30)]
    images = _images(shapes, seed=1)
    streams = compress_batch(images, codec, max_batch=2)  # several chunks per size group, pipelined
    assert streams == [compress(im, codec) for im in images]
    decoded = decompress_batch(streams, codec, max_batch=2)
    assert [d.shape for d in decoded] == [(h, w, 3) for h, w in shapes]
    for data, got in zip(streams, decoded):
        np.testing.assert_array_equal(got, decompress(data, codec))


def test_float_input_and_legacy(codec):
    images = [im.astype(np.float32) / 255.0 for im in _images([(24, 32), (24, 32), (16, 40)], seed=2)]
    assert compress_batch(images, codec) == [compress(im, codec) for im in images]
    legacy = compress_batch(images, codec, legacy=True)
    assert legacy == [compress(im, codec, legacy=True) for im in images]
    for data, got in zip(legacy, decompress_batch(legacy, codec)):
        np.testing.assert_array_equal(got, decompress(data, codec))


def test_empty_list(codec):
    assert compress_batch([], codec) == []
    assert decompress_batch([], codec) == []


def test_bad_input(codec):
    with pytest.raises(ValueError):
        compress_batch(_images([(16, 16)]), codec, max_batch=0)
    with pytest.raises(ValueError):
        compress_batch([np.zeros((2, 16, 16, 3), np.uint8)], codec)  # a batch is not one image
