"""Training: exact resume, the data stream, and export to a loadable checkpoint (tiny model, tiny data, CPU)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("optax")

from l3ic_jax import data as D  # noqa: E402
from l3ic_jax import train as T  # noqa: E402
from l3ic_jax.codec import Codec  # noqa: E402


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """Three smooth random 48x56 training images and one validation image."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 1)):
        (root / split).mkdir()
        for i in range(n):
            walk = np.cumsum(rng.normal(size=(48, 56, 3)), axis=1) * 10 + 128
            Image.fromarray(walk.clip(0, 255).astype(np.uint8)).save(root / split / f"{i}.png")
    return root


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--n-features", "4", "--data", str(data), "--out", str(out), "--batch-size", "2", "--patch", "32",
        "--val-crop", "32", "--log-every", "2", "--val-every", "3", "--warmup-steps", "2", *extra,
    ]  # fmt: skip


def test_sampler_is_a_function_of_the_rng_state(tiny_data):
    images, _ = D.load_images(tiny_data / "train")
    sampler = D.PatchSampler(images, patch=32, scale_max=1.5)
    rng = np.random.default_rng(7)
    saved = D.rng_state_to_json(rng)
    a = sampler.sample(rng, 5)
    b = sampler.sample(rng, 5)
    assert a.shape == (5, 32, 32, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(sampler.sample(D.rng_from_json(saved), 5), a)


def test_interrupted_and_resumed_run_equals_uninterrupted(tiny_data, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert T.main(_args(tiny_data, straight, "--max-steps", "6")) == 0
    assert T.main(_args(tiny_data, split, "--max-steps", "3")) == 0
    _, info = T.read_state(split)
    assert info["step"] == 3
    assert T.main(_args(tiny_data, split, "--max-steps", "6")) == 0

    a, ia = T.read_state(straight)
    b, ib = T.read_state(split)
    assert ia["step"] == ib["step"] == 6
    assert ia["rng"] == ib["rng"]  # same data stream
    assert sorted(a) == sorted(b)
    assert any(k.startswith("opt") for k in a) and any(k.startswith("params") for k in a)
    for k in a:  # weights and Adam state; CPU XLA is deterministic, so this is exact in practice
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6, err_msg=k)
    # the logged training curve after the resume point is the same too
    log = lambda p: [r for r in map(__import__("json").loads, (p / T.LOG_FILE).read_text().splitlines())]  # noqa: E731
    la = {r["step"]: r["loss"] for r in log(straight) if r["kind"] == "train"}
    lb = {r["step"]: r["loss"] for r in log(split) if r["kind"] == "train"}
    assert la[6] == pytest.approx(lb[6], rel=1e-6)


def test_export_loads_with_codec(tiny_data, tmp_path):
    run = tmp_path / "run"
    out = tmp_path / "model.safetensors"
    assert T.main(_args(tiny_data, run, "--max-steps", "3", "--export", str(out))) == 0
    assert (run / T.BEST_FILE).is_file()
    codec = Codec.from_checkpoint(out)
    assert codec.n_features == 4
    prov = codec.metadata["provenance"]
    assert prov["source"] == "l3ic_jax.train" and prov["steps"] == 3
    assert prov["hyperparameters"]["entropy_weight"] == 250.0
    assert "psnr" in prov["validation"] and prov["data"]["folder"] == str(tiny_data)

    last = tmp_path / "last.safetensors"
    assert T.main(["export", str(run), str(last), "--which", "last"]) == 0
    codec_last = Codec.from_checkpoint(last)
    tensors, _ = T.read_state(run)
    kernel = tensors["params['encoder']['conv_0']['kernel'].value"]
    np.testing.assert_array_equal(np.asarray(codec_last.model.encoder.conv_0.kernel[...]), kernel)
    y = codec_last.decode(codec_last.dequantize(codec_last.encode_indices(np.zeros((16, 16, 3), np.float32))))
    assert y.shape == (1, 16, 16, 3)


def test_no_resume_refuses_an_existing_run(tiny_data, tmp_path):
    run = tmp_path / "run"
    assert T.main(_args(tiny_data, run, "--max-steps", "1")) == 0
    with pytest.raises(SystemExit):
        T.main(_args(tiny_data, run, "--max-steps", "2", "--no-resume"))


def test_init_from_starts_a_new_run_from_checkpoint_weights(tiny_data, tmp_path):
    start = Codec.random(4, seed=11)
    ckpt = start.save(tmp_path / "start.safetensors")
    run = tmp_path / "warm"
    assert T.main(_args(tiny_data, run, "--max-steps", "0", "--init-from", str(ckpt))) == 0
    tensors, info = T.read_state(run)
    np.testing.assert_array_equal(
        tensors["params['decoder']['tconv_8']['kernel'].value"], np.asarray(start.model.decoder.tconv_8.kernel[...])
    )
    assert info["config"]["init_from"]["weights_sha256"] == start.weights_sha256
    with pytest.raises(SystemExit):  # a checkpoint of another width is refused
        T.main(_args(tiny_data, tmp_path / "bad", "--n-features", "8", "--init-from", str(ckpt)))


def test_a_model_trained_in_stages_records_every_stage(tiny_data, tmp_path):
    first = tmp_path / "first"
    assert T.main(_args(tiny_data, first, "--max-steps", "2")) == 0
    T.export(first, tmp_path / "first.safetensors", which="last")
    second = tmp_path / "second"
    assert T.main(_args(tiny_data, second, "--max-steps", "3", "--init-from", str(tmp_path / "first.safetensors"),
                        "--quantizer-gradient", "identity")) == 0
    prov = Codec.from_checkpoint(T.export(second, tmp_path / "second.safetensors", which="last")).metadata["provenance"]
    assert prov["steps"] == 3 and prov["total_steps"] == 5
    stage = prov["hyperparameters"]["init_from"]
    assert stage["steps"] == 2 and stage["total_steps"] == 2 and stage["quantizer_gradient"] == "soft"
    assert "identity gradient" in prov["objective"]
    third = tmp_path / "third"
    assert T.main(_args(tiny_data, third, "--max-steps", "1", "--init-from", str(tmp_path / "second.safetensors"))) == 0
    prov = Codec.from_checkpoint(T.export(third, tmp_path / "third.safetensors", which="last")).metadata["provenance"]
    assert prov["total_steps"] == 6 and "soft-codebook gradient" in prov["objective"]
    chain = prov["hyperparameters"]["init_from"]
    assert chain["quantizer_gradient"] == "identity" and chain["init_from"]["steps"] == 2


def test_identity_quantizer_gradient_is_a_run_setting(tiny_data, tmp_path):
    run = tmp_path / "identity"
    assert T.main(_args(tiny_data, run, "--max-steps", "2", "--quantizer-gradient", "identity")) == 0
    _, info = T.read_state(run)
    assert info["config"]["quantizer_gradient"] == "identity"
    # resuming without the flag keeps the run's setting
    assert T.main(_args(tiny_data, run, "--max-steps", "3")) == 0
    _, info = T.read_state(run)
    assert info["step"] == 3 and info["config"]["quantizer_gradient"] == "identity"


def test_runs_from_before_the_quantizer_gradient_option_resume_as_soft(tiny_data, tmp_path, monkeypatch):
    run = tmp_path / "old"
    assert T.main(_args(tiny_data, run, "--max-steps", "1")) == 0
    real_read = T.read_state

    def old_state(run_dir):
        tensors, info = real_read(run_dir)
        info["config"].pop("quantizer_gradient")
        return tensors, info

    monkeypatch.setattr(T, "read_state", old_state)
    assert T.main(_args(tiny_data, run, "--max-steps", "2")) == 0
    _, info = real_read(run)
    assert info["step"] == 2 and info["config"]["quantizer_gradient"] == "soft"


def _resumed_without_the_flag(tiny_data, run, flag, value, key):
    """Start a run with ``flag value``, resume it without the flag: the run's own setting must hold."""
    assert T.main(_args(tiny_data, run, "--max-steps", "2", flag, value)) == 0
    assert T.main(_args(tiny_data, run, "--max-steps", "3")) == 0
    _, info = T.read_state(run)
    assert info["step"] == 3 and info["config"][key] == float(value)


def test_ssim_weight_is_a_run_setting_and_named_in_the_objective(tiny_data, tmp_path):
    run = tmp_path / "ssim"
    _resumed_without_the_flag(tiny_data, run, "--ssim-weight", "50", "ssim_weight")
    prov = Codec.from_checkpoint(T.export(run, tmp_path / "s.safetensors", which="last")).metadata["provenance"]
    assert "50 * sum(1 - SSIM)" in prov["objective"]


def test_ssim_term_enters_the_distortion():
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.random((2, 16, 16, 3)), jnp.float32)
    y = jnp.clip(x + 0.1 * jnp.asarray(rng.normal(size=x.shape), jnp.float32), 0, 1)
    plain = float(T.distortion(x, y, 0))
    from l3ic_jax import losses

    with_ssim = float(T.distortion(x, y, 0, 10.0))
    np.testing.assert_allclose(with_ssim - plain, 10.0 * float(jnp.sum(1 - losses.ssim(x, y))), rtol=1e-4)
    np.testing.assert_allclose(float(T.distortion(x, y, 4, 10.0)), with_ssim * 2, rtol=1e-6)  # rescaled to 4 patches


