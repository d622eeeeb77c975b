"""Sweep the encoder-side refinement's steps and step size on a folder of images (l3ic_jax.refine).

For each (steps, lr) it compresses every image, decodes the real file and reports the means of bpp, PSNR, SSIM and
MS-SSIM, the time per image, and the objective refinement minimizes, measured on the real file: the decoded
image's ``l2_loss`` plus the rate weight times the file's bits, per 128 px patch (training's units; lower is
better). Choose the defaults on held-out photos, never on Kodak, the test set.

    python tools/refine_sweep.py --model 64c --images data/photos-f3w/val --steps 0,20,40,80 --lr 0.001,0.002,0.004
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from rd_eval import load_images, measure, to_uint8  # noqa: E402


def sweep(model: str, images, steps_list, lr_list) -> list[dict]:
    import l3ic_jax
    from l3ic_jax import bitstream as B
    from l3ic_jax import pipeline as P
    from l3ic_jax import refine as R

    codec = l3ic_jax.load(model)
    lam = R.rate_weight(codec)
    rows = []
    for steps, lr in itertools.product(steps_list, lr_list):
        if steps == 0 and lr != lr_list[0]:
            continue  # plain rounding does not depend on the step size
        per = []
        for name, img in images:
            x = img.astype(np.float32)[None] / 255.0
            padded, _ = P.pad_to_multiple(x)
            t = time.time()
            idx = R.refine_indices(codec, padded[0], height=img.shape[0], width=img.shape[1], steps=steps, lr=lr)
            data = B.pack(idx, height=img.shape[0], width=img.shape[1], model_id=P.model_id(codec))
            dt = time.time() - t
            rec = to_uint8(P.decompress(data, codec))
            m = measure(img, rec)
            err = img.astype(np.float64) / 255.0 - rec.astype(np.float64) / 255.0
            patches = img.shape[0] * img.shape[1] / 128**2
            objective = (0.5 * np.sum(err**2) + lam * 8 * len(data)) / patches
            per.append(dict(bpp=8 * len(data) / (img.shape[0] * img.shape[1]), objective=objective, seconds=dt, **m))
        row = {"steps": steps, "lr": lr if steps else 0.0}
        for key in ("objective", "bpp", "psnr", "ssim", "ms_ssim", "seconds"):
            vals = [p[key] for p in per if p[key] is not None]
            row[key] = float(np.mean(vals)) if vals else None
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="64c", help="bundled name or checkpoint path")
    ap.add_argument("--images", required=True, type=Path, help="folder of held-out images")
    ap.add_argument("--crop", type=int, default=None, help="center crops of this size (default: whole images)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many images")
    ap.add_argument("--steps", default="0,20,40,80", help="comma-separated step counts")
    ap.add_argument("--lr", default="0.001,0.002,0.004", help="comma-separated Adam step sizes")
    ap.add_argument("--out", type=Path, default=None, help="also write the rows here as JSON")
    args = ap.parse_args(argv)
    images = load_images(args.images, args.crop, args.limit)
    rows = sweep(args.model, images, [int(s) for s in args.steps.split(",")], [float(v) for v in args.lr.split(",")])
    print(f"\n{'steps':>5} {'lr':>6} {'objective':>10} {'bpp':>7} {'PSNR':>6} {'SSIM':>7} {'MS-SSIM':>8} {'s/img':>6}")
    for r in rows:
        ms = f"{r['ms_ssim']:.5f}" if r["ms_ssim"] is not None else "-"
        print(f"{r['steps']:>5} {r['lr']:>6g} {r['objective']:>10.2f} {r['bpp']:>7.4f} {r['psnr']:>6.2f} "
              f"{r['ssim']:>7.4f} {ms:>8} {r['seconds']:>6.1f}")
    if args.out:
        args.out.write_text(json.dumps({"model": args.model, "images": str(args.images), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
