"""Checkpoints: round trip, and every kind of bad file is a CheckpointError with a message that says what is wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save as st_save

import l3ic_jax
from l3ic_jax import checkpoint
from l3ic_jax.checkpoint import CheckpointError
from l3ic_jax.codec import Codec

N = 8  # a small model: the checks do not depend on the width


def random_tensors(n_features=N, seed=0):
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal(shape).astype(np.float32) * 0.05
        for name, shape in checkpoint.parameter_shapes(n_features).items()
    }


@pytest.fixture
def saved(tmp_path):
    tensors = random_tensors()
    path = checkpoint.save(tmp_path / "m.safetensors", tensors, provenance={"source": "test"})
    return path, tensors


def raw_save(path, tensors, metadata):
    """Write a safetensors file directly, bypassing save()'s validation."""
    path.write_bytes(st_save({k: np.array(v, order="C") for k, v in tensors.items()}, metadata=metadata))  # keeps 0-d
    return path


def good_metadata(tensors, **overrides):
    cb = checkpoint._quantize.default_codebook()
    meta = {
        "format": checkpoint.FORMAT,
        "format_version": str(checkpoint.FORMAT_VERSION),
        "n_features": str(N),
        "codebook": json.dumps([float(v) for v in cb]),
        "latent_bpf": "5",
        "weights_sha256": checkpoint.weights_hash(tensors, cb),
        "provenance": "{}",
    }
    meta.update(overrides)
    return {k: v for k, v in meta.items() if v is not None}


def test_round_trip(saved):
    path, tensors = saved
    loaded, meta = checkpoint.load(path)
    assert sorted(loaded) == sorted(tensors)
    for name in tensors:
        np.testing.assert_array_equal(loaded[name], tensors[name])
        assert loaded[name].dtype == np.float32
    assert loaded["encoder/latent_scaling"].shape == ()
    assert meta["n_features"] == N and meta["latent_bpf"] == 5
    np.testing.assert_array_equal(meta["codebook"], np.arange(-15, 17, dtype=np.float32))
    assert meta["provenance"]["source"] == "test" and "date" in meta["provenance"]
    assert meta["weights_sha256"] == checkpoint.weights_hash(tensors, meta["codebook"])


def test_round_trip_through_codec(saved, tmp_path):
    path, tensors = saved
    codec = Codec.from_checkpoint(path)
    again = codec.save(tmp_path / "again.safetensors")
    loaded, meta = checkpoint.load(again)
    for name in tensors:
        np.testing.assert_array_equal(loaded[name], tensors[name])
    assert codec.weights_sha256 == meta["weights_sha256"]  # identity does not depend on the file


def test_save_refuses_invalid_tensors(tmp_path):
    tensors = random_tensors()
    tensors["decoder/conv_1/kernel"][0, 0, 0, 0] = np.nan
    with pytest.raises(CheckpointError, match="non-finite"):
        checkpoint.save(tmp_path / "x.safetensors", tensors)
    assert not (tmp_path / "x.safetensors").exists()


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read"):
        checkpoint.load(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        l3ic_jax.load(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("keep", [0, 5, 100, -10])
def test_truncated_file(saved, keep):
    path, _ = saved
    blob = path.read_bytes()
    path.write_bytes(blob[:keep] if keep >= 0 else blob[:keep])
    with pytest.raises(CheckpointError, match="not a valid safetensors checkpoint"):
        checkpoint.load(path)


def test_not_safetensors_at_all(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + bytes(64))
    with pytest.raises(CheckpointError, match="not a valid safetensors checkpoint"):
        checkpoint.load(path)


def test_foreign_safetensors_file(tmp_path):
    path = raw_save(tmp_path / "foreign.safetensors", {"weight": np.zeros((3, 3), np.float32)}, {"format": "pt"})
    with pytest.raises(CheckpointError, match="not an l3ic-jax checkpoint"):
        checkpoint.load(path)
    path = raw_save(tmp_path / "nometa.safetensors", {"weight": np.zeros((3, 3), np.float32)}, None)
    with pytest.raises(CheckpointError, match="not an l3ic-jax checkpoint"):
        checkpoint.load(path)


def test_wrong_shape(tmp_path):
    tensors = random_tensors()
    tensors["encoder/conv_2/kernel"] = np.zeros((5, 5, 128, 128), np.float32)
    path = raw_save(tmp_path / "shape.safetensors", tensors, good_metadata(tensors))
    message = r"'encoder/conv_2/kernel' has shape \(5, 5, 128, 128\), expected \(3, 3, 128, 128\)"
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(path)


def test_n_features_disagrees_with_shapes(tmp_path):
    tensors = random_tensors()
    path = raw_save(tmp_path / "n.safetensors", tensors, good_metadata(tensors, n_features="16"))
    with pytest.raises(CheckpointError, match="has shape .* expected"):
        checkpoint.load(path)


def test_missing_and_extra_names(tmp_path):
    tensors = random_tensors()
    del tensors["decoder/tconv_8/bias"]
    path = raw_save(tmp_path / "missing.safetensors", tensors, good_metadata(tensors))
    with pytest.raises(CheckpointError, match="missing decoder/tconv_8/bias"):
        checkpoint.load(path)
    tensors = random_tensors()
    tensors["decoder/tconv_9/kernel"] = np.zeros((3, 3, 3, 3), np.float32)
    path = raw_save(tmp_path / "extra.safetensors", tensors, good_metadata(tensors))
    with pytest.raises(CheckpointError, match="unexpected decoder/tconv_9/kernel"):
        checkpoint.load(path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"n_features": "sixteen"}, "malformed metadata"),
        ({"n_features": None}, "incomplete or malformed metadata"),
        ({"codebook": "[1, 2"}, "malformed metadata"),
        ({"codebook": json.dumps([3.0, 2.0, 1.0])}, "strictly increasing"),
        ({"codebook": json.dumps([0.0])}, "2..256"),
        ({"format_version": "99"}, "newer than this library supports"),
        ({"latent_bpf": None}, "incomplete or malformed metadata"),
        ({"provenance": "{oops"}, "malformed metadata"),
    ],
)
def test_bad_metadata(tmp_path, overrides, message):
    tensors = random_tensors()
    path = raw_save(tmp_path / "meta.safetensors", tensors, good_metadata(tensors, **overrides))
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(path)