def test_lowpass_term_enters_the_distortion_and_is_a_run_setting(tiny_data, tmp_path):
    import jax.numpy as jnp

    from l3ic_jax import losses

    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.random((2, 16, 16, 3)), jnp.float32)
    y = jnp.clip(x + 0.05 + 0.02 * jnp.asarray(rng.normal(size=x.shape), jnp.float32), 0, 1)
    plain = float(T.distortion(x, y, 0))
    with_lp = float(T.distortion(x, y, 0, lowpass_weight=3.0, lowpass_factor=4))
    np.testing.assert_allclose(with_lp - plain, 3.0 * float(losses.lowpass_l2(x, y, 4)), rtol=1e-4)
    assert with_lp > plain * 1.5  # the uniform 0.05 offset is mostly low-frequency error

    run = tmp_path / "lowpass"
    assert T.main(_args(tiny_data, run, "--max-steps", "2", "--lowpass-weight", "2", "--lowpass-factor", "4")) == 0
    assert T.main(_args(tiny_data, run, "--max-steps", "3")) == 0
    _, info = T.read_state(run)
    assert info["step"] == 3 and info["config"]["lowpass_weight"] == 2.0 and info["config"]["lowpass_factor"] == 4
    prov = Codec.from_checkpoint(T.export(run, tmp_path / "lp.safetensors", which="last")).metadata["provenance"]
    assert "2 * lowpass_l2(x - y, 4)" in prov["objective"]


