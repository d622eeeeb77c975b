"""tools/widen_checkpoint.py: a wider model started from a narrower one decodes exactly as the narrower one."""

from __future__ import annotations

import numpy as np
import pytest

from l3ic_jax import checkpoint
from l3ic_jax.codec import Codec, model_from_tensors, tensors_from_model
from l3ic_jax.train import lineage


@pytest.fixture()
def tool(load_tool):
    return load_tool("widen_checkpoint")


def test_the_wider_model_keeps_the_old_channels_and_decodes_the_same_image(tool):
    narrow = Codec.random(16, seed=3)
    wide_tensors = tool.widen(tensors_from_model(narrow.model), 24, seed=1)
    wide = Codec(model_from_tensors(wide_tensors))
    assert wide.n_features == 24
    x = np.random.default_rng(0).random((1, 32, 40, 3), dtype=np.float32)

    z_narrow, z_wide = np.asarray(narrow.encode_indices(x)), np.asarray(wide.encode_indices(x))
    np.testing.assert_array_equal(z_wide[..., :16], z_narrow)
    latent = np.asarray(wide.encode(x))
    np.testing.assert_allclose(latent[..., :16], np.asarray(narrow.encode(x)), atol=1e-6)
    assert latent[..., 16:].std(axis=(0, 1, 2)).min() > 0  # each new channel varies with the image
    np.testing.assert_allclose(wide.decode_indices(z_wide), narrow.decode_indices(z_narrow), atol=1e-5)


def test_new_filters_have_the_requested_share_of_the_old_norm(tool):
    tensors = tensors_from_model(Codec.random(16, seed=3).model)
    for scale in (0.25, 1.0):
        wide = tool.widen(tensors, 32, encoder_scale=scale, seed=2)
        k = wide["encoder/conv_8/kernel"].reshape(-1, 32)
        norms = np.sqrt((k**2).sum(axis=0))
        np.testing.assert_allclose(norms[16:].mean() / norms[:16].mean(), scale, rtol=1e-5)
        np.testing.assert_array_equal(wide["encoder/conv_8/bias"][16:], 0)
        np.testing.assert_array_equal(wide["decoder/conv_0/kernel"][:, :, 16:, :], 0)
    assert not np.array_equal(tool.widen(tensors, 32, seed=0)["encoder/conv_8/kernel"],
                              tool.widen(tensors, 32, seed=1)["encoder/conv_8/kernel"])


def test_it_refuses_to_narrow_and_a_bad_scale(tool):
    tensors = tensors_from_model(Codec.random(16, seed=3).model)
    with pytest.raises(ValueError, match="can only widen"):
        tool.widen(tensors, 16)
    with pytest.raises(ValueError, match="at most 128"):
        tool.widen(tensors, 256)
    with pytest.raises(ValueError, match="encoder_scale"):
        tool.widen(tensors, 32, encoder_scale=0)


def test_the_file_keeps_the_training_chain(tool, tmp_path, capsys):
    source = Codec.random(16, seed=3).save(tmp_path / "narrow.safetensors", provenance={
        "steps": 700, "hyperparameters": {"lr": 1e-4, "init_from": {"checkpoint": "x", "steps": 300}}})
    out = tmp_path / "wide.safetensors"
    assert tool.main([str(source), "32", str(out), "--encoder-scale", "0.5"]) == 0
    assert "32 channels" in capsys.readouterr().out
    tensors, meta = checkpoint.load(out)
    assert meta["n_features"] == 32
    record = lineage(str(out), meta)
    assert record["steps"] == 0 and record["total_steps"] == 1000  # 700 + the 300 before them
    assert record["widened"] == {"from_n_features": 16, "encoder_scale": 0.5, "seed": 0}
    with pytest.raises(SystemExit):
        tool.main([str(source), "8", str(tmp_path / "narrower.safetensors")])
    assert not (tmp_path / "narrower.safetensors").exists()

