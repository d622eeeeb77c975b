"""compress / decompress: images to bytes and back, model ids, cropping, and the original's decoded images."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import l3ic_jax
from l3ic_jax import bitstream as bs
from l3ic_jax import pipeline
from l3ic_jax.codec import Codec

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def codec():
    return Codec.random(4, seed=0)


@pytest.fixture(scope="module")
def other_codec():
    return Codec.random(4, seed=1)


def image(height, width, seed=0):
    """A smooth-ish test image (uint8), so the tiny model sees some structure."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = 0.5 + 0.4 * np.sin(x[..., None] / 5.0 + np.arange(3)) * np.cos(y[..., None] / 7.0)
    return np.clip(np.round(255 * (base + 0.05 * rng.standard_normal((height, width, 3)))), 0, 255).astype(np.uint8)


def reference_decode(codec, img):
    """Decoding done by hand: pad with edge pixels, encode, decode the indices, crop."""
    padded, _ = pipeline.pad_to_multiple(img.astype(np.float32) / 255.0)
    idx = codec.encode_indices(padded)
    return np.asarray(codec.decode_indices(idx))[0, : img.shape[0], : img.shape[1]]


@pytest.mark.parametrize("size", [(1, 1), (7, 13), (8, 8), (2041, 9)])
def test_round_trip_crops_exactly(codec, size):
    img = image(*size)
    data = pipeline.compress(img, codec)
    facts = bs.info(data)
    assert (facts.height, facts.width, facts.n_channels) == (*size, 4)
    assert facts.model_id == pipeline.model_id(codec)
    out = pipeline.decompress(data, codec)
    assert out.shape == (*size, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_allclose(out, reference_decode(codec, img), atol=1e-6)


@pytest.mark.slow
def test_round_trip_3000x2000(codec):
    img = image(3000, 2000)
    data = pipeline.compress(img, codec)
    out = pipeline.decompress(data, codec)
    assert out.shape == (3000, 2000, 3)
    assert bs.info(data).latent_height == 375


def test_pad_to_multiple_is_pure_and_reports_the_padding():
    x = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    padded, pad = pipeline.pad_to_multiple(x)
    assert pad == (6, 5) and padded.shape == (8, 8, 3)
    np.testing.assert_array_equal(padded[:2, :3], x)
    np.testing.assert_array_equal(padded[7, 7], x[1, 2])  # edge pixels repeated
    same, pad = pipeline.pad_to_multiple(np.zeros((1, 16, 8, 3)))
    assert pad == (0, 0) and same.shape == (1, 16, 8, 3)


def test_uint8_and_float_inputs_agree_and_output_is_deterministic(codec):
    img = image(16, 24, seed=3)
    a = pipeline.compress(img, codec)
    assert pipeline.compress(img.astype(np.float32) / 255.0, codec) == a
    assert pipeline.compress(img, codec) == a


def test_model_mismatch_is_an_error(codec, other_codec):
    data = pipeline.compress(image(16, 16), codec)
    with pytest.raises(bs.ModelMismatchError, match="other weights"):
        pipeline.decompress(data, other_codec)
    with pytest.raises(bs.ModelMismatchError, match="not among the bundled"):
        pipeline.decompress(data)  # a random model is not bundled
    wider = Codec.random(8, seed=0)
    with pytest.raises(bs.ModelMismatchError):
        pipeline.decompress(data, wider)


def test_codec_from_checkpoint_path_matches_its_streams(codec, tmp_path):
    path = codec.save(tmp_path / "tiny.safetensors")
    data = pipeline.compress(image(8, 16), codec)
    reloaded = pipeline.resolve_codec(str(path))
    assert reloaded.weights_sha256 == codec.weights_sha256
    np.testing.assert_allclose(pipeline.decompress(data, str(path)), pipeline.decompress(data, codec), atol=0)


def test_corrupt_stream_never_decodes(codec):
    data = pipeline.compress(image(9, 17), codec)
    rng = np.random.default_rng(0)
    for p in rng.integers(0, 8 * len(data), size=50):
        damaged = bytearray(data)
        damaged[p // 8] ^= 1 << (p % 8)
        with pytest.raises(bs.CorruptStreamError):
            pipeline.decompress(bytes(damaged), codec)


def test_legacy_through_the_pipeline(codec):
    img = image(20, 27)
    data = pipeline.compress(img, codec, legacy=True)
    assert bs.info(data).format == bs.FORMAT_LEGACY
    out, unpacked = pipeline.decompress_with_info(data, codec)
    assert out.shape == (24, 32, 3)  # the legacy format decodes to the padded size
    # like the original, the image goes in unpadded (the network's own SAME padding)
    np.testing.assert_array_equal(unpacked.indices, np.asarray(codec.encode_indices(img))[0])
    with pytest.raises(bs.LegacyFormatError):
        pipeline.compress(image(8, 8), codec, legacy=True)
    with pytest.raises(bs.ModelMismatchError):
        pipeline.decompress(data, Codec.random(8, seed=0))


def test_legacy_stream_without_a_codec_needs_the_bundled_model(codec):
    data = pipeline.compress(image(16, 16), codec, legacy=True)
    with pytest.raises(bs.ModelMismatchError, match="4 channels"):
        pipeline.decompress(data)


def test_top_level_exports(codec):
    data = l3ic_jax.compress(image(8, 8), codec)
    assert l3ic_jax.decompress(data, codec).shape == (8, 8, 3)


# -- the original's decoded images (legacy streams, the given graph converted) --------------------------------------
@pytest.fixture(scope="module")
def converted_16c(tmp_path_factory, shared):
    pb = shared("reference", "dcn_16c_seed1.pb")  # skips when ../shared is absent
    converter = REPO / "convert" / "tf_to_flax.py"
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed (the `tf` extra)")
    if not converter.exists():
        pytest.skip("convert/tf_to_flax.py is not available")
    out = tmp_path_factory.mktemp("converted") / "dcn_16c_seed1.safetensors"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, str(converter), str(pb), str(out)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return Codec.from_checkpoint(out)


@pytest.mark.tf
@pytest.mark.parametrize("name", ["kodim05", "md575e5a225f"])
def test_legacy_decode_matches_the_original(converted_16c, shared, name):
    decoded_npy = shared("reference", f"{name}.decoded.npy")
    data = (DATA / f"{name}.l3i").read_bytes()
    out = pipeline.decompress(data, converted_16c)
    expected = np.load(decoded_npy)[0]
    assert out.shape == expected.shape == (512, 512, 3)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)