def test_ms_ssim_term_enters_the_distortion_and_is_a_run_setting(tiny_data, tmp_path):
    import jax.numpy as jnp

    from l3ic_jax import losses

    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.random((2, 32, 32, 3)), jnp.float32)
    y = jnp.clip(x + 0.1 * jnp.asarray(rng.normal(size=x.shape), jnp.float32), 0, 1)
    plain = float(T.distortion(x, y, 0))
    with_ms = float(T.distortion(x, y, 0, ms_ssim_weight=10.0))
    np.testing.assert_allclose(with_ms - plain, 10.0 * float(jnp.sum(1 - losses.ms_ssim(x, y))), rtol=1e-4)
    assert with_ms - plain > 0.1  # the term is there, not a no-op

    run = tmp_path / "ms"
    assert T.main(_args(tiny_data, run, "--max-steps", "2", "--ms-ssim-weight", "20")) == 0
    assert T.main(_args(tiny_data, run, "--max-steps", "3")) == 0
    _, info = T.read_state(run)
    assert info["step"] == 3 and info["config"]["ms_ssim_weight"] == 20.0
    prov = Codec.from_checkpoint(T.export(run, tmp_path / "ms.safetensors", which="last")).metadata["provenance"]
    assert "20 * sum(1 - MS-SSIM, 2 scales)" in prov["objective"]
    # validation crops smaller than a patch: the term is measured with the scales they hold, no crash
    small = tmp_path / "ms-small-val"
    assert T.main(_args(tiny_data, small, "--max-steps", "3", "--ms-ssim-weight", "20", "--val-crop", "16")) == 0


