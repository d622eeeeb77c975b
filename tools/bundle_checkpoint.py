"""Put a trained or converted checkpoint into `checkpoints/` as a bundled model, and record its sha256.

    python tools/bundle_checkpoint.py runs/32c/best.safetensors 32c

The file is loaded and validated first (its width must match the name), copied atomically to
`checkpoints/l3ic-<name>.safetensors`, and `checkpoints/SHA256SUMS` is rewritten; `l3ic_jax.load(name)` checks the
file against that sum, so a damaged or swapped file is an error rather than a silently different model.

When the evaluation set is there (default: Kodak at ../shared/datasets/kodak, 512 px center crops, the paper's
protocol), the model is run on it through the real bitstream first and the means (bpp from the bytes written,
PSNR, SSIM, MS-SSIM, as tools/rd_eval.py measures them) are added to the file's provenance under "evaluation",
so a bundled file states its own quality. The weights are unchanged by this.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from l3ic_jax import atomic, checkpoint  # noqa: E402


def evaluate(source: Path, folder: Path, crop: int, name: str) -> dict:
    """Mean bpp / PSNR / SSIM / MS-SSIM of the checkpoint on the images in ``folder`` (as tools/rd_eval.py).

    The codec carries the bundled ``name``, as ``l3ic_jax.load(name)`` will: the stream header stores it, so
    the rates are byte for byte those of ``tools/rd_eval.py --models NAME``."""
    import datetime as _dt

    import numpy as np
    import rd_eval

    from l3ic_jax.codec import Codec
    from l3ic_jax.pipeline import compress, decompress

    codec = Codec.from_checkpoint(source, name=name)
    images = rd_eval.load_images(folder, crop, None)
    rows = []
    for _, img in images:
        data = compress(img, codec)
        m = rd_eval.measure(img, rd_eval.to_uint8(decompress(data, codec)))
        rows.append({"bpp": rd_eval.bpp_of(data, img.shape), **m})
    mean = {k: round(float(np.mean([r[k] for r in rows])), 5) for k in ("bpp", "psnr", "ssim")}
    ms = [r["ms_ssim"] for r in rows if r["ms_ssim"] is not None]
    return {
        "dataset": folder.name, "images": len(rows), "crop": crop, **mean,
        "ms_ssim": round(float(np.mean(ms)), 5) if ms else None,
        "measured": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "method": "pipeline.compress/decompress, bpp = bytes*8/pixels, metrics on uint8 (tools/rd_eval.py)",
    }  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="an l3ic-jax checkpoint (.safetensors)")
    ap.add_argument("name", choices=sorted(checkpoint.BUNDLED), help="the bundled name it becomes")
    ap.add_argument("--eval", type=Path, default=REPO.parent / "shared" / "datasets" / "kodak",
                    help="images to measure the model on before bundling (skipped when the folder is absent)")
    ap.add_argument("--crop", type=int, default=512, help="center-crop side for the evaluation")
    ap.add_argument("--no-eval", action="store_true", help="copy the file as it is, without evaluation")
    args = ap.parse_args(argv)

    _, meta = checkpoint.load(args.source)  # raises CheckpointError with a message
    width = int(args.name.rstrip("c"))
    if meta["n_features"] != width:
        ap.error(f"{args.source} has {meta['n_features']} channels; '{args.name}' needs {width}")
    folder = REPO / "checkpoints"
    target = folder / checkpoint.BUNDLED[args.name]
    if not args.no_eval and args.eval.is_dir():
        tensors, meta = checkpoint.load(args.source)
        prov = dict(meta["provenance"])
        prov["evaluation"] = evaluate(args.source, args.eval, args.crop, args.name)
        print(f"evaluation on {args.eval}: {prov['evaluation']}")
        checkpoint.save(target, tensors, codebook=meta["codebook"], latent_bpf=meta["latent_bpf"], provenance=prov)
    else:
        atomic.write_bytes(target, args.source.read_bytes())
    sums = checkpoint.bundled_sums(folder)
    sums[target.name] = checkpoint.file_sha256(target)
    atomic.write_bytes(folder / checkpoint.SUMS_FILE, "".join(f"{h}  {n}\n" for n, h in sorted(sums.items())).encode())
    prov = meta["provenance"]
    print(f"{target.relative_to(REPO)}: sha256 {sums[target.name][:16]}..., steps {prov.get('steps')}, "
          f"weights {meta['weights_sha256'][:16]}...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
