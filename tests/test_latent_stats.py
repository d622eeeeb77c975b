"""tools/latent_stats.py: the per-channel usage numbers that the training notes quote."""

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tool(load_tool):
    return load_tool("latent_stats")


def test_channel_stats_on_known_distributions(tool):
    n = 32 * 100
    dead = np.full(n, tool.ZERO_INDEX)                     # always the zero bin: 0 bits, never non-zero
    uniform = np.tile(np.arange(32), 100)                  # every bin equally often: 5 bits
    half = np.where(np.arange(n) % 2 == 0, tool.ZERO_INDEX, tool.ZERO_INDEX + 1)  # two bins: 1 bit, half non-zero
    idx = np.stack([dead, uniform, half], axis=-1).astype(np.uint8).reshape(10, 20, 16, 3)
    st = tool.channel_stats(idx, live_bits=0.1)
    assert st["channels"] == 3
    assert st["entropy_bits"] == pytest.approx([0.0, 5.0, 1.0], abs=1e-4)
    assert st["nonzero"] == pytest.approx([0.0, 31 / 32, 0.5], abs=1e-4)  # stored to 4 places
    assert st["live"] == 2
    assert st["pooled_bpp"] == pytest.approx(6.0 / 64)


def test_tool_runs_on_a_folder(tool, tmp_path, capsys):
    from PIL import Image

    from l3ic_jax.codec import Codec

    rng = np.random.default_rng(1)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(images / f"{i}.png")
    weights = Codec.random(16, seed=2).save(tmp_path / "w.safetensors")
    out = tmp_path / "stats.json"
    assert tool.main(["--models", str(weights), "--data", str(images), "--crop", "0", "--json", str(out)]) == 0
    st = json.loads(out.read_text())["models"][str(weights)]
    assert st["channels"] == 16 and len(st["entropy_bits"]) == 16
    # 2 images of 40x56 -> 5x7 latent positions each: entropies are bounded by log2(70)
    assert all(0.0 <= h <= np.log2(70) + 1e-9 for h in st["entropy_bits"])
    assert "live channels" in capsys.readouterr().out


def test_tool_refuses_a_missing_folder_and_an_unknown_model(tool, tmp_path, capsys):
    with pytest.raises(SystemExit):
        tool.main(["--models", "16c", "--data", str(tmp_path / "nowhere")])
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(SystemExit):
        tool.main(["--models", "99c", "--data", str(tmp_path), "--crop", "0"])
    assert "no such checkpoint" in capsys.readouterr().err
