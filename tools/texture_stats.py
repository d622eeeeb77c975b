"""How textured the training patches are, against the evaluation set: the check behind ``--detail``.

A codec learns what its training patches show. Wallpaper photos are mostly sky, water and bokeh, Kodak is grass,
fences, hair and film grain; a model trained on the former reconstructs the latter blurred, and SSIM punishes
exactly that. This tool puts numbers on it with :func:`l3ic_jax.data.texture` (the mean absolute difference of
neighbouring luma values, 8-bit levels; 0 is flat):

- the reference: every 128 px tile of the evaluation images (default: Kodak, 512 px center crops, 16 tiles each);
- the training stream: ``--n`` patches from :class:`l3ic_jax.data.PatchSampler` for each ``--settings`` entry
  ``SCALE_MIN:SCALE_MAX:DETAIL``, drawn with a fixed seed, so the table is the same on every run.

    python tools/texture_stats.py --data data/photos/train --settings 1:2:0,2:4:0,2:4:8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rd_eval import load_images  # noqa: E402

from l3ic_jax import data as D  # noqa: E402

PERCENTILES = (10, 25, 50, 75, 90)


def tiles(images: list[np.ndarray], size: int) -> np.ndarray:
    """Every whole ``size`` x ``size`` tile of each image, as one uint8 batch."""
    out = [
        im[y : y + size, x : x + size]
        for im in images
        for y in range(0, im.shape[0] - size + 1, size)
        for x in range(0, im.shape[1] - size + 1, size)
    ]
    if not out:
        raise SystemExit(f"no image is {size} px or larger")
    return np.stack(out)


def row(name: str, t: np.ndarray) -> str:
    cells = " | ".join(f"{v:.1f}" for v in np.percentile(t, PERCENTILES))
    return f"| {name} | {len(t)} | {cells} | {t.mean():.2f} |"


def parse_setting(text: str) -> tuple[float, float, float]:
    try:
        lo, hi, detail = (float(v) for v in text.split(":"))
    except ValueError:
        raise SystemExit(f"--settings: expected SCALE_MIN:SCALE_MAX:DETAIL, got {text!r}") from None
    return lo, hi, detail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO / "data" / "photos" / "train", help="training image folder")
    ap.add_argument("--eval", type=Path, default=REPO.parent / "shared" / "datasets" / "kodak", help="reference images")
    ap.add_argument("--crop", type=int, default=512, help="center crop of the reference images (0: whole)")
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--settings", default="1:2:0,2:4:0,2:4:8", help="SCALE_MIN:SCALE_MAX:DETAIL, comma-separated")
    ap.add_argument("--n", type=int, default=800, help="patches drawn per setting")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    settings = [parse_setting(s) for s in args.settings.split(",")]
    for folder in (args.data, args.eval):
        if not folder.is_dir():
            raise SystemExit(f"no such image folder: {folder}")

    heads = " | ".join(f"p{p}" for p in PERCENTILES)
    print(f"| patches | n | {heads} | mean |\n|---|---|{'---|' * len(PERCENTILES)}---|")
    ref = [im for _, im in load_images(args.eval, args.crop or None, None)]
    print(row(f"{args.eval.name} ({args.crop or 'whole'} px, {args.patch} px tiles)", D.texture(tiles(ref, args.patch))))
    images, _ = D.load_images(args.data, min_side=args.patch)
    for lo, hi, detail in settings:
        sampler = D.PatchSampler(images, args.patch, lo, hi, detail=detail)
        batch = sampler.sample(np.random.default_rng(args.seed), args.n)
        print(row(f"{args.data.name}: scale {lo:g}-{hi:g}, detail {detail:g}", D.texture(batch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
