"""How a model uses its latent channels: per-channel entropy and non-zero share on a folder of images.

A learned codec that trains badly tends to leave channels "dead" (always the zero bin, 0 bits): their capacity is
wasted, and a 64-channel model then codes no better than a 32-channel one. This tool measures it on real images
(default: Kodak 512 px center crops), channel by channel, from the quantized indices the codec would code:

- ``H`` — the empirical entropy of the channel's indices in bits (per latent value; the per-channel FSE coder
  spends close to this), and the sum over channels divided by 64 (one latent position per 8x8 pixels) as bpp;
  pooled over all images, so the codec, which gives each image its own tables, spends a little less;
- ``nonzero`` — the share of the channel's values that are not the zero bin;
- ``live`` — channels with ``H`` above ``--live-bits`` (default 0.1).

    python tools/latent_stats.py --models 16c,32c,64c
    python tools/latent_stats.py --models runs/64c/best.safetensors --data data/photos/val --json stats.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rd_eval import KODAK, load_images  # noqa: E402

from l3ic_jax.quantize import default_codebook  # noqa: E402

_CODEBOOK = np.asarray(default_codebook()).ravel()
#: Index of the codebook value 0, and the number of indices.
ZERO_INDEX = int(np.flatnonzero(_CODEBOOK == 0)[0])
N_BINS = int(_CODEBOOK.size)


def channel_stats(indices: np.ndarray, live_bits: float) -> dict:
    """Statistics of ``indices`` (..., C) uint8 codebook indices, pooled over every position of every image."""
    flat = indices.reshape(-1, indices.shape[-1]).astype(np.int64)
    n = flat.shape[0]
    entropy, nonzero = [], []
    for c in range(flat.shape[1]):
        p = np.bincount(flat[:, c], minlength=N_BINS) / n
        p = p[p > 0]
        entropy.append(float(-(p * np.log2(p)).sum()))
        nonzero.append(float((flat[:, c] != ZERO_INDEX).mean()))
    entropy_arr = np.asarray(entropy)
    return {
        "channels": int(flat.shape[1]),
        "live": int((entropy_arr > live_bits).sum()),
        "pooled_bpp": float(entropy_arr.sum() / 64.0),
        "entropy_bits": [round(h, 4) for h in entropy],
        "nonzero": [round(z, 4) for z in nonzero],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="16c,32c,64c", help="comma-separated names or .safetensors paths")
    ap.add_argument("--data", default=str(KODAK), help="folder of images")
    ap.add_argument("--crop", type=int, default=512, help="center-crop size in px, 0 for whole images")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    ap.add_argument("--live-bits", type=float, default=0.1, help="a channel is live above this entropy")
    ap.add_argument("--json", default=None, help="also write the statistics here")
    args = ap.parse_args(argv)

    import l3ic_jax

    data = Path(args.data)
    if not data.is_dir():
        ap.error(f"no such folder: {data}")
    images = load_images(data, args.crop or None, args.limit)
    out = {"data": str(data), "crop": args.crop, "images": len(images), "models": {}}
    for spec in [s.strip() for s in args.models.split(",") if s.strip()]:
        try:
            codec = l3ic_jax.load(spec)
        except l3ic_jax.checkpoint.CheckpointError as e:
            ap.error(str(e))
        idx = np.concatenate([np.asarray(codec.encode_indices(img[None])).reshape(-1, codec.n_features)
                              for _, img in images])
        st = channel_stats(idx, args.live_bits)
        out["models"][spec] = st
        order = np.argsort(st["entropy_bits"])[::-1]
        print(f"{spec}: {st['live']}/{st['channels']} live channels (H > {args.live_bits} bit), "
              f"pooled entropy {st['pooled_bpp']:.3f} bpp over {len(images)} images")
        print("  H bits, high to low: " + " ".join(f"{st['entropy_bits'][i]:.2f}" for i in order))
        print("  non-zero share:      " + " ".join(f"{st['nonzero'][i]:.2f}" for i in order))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
