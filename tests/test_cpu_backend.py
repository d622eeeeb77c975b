"""The C kernels (`l3ic_jax.cpu_backend`, CPU inference) against the XLA model, and the switch between them.

Tolerances (the project's core ones): latent max|diff| <= 1e-4 * max(1, max|z|); decoded image max|diff| <= 1e-4;
quantization indices identical except values within 1e-4 of a decision boundary (counted and recorded).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import l3ic_jax
from l3ic_jax import codec as codec_mod
from l3ic_jax import cpu_backend, pipeline
from l3ic_jax.codec import Codec, model_from_tensors

needs_kernels = pytest.mark.skipif(not cpu_backend.supported(), reason="no AVX-512F (or l3ic_jax._cpu not built)")

LATENT_RTOL = 1e-4
DECODED_ATOL = 1e-4
BOUNDARY = 1e-4


def _codecs():
    """(label, XLA codec, kernel codec) with the same weights."""
    out = {}
    for name in ("16c", "32c", "64c"):
        xla = l3ic_jax.load(name, cpu_kernels=False)
        out[name] = (xla, Codec(xla.model, xla.codebook, name=name, cpu_kernels=True))
    import tf_reference  # photo-like latent statistics (about +-12), more boundary-sensitive than the bundled 32c

    model = model_from_tensors(tf_reference.random_weights(32, 0), 32)
    out["ref32"] = (Codec(model, cpu_kernels=False), Codec(model, cpu_kernels=True))
    return out


@pytest.fixture(scope="module")
def codecs():
    if not cpu_backend.supported():
        pytest.skip("no AVX-512F")
    return _codecs()


def _boundary_mismatch(z_ref, idx_ref, idx):
    """(mismatches off the boundary, mismatches near a boundary) of two index arrays; the codebook is -15..16."""
    diff = np.asarray(idx_ref) != np.asarray(idx)
    near = np.abs(np.abs(z_ref - np.floor(z_ref)) - 0.5) <= BOUNDARY
    near |= np.abs(z_ref - np.clip(z_ref, -15.5, 16.5)) <= BOUNDARY
    return int(np.sum(diff & ~near)), int(np.sum(diff & near))


CASES = [  # (model, batch, height, width)
    ("16c", 1, 64, 64),
    ("32c", 2, 72, 136),
    ("64c", 1, 72, 136),
    ("ref32", 1, 64, 64),
    ("ref32", 2, 72, 136),
    ("32c", 1, 512, 384),  # 509x381 after the pipeline's padding to 8
]


@needs_kernels
@pytest.mark.parametrize("model,batch,height,width", CASES)
def test_parity_with_xla(codecs, record, model, batch, height, width):
    xla, fast = codecs[model]
    rng = np.random.default_rng(height * 7 + width + batch)
    # smooth random images with texture: more realistic latents than white noise
    yy, xx = np.mgrid[0:height, 0:width] / 37.0
    base = np.stack([np.sin(3 * xx + c) * np.cos(2 * yy - c) for c in range(3)], -1)
    x = np.clip(0.5 + 0.3 * base[None] + rng.normal(0, 0.08, (batch, height, width, 3)), 0, 1).astype(np.float32)

    z_ref = np.asarray(xla.encode(x))
    z = np.asarray(fast.encode(x))
    assert z.shape == z_ref.shape == (batch, -(-height // 8), -(-width // 8), xla.n_features)
    scale = max(1.0, float(np.abs(z_ref).max()))
    np.testing.assert_allclose(z, z_ref, rtol=0, atol=LATENT_RTOL * scale)

    idx_ref = np.asarray(xla.quantize(z_ref))
    idx = np.asarray(fast.encode_indices(x))
    off, near = _boundary_mismatch(z_ref, idx_ref, idx)
    assert off == 0, f"{off} indices differ away from a decision boundary"

    values = np.asarray(xla.dequantize(idx_ref))
    y_ref = np.asarray(xla.decode(values))
    y = np.asarray(fast.decode(values))
    assert y.shape == y_ref.shape == (batch, 8 * z.shape[1], 8 * z.shape[2], 3)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=DECODED_ATOL)
    np.testing.assert_allclose(np.asarray(fast.decode_indices(idx_ref)), y, rtol=0, atol=0)
    record(f"cpu kernels {model} {batch}x{height}x{width}", latent=float(np.abs(z - z_ref).max()),
           latent_limit=LATENT_RTOL * scale, decoded=float(np.abs(y - y_ref).max()), boundary_indices=near)


@needs_kernels
def test_pipeline_odd_size(codecs, record):
    """509x381 through compress/decompress: the same indices as XLA (up to boundary values), the same image."""
    xla, fast = codecs["32c"]
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (381, 509, 3), dtype=np.uint8)
    data_ref, data = pipeline.compress(img, xla), pipeline.compress(img, fast)
    from l3ic_jax import bitstream

    idx_ref, idx = bitstream.unpack(data_ref).indices, bitstream.unpack(data).indices
    z_ref = np.asarray(xla.encode(np.pad(img, ((0, 3), (0, 3), (0, 0)), mode="edge") / 255.0))[0]
    off, near = _boundary_mismatch(z_ref, idx_ref, idx)
    assert off == 0
    out_ref, out = pipeline.decompress(data_ref, xla), pipeline.decompress(data_ref, fast)
    assert out.shape == out_ref.shape == (381, 509, 3)
    np.testing.assert_allclose(out, out_ref, rtol=0, atol=DECODED_ATOL)
    record("cpu kernels pipeline 509x381", decoded=float(np.abs(out - out_ref).max()), boundary_indices=near)


def test_switch_env(monkeypatch):
    monkeypatch.setenv("L3IC_CPU_KERNELS", "0")
    assert not codec_mod.cpu_kernels_default()
    assert not Codec.random(16).cpu_kernels
    monkeypatch.setenv("L3IC_CPU_KERNELS", "1")
    assert codec_mod.cpu_kernels_default() == (jax.default_backend() == "cpu" and cpu_backend.supported())
    assert not Codec.random(16, cpu_kernels=False).cpu_kernels


def test_fallback_when_unsupported(monkeypatch):
    monkeypatch.delenv("L3IC_CPU_KERNELS", raising=False)
    monkeypatch.setattr(cpu_backend, "supported", lambda: False)
    c = Codec.random(16)
    assert not c.cpu_kernels
    z = np.asarray(c.encode(np.full((16, 16, 3), 0.5, np.float32)))  # the XLA path
    assert z.shape == (1, 2, 2, 16) and c._cpu_net is None
    with pytest.raises(RuntimeError):
        Codec.random(16, cpu_kernels=True)


@needs_kernels
def test_tracing_uses_xla():
    c = Codec.random(16, cpu_kernels=True)
    x = np.full((1, 16, 16, 3), 0.25, np.float32)
    z = jax.jit(c.encode)(x)  # a tracer cannot go through the C kernels
    np.testing.assert_allclose(np.asarray(z), np.asarray(c.encode(x)), rtol=0, atol=1e-4)


@needs_kernels
def test_binding_checks_bounds():
    from l3ic_jax import _cpu

    u, nr = cpu_backend.pack_winograd(np.zeros((3, 3, 16, 16), np.float32), 4)
    bias = np.zeros(16, np.float32)
    small = np.zeros(100, np.float32)
    with pytest.raises(ValueError):  # input too small for an 8x8x16 image with its padding
        _cpu.winograd3x3(4, small, 0, 8 * 8 * 16, 8 * 16, 1, 8, 8, 16, False, u, nr, small, 0, 64 * 16, 8 * 16,
                         _cpu.OUT_PLAIN, 16, bias, False, False, 1.0, 0, 1)
    with pytest.raises(TypeError):
        _cpu.winograd3x3(4, small.astype(np.float64), 0, 1, 1, 1, 1, 1, 16, False, u, nr, small, 0, 1, 1,
                         _cpu.OUT_PLAIN, 16, bias, False, False, 1.0, 0, 1)
    w5, nr5 = cpu_backend.pack_5x5(np.zeros((5, 5, 3, 16), np.float32))
    with pytest.raises(ValueError):
        _cpu.conv5x5s2(small, 0, 90, 30, 1, 4, 4, 3, 1, 1, w5, nr5, small, 0, 64, 32, 2, 2, 16, bias, False, 1.0, 1)


@needs_kernels
@pytest.mark.parametrize("plan", ["2", "4"])
def test_other_winograd_plans(codecs, record, plan):
    """F(2x2) and F(4x4) in both halves (the default is F(4x4) in the encoder, F(2x2) in the decoder)."""
    from l3ic_jax.codec import tensors_from_model

    xla, _ = codecs["ref32"]
    net = cpu_backend.CpuNetwork(tensors_from_model(xla.model), 32, winograd_m=plan)
    x = np.random.default_rng(1).random((1, 40, 56, 3), dtype=np.float32)
    z_ref = np.asarray(xla.encode(x))
    np.testing.assert_allclose(net.encode(x), z_ref, rtol=0, atol=LATENT_RTOL * max(1.0, np.abs(z_ref).max()))
    values = np.asarray(xla.dequantize(xla.quantize(z_ref)))
    y_ref = np.asarray(xla.decode(values))
    y = net.decode(values)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=DECODED_ATOL)
    record(f"cpu kernels ref32 Winograd m={plan}", latent=float(np.abs(net.encode(x) - z_ref).max()),
           decoded=float(np.abs(y - y_ref).max()))


def test_winograd_plan_parsing(monkeypatch):
    monkeypatch.delenv("L3IC_CPU_WINOGRAD", raising=False)
    assert cpu_backend.winograd_plan() == {"*": 4, "decoder": 2}
    assert cpu_backend.winograd_plan("2,encoder/conv_2=4") == {"*": 2, "encoder/conv_2": 4}
    monkeypatch.setenv("L3IC_CPU_WINOGRAD", "4")
    assert cpu_backend.winograd_plan() == {"*": 4}
    with pytest.raises(ValueError):
        cpu_backend.winograd_plan("3")


@pytest.mark.parametrize("leftover_folders", [False, True], ids=["bare", "leftover-source-folders"])
def test_source_tree_without_a_build_falls_back(tmp_path, leftover_folders):
    """A source tree with no compiled extensions (what the GPU machine trains from) imports and runs on XLA.

    The codec must run without ``_cpu``, and the FSE module must say it is not built. With leftover folders named
    ``l3ic_jax/_cpu`` and ``l3ic_jax/_fse`` (where the C sources were before ``csrc/``), which Python imports as
    empty namespace packages rather than failing, the same must hold.
    """
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    src = Path(l3ic_jax.__file__).parent
    shutil.copytree(src, tmp_path / "l3ic_jax", ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    if leftover_folders:
        for name in ("_cpu", "_fse"):
            (tmp_path / "l3ic_jax" / name).mkdir()
            (tmp_path / "l3ic_jax" / name / f"{name[1:]}_core.c").write_text("/* a stale source file */\n")
    code = (
        # The machine this stands for has no install of the package: drop an editable install's import hook, which
        # would otherwise find the built extensions of the checkout the tests run from.
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if not f.__module__.startswith('__editable__')]\n"
        "import l3ic_jax, l3ic_jax.train\n"
        f"assert l3ic_jax.__file__.startswith({str(tmp_path)!r}), l3ic_jax.__file__\n"
        "assert l3ic_jax.cpu_backend._cpu is None and not l3ic_jax.cpu_backend.supported()\n"
        "try:\n"
        "    import l3ic_jax.fse\n"
        "except ImportError as e:\n"
        "    assert 'not built' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('l3ic_jax.fse imported without its extension')\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]
