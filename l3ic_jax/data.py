"""Training data: a folder of images held in memory as uint8, and a random-patch sampler with augmentation.

The sampler draws everything from a caller-owned :class:`numpy.random.Generator`, so a batch is a pure function
of the generator's state: saving ``rng.bit_generator.state`` with a training checkpoint and restoring it
reproduces the data stream exactly (see :mod:`l3ic_jax.train`).

Augmentation, as in the original toolbox plus the usual dihedral symmetries:

- random scale: a square crop of side ``patch * s`` with ``s`` log-uniform in ``[scale_min, scale_max]``,
  resized to ``patch`` with PIL's antialiased bilinear filter (downscaling only, so no upsampling blur);
- a random element of the dihedral group (90-degree rotations times an optional flip), all 8 equally likely.

Images are picked with probability proportional to their area, so every pixel is about equally likely.

Optional detail weighting (``detail=T``): a patch is kept with probability ``min(1, texture / T)``, where
texture is the mean absolute difference of neighbouring luma values (8-bit levels). Wallpaper photos are mostly
sky and bokeh: their median 128 px patch has a texture of about 2.5, Kodak's about 7 (docs/training.md §8.5),
and a codec trained on flat patches learns to blur the texture that SSIM rewards.
"""

from __future__ import annotations

import functools
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

