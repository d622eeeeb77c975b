"""Start a wider model from a trained narrower one (more latent channels, same trunk), for a warm-started run.

    python tools/widen_checkpoint.py 32c 64 runs/64c-from-32c.safetensors
    python -m l3ic_jax.train --n-features 64 --init-from runs/64c-from-32c.safetensors ...

Why: the two halves' trunks are the same for every quality level; only the encoder's last conv (128 -> C) and
the decoder's first conv (C -> 512) depend on the number of latent channels C. A wider model that inherits a
trained narrower one's trunk starts from that model's quality instead of from its own slower training
(function-preserving growth, as in Chen et al., "Net2Net", ICLR 2016):

- the first C channels are copied unchanged;
- the new channels' encoder filters point in random directions (uniform draws, each rescaled) with the mean norm
  of the inherited filters times ``--encoder-scale``, biases 0, so they carry new projections of the trunk's
  features at a small amplitude (mostly the codebook's 0 and +-1, a small extra rate);
- the decoder's weights for the new channels are 0, so the decoded image is exactly the narrower model's at the
  start, and the gradient on those weights (new latent x output error) is non-zero from the first step.

The output is an ordinary l3ic-jax checkpoint; its provenance keeps the narrower model's training chain under
``hyperparameters.init_from`` (so ``total_steps`` counts its steps) and says how it was widened.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from l3ic_jax import checkpoint  # noqa: E402
from l3ic_jax.model import MAX_FEATURES  # noqa: E402

ENC = "encoder/conv_8"  # 128 -> C
DEC = "decoder/conv_0"  # C -> 512


def widen(tensors: dict[str, np.ndarray], n_features: int, *, encoder_scale: float = 0.25, seed: int = 0) -> dict:
    """The tensors of a ``n_features``-channel model that decodes exactly as the narrower ``tensors`` do."""
    old = checkpoint.infer_n_features(tensors)
    if n_features <= old:
        raise ValueError(f"can only widen: the checkpoint has {old} channels, asked for {n_features}")
    if n_features > MAX_FEATURES:
        raise ValueError(f"the model takes at most {MAX_FEATURES} latent channels, asked for {n_features}")
    if not encoder_scale > 0:
        raise ValueError(f"encoder_scale must be positive, got {encoder_scale}")
    extra = n_features - old
    rng = np.random.default_rng(seed)
    out = {k: np.array(v, dtype=np.float32) for k, v in tensors.items()}

    kernel = out[f"{ENC}/kernel"]  # (5, 5, 128, C)
    new = rng.uniform(-1.0, 1.0, size=kernel.shape[:3] + (extra,)).astype(np.float32)  # only the directions count
    norms = np.sqrt((kernel.reshape(-1, old) ** 2).sum(axis=0))
    new_norms = np.sqrt((new.reshape(-1, extra) ** 2).sum(axis=0))
    new *= (encoder_scale * norms.mean() / new_norms).astype(np.float32)
    out[f"{ENC}/kernel"] = np.concatenate([kernel, new], axis=-1)
    out[f"{ENC}/bias"] = np.concatenate([out[f"{ENC}/bias"], np.zeros(extra, np.float32)])

    dk = out[f"{DEC}/kernel"]  # (3, 3, C, 512)
    out[f"{DEC}/kernel"] = np.concatenate([dk, np.zeros(dk.shape[:2] + (extra,) + dk.shape[3:], np.float32)], axis=2)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="bundled name (16c, 32c) or a checkpoint file")
    ap.add_argument("n_features", type=int, help="latent channels of the wider model (more than the source's)")
    ap.add_argument("out", help="checkpoint file to write")
    ap.add_argument("--encoder-scale", type=float, default=0.25,
                    help="new encoder filters' norm as a share of the inherited filters' mean norm (default 0.25)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the new encoder filters")
    args = ap.parse_args(argv)

    from l3ic_jax.train import lineage

    try:
        path = checkpoint.resolve(args.source)
        tensors, meta = checkpoint.load(path)
        wide = widen(tensors, args.n_features, encoder_scale=args.encoder_scale, seed=args.seed)
    except (checkpoint.CheckpointError, ValueError) as e:
        ap.error(str(e))
    widened = {"from_n_features": meta["n_features"], "encoder_scale": args.encoder_scale, "seed": args.seed}
    provenance = {
        "source": "tools/widen_checkpoint.py",
        "steps": 0,
        "hyperparameters": {"init_from": lineage(str(args.source), meta), "widened": widened},
    }
    written = checkpoint.save(args.out, wide, codebook=meta["codebook"], latent_bpf=meta["latent_bpf"],
                              provenance=provenance)
    print(f"{written}: {args.n_features} channels from {args.source} ({meta['n_features']}), "
          f"{args.n_features - meta['n_features']} new (encoder scale {args.encoder_scale:g}, seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