def test_a_lowpass_factor_that_does_not_divide_the_patch_is_a_one_line_error(tiny_data, tmp_path):
    with pytest.raises(SystemExit, match="must divide --patch 32"):
        T.main(_args(tiny_data, tmp_path / "bad", "--max-steps", "1", "--lowpass-weight", "1", "--lowpass-factor", "5"))


@pytest.mark.parametrize(
    "flag, frozen, trained, words",
    [("--freeze-encoder", "encoder/", "decoder/", "decoder only"), ("--freeze-decoder", "decoder/", "encoder/", "encoder only")],
)
def test_a_frozen_half_keeps_its_weights_bit_for_bit(tiny_data, tmp_path, flag, frozen, trained, words):
    first = tmp_path / "first"
    assert T.main(_args(tiny_data, first, "--max-steps", "2")) == 0
    start = T.export(first, tmp_path / "start.safetensors", which="last")
    run = tmp_path / "frozen"
    assert T.main(_args(tiny_data, run, "--max-steps", "4", "--init-from", str(start), flag, "--lr", "1e-3")) == 0
    from safetensors.numpy import load_file

    after = T.export(run, tmp_path / "after.safetensors", which="last")
    assert words in Codec.from_checkpoint(after).metadata["provenance"]["objective"]
    a, b = load_file(start), load_file(after)
    assert a.keys() == b.keys() and any(k.startswith(frozen) for k in a)
    for k in a:
        if k.startswith(frozen):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # the encoder's latent_scaling included
    assert any(not np.array_equal(a[k], b[k]) for k in a if k.startswith(trained))


def test_a_patch_that_is_not_a_multiple_of_8_is_a_one_line_error(tiny_data, tmp_path):
    with pytest.raises(SystemExit, match="multiple of 8"):
        T.main(_args(tiny_data, tmp_path / "bad", "--max-steps", "1", "--patch", "30"))


def test_freezing_both_halves_is_a_one_line_error(tiny_data, tmp_path):
    with pytest.raises(SystemExit, match="leave nothing to train"):
        T.main(_args(tiny_data, tmp_path / "bad", "--max-steps", "1", "--freeze-encoder", "--freeze-decoder"))


def test_sampler_worker_processes_give_the_same_batches(tiny_data):
    images, _ = D.load_images(tiny_data / "train")
    one = D.PatchSampler(images, patch=32, scale_max=1.5).sample(np.random.default_rng(3), 9)
    plain = D.PatchSampler(images, patch=32, scale_max=1.5, detail=0)
    detailed = D.PatchSampler(images, patch=32, scale_max=1.5, detail=20)
    with D.PatchSampler(images, patch=32, scale_max=1.5, workers=2) as two, \
            D.PatchSampler(images, patch=32, scale_max=1.5, detail=20, workers=2) as two_detailed:
        np.testing.assert_array_equal(two.sample(np.random.default_rng(3), 9), one)
        r1, r2 = np.random.default_rng(4), np.random.default_rng(4)
        for _ in range(3):
            np.testing.assert_array_equal(two_detailed.sample(r2, 9), detailed.sample(r1, 9))
        assert two_detailed._pool is not None  # the work did go to the processes
    assert two._pool is None  # ended by the with block
    np.testing.assert_array_equal(plain.sample(np.random.default_rng(3), 9), one)


def test_sampler_starts_all_its_workers_with_the_first_batch(tiny_data):
    # The executor alone starts a process only when a task finds none idle, so the last workers started batches
    # later, each start stalling a batch (seen as 24 patches/s for 7 workers in a 3 s benchmark on the device).
    import multiprocessing

    images, _ = D.load_images(tiny_data / "train")
    before = {p.pid for p in multiprocessing.active_children()}
    with D.PatchSampler(images, patch=32, scale_max=1.5, workers=3) as three:
        three.sample(np.random.default_rng(5), 2)  # two patches: two tasks would have started only two workers
        started = {p.pid for p in multiprocessing.active_children()} - before
        assert len(started) == 3
    assert not ({p.pid for p in multiprocessing.active_children()} & started)  # and all ended by close()