def test_nan_weights(tmp_path):
    tensors = random_tensors()
    tensors["encoder/latent_scaling"] = np.array(np.nan, np.float32)
    path = raw_save(tmp_path / "nan.safetensors", tensors, good_metadata(tensors))
    with pytest.raises(CheckpointError, match="'encoder/latent_scaling' holds non-finite values"):
        checkpoint.load(path)


def test_wrong_dtype(tmp_path):
    tensors = random_tensors()
    tensors["encoder/conv_0/bias"] = tensors["encoder/conv_0/bias"].astype(np.float16)
    path = raw_save(tmp_path / "f16.safetensors", tensors, good_metadata(tensors))
    with pytest.raises(CheckpointError, match="float16, expected float32"):
        checkpoint.load(path)


def test_tampered_weights(saved):
    """A flipped bit in a weight keeps the file valid and finite; the recorded weights_sha256 catches it."""
    path, tensors = saved
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0x01  # a mantissa bit of the last float in the data section
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="do not match the recorded weights_sha256"):
        checkpoint.load(path)


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="is a directory"):
        l3ic_jax.load(tmp_path)


def test_bundled_model():
    """`l3ic_jax.load('32c')`: a clear error while the bundled checkpoint is absent; a model once it is there."""
    path = checkpoint.checkpoints_dir() / checkpoint.BUNDLED["32c"]
    if path.is_file():
        codec = l3ic_jax.load("32c")
        assert codec.n_features == 32 and codec.name == "32c"
    else:
        with pytest.raises(CheckpointError, match="bundled model '32c' is not available"):
            l3ic_jax.load("32c")


@pytest.fixture
def bundled_folder(tmp_path, monkeypatch):
    """A stand-in `checkpoints/` folder holding a random 16-channel model as the bundled '16c'."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    monkeypatch.setattr(checkpoint, "checkpoints_dir", lambda: folder)
    checkpoint._verified.clear()
    path = Codec.random(16, seed=2).save(folder / checkpoint.BUNDLED["16c"])
    return folder, path


def test_bundled_file_must_match_its_recorded_sha256(bundled_folder):
    folder, path = bundled_folder
    with pytest.raises(CheckpointError, match="not listed in"):
        l3ic_jax.load("16c")
    (folder / checkpoint.SUMS_FILE).write_text(f"{checkpoint.file_sha256(path)}  {path.name}\n")
    assert l3ic_jax.load("16c").n_features == 16
    (folder / checkpoint.SUMS_FILE).write_text(f"{'0' * 64}  {path.name}\n")
    checkpoint._verified.clear()
    with pytest.raises(CheckpointError, match="damaged or was replaced"):
        l3ic_jax.load("16c")


def test_bundle_tool_records_the_sum_and_refuses_a_wrong_width(bundled_folder, tmp_path, monkeypatch, load_tool):
    folder, _ = bundled_folder
    tool = load_tool("bundle_checkpoint")
    monkeypatch.setattr(tool, "REPO", tmp_path)
    source = Codec.random(16, seed=4).save(tmp_path / "trained.safetensors")
    assert tool.main([str(source), "16c"]) == 0
    assert checkpoint.bundled_sums(folder)["l3ic-16c.safetensors"] == checkpoint.file_sha256(source)
    checkpoint._verified.clear()
    assert l3ic_jax.load("16c").weights_sha256 == Codec.from_checkpoint(source).weights_sha256
    with pytest.raises(SystemExit):
        tool.main([str(source), "32c"])


def test_bundle_tool_records_the_evaluation_in_the_provenance(bundled_folder, tmp_path, monkeypatch, load_tool):
    from PIL import Image

    folder, _ = bundled_folder
    tool = load_tool("bundle_checkpoint")
    monkeypatch.setattr(tool, "REPO", tmp_path)
    images = tmp_path / "evalset"
    images.mkdir()
    rng = np.random.default_rng(5)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(images / f"{i}.png")
    source = Codec.random(16, seed=4).save(tmp_path / "trained.safetensors")
    assert tool.main([str(source), "16c", "--eval", str(images), "--crop", "32"]) == 0
    target = folder / "l3ic-16c.safetensors"
    assert checkpoint.bundled_sums(folder)["l3ic-16c.safetensors"] == checkpoint.file_sha256(target)
    _, meta = checkpoint.load(target)
    ev = meta["provenance"]["evaluation"]
    assert ev["dataset"] == "evalset" and ev["images"] == 2 and ev["crop"] == 32
    assert 0 < ev["bpp"] and 0 < ev["psnr"] < 100 and -1 <= ev["ssim"] <= 1 and ev["ms_ssim"] is None  # < 161 px
    assert meta["weights_sha256"] == Codec.from_checkpoint(source).weights_sha256
