"""tools/error_scales.py: the per-scale figures that training.md quotes on where the 64c loses MS-SSIM."""

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tool(load_tool):
    return load_tool("error_scales")


def _photo_like(h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:h, :w]
    base = 120 + 60 * np.sin(x / 23.0)[..., None] * np.cos(y / 31.0)[..., None] + rng.normal(0, 12, (h, w, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def test_error_profile_separates_a_colour_cast_from_fine_noise(tool):
    a = _photo_like(192, 256)
    same = tool.error_profile(a, a)
    assert same["terms"] == pytest.approx([1.0] * 5, abs=1e-12)
    assert all(v == 0.0 for v in same["rms"].values()) and same["cast"] == 0.0

    cast = tool.error_profile(a, (a.astype(int) + np.array([3, 0, 0])).clip(0, 255).astype(np.uint8))
    # +3 levels on red only (nothing clips: the image stays within 13..247 before the noise's tails)
    assert cast["cast"] == pytest.approx(3 / np.sqrt(3), rel=0.02)
    assert all(v == pytest.approx(np.sqrt(3.0), rel=0.02) for v in cast["rms"].values())  # a drift survives averaging
    assert list(cast["rms"]) == [1, 2, 4, 8, 16, 32, 64, 128]  # 192 px: every factor fits once at least

    rng = np.random.default_rng(3)
    noisy = (a.astype(int) + rng.choice([-4, 4], a.shape)).clip(0, 255).astype(np.uint8)
    noise = tool.error_profile(a, noisy)
    assert noise["rms"][1] == pytest.approx(4.0, rel=0.05)
    assert noise["rms"][8] < 0.15 * noise["rms"][1]  # white noise averages away: ~1/8
    assert noise["terms"][0] < noise["terms"][4] and noise["cast"] < 0.1


def test_tool_runs_on_a_folder(tool, tmp_path, capsys):
    from PIL import Image

    from l3ic_jax.codec import Codec

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(_photo_like(168, 176, seed=i)).save(images / f"{i}.png")
    weights = Codec.random(16, seed=2).save(tmp_path / "w.safetensors")
    out = tmp_path / "scales.json"
    assert tool.main(["--models", str(weights), "--data", str(images), "--crop", "0", "--json", str(out)]) == 0
    r = json.loads(out.read_text())[str(weights)]
    for side in ("model", "jpeg"):
        assert len(r[side]["terms"]) == 5 and all(0.0 <= t <= 1.0 for t in r[side]["terms"])
        assert list(r[side]["rms"]) == ["1", "2", "4", "8", "16", "32", "64", "128"]
        assert r[side]["bpp"] > 0
    assert r["jpeg"]["ms_ssim_of_mean_terms"] > r["model"]["ms_ssim_of_mean_terms"]  # random weights lose
    assert "weight x ln(term)" in capsys.readouterr().out


def test_tool_refuses_a_missing_folder(tool, tmp_path):
    with pytest.raises(SystemExit):
        tool.main(["--models", "16c", "--data", str(tmp_path / "nowhere")])