def test_a_non_finite_loss_stops_without_saving_the_bad_step(tiny_data, tmp_path, monkeypatch):
    import jax.numpy as jnp

    real = T.make_train_step
    calls = {"n": 0}

    def poisoned(*a, **k):
        step = real(*a, **k)

        def wrapped(params, opt_state, batch):
            params, opt_state, aux, y = step(params, opt_state, batch)
            calls["n"] += 1
            if calls["n"] == 4:
                aux = {**aux, "loss": jnp.float32(np.nan)}
            return params, opt_state, aux, y

        return wrapped

    monkeypatch.setattr(T, "make_train_step", poisoned)
    run = tmp_path / "nan"
    with pytest.raises(FloatingPointError, match="step 4"):
        T.main(_args(tiny_data, run, "--max-steps", "8", "--ckpt-every-s", "0", "--val-every", "100"))
    _, info = T.read_state(run)
    assert info["step"] == 3  # saved after each checked step, never after the bad one


def test_a_missing_data_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match="no such image folder"):
        T.main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def _half_flat_images() -> list[np.ndarray]:
    """Two 96x96 images, each flat (value 128) on the left half and random noise on the right."""
    rng = np.random.default_rng(1)
    out = []
    for _ in range(2):
        im = np.full((96, 96, 3), 128, np.uint8)
        im[:, 48:] = rng.integers(0, 256, size=(96, 48, 3), dtype=np.uint8)
        out.append(im)
    return out


def test_texture_measures_neighbour_differences():
    flat = np.full((1, 8, 8, 3), 200, np.uint8)
    stripes = np.zeros((1, 8, 8, 3), np.uint8)
    stripes[:, :, 1::2] = 10  # vertical stripes: horizontal neighbours differ by 10 luma levels, vertical ones by 0
    np.testing.assert_allclose(D.texture(np.concatenate([flat, stripes])), [0.0, 5.0], rtol=1e-5)


def test_detail_weighting_keeps_textured_patches_and_stays_deterministic():
    images = _half_flat_images()
    plain = D.PatchSampler(images, patch=16, scale_max=1.0, dihedral=False)
    detailed = D.PatchSampler(images, patch=16, scale_max=1.0, dihedral=False, detail=50)
    flat_share = lambda b: float(np.mean(D.texture(b) == 0))  # noqa: E731
    a = plain.sample(np.random.default_rng(0), 64)
    b = detailed.sample(np.random.default_rng(0), 64)
    assert flat_share(a) > 0.25  # about a third of the positions lie wholly in the flat half
    assert flat_share(b) == 0.0  # a flat patch passes with probability 0 / detail
    assert b.shape == (64, 16, 16, 3)
    # detail 0 draws exactly what the sampler drew before the option existed
    np.testing.assert_array_equal(D.PatchSampler(images, 16, 1.0, 1.0, False, 0.0).sample(np.random.default_rng(0), 64), a)


def _stream_of_session_15(images, patch, scale_min, scale_max, detail, rng, n):
    """The sampler as written until session 15, as the reference for the stream: every candidate of a round cut,
    turned and flipped, then the texture of the whole round at once."""
    import math

    from PIL import Image

    weights = np.array([im.shape[0] * im.shape[1] for im in images], np.float64)
    weights /= weights.sum()

    def cut(m):
        out = np.empty((m, patch, patch, 3), np.uint8)
        idx = rng.choice(len(images), size=m, p=weights)
        log_s = rng.uniform(math.log(scale_min), math.log(scale_max), size=m)
        u, k, flip = rng.random((m, 2)), rng.integers(0, 4, size=m), rng.integers(0, 2, size=m)
        for i in range(m):
            im = images[idx[i]]
            h, w = im.shape[:2]
            c = int(min(round(patch * math.exp(log_s[i])), h, w))
            y0, x0 = int(u[i, 0] * (h - c + 1)), int(u[i, 1] * (w - c + 1))
            crop = im[y0 : y0 + c, x0 : x0 + c]
            if c != patch:
                crop = np.asarray(Image.fromarray(crop).resize((patch, patch), Image.Resampling.BILINEAR))
            crop = np.rot90(crop, k[i])
            out[i] = crop[:, ::-1] if flip[i] else crop
        return out

    if detail <= 0:
        return cut(n)
    kept = []
    while sum(len(x) for x in kept) < n:
        cand = cut(2 * n)
        kept.append(cand[rng.random(2 * n) * detail < D.texture(cand)])
    return np.concatenate(kept)[:n]


