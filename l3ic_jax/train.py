"""Train an l3ic model (TwitterDCN) from scratch on a folder of photos; resumable, exportable.

    python -m l3ic_jax.train --n-features 32 --data data/photos --out runs/32c [--max-minutes 60]
    python -m l3ic_jax.train export runs/32c l3ic-32c.safetensors [--which best|last]

The objective is the original's (ORIGINAL_MODEL.md §3): ``l2_loss(x - y) + entropy_weight * H``, with
``l2_loss = sum(d**2) / 2``, ``y = decoder(soft_quantize(encoder(x)))`` (straight-through: hard values forward,
soft-codebook gradient backward), ``H`` the soft-histogram entropy of the latent in bits, and the latent scaling
trained with everything else. The original sums ``l2_loss`` over its whole batch, which ties the
rate-distortion trade-off to the batch size. Here the batch sum is rescaled to ``--distortion-batch`` patches
(default 50): ``D = (50 / B) * sum_batch l2_loss``. The trade-off is then that of the original trained with a
batch of 50, whatever ``--batch-size`` is (``--distortion-batch 0`` uses the literal batch sum).

A run directory holds ``state.safetensors`` (weights, Adam state, step, data-RNG state and config, written
atomically every ``--ckpt-every-s`` seconds and on SIGINT/SIGTERM), ``log.jsonl``, and ``best.safetensors``
(the best weights by validation loss, as an l3ic-jax checkpoint). Rerunning the same command resumes exactly:
the same step, weights, optimizer state and data stream as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from . import atomic as _atomic
from . import data as _data
from . import losses as _losses
from . import metrics as _metrics
from . import quantize as _q
from ._version import __version__
from .codec import Codec
from .model import TwitterDCN

STATE_FILE = "state.safetensors"
BEST_FILE = "best.safetensors"
LOG_FILE = "log.jsonl"
STATE_FORMAT = "l3ic-jax-train-state"

#: Settings that define a run; on resume they are taken from the saved state, not from the command line.
RUN_KEYS = (
    "n_features", "seed", "batch_size", "patch", "scale_min", "scale_max", "dihedral", "lr", "warmup_steps",
    "schedule_steps", "final_lr_ratio", "schedule", "entropy_weight", "distortion_batch", "clip_grad_norm",
    "mixed_precision", "b1", "b2", "clip_output", "init", "quantizer_gradient", "ssim_weight", "detail", "tf32",
    "lowpass_weight", "lowpass_factor", "freeze_encoder", "freeze_decoder", "ms_ssim_weight",
)  # fmt: skip


# -- command line -------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m l3ic_jax.train",
        description="Train an l3ic TwitterDCN model (resumable). Subcommand: `export RUN_DIR OUT.safetensors`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = ap.add_argument_group("run")
    g.add_argument("--out", required=True, help="run directory (state, logs, best weights)")
    g.add_argument("--data", required=True, help="image folder; uses DIR/train and DIR/val when they exist")
    g.add_argument("--val", default=None, help="validation image folder (default DIR/val if it exists)")
    g.add_argument("--no-resume", action="store_true", help="refuse to start if the run directory has a state")
    g.add_argument("--max-steps", type=int, default=None, help="stop at this global step (then resume later)")
    g.add_argument("--max-minutes", type=float, default=None, help="stop after this many minutes in this session")
    g.add_argument("--ckpt-every-s", type=float, default=120.0, help="seconds between training-state saves")
    g.add_argument(
        "--data-workers",
        type=int,
        default=0,
        help="processes that cut and resize patches (the batches are the same for any number; each holds a copy "
        "of the images); 0: none on a CPU backend, where the cores run the step (patches are cut between steps), "
        "else min(8, cores)",
    )
    g.add_argument("--log-every", type=int, default=20, help="steps between progress lines")
    g.add_argument("--val-every", type=int, default=500, help="steps between validations")
    g.add_argument("--val-crop", type=int, default=256, help="side of the validation center crops")
    g.add_argument("--export", default=None, help="after training, write the best (else last) weights here")
    g = ap.add_argument_group("model and objective")
    g.add_argument("--n-features", type=int, default=32, help="latent channels C (16, 32, 64 in the original)")
    g.add_argument("--entropy-weight", type=float, default=250.0, help="weight of H (bits/value); original: 250")
    g.add_argument(
        "--distortion-batch",
        type=int,
        default=50,
        help="l2_loss is summed over the batch as in the original, then rescaled to this many patches so "
        "the rate-distortion trade-off does not depend on --batch-size; 0: literal sum over the batch",
    )
    g.add_argument(
        "--ssim-weight",
        type=float,
        default=0.0,
        help="add this weight times sum over the batch of (1 - SSIM) per patch (TF recipe, l3ic_jax.losses.ssim) "
        "to the distortion, rescaled like l2_loss; 0: the original objective (L2 only). SSIM weights errors by "
        "the inverse local variance, so it keeps texture that L2 blurs away (docs/training.md §8.4)",
    )
    g.add_argument(
        "--ms-ssim-weight",
        type=float,
        default=0.0,
        help="add this weight times sum over the batch of (1 - MS-SSIM) per patch (TF recipe with as many of its "
        "scales as the patch holds: 4 for 128 px; l3ic_jax.losses.ms_ssim) to the distortion, rescaled like "
        "l2_loss; it weighs errors at the coarse scales that L2 treats like any other (docs/training.md §8.19); "
        "0: off",
    )
    g.add_argument(
        "--lowpass-weight",
        type=float,
        default=0.0,
        help="add this weight times the l2_loss of the error's mean over --lowpass-factor blocks (spread back "
        "over the block) to the distortion, rescaled like l2_loss: it penalizes a slow colour or brightness drift "
        "more than the plain L2 does; MS-SSIM's coarse scales see such drift (docs/training.md §8.18); 0: off",
    )
    g.add_argument(
        "--lowpass-factor", type=int, default=8, help="block side of --lowpass-weight's mean; must divide --patch"
    )
    g.add_argument(
        "--freeze-encoder",
        action="store_true",
        help="train the decoder only: the encoder and its latent scaling stay as they are, so the latents and "
        "the rate of every image do too, and a changed objective moves the quality at a fixed rate",
    )
    g.add_argument(
        "--freeze-decoder",
        action="store_true",
        help="train the encoder (and its latent scaling) only: the decoder stays as it is, so images coded by "
        "the start checkpoint decode the same; the encoder learns to pick better latents for that decoder "
        "(what --refine does per image at encoding time, docs/training.md §8.19)",
    )
    g.add_argument(
        "--no-clip-output",
        dest="clip_output",
        action="store_false",
        help="compute the distortion on the raw decoder output instead of the straight-through clip to [0, 1] "
        "(forward: clip, as the codec decodes; backward: identity; the original's later toolbox versions)",
    )
    g.add_argument(
        "--init",
        choices=("glorot", "model"),
        default="glorot",
        help="glorot: TensorFlow's layer default (Glorot-uniform kernels, zero biases), whose outputs start "
        "near 0.5, drawn from the training seed; model: l3ic_jax.model's own init (also Glorot-uniform, zero "
        "biases, drawn through flax's RNG streams)",
    )
    g.add_argument(
        "--quantizer-gradient",
        choices=("soft", "identity"),
        default="soft",
        help="backward pass of the straight-through quantizer (the forward value and the objective are the same): "
        "soft: the original's soft-codebook gradient, ~0 for most latent values and large near decision "
        "boundaries; identity: d/dz = 1 (Theis et al. 2017), lower variance (docs/training.md §8 compares them)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the weight init and of the data stream")
    g.add_argument(
        "--init-from",
        metavar="CHECKPOINT",
        help="start a new run from these weights (a bundled name such as 32c, or a .safetensors path) instead of "
        "a random init, e.g. to continue CPU-trained weights on a GPU with a new schedule",
    )
    g = ap.add_argument_group("optimization")
    g.add_argument("--batch-size", type=int, default=8, help="patches per step (8 suits a CPU; 32+ on a GPU)")
    g.add_argument("--lr", type=float, default=1e-4, help="peak Adam learning rate")
    g.add_argument("--b1", type=float, default=0.9)
    g.add_argument("--b2", type=float, default=0.999)
    g.add_argument("--schedule", choices=("cosine", "constant"), default="cosine", help="after linear warmup")
    g.add_argument("--warmup-steps", type=int, default=1000)
    g.add_argument("--schedule-steps", type=int, default=300_000, help="cosine horizon (total steps planned)")
    g.add_argument("--final-lr-ratio", type=float, default=0.05, help="cosine ends at lr * this")
    g.add_argument("--clip-grad-norm", type=float, default=0.0, help="global-norm gradient clip; 0: off")
    g.add_argument("--mixed-precision", action="store_true", help="bfloat16 convolutions (training only)")
    g.add_argument(
        "--tf32", action="store_true",
        help="TensorFloat-32 convolutions on GPUs that have them (training only; float32 weights and sums, "
        "inputs of each product rounded to 10 mantissa bits); validation and the weights saved stay float32",
    )  # fmt: skip
    g = ap.add_argument_group("data")
    g.add_argument("--patch", type=int, default=128, help="training patch side (original: 128)")
    g.add_argument("--scale-min", type=float, default=1.0, help="smallest random downscale of a patch")
    g.add_argument("--scale-max", type=float, default=2.0, help="largest random downscale of a patch")
    g.add_argument("--no-dihedral", dest="dihedral", action="store_false", help="no random rotations/flips")
    g.add_argument(
        "--detail",
        type=float,
        default=0.0,
        help="keep a patch with probability min(1, texture / DETAIL), texture being the mean absolute luma "
        "difference of neighbouring pixels in 8-bit levels (Kodak's median 128 px patch: ~7); 0: keep all. "
        "Wallpaper photos are mostly flat: 8 with --scale-min 2 --scale-max 4 matches Kodak (docs/training.md §8.5)",
    )
    return ap


def run_config(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in RUN_KEYS}


# -- the objective ------------------------------------------------------------------------------------------
def make_optimizer(cfg: dict) -> optax.GradientTransformation:
    if cfg["schedule"] == "cosine":
        lr = optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=cfg["lr"],
            warmup_steps=cfg["warmup_steps"],
            decay_steps=max(cfg["schedule_steps"], cfg["warmup_steps"] + 1),
            end_value=cfg["lr"] * cfg["final_lr_ratio"],
        )
    else:
        lr = optax.linear_schedule(0.0, cfg["lr"], max(cfg["warmup_steps"], 1))
    parts = [optax.clip_by_global_norm(cfg["clip_grad_norm"])] if cfg["clip_grad_norm"] > 0 else []
    return optax.chain(*parts, optax.adam(lr, b1=cfg["b1"], b2=cfg["b2"])), lr


def distortion(
    x: jax.Array, y: jax.Array, ref_batch: int, ssim_weight: float = 0.0, lowpass_weight: float = 0.0,
    lowpass_factor: int = 8, ms_ssim_weight: float = 0.0,
) -> jax.Array:
    """``tf.nn.l2_loss(x - y)`` (plus ``ssim_weight * (1 - SSIM)`` and ``ms_ssim_weight * (1 - MS-SSIM)`` per
    patch, plus ``lowpass_weight`` times the L2 of the error's block means) summed over the batch, rescaled to
    ``ref_batch`` patches (0: no rescaling)."""
    total = _losses.l2_loss(x, y)
    if ssim_weight:
        total = total + ssim_weight * jnp.sum(1.0 - _losses.ssim(x, y))
    if ms_ssim_weight:
        total = total + ms_ssim_weight * jnp.sum(1.0 - _losses.ms_ssim(x, y))
    if lowpass_weight:
        total = total + lowpass_weight * _losses.lowpass_l2(x, y, lowpass_factor)
    return total * (ref_batch / x.shape[0]) if ref_batch else total


def make_train_step(graphdef, tx, cfg: dict):
    codebook = _q.default_codebook()
    if cfg.get("tf32"):
        # The model's convolutions ask for full float32 (Precision.HIGHEST), which on a GPU bypasses the tensor
        # cores; the training step alone uses a copy of the structure that allows TensorFloat-32 (HIGH).
        # Only the structure is needed: eval_shape builds it without computing any weights.
        high = jax.lax.Precision.HIGH
        graphdef = nnx.graphdef(nnx.eval_shape(lambda: TwitterDCN(cfg["n_features"], rngs=nnx.Rngs(0), precision=high)))
    half = jnp.bfloat16 if cfg["mixed_precision"] else None
    if cfg.get("quantizer_gradient", "soft") == "identity":
        quantize = _q.identity_quantize
    else:
        quantize = _q.soft_quantize

    # --freeze-encoder: no gradient reaches the encoder (nor is its backward pass computed), its Adam moments stay
    # zero, so its updates are exactly zero and the latents of every image stay as they were.
    frozen = jax.lax.stop_gradient if cfg.get("freeze_encoder", False) else (lambda z: z)
    # --freeze-decoder: the decoder's gradients are replaced by zeros (XLA then drops their computation; the
    # gradient still flows through the decoder to the latent), so its Adam updates are exactly zero.
    freeze_decoder = cfg.get("freeze_decoder", False)

    def forward(params, x):
        model = nnx.merge(graphdef, params)
        if half is not None:
            cast = jax.tree.map(lambda a: a.astype(half) if a.dtype == jnp.float32 else a, params)
            model = nnx.merge(graphdef, cast)
            z = frozen(model.encoder(x.astype(half)).astype(jnp.float32))
            y = model.decoder(quantize(z, codebook).astype(half)).astype(jnp.float32)
        else:
            z = frozen(model.encoder(x))
            y = model.decoder(quantize(z, codebook))
        return z, y

    def loss_fn(params, x):
        z, y = forward(params, x)
        if cfg.get("clip_output", True):
            y = y + jax.lax.stop_gradient(jnp.clip(y, 0.0, 1.0) - y)
        d = distortion(
            x, y, cfg["distortion_batch"], cfg.get("ssim_weight", 0.0), cfg.get("lowpass_weight", 0.0),
            cfg.get("lowpass_factor", 8), cfg.get("ms_ssim_weight", 0.0),
        )
        h = _q.entropy_estimate(z, codebook)
        loss = d + cfg["entropy_weight"] * h
        mse = jnp.mean(jnp.square(x - jnp.clip(y, 0.0, 1.0)), axis=(1, 2, 3))
        aux = {"loss": loss, "distortion": d, "entropy": h, "psnr": jnp.mean(-10.0 * jnp.log10(mse + 1e-12))}
        return loss, (aux, y)

    def step(params, opt_state, x_u8):
        x = x_u8.astype(jnp.float32) / 255.0
        (_, (aux, y)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x)
        if freeze_decoder:
            grads["decoder"] = jax.tree.map(jnp.zeros_like, grads["decoder"])
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        aux["grad_norm"] = optax.tree.norm(grads)
        aux["latent_scaling"] = jax.tree.leaves(params["encoder"]["latent_scaling"])[0]
        return params, opt_state, aux, jnp.clip(y, 0.0, 1.0)

    return jax.jit(step, donate_argnums=(0, 1))


def make_eval(graphdef):
    """Validation forward pass with the codec's hard quantizer; returns (image, indices, soft entropy)."""
    codebook = _q.default_codebook()

    @jax.jit
    def evaluate(params, x_u8):
        x = x_u8.astype(jnp.float32) / 255.0
        model = nnx.merge(graphdef, params)
        z = model.encoder(x)
        idx = _q.quantize_indices(z, codebook)
        y = jnp.clip(model.decoder(_q.dequantize(idx, codebook)), 0.0, 1.0)
        return y, idx, _q.entropy_estimate(z, codebook)

    return evaluate


def validate(evaluate, params, crops: np.ndarray, cfg: dict) -> dict:
    """PSNR, SSIM, MS-SSIM (crops >= 161 px), entropies and bpp, and the objective scaled to a training patch."""
    y, idx, h_soft = jax.device_get(evaluate(params, crops))
    x = crops.astype(np.float64) / 255.0
    y = np.asarray(y, np.float64)
    counts = np.bincount(np.asarray(idx).ravel(), minlength=len(_q.default_codebook())).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    h_hard = float(-(p * np.log2(p)).sum())
    per_value = cfg["n_features"] / 64.0  # latent values per pixel
    area_ratio = (cfg["patch"] / crops.shape[1]) * (cfg["patch"] / crops.shape[2])
    ref = cfg["distortion_batch"] or cfg["batch_size"]
    ssim = float(np.mean(_metrics.ssim(x, y)))
    d_patch = 0.5 * np.sum((x - y) ** 2) / len(x) * area_ratio * ref + cfg.get("ssim_weight", 0.0) * (1 - ssim) * ref
    if cfg.get("lowpass_weight"):
        f = cfg["lowpass_factor"]
        h, w = (x.shape[1] // f) * f, (x.shape[2] // f) * f
        lp = float(_losses.lowpass_l2(x[:, :h, :w], y[:, :h, :w], f))
        d_patch += cfg["lowpass_weight"] * lp / len(x) * (cfg["patch"] ** 2 / (h * w)) * ref
    if cfg.get("ms_ssim_weight"):
        # the patch's MS-SSIM scales (and weights), measured on the crops (fewer where a --val-crop is too small)
        scales = min(_losses.ms_ssim_scales(cfg["patch"]), _losses.ms_ssim_scales(min(x.shape[1:3])))
        if scales:
            ms_patch = float(np.mean(_metrics.ms_ssim(x, y, weights=_metrics.MS_SSIM_WEIGHTS[:scales])))
            d_patch += cfg["ms_ssim_weight"] * (1 - ms_patch) * ref
    out = {
        "psnr": float(np.mean(_metrics.psnr(x, y))),
        "ssim": ssim,
        "entropy": float(h_soft),
        "entropy_hard": h_hard,
        "bpp_est": float(h_soft) * per_value,
        "bpp_hard": h_hard * per_value,
        "loss": float(d_patch + cfg["entropy_weight"] * float(h_soft)),
    }
    if min(crops.shape[1:3]) >= 161:
        out["ms_ssim"] = float(np.mean(_metrics.ms_ssim(x, y)))
    return out


# -- training state on disk ---------------------------------------------------------------------------------
def _flatten(prefix: str, tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def _unflatten(prefix: str, template, tensors: dict[str, np.ndarray]):
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, ref in paths:
        key = prefix + jax.tree_util.keystr(path)
        if key not in tensors:
            raise ValueError(f"training state lacks '{key}'")
        arr = tensors[key]
        dtype = np.dtype(ref.dtype) if hasattr(ref, "dtype") else np.asarray(ref).dtype
        if arr.shape != tuple(np.shape(ref)) or arr.dtype != dtype:
            raise ValueError(f"training state '{key}' is {arr.dtype}{arr.shape}, expected {dtype}{tuple(np.shape(ref))}")
        leaves.append(jnp.asarray(arr))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _atomic_write(path: Path, blob: bytes) -> None:
    _atomic.write_bytes(path, blob)


def save_state(run_dir: Path, params, opt_state, info: dict) -> None:
    """Weights, optimizer state and ``info`` (step, RNG, config, ...) in one safetensors file, atomically."""
    from safetensors.numpy import save as st_save

    tensors = {**_flatten("params", params), **_flatten("opt", opt_state)}
    meta = {"format": STATE_FORMAT, "info": json.dumps(info)}
    _atomic_write(run_dir / STATE_FILE, st_save(tensors, metadata=meta))


def read_state(run_dir: Path) -> tuple[dict[str, np.ndarray], dict]:
    from safetensors.numpy import load as st_load

    blob = (run_dir / STATE_FILE).read_bytes()
    n = int.from_bytes(blob[:8], "little")
    meta = json.loads(blob[8 : 8 + n])["__metadata__"]
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(f"{run_dir / STATE_FILE} is not a training state")
    return st_load(blob), json.loads(meta["info"])


def init_model(cfg: dict) -> TwitterDCN:
    """A freshly initialized model; ``init == "glorot"`` re-draws every kernel Glorot-uniform, biases zero."""
    model = TwitterDCN(cfg["n_features"], rngs=nnx.Rngs(cfg["seed"]))
    if cfg.get("init", "model") == "glorot":
        graphdef, state = nnx.split(model)
        paths, treedef = jax.tree_util.tree_flatten_with_path(state)
        key = jax.random.key(cfg["seed"])
        glorot = jax.nn.initializers.glorot_uniform()
        leaves = []
        for i, (path, leaf) in enumerate(paths):  # flatten order is sorted by name: stable across runs
            name = jax.tree_util.keystr(path)
            if "['kernel']" in name:
                leaf = glorot(jax.random.fold_in(key, i), leaf.shape, leaf.dtype)
            elif "['bias']" in name:
                leaf = jnp.zeros_like(leaf)
            leaves.append(leaf)
        model = nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, leaves))
    return model


def warm_start(name_or_path: str, cfg: dict) -> tuple[TwitterDCN, dict]:
    """The weights of an l3ic-jax checkpoint as the start of a new run, and a record of where they came from."""
    from .checkpoint import load as load_checkpoint
    from .checkpoint import resolve
    from .codec import model_from_tensors

    path = resolve(name_or_path)
    tensors, meta = load_checkpoint(path)
    if meta["n_features"] != cfg["n_features"]:
        raise SystemExit(f"--init-from {name_or_path}: {meta['n_features']} channels, the run has {cfg['n_features']}")
    return model_from_tensors(tensors, cfg["n_features"]), lineage(str(name_or_path), meta)


def lineage(name: str, meta: dict) -> dict:
    """Where warm-start weights came from, chained through their own ``init_from``, so that a model trained in
    stages records every stage (steps, quantizer gradient, learning rate) and the total steps."""
    prov = meta.get("provenance") or {}
    hp = prov.get("hyperparameters") or {}
    parent = hp.get("init_from") if isinstance(hp.get("init_from"), dict) else None
    steps = prov.get("steps")
    record = {"checkpoint": name, "weights_sha256": meta["weights_sha256"], "steps": steps,
              "total_steps": steps + steps_before(parent) if steps is not None else None}
    for key in ("quantizer_gradient", "lr", "schedule_steps", "batch_size", "widened"):
        if key in hp:
            record[key] = hp[key]
    if parent:
        record["init_from"] = parent
    return record


def steps_before(init_from: dict | None) -> int:
    """Training steps behind warm-start weights (records written before ``total_steps`` give their own steps)."""
    record = init_from or {}
    return record.get("total_steps") or record.get("steps") or 0


def model_from_params(cfg: dict, tensors: dict[str, np.ndarray]) -> TwitterDCN:
    model = nnx.eval_shape(lambda: TwitterDCN(cfg["n_features"], rngs=nnx.Rngs(0)))
    graphdef, template = nnx.split(model)
    return nnx.merge(graphdef, _unflatten("params", template, tensors))


# -- export -------------------------------------------------------------------------------------------------
def objective_text(cfg: dict) -> str:
    """The run's objective in words, for the checkpoint's provenance."""
    terms = ["l2_loss(x - y)"]
    if cfg.get("ssim_weight"):
        terms.append(f"{cfg['ssim_weight']:g} * sum(1 - SSIM)")
    if cfg.get("ms_ssim_weight"):
        terms.append(f"{cfg['ms_ssim_weight']:g} * sum(1 - MS-SSIM, {_losses.ms_ssim_scales(cfg['patch'])} scales)")
    if cfg.get("lowpass_weight"):
        terms.append(f"{cfg['lowpass_weight']:g} * lowpass_l2(x - y, {cfg['lowpass_factor']})")
    d = f"({' + '.join(terms)})" if len(terms) > 1 else terms[0]
    text = (
        d + " * distortion_batch / batch + entropy_weight * H, hard values forward, "
        + ("identity gradient within the codebook's range"
           if cfg.get("quantizer_gradient") == "identity" else "soft-codebook gradient")
    )  # fmt: skip
    if cfg.get("freeze_encoder"):
        text += "; decoder only (encoder frozen)"
    if cfg.get("freeze_decoder"):
        text += "; encoder only (decoder frozen)"
    return text


def provenance(info: dict, which: str, val: dict | None) -> dict:
    return {
        "source": "l3ic_jax.train",
        "which": which,
        "steps": info["step"],
        "trained_seconds": round(info.get("elapsed_s", 0.0), 1),
        "trained_until": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": info.get("data"),
        "hyperparameters": info["config"],
        "validation": val,
        "objective": objective_text(info["config"]),
        "total_steps": info["step"] + steps_before(info["config"].get("init_from")),
        "jax_version": jax.__version__,
        "devices": info.get("devices"),
    }


def export(run_dir: str | Path, out: str | Path, which: str = "best") -> Path:
    """Write the run's best (by validation loss) or last weights as an l3ic-jax checkpoint."""
    run_dir = Path(run_dir)
    tensors, info = read_state(run_dir)
    if which == "best" and (run_dir / BEST_FILE).is_file():
        codec = Codec.from_checkpoint(run_dir / BEST_FILE)
        prov = dict(codec.metadata.get("provenance", {}))
        prov["exported_from"] = str(run_dir)
        return codec.save(out, provenance=prov)
    model = model_from_params(info["config"], tensors)
    return Codec(model).save(out, provenance=provenance(info, "last", info.get("last_val")))


# -- the loop -----------------------------------------------------------------------------------------------
class _Stop:
    def __init__(self):
        self.signal = None

    def __call__(self, signum, frame):
        if self.signal is not None:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\nreceived signal {signum}: saving the state and stopping after this step", flush=True)


def _fmt_time(s: float) -> str:
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m" if s >= 3600 else f"{int(s // 60)}m{int(s % 60):02d}s"


def train(args: argparse.Namespace) -> dict:
    run_dir = Path(args.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = run_config(args)
    resume = (run_dir / STATE_FILE).is_file()
    if resume and args.no_resume:
        raise SystemExit(f"{run_dir} already holds a training state and --no-resume was given")
    if resume:
        tensors, info = read_state(run_dir)
        info["config"].setdefault("quantizer_gradient", "soft")  # states written before the option existed
        info["config"].setdefault("ssim_weight", 0.0)  # likewise: the original L2-only distortion
        info["config"].setdefault("detail", 0.0)  # likewise: every patch kept
        info["config"].setdefault("tf32", False)  # likewise: float32 convolutions
        info["config"].setdefault("lowpass_weight", 0.0)  # likewise: no low-pass term
        info["config"].setdefault("lowpass_factor", 8)
        info["config"].setdefault("freeze_encoder", False)  # likewise: the whole model trained
        info["config"].setdefault("freeze_decoder", False)
        info["config"].setdefault("ms_ssim_weight", 0.0)  # likewise: no MS-SSIM term
        changed = {k: (info["config"][k], cfg[k]) for k in RUN_KEYS if info["config"].get(k) != cfg[k]}
        if changed:
            print("resume: keeping the run's settings, ignoring " + ", ".join(f"--{k.replace('_', '-')}={v[1]} (run: {v[0]})" for k, v in changed.items()))
        cfg = info["config"]
    if cfg["patch"] < 8 or cfg["patch"] % 8:
        raise SystemExit(f"--patch {cfg['patch']} must be a positive multiple of 8 (the model's stride)")
    if cfg.get("lowpass_weight") and (cfg["lowpass_factor"] < 1 or cfg["patch"] % cfg["lowpass_factor"]):
        raise SystemExit(f"--lowpass-factor {cfg['lowpass_factor']} must divide --patch {cfg['patch']}")
    if cfg.get("freeze_encoder") and cfg.get("freeze_decoder"):
        raise SystemExit("--freeze-encoder and --freeze-decoder together leave nothing to train; give one")
    if cfg.get("ms_ssim_weight"):
        side, scales = cfg["patch"], _losses.ms_ssim_scales(cfg["patch"])
        if scales < 2 or any((side // 2**k) % 2 for k in range(scales - 1)):
            raise SystemExit(f"--ms-ssim-weight needs a --patch of at least 21 px that halves evenly; got {side}")
    print(f"l3ic-jax {__version__}, jax {jax.__version__}, devices: {jax.devices()}", flush=True)

    train_dir, val_dir = _data.resolve_data_dirs(args.data, args.val)
    images, names = _data.load_images(train_dir, min_side=cfg["patch"])
    workers = args.data_workers or (1 if jax.default_backend() == "cpu" else min(8, os.cpu_count() or 1))
    sampler = _data.PatchSampler(
        images, cfg["patch"], cfg["scale_min"], cfg["scale_max"], cfg["dihedral"], cfg["detail"], workers=workers
    )
    crops = None
    if val_dir is not None:
        val_images, val_names = _data.load_images(val_dir)
        crops = _data.center_crops(val_images, args.val_crop)
    fingerprint = _data.dataset_fingerprint(args.data)
    print(
        f"data: {len(images)} training images ({sampler.megapixels:.1f} MP) from {train_dir}; "
        + (f"{len(crops)} validation crops of {crops.shape[1]}x{crops.shape[2]} from {val_dir}" if crops is not None else "no validation"),
        flush=True,
    )

    model = init_model(cfg)
    if not resume and args.init_from:
        model, cfg["init_from"] = warm_start(args.init_from, cfg)
    graphdef, params = nnx.split(model)
    tx, lr_fn = make_optimizer(cfg)
    opt_state = tx.init(params)
    step = 0
    rng = np.random.default_rng(cfg["seed"])
    elapsed0 = 0.0
    best = {"loss": math.inf}
    last_val = None
    if resume:
        params = _unflatten("params", params, tensors)
        opt_state = _unflatten("opt", opt_state, tensors)
        step, elapsed0 = int(info["step"]), float(info.get("elapsed_s", 0.0))
        rng = _data.rng_from_json(info["rng"])
        best = info.get("best") or best
        last_val = info.get("last_val")
        if info.get("data", {}).get("manifest_sha256") != fingerprint.get("manifest_sha256"):
            print("resume: warning: the data differ from the run's (manifest hash changed)")
        print(f"resumed {run_dir} at step {step} ({_fmt_time(elapsed0)} trained)", flush=True)
    else:
        (run_dir / "config.json").write_text(json.dumps({**cfg, "data": fingerprint}, indent=1))
        print(f"new run {run_dir}: {json.dumps(cfg)}", flush=True)

    train_step = make_train_step(graphdef, tx, cfg)
    evaluate = make_eval(graphdef) if crops is not None else None
    devices = [str(d) for d in jax.devices()]

    def info_now(rng_json: str) -> dict:
        return {
            "step": step, "rng": rng_json, "config": cfg, "data": fingerprint, "best": best, "last_val": last_val,
            "elapsed_s": elapsed0 + (time.monotonic() - t_start), "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "devices": devices, "library_version": __version__,
        }  # fmt: skip

    def log(record: dict) -> None:
        with open(run_dir / LOG_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")

    def run_validation() -> None:
        nonlocal best, last_val
        val = validate(evaluate, params, crops, cfg)
        last_val = {"step": step, **val}
        log({"kind": "val", **last_val})
        msg = " ".join(f"{k} {v:.4g}" for k, v in val.items())
        if val["loss"] < best["loss"]:
            best = {"step": step, **val}
            info = info_now(rng_json)
            Codec(nnx.merge(graphdef, params)).save(run_dir / BEST_FILE, provenance=provenance(info, "best", last_val))
            msg += "  (best)"
        print(f"val   {step:7d} | {msg}", flush=True)

    stop = _Stop()
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread (e.g. some test runners): no handler
            pass

    t_start = time.monotonic()
    deadline = t_start + 60.0 * args.max_minutes if args.max_minutes else math.inf
    last_ckpt = t_start
    rng_json = _data.rng_state_to_json(rng)  # state before the pending batch: what a resume must restart from
    batch = sampler.sample(rng, cfg["batch_size"])
    # The loss of a step is checked one step late, so that the host prepares the next batch while the device
    # works instead of waiting for every step; states are saved only after their own step's loss was checked.
    unchecked = None

    def check_finite() -> None:
        nonlocal unchecked
        if unchecked is not None:
            loss, at = float(unchecked[0]), unchecked[1]
            unchecked = None
            if not math.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at step {at}; the last saved state is intact")

    window_t, window_steps, first = time.monotonic(), 0, True
    reason = "max-steps"
    try:
        while args.max_steps is None or step < args.max_steps:
            if stop.signal is not None:
                reason = f"signal {stop.signal}"
                break
            if time.monotonic() >= deadline:
                reason = "max-minutes"
                break
            params, opt_state, aux, y = train_step(params, opt_state, batch)
            x_host = batch
            next_json = _data.rng_state_to_json(rng)
            batch = sampler.sample(rng, cfg["batch_size"])  # overlaps the device computation
            check_finite()  # the previous step's
            step += 1
            unchecked = (aux["loss"], step)
            rng_json = next_json
            window_steps += 1
            if step % args.log_every == 0 or step == args.max_steps:
                check_finite()
                now = time.monotonic()
                rate = window_steps / (now - window_t)
                a = {k: float(v) for k, v in jax.device_get(aux).items()}
                ssim = float(np.mean(_metrics.ssim(x_host / 255.0, np.asarray(y, np.float64))))
                rec = {
                    "kind": "train", "step": step, **a, "bpp_est": a["entropy"] * cfg["n_features"] / 64.0,
                    "ssim": ssim, "lr": float(lr_fn(step)), "steps_per_s": rate, "includes_compile": first,
                    "elapsed_s": elapsed0 + now - t_start,
                }  # fmt: skip
                log(rec)
                print(
                    f"train {step:7d} | loss {a['loss']:9.2f} | H {a['entropy']:.3f} b | bpp~{rec['bpp_est']:.3f} | "
                    f"PSNR {a['psnr']:5.2f} | SSIM {ssim:.4f} | scale {a['latent_scaling']:.3f} | lr {rec['lr']:.2e} | "
                    f"{rate:.2f} step/s{' (incl. compile)' if first else ''} | {_fmt_time(elapsed0 + now - t_start)}",
                    flush=True,
                )
                window_t, window_steps, first = time.monotonic(), 0, False
            if evaluate is not None and step % args.val_every == 0:
                check_finite()
                run_validation()
            if time.monotonic() - last_ckpt >= args.ckpt_every_s:
                check_finite()
                save_state(run_dir, params, opt_state, info_now(rng_json))
                last_ckpt = time.monotonic()
                print(f"saved {run_dir / STATE_FILE} at step {step}", flush=True)
        check_finite()
    finally:
        sampler.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if evaluate is not None and (last_val is None or last_val["step"] != step) and step > 0:
        run_validation()
    save_state(run_dir, params, opt_state, info_now(rng_json))
    print(f"stopped ({reason}) at step {step}; state saved to {run_dir / STATE_FILE}", flush=True)
    if args.export:
        path = export(run_dir, args.export, "best")
        print(f"exported {path}", flush=True)
    return {"step": step, "reason": reason, "last_val": last_val, "best": best}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "export":
        ap = argparse.ArgumentParser(prog="python -m l3ic_jax.train export", description="export a run's weights")
        ap.add_argument("run_dir")
        ap.add_argument("out")
        ap.add_argument("--which", choices=("best", "last"), default="best", help="best by validation, or last")
        a = ap.parse_args(argv[1:])
        path = export(a.run_dir, a.out, a.which)
        print(f"exported {path}")
        return 0
    args = build_parser().parse_args(argv)
    if args.data_workers < 0:
        raise SystemExit("l3ic_jax.train: --data-workers must be 0 (automatic) or more")
    if not (args.detail >= 0 and math.isfinite(args.detail)):
        raise SystemExit("l3ic_jax.train: --detail must be 0 (keep every patch) or a positive number")
    for folder in (args.data, args.val):
        if folder is not None and not Path(folder).is_dir():
            raise SystemExit(f"l3ic_jax.train: no such image folder: {folder}")
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