#: Rounds of ``2 n`` candidates that detail weighting may cut for a batch of ``n`` before it gives up.
MAX_DETAIL_ROUNDS = 64
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".webp", ".tif", ".tiff"}


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (not recursive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such image folder: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_images(folder: str | Path, min_side: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Every image of a folder as an RGB uint8 HxWx3 array, and the file names.

    Images whose shorter side is below ``min_side`` are skipped with a message.
    """
    images, names = [], []
    for path in list_images(folder):
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        if min(arr.shape[:2]) < min_side:
            print(f"data: skipping {path.name} ({arr.shape[1]}x{arr.shape[0]} is smaller than {min_side})")
            continue
        images.append(np.ascontiguousarray(arr))
        names.append(path.name)
    if not images:
        raise ValueError(f"no usable images in {folder}")
    return images, names


def resolve_data_dirs(data: str | Path, val: str | Path | None = None) -> tuple[Path, Path | None]:
    """(training folder, validation folder): ``DIR/train`` and ``DIR/val`` when they exist, else ``DIR``."""
    data = Path(data)
    train_dir = data / "train" if (data / "train").is_dir() else data
    if val is not None:
        return train_dir, Path(val)
    return train_dir, (data / "val" if (data / "val").is_dir() else None)


def dataset_fingerprint(data: str | Path) -> dict:
    """What identifies the data of a run: the manifest's sha256 when there is one, else a hash of file names+sizes."""
    import hashlib

    data = Path(data)
    manifest = data / "manifest.json"
    if manifest.is_file():
        blob = manifest.read_bytes()
        info = {"manifest_sha256": hashlib.sha256(blob).hexdigest()}
        try:
            m = json.loads(blob)
            info.update({"counts": m.get("counts"), "megapixels": m.get("megapixels"), "licences": m.get("licences")})
        except ValueError:
            pass
        return {"folder": str(data), **info}
    h = hashlib.sha256()
    for sub in sorted(p for p in [data, *data.iterdir()] if p.is_dir()):
        for p in list_images(sub):
            h.update(f"{p.relative_to(data)}\0{p.stat().st_size}\0".encode())
    return {"folder": str(data), "files_sha256": h.hexdigest()}


@functools.lru_cache(maxsize=None)
def _thread_pool(workers: int) -> ThreadPoolExecutor:
    """One pool per thread count, kept for the process: a batch is cut every step."""
    return ThreadPoolExecutor(workers, thread_name_prefix="patches")


class PatchSampler:
    """Random ``patch`` x ``patch`` RGB crops of in-memory uint8 images, with scale and dihedral augmentation."""

    def __init__(
        self,
        images: list[np.ndarray],
        patch: int = 128,
        scale_min: float = 1.0,
        scale_max: float = 2.0,
        dihedral: bool = True,
        detail: float = 0.0,
    ):
        if not images:
            raise ValueError("PatchSampler needs at least one image")
        if not 1.0 <= scale_min <= scale_max:
            raise ValueError(f"need 1 <= scale_min <= scale_max, got {scale_min}, {scale_max}")
        if not (detail >= 0 and math.isfinite(detail)):
            raise ValueError(f"detail must be a finite number >= 0, got {detail}")
        self.images = images
        self.patch = int(patch)
        self.scale_min, self.scale_max = float(scale_min), float(scale_max)
        self.dihedral = bool(dihedral)
        self.detail = float(detail)
        small = [im.shape[:2] for im in images if min(im.shape[:2]) < self.patch]
        if small:
            raise ValueError(f"{len(small)} images are smaller than the patch size {self.patch}: {small[:3]}")
        areas = np.array([im.shape[0] * im.shape[1] for im in images], dtype=np.float64)
        self.weights = areas / areas.sum()

    @property
    def megapixels(self) -> float:
        return sum(im.shape[0] * im.shape[1] for im in self.images) / 1e6

    def sample(self, rng: np.random.Generator, n: int, workers: int = 1) -> np.ndarray:
        """``n`` patches, uint8 (n, patch, patch, 3); the only randomness is ``rng``.

        Every random choice is drawn from ``rng`` before any pixel is touched, so ``workers`` threads (PIL's
        resize releases the GIL) produce exactly the batch that one thread does. On a GPU one thread cannot
        keep up with the device; on a CPU the cores are busy with the step, and one is right. With ``detail``,
        candidates are cut in rounds of ``2 n`` and kept in order while they pass, which is as deterministic.
        """
        if self.detail <= 0:
            return self._cut(rng, n, workers)
        kept: list[np.ndarray] = []
        for _ in range(MAX_DETAIL_ROUNDS):
            if sum(len(k) for k in kept) >= n:
                return np.concatenate(kept)[:n]
            cand = self._cut(rng, 2 * n, workers)
            coin = rng.random(2 * n)
            kept.append(cand[coin * self.detail < texture(cand)])
        raise ValueError(
            f"detail {self.detail:g}: fewer than {n} of {MAX_DETAIL_ROUNDS * 2 * n} candidate patches passed; "
            "the images are too flat for it (lower --detail)"
        )

    def _cut(self, rng: np.random.Generator, n: int, workers: int) -> np.ndarray:
        p = self.patch
        out = np.empty((n, p, p, 3), dtype=np.uint8)
        idx = rng.choice(len(self.images), size=n, p=self.weights)
        log_s = rng.uniform(math.log(self.scale_min), math.log(self.scale_max), size=n)
        u = rng.random((n, 2))  # crop position, as fractions of the free range
        k = rng.integers(0, 4, size=n)  # quarter turns
        flip = rng.integers(0, 2, size=n)

        def make(i: int) -> None:
            im = self.images[idx[i]]
            h, w = im.shape[:2]
            c = int(min(round(p * math.exp(log_s[i])), h, w))
            y0 = int(u[i, 0] * (h - c + 1))
            x0 = int(u[i, 1] * (w - c + 1))
            crop = im[y0 : y0 + c, x0 : x0 + c]
            if c != p:
                crop = np.asarray(Image.fromarray(crop).resize((p, p), Image.Resampling.BILINEAR))
            if self.dihedral:
                crop = np.rot90(crop, k[i])
                if flip[i]:
                    crop = crop[:, ::-1]
            out[i] = crop

        if workers > 1 and n > 1:
            list(_thread_pool(workers).map(make, range(n)))
        else:
            for i in range(n):
                make(i)
        return out


def texture(patches: np.ndarray) -> np.ndarray:
    """Mean absolute difference of horizontally and vertically neighbouring luma values (BT.601, 8-bit levels)
    per patch of a uint8 (n, h, w, 3) batch: 0 for a flat patch, about 7 for Kodak's median 128 px patch."""
    y = patches.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    gx = np.abs(np.diff(y, axis=2)).mean(axis=(1, 2))
    gy = np.abs(np.diff(y, axis=1)).mean(axis=(1, 2))
    return (gx + gy) / 2


def center_crops(images: list[np.ndarray], size: int) -> np.ndarray:
    """The central ``size`` x ``size`` crop of each image (all must be large enough), as one uint8 batch."""
    out = []
    for im in images:
        h, w = im.shape[:2]
        s = min(size, h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        out.append(im[y0 : y0 + s, x0 : x0 + s])
    if len({c.shape for c in out}) != 1:
        raise ValueError(f"validation images are smaller than the crop size {size}: {[c.shape for c in out]}")
    return np.stack(out)


def rng_state_to_json(rng: np.random.Generator) -> str:
    """The generator's full state as JSON (PCG64 integers are arbitrary-precision, JSON keeps them exact)."""
    return json.dumps(rng.bit_generator.state)


def rng_from_json(text: str) -> np.random.Generator:
    state = json.loads(text)
    bitgen = getattr(np.random, state["bit_generator"])()
    bitgen.state = state
    return np.random.Generator(bitgen)