@pytest.mark.parametrize("detail", [0.0, 20.0])  # 20: about a third of the candidates fail
def test_the_patch_stream_is_that_of_earlier_versions(tiny_data, detail):
    """A run resumed from a state that an earlier version saved continues on the same patches."""
    images, _ = D.load_images(tiny_data / "train")
    sampler = D.PatchSampler(images, patch=32, scale_min=1.0, scale_max=1.7, detail=detail)
    new_rng, old_rng = np.random.default_rng(11), np.random.default_rng(11)
    for _ in range(4):
        np.testing.assert_array_equal(
            sampler.sample(new_rng, 7), _stream_of_session_15(images, 32, 1.0, 1.7, detail, old_rng, 7)
        )
        assert new_rng.bit_generator.state == old_rng.bit_generator.state


def test_detail_weighting_on_flat_images_is_an_error_not_a_hang():
    flat = [np.full((40, 40, 3), 90, np.uint8)]
    with pytest.raises(ValueError, match="too flat"):
        D.PatchSampler(flat, patch=16, detail=4).sample(np.random.default_rng(0), 2)
    with pytest.raises(ValueError, match="detail"):
        D.PatchSampler(flat, patch=16, detail=-1)


def test_detail_is_a_run_setting_and_a_bad_value_writes_nothing(tiny_data, tmp_path):
    _resumed_without_the_flag(tiny_data, tmp_path / "detail", "--detail", "0.5", "detail")
    with pytest.raises(SystemExit, match="--detail"):
        T.main(_args(tiny_data, tmp_path / "bad", "--detail", "-2"))
    assert not (tmp_path / "bad").exists()


def test_importing_the_trainer_starts_no_jax_backend():
    """The sampler's worker processes import the package (spawn re-imports the main module, here
    ``l3ic_jax.train``): an import that started a JAX backend would, on a GPU, reserve device memory in every
    worker. Under a platform that cannot start, the import must still succeed (and starting one must fail)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "JAX_PLATFORMS": "tpu"}
    imported = subprocess.run([sys.executable, "-c", "import l3ic_jax.train, l3ic_jax.data; print('ok')"],
                              env=env, capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0 and imported.stdout.strip() == "ok", imported.stderr[-2000:]
    started = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert started.returncode != 0  # the control: this platform really cannot start here


def test_bench_data_reports_the_sampler_rate(tiny_data, tmp_path, load_tool):
    out = tmp_path / "bench.json"
    tool = load_tool("bench_data")
    assert tool.main(["--data", str(tiny_data), "--workers", "1", "--patch", "32", "--detail", "20",
                      "--seconds", "0.2", "--json", str(out)]) == 0
    import json

    rows = json.loads(out.read_text())["rows"]
    assert [r["workers"] for r in rows] == [1]
    assert rows[0]["patches_per_s"] > 0 and rows[0]["ratio"] == 1.0
    assert rows[0]["batches_per_s"] == pytest.approx(rows[0]["patches_per_s"] / 32)


@pytest.mark.parametrize("tf32", [False, True])
def test_tf32_asks_for_tensor_float_convolutions_in_the_training_step_only(tiny_data, tmp_path, tf32):
    import jax
    import optax
    from flax import nnx

    cfg = T.run_config(T.build_parser().parse_args(_args(tiny_data, tmp_path / "run") + (["--tf32"] if tf32 else [])))
    assert cfg["tf32"] is tf32
    graphdef, params = nnx.split(T.init_model(cfg))
    tx = optax.adam(1e-4)
    x = np.zeros((2, 32, 32, 3), np.uint8)
    hlo = T.make_train_step(graphdef, tx, cfg).lower(params, tx.init(params), x).as_text()
    # every convolution, forward and backward: HIGH is TensorFloat-32 on a GPU, HIGHEST full float32
    precisions = set(re.findall(r"precision_config = \[#stablehlo<precision (\w+)>", hlo))
    assert precisions == ({"HIGH"} if tf32 else {"HIGHEST"})
    # the model itself, which validation and export use, keeps full float32
    convs = [c for _, c in nnx.iter_graph(T.init_model(cfg)) if isinstance(c, nnx.Conv)]
    assert convs and all(c.precision == jax.lax.Precision.HIGHEST for c in convs)
