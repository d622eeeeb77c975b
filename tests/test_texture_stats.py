"""tools/texture_stats.py: the texture table behind --detail (docs/training.md §8.5)."""

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def tool(load_tool):
    return load_tool("texture_stats")


def test_tiles_cover_whole_tiles_only(tool):
    ims = [np.zeros((70, 100, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)]
    assert tool.tiles(ims, 32).shape == (2 * 3 + 1, 32, 32, 3)
    with pytest.raises(SystemExit, match="32 px or larger"):
        tool.tiles([np.zeros((20, 20, 3), np.uint8)], 32)


def test_table_ranks_a_flat_reference_below_noisy_training_patches(tool, tmp_path, capsys):
    flat, noisy = tmp_path / "flat", tmp_path / "noisy"
    flat.mkdir(), noisy.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(np.full((64, 64, 3), 77, np.uint8)).save(flat / "a.png")
    Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(noisy / "b.png")
    args = ["--data", str(noisy), "--eval", str(flat), "--crop", "0", "--patch", "32", "--n", "20"]
    assert tool.main(args + ["--settings", "1:1:0,1:2:40"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 + 1 + 2  # header, rule, reference, two settings
    ref_mean = float(lines[2].split("|")[-2])
    noisy_means = [float(line.split("|")[-2]) for line in lines[3:]]
    assert ref_mean == 0.0 and min(noisy_means) > 20  # noise, even when downscaled ×2, stays far from flat
    with pytest.raises(SystemExit, match="SCALE_MIN:SCALE_MAX:DETAIL"):
        tool.main(args + ["--settings", "1:2"])
    with pytest.raises(SystemExit, match="no such image folder"):
        tool.main(["--data", str(tmp_path / "none"), "--eval", str(flat)])
