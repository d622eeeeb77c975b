"""The command line, end to end in a temporary directory (``main([...])`` called directly)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from l3ic_jax import bitstream as bs
import l3ic_jax.compress as cli  # the module (``from l3ic_jax import compress`` is the function)
from l3ic_jax import pipeline
from l3ic_jax.codec import Codec
from l3ic_jax.imageio import read_image

DATA = Path(__file__).parent / "data"
H, W = 20, 28  # one image size for most tests: one jit compilation


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    tiny = Codec.random(4, seed=0).save(d / "tiny.safetensors")
    other = Codec.random(4, seed=1).save(d / "other.safetensors")
    return {"tiny": str(tiny), "other": str(other)}


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_image(path: Path, height=H, width=W, seed=0, mode="RGB", **save_kwargs) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    arr = (127 + 100 * np.sin(x[..., None] / 4.0 + np.arange(3)) * np.cos(y[..., None] / 5.0)).astype(np.uint8)
    arr = np.clip(arr.astype(int) + rng.integers(-8, 9, arr.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, **save_kwargs)
    return arr


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def no_partial_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".part")]


# -- encode / decode ---------------------------------------------------------------------------------------------
def test_encode_then_decode_with_default_names(work, models, capsys):
    original = make_image(work / "x.png")
    code, out, err = run(["x.png", "-m", models["tiny"]], capsys)
    assert code == 0, err
    facts = bs.info((work / "x.l3i").read_bytes())
    assert facts.format == bs.FORMAT_CONTAINER and (facts.height, facts.width) == (H, W)
    assert facts.model_name == "tiny"
    (work / "x.png").rename(work / "x_original.png")
    code, out, err = run(["x.l3i", "-m", models["tiny"]], capsys)
    assert code == 0, err
    decoded = np.asarray(Image.open(work / "x.png"))
    assert decoded.shape == original.shape and decoded.dtype == np.uint8
    # rounded, not truncated
    expected = pipeline.decompress((work / "x.l3i").read_bytes(), models["tiny"])
    np.testing.assert_array_equal(decoded, np.round(expected * 255).astype(np.uint8))
    assert no_partial_files(work)


def test_output_file_and_formats(work, models, capsys):
    make_image(work / "in.webp", lossless=True)
    code, _, err = run(["in.webp", "-m", models["tiny"], "-o", "stream.bin"], capsys)
    assert code == 0, err
    assert bs.is_container((work / "stream.bin").read_bytes())  # the magic says it is a stream
    code, _, err = run(["stream.bin", "-m", models["tiny"], "-o", "out.bmp"], capsys)
    assert code == 0, err
    assert Image.open(work / "out.bmp").format == "BMP"


def test_info(work, models, capsys):
    make_image(work / "a.png")
    assert run(["a.png", "-m", models["tiny"]], capsys)[0] == 0
    shutil.copy(DATA / "kodim05.l3i", work / "k.l3i")
    code, out, err = run(["--info", "a.l3i", "k.l3i"], capsys)
    assert code == 0, err
    assert "l3ic-jax container" in out and "tiny" in out and f"{W} x {H} px" in out
    assert "legacy" in out and "512 x 512" in out and "0.7803 bpp" in out
    assert "1571 1422 1543" in out and "16 fse" in out
    assert not (work / "a.png.png").exists() and not (work / "k.png").exists()


def test_stats(work, models, capsys):
    make_image(work / "s.png")
    code, out, err = run(["s.png", "-m", models["tiny"], "--stats"], capsys)
    assert code == 0, err
    header, line = out.strip().splitlines()
    assert "bpp" in header and "PSNR" in header and "SSIM" in header
    fields = line.split()
    size = (work / "s.l3i").stat().st_size
    assert int(fields[1]) == size and float(fields[2]) == pytest.approx(8 * size / (H * W), abs=1e-4)
    psnr, ssim = float(fields[3]), float(fields[4])
    assert 0 < psnr < 100 and -1 <= ssim <= 1
    assert float(fields[5]) >= 0 and float(fields[6]) >= 0
    code, out, err = run(["s.l3i", "-m", models["tiny"], "--stats", "-o", "s_dec.png"], capsys)
    assert code == 0, err
    assert out.strip().splitlines()[1].split()[3] == "-"  # no reference image when decoding


def test_legacy(work, models, capsys):
    arr = make_image(work / "l.png", height=24, width=32)
    code, _, err = run(["l.png", "--legacy", "-m", models["tiny"]], capsys)
    assert code == 0, err
    data = (work / "l.l3i").read_bytes()
    codec = pipeline.resolve_codec(models["tiny"])
    assert data == bs.pack_legacy(np.asarray(codec.encode_indices(arr))[0])
    (work / "l.png").unlink()
    code, _, err = run(["l.l3i", "-m", models["tiny"]], capsys)
    assert code == 0, err
    assert np.asarray(Image.open(work / "l.png")).shape == (24, 32, 3)


def test_legacy_limits_and_padding_notice(work, models, capsys):
    make_image(work / "t.png", height=8, width=8)  # a 1x1 latent
    code, _, err = run(["t.png", "--legacy", "-m", models["tiny"]], capsys)
    assert code == cli.EXIT_LEGACY_LIMIT and "container" in err
    assert not (work / "t.l3i").exists()
    make_image(work / "p.png", height=H, width=W)
    code, _, err = run(["p.png", "--legacy", "-m", models["tiny"]], capsys)
    assert code == 0 and "will decode to 32x24" in err


def test_directory_input_with_progress(work, models, capsys):
    src = work / "photos"
    src.mkdir()
    make_image(src / "a.png", seed=1)
    make_image(src / "b.jpg", seed=2)
    (src / "notes.txt").write_text("not an image")
    code, out, err = run([src, "-o", "out", "-m", models["tiny"]], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (work / "out").iterdir()) == ["a.l3i", "b.l3i"]
    assert "[1/2]" in err and "[2/2]" in err
    code, out, err = run(["out", "-o", "back", "-m", models["tiny"], "-q"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (work / "back").iterdir()) == ["a.png", "b.png"]
    assert err == ""


def test_several_files_same_stem_is_a_usage_error(work, models, capsys):
    make_image(work / "a.png")
    make_image(work / "a.bmp")
    code, _, err = run(["a.png", "a.bmp", "-o", "out", "-m", models["tiny"]], capsys)
    assert code == cli.EXIT_USAGE and "both be written" in err
    assert not (work / "out").exists() or not any((work / "out").iterdir())


def test_force(work, models, capsys):
    make_image(work / "f.png")
    assert run(["f.png", "-m", models["tiny"]], capsys)[0] == 0
    (work / "f.l3i").write_bytes(b"keep me")
    code, _, err = run(["f.png", "-m", models["tiny"]], capsys)
    assert code == cli.EXIT_EXISTS and "--force" in err
    assert (work / "f.l3i").read_bytes() == b"keep me"
    code, _, err = run(["f.png", "-m", models["tiny"], "--force"], capsys)
    assert code == 0, err
    assert bs.is_container((work / "f.l3i").read_bytes())
    # decoding next to its source image must not replace the image either
    code, _, err = run(["f.l3i", "-m", models["tiny"]], capsys)
    assert code == cli.EXIT_EXISTS
    assert no_partial_files(work)


# -- failures: one line, a distinct exit code, nothing left behind --------------------------------------------------
def test_missing_file(work, models, capsys):
    code, _, err = run(["nothere.png", "-m", models["tiny"]], capsys)
    assert code == cli.EXIT_NO_INPUT and "nothere.png" in err and "Traceback" not in err


def test_not_an_image(work, models, capsys):
    (work / "fake.png").write_text("hello")
    code, _, err = run(["fake.png", "-m", models["tiny"]], capsys)
    assert code == cli.EXIT_BAD_IMAGE and "not an image" in err and len(err.strip().splitlines()) == 1
    assert not (work / "fake.l3i").exists()


def test_corrupt_stream(work, models, capsys):
    make_image(work / "c.png")
    assert run(["c.png", "-m", models["tiny"]], capsys)[0] == 0
    data = bytearray((work / "c.l3i").read_bytes())
    data[-3] ^= 0x10
    (work / "bad.l3i").write_bytes(bytes(data))
    (work / "short.l3i").write_bytes(bytes(data[:40]))
    (work / "junk.l3i").write_bytes(b"this is not a stream")
    for name in ["bad", "short", "junk"]:
        code, _, err = run([f"{name}.l3i", "-m", models["tiny"]], capsys)
        assert code == cli.EXIT_CORRUPT, (name, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not (work / f"{name}.png").exists()
    code, _, err = run(["--info", "short.l3i"], capsys)
    assert code == cli.EXIT_CORRUPT
    assert no_partial_files(work)


def test_model_mismatch(work, models, capsys):
    make_image(work / "m.png")
    assert run(["m.png", "-m", models["tiny"]], capsys)[0] == 0
    code, _, err = run(["m.l3i", "-m", models["other"], "-o", "m_out.png"], capsys)
    assert code == cli.EXIT_MODEL_MISMATCH and "tiny" in err
    code, _, err = run(["m.l3i", "-o", "m_out.png"], capsys)  # not a bundled model: give -m
    assert code == cli.EXIT_MODEL_MISMATCH and "-m" in err
    assert not (work / "m_out.png").exists()


def test_bad_model(work, models, capsys):
    make_image(work / "b.png")
    for bad in ["nosuchmodel", "b.png", "99c"]:
        code, _, err = run(["b.png", "-m", bad], capsys)
        assert code == cli.EXIT_BAD_MODEL, (bad, err)
        assert len(err.strip().splitlines()) == 1
    assert not (work / "b.l3i").exists()


def test_refine(work, models, capsys, monkeypatch):
    make_image(work / "r.png")
    code, _, err = run(["r.png", "-m", models["tiny"], "--refine", "--refine-steps", "3", "--stats"], capsys)
    assert code == 0, err
    data = (work / "r.l3i").read_bytes()
    assert pipeline.decompress(data, Codec.from_checkpoint(models["tiny"])).shape == (H, W, 3)
    # the steps that reach compress: --refine alone takes the default, --refine-steps alone implies --refine
    from l3ic_jax.refine import DEFAULT_STEPS

    seen = []
    real = pipeline.compress
    monkeypatch.setattr(pipeline, "compress", lambda *a, **k: seen.append(k["refine"]) or real(*a, **k))
    for args in (["--refine"], ["--refine-steps", "2"], ["--refine-steps", "0"], []):
        assert run(["r.png", "-m", models["tiny"], "-o", "s.l3i", "--force", *args], capsys)[0] == 0
    assert seen == [DEFAULT_STEPS, 2, 0, 0]
    code, _, err = run(["r.png", "-m", models["tiny"], "--refine-steps", "-1", "-o", "x.l3i"], capsys)
    assert code == cli.EXIT_USAGE and "--refine-steps must be >= 0" in err and not (work / "x.l3i").exists()


def test_usage_errors_and_help(work, capsys):
    assert run([], capsys)[0] == cli.EXIT_USAGE
    assert run(["--no-such-option", "x.png"], capsys)[0] == cli.EXIT_USAGE
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    assert "exit codes" in out and "examples" in out and "--legacy" in out and "--force" in out


def test_several_inputs_continue_after_a_failure(work, models, capsys):
    make_image(work / "ok.png")
    code, _, err = run(["missing.png", "ok.png", "-m", models["tiny"]], capsys)
    assert code == cli.EXIT_NO_INPUT
    assert (work / "ok.l3i").exists()


def test_interrupt_leaves_nothing(work, models, capsys, monkeypatch):
    make_image(work / "i.png")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.os, "fsync", interrupted)  # during the write of the output
    code, _, err = run(["i.png", "-m", models["tiny"]], capsys)
    assert code == cli.EXIT_INTERRUPTED and "interrupted" in err
    assert not (work / "i.l3i").exists() and no_partial_files(work)


def test_write_error_leaves_nothing(work, models, capsys, monkeypatch):
    make_image(work / "w.png")

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli.os, "link", full)
    monkeypatch.setattr(cli.os, "replace", full)
    code, _, err = run(["w.png", "-m", models["tiny"]], capsys)
    assert code == cli.EXIT_WRITE and "No space left" in err
    assert not (work / "w.l3i").exists() and no_partial_files(work)


# -- image conversions ---------------------------------------------------------------------------------------------
def test_grayscale_input_gets_a_notice(work, models, capsys):
    make_image(work / "g.png", mode="L")
    code, _, err = run(["g.png", "-m", models["tiny"]], capsys)
    assert code == 0 and "grayscale converted to RGB" in err


@pytest.mark.parametrize(
    "mode, notice", [("L", "grayscale"), ("P", "palette"), ("RGBA", "alpha"), ("LA", "alpha"), ("RGB", None)]
)
def test_read_image_modes(tmp_path, mode, notice):
    make_image(tmp_path / "m.png", height=5, width=7, mode=mode)
    rgb, notices = read_image(tmp_path / "m.png")
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8
    assert (notice is None and not notices) or (len(notices) == 1 and notice in notices[0])


def test_read_image_16_bit(tmp_path):
    a = np.random.default_rng(0).integers(0, 65536, (4, 6), dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    rgb, notices = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(rgb[..., 1], np.round(a / 257).astype(np.uint8))
    assert "16-bit" in notices[0]


def test_read_image_exif_orientation(tmp_path):
    arr = make_image(tmp_path / "plain.png", height=5, width=7)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "o.tiff", exif=exif)
    rgb, _ = read_image(tmp_path / "o.tiff")
    np.testing.assert_array_equal(rgb, np.rot90(arr, k=-1))


def test_python_dash_m_runs(tmp_path):
    repo = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "l3ic_jax.compress", "--info", str(DATA / "md575e5a225f.l3i")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "legacy" in proc.stdout and "21675 bytes" in proc.stdout


def test_the_cli_module_does_not_hide_the_compress_function(models):
    import l3ic_jax

    assert l3ic_jax.compress is cli  # importing the submodule set the package attribute to it...
    codec = pipeline.resolve_codec(models["tiny"])
    img = np.zeros((8, 8, 3), np.uint8)
    assert l3ic_jax.compress(img, codec) == pipeline.compress(img, codec)  # ...which still compresses
