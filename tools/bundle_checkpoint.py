"""Put a trained or converted checkpoint into `checkpoints/` as a bundled model, and record its sha256.

    python tools/bundle_checkpoint.py runs/32c/best.safetensors 32c

The file is loaded and validated first (its width must match the name), copied atomically to
`checkpoints/l3ic-<name>.safetensors`, and `checkpoints/SHA256SUMS` is rewritten; `l3ic_jax.load(name)` checks the
file against that sum, so a damaged or swapped file is an error rather than a silently different model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from l3ic_jax import atomic, checkpoint  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="an l3ic-jax checkpoint (.safetensors)")
    ap.add_argument("name", choices=sorted(checkpoint.BUNDLED), help="the bundled name it becomes")
    args = ap.parse_args(argv)

    _, meta = checkpoint.load(args.source)  # raises CheckpointError with a message
    width = int(args.name.rstrip("c"))
    if meta["n_features"] != width:
        ap.error(f"{args.source} has {meta['n_features']} channels; '{args.name}' needs {width}")
    folder = REPO / "checkpoints"
    target = folder / checkpoint.BUNDLED[args.name]
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
