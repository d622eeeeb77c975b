#!/usr/bin/env python
"""At which spatial scale does a model lose against JPEG at the same rate? MS-SSIM terms and error per scale.

MS-SSIM is a weighted product of five per-scale terms (``l3ic_jax.metrics.ms_ssim_terms``), so a model can beat
JPEG in SSIM (scale 1 alone) and still lose MS-SSIM at the coarse scales. This tool measures, on the rd_eval
protocol (Kodak 512 px center crops, decoded images rounded to uint8, JPEG 4:2:0 matched to each model's bpp
image by image), for every model and for its matched JPEG:

- the five MS-SSIM terms, averaged over images and RGB channels, and per scale the model's lead over JPEG in
  weight x ln(term) (their sum is the ln of the MS-SSIM ratio of the mean terms);
- the RMS of the error (decoded - original, in 8-bit levels) after box-averaging by 1, 2, 4, ... 128: how much of
  the error is fine detail and how much a low-frequency drift that survives averaging;
- the RMS over channels of the per-image mean error (a global colour cast).

    python tools/error_scales.py --models 64c                      # markdown table on stdout
    python tools/error_scales.py --models 64c,runs/x/best.safetensors --json /tmp/scales.json
    python tools/error_scales.py --models 64c,64c:refine          # with the encoder-side refinement
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

from codecs_baseline import all_codecs, bpp_of, match_bpp  # noqa: E402
from rd_eval import KODAK, load_images, log, split_refine, to_uint8  # noqa: E402

from l3ic_jax.metrics import MS_SSIM_WEIGHTS, ms_ssim_terms  # noqa: E402

BOX_FACTORS = (1, 2, 4, 8, 16, 32, 64, 128)


def error_profile(orig: np.ndarray, rec: np.ndarray) -> dict:
    """MS-SSIM terms [5], box-averaged error RMS per factor, and the global colour cast, of two uint8 images."""
    a = orig.astype(np.float64)
    b = rec.astype(np.float64)
    terms = ms_ssim_terms(a / 255.0, b / 255.0).mean(axis=0)  # mean over RGB
    err = b - a
    h, w = err.shape[:2]
    rms = {}
    for f in BOX_FACTORS:
        if h < f or w < f:
            break
        e = err[: h - h % f, : w - w % f].reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3))
        rms[f] = float(np.sqrt(np.mean(e**2)))
    cast = float(np.sqrt(np.mean(err.mean(axis=(0, 1)) ** 2)))
    return {"terms": terms.tolist(), "rms": rms, "cast": cast}


def profile_model(spec: str, images, jpeg) -> dict:
    """Mean error profile of one model and of JPEG matched to its bpp on every image."""
    import l3ic_jax

    path, refine = split_refine(spec)
    codec = l3ic_jax.load(path)
    sides = {"model": [], "jpeg": []}
    for i, (name, img) in enumerate(images):
        data = l3ic_jax.compress(img, codec, refine=refine)
        target = bpp_of(data, img.shape)
        rec = to_uint8(l3ic_jax.decompress(data, codec))
        _, jdata = match_bpp(jpeg, img, target, {})
        sides["model"].append(dict(error_profile(img, rec), bpp=target))
        sides["jpeg"].append(dict(error_profile(img, jpeg.decode(jdata)), bpp=bpp_of(jdata, img.shape)))
        log(f"  [{spec}] {i + 1}/{len(images)} {name}: {target:.3f} bpp")
    out = {}
    for side, profiles in sides.items():
        factors = [f for f in BOX_FACTORS if all(f in p["rms"] for p in profiles)]
        terms = np.mean([p["terms"] for p in profiles], axis=0)
        out[side] = {
            "bpp": float(np.mean([p["bpp"] for p in profiles])),
            "terms": terms.tolist(),
            "ms_ssim_of_mean_terms": float(np.prod(terms ** np.asarray(MS_SSIM_WEIGHTS))),
            "rms": {f: float(np.mean([p["rms"][f] for p in profiles])) for f in factors},
            "cast": float(np.mean([p["cast"] for p in profiles])),
        }
    return out


def markdown(results: dict) -> str:
    factors = list(next(iter(results.values()))["model"]["rms"])
    lines = [
        "| codec | bpp | MS-SSIM terms, scales 1-5 | error RMS after box-averaging by "
        + ", ".join(f"{f}" for f in factors) + " (8-bit levels) | colour cast |",
        "|---|---|---|---|---|",
    ]
    for spec, r in results.items():
        for side, label in (("model", spec), ("jpeg", f"JPEG at {spec}'s rate")):
            s = r[side]
            lines.append(
                f"| {label} | {s['bpp']:.3f} | " + " / ".join(f"{t:.4f}" for t in s["terms"]) + " | "
                + " / ".join(f"{v:.2f}" for v in s["rms"].values()) + f" | {s['cast']:.2f} |"
            )
        ln = np.asarray(MS_SSIM_WEIGHTS) * (np.log(r["model"]["terms"]) - np.log(r["jpeg"]["terms"]))
        lines.append(f"| {spec} - JPEG, weight x ln(term) | | " + " / ".join(f"{v:+.5f}" for v in ln)
                     + f" (sum {ln.sum():+.5f}) | | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="comma-separated model names or checkpoint paths; NAME:refine[=STEPS] "
                    "compresses with the encoder-side refinement (as in rd_eval)")
    ap.add_argument("--data", type=Path, default=KODAK,
                    help="folder of images (default: ../shared/datasets/kodak)")
    ap.add_argument("--crop", type=int, default=512, help="center-crop size in px (default 512; 0: whole images)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        ap.error(f"no image folder at {args.data}")
    images = load_images(args.data, args.crop or None, args.limit)
    jpeg = all_codecs()["jpeg"]
    results = {spec: profile_model(spec, images, jpeg) for spec in args.models.split(",") if spec}
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
