#!/usr/bin/env python
"""How fast the training data pipeline cuts patches: patches/s of :class:`l3ic_jax.data.PatchSampler` with one
process (in-process, as on a CPU backend) and with worker processes, as ratios against the one process.

Why: on a GPU the host cuts the patches while the device runs a step, so the steps/s of a run cannot exceed
patches/s / batch. Session 15 suspected the host of holding its GPU runs back; session 17 measured 815 patches/s
per process on the device's host, more than the GPU took (training.md §6). Run it on the device machine before a
long call to see what the host allows:

    python tools/bench_data.py --data data/photos-f3w --workers 1,2,4 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from l3ic_jax import data as D  # noqa: E402


def measure(sampler: D.PatchSampler, batch: int, seconds: float, seed: int) -> float:
    """Patches/s over about ``seconds`` after one warm-up batch (which also starts the worker processes)."""
    rng = np.random.default_rng(seed)
    sampler.sample(rng, batch)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        sampler.sample(rng, batch)
        n += batch
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--data", default="data/photos-f3w", help="a photo set of tools/make_dataset.py, or a folder")
    ap.add_argument("--workers", default="1,2,4", help="comma-separated worker counts; 1 = in-process")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--detail", type=float, default=8.0)
    ap.add_argument("--scale-min", type=float, default=None, help="default: 4/f for a set downscaled f times, else 2")
    ap.add_argument("--scale-max", type=float, default=None, help="default: 8/f for a set downscaled f times, else 4")
    ap.add_argument("--seconds", type=float, default=5.0, help="measuring time per setting")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    data = Path(args.data)
    train_dir, _ = D.resolve_data_dirs(data)
    manifest = data / "manifest.json"
    factor = json.loads(manifest.read_text())["factor"] if manifest.is_file() else 2.0
    lo = args.scale_min if args.scale_min is not None else 4 / factor
    hi = args.scale_max if args.scale_max is not None else 8 / factor
    images, _ = D.load_images(train_dir, min_side=args.patch)
    counts = [int(w) for w in args.workers.split(",")]
    print(f"{len(images)} images from {train_dir}, patch {args.patch}, scales {lo:.3g}-{hi:.3g}, "
          f"detail {args.detail:g}, batch {args.batch}; {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}", flush=True)
    rows = []
    for w in counts:
        with D.PatchSampler(images, args.patch, lo, hi, True, args.detail, workers=w) as sampler:
            rate = measure(sampler, args.batch, args.seconds, seed=w)
        rows.append({"workers": w, "patches_per_s": rate, "batches_per_s": rate / args.batch})
    base = next((r["patches_per_s"] for r in rows if r["workers"] == 1), rows[0]["patches_per_s"])
    print("| workers | patches/s | batches/s | x one process |\n|---|---|---|---|")
    for r in rows:
        r["ratio"] = r["patches_per_s"] / base
        print(f"| {r['workers']} | {r['patches_per_s']:.0f} | {r['batches_per_s']:.1f} | {r['ratio']:.2f} |")
    if args.json:
        settings = {**vars(args), "json": str(args.json), "scale_min": lo, "scale_max": hi}
        args.json.write_text(json.dumps({"settings": settings, "cores": os.cpu_count(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
