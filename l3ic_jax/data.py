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

import json
import math
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


class PatchSampler:
    """Random ``patch`` x ``patch`` RGB crops of in-memory uint8 images, with scale and dihedral augmentation.

    ``workers`` > 1 cuts the patches in that many worker processes (started on first use, each holding a copy of
    the images; :meth:`close` or a ``with`` block ends them). Processes, not threads: a GPU consumes patches
    faster than one Python process cuts them, and threads share one interpreter lock (training.md §5). They are
    spawned, so a script that uses them needs the usual ``if __name__ == "__main__":`` guard.
    """

    def __init__(
        self,
        images: list[np.ndarray],
        patch: int = 128,
        scale_min: float = 1.0,
        scale_max: float = 2.0,
        dihedral: bool = True,
        detail: float = 0.0,
        workers: int = 1,
    ):
        if not images:
            raise ValueError("PatchSampler needs at least one image")
        if not 1.0 <= scale_min <= scale_max:
            raise ValueError(f"need 1 <= scale_min <= scale_max, got {scale_min}, {scale_max}")
        if not (detail >= 0 and math.isfinite(detail)):
            raise ValueError(f"detail must be a finite number >= 0, got {detail}")
        if int(workers) < 1:
            raise ValueError(f"workers must be 1 or more, got {workers}")
        self.images = images
        self.patch = int(patch)
        self.scale_min, self.scale_max = float(scale_min), float(scale_max)
        self.dihedral = bool(dihedral)
        self.detail = float(detail)
        self.workers = int(workers)
        small = [im.shape[:2] for im in images if min(im.shape[:2]) < self.patch]
        if small:
            raise ValueError(f"{len(small)} images are smaller than the patch size {self.patch}: {small[:3]}")
        areas = np.array([im.shape[0] * im.shape[1] for im in images], dtype=np.float64)
        self.weights = areas / areas.sum()
        self._shapes = np.array([im.shape[:2] for im in images], dtype=np.int64)
        self._pool = None
        self._acceptance = 0.5  # running share of candidates that pass the detail test; only sizes the work

    @property
    def megapixels(self) -> float:
        return sum(im.shape[0] * im.shape[1] for im in self.images) / 1e6

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` patches, uint8 (n, patch, patch, 3); the only randomness is ``rng``.

        Every random choice is drawn from ``rng`` before any pixel is touched, so any number of workers produces
        exactly the batch that one does. With ``detail``, candidates are drawn in rounds of ``2 n`` and kept in
        order while they pass; a round's candidates after the ``n``-th kept one are drawn but never cut.
        """
        if self.detail <= 0:
            return self._render(self._draw(rng, n), with_texture=False)[0]
        kept: list[np.ndarray] = []
        have = 0
        for _ in range(MAX_DETAIL_ROUNDS):
            plan = self._draw(rng, 2 * n)
            coin = rng.random(2 * n)
            pos = 0
            while pos < 2 * n and have < n:
                # Cut about as many candidates as should still pass (at least one per worker); any split of
                # the round gives the same patches.
                want = math.ceil(1.2 * (n - have) / max(self._acceptance, 0.05))
                stop = min(2 * n, pos + max(want, self.workers))
                patches, tex = self._render({k: v[pos:stop] for k, v in plan.items()}, with_texture=True)
                passed = coin[pos:stop] * self.detail < tex
                self._acceptance = 0.9 * self._acceptance + 0.1 * float(np.mean(passed))
                kept.append(patches[passed])
                have += int(passed.sum())
                pos = stop
            if have >= n:
                return np.concatenate(kept)[:n]
        raise ValueError(
            f"detail {self.detail:g}: fewer than {n} of {MAX_DETAIL_ROUNDS * 2 * n} candidate patches passed; "
            "the images are too flat for it (lower --detail)"
        )

    def _draw(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """The random choices of ``n`` candidate patches, in the order the stream has always drawn them."""
        p = self.patch
        idx = rng.choice(len(self.images), size=n, p=self.weights)
        log_s = rng.uniform(math.log(self.scale_min), math.log(self.scale_max), size=n)
        u = rng.random((n, 2))  # crop position, as fractions of the free range
        k = rng.integers(0, 4, size=n)  # quarter turns
        flip = rng.integers(0, 2, size=n)
        h, w = self._shapes[idx, 0], self._shapes[idx, 1]
        side = np.array([min(round(p * math.exp(s)), hh, ww) for s, hh, ww in zip(log_s, h, w)], dtype=np.int64)
        y0 = (u[:, 0] * (h - side + 1)).astype(np.int64)
        x0 = (u[:, 1] * (w - side + 1)).astype(np.int64)
        return {"idx": idx, "side": side, "y0": y0, "x0": x0, "k": k, "flip": flip}

    def _render(self, plan: dict[str, np.ndarray], with_texture: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(patches, their texture or None) of a plan, cut here or shared out among the worker processes."""
        n = len(plan["idx"])
        if self.workers == 1 or n < 2:
            return _cut(self.images, self.patch, self.dihedral, plan, with_texture)
        if self._pool is None:
            self._pool = _start_pool(self.workers, self.images, self.patch, self.dihedral)
        bounds = np.linspace(0, n, min(self.workers, n) + 1).round().astype(int)
        parts = [
            self._pool.submit(_cut_in_worker, {k: v[a:b] for k, v in plan.items()}, with_texture)
            for a, b in zip(bounds[:-1], bounds[1:])
        ]
        results = [f.result() for f in parts]
        patches = np.concatenate([r[0] for r in results])
        return patches, (np.concatenate([r[1] for r in results]) if with_texture else None)

    def close(self) -> None:
        """End the worker processes, if any were started (sampling afterwards starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "PatchSampler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cut(images, patch: int, dihedral: bool, plan: dict[str, np.ndarray], with_texture: bool):
    """Cut, resize, turn and flip the patches of a plan; the texture of each as cut (one at a time, so that
    the values do not depend on how a batch is split)."""
    n = len(plan["idx"])
    out = np.empty((n, patch, patch, 3), dtype=np.uint8)
    tex = np.empty(n, dtype=np.float32) if with_texture else None
    for i in range(n):
        c, y0, x0 = int(plan["side"][i]), int(plan["y0"][i]), int(plan["x0"][i])
        crop = images[plan["idx"][i]][y0 : y0 + c, x0 : x0 + c]
        if c != patch:
            crop = np.asarray(Image.fromarray(crop).resize((patch, patch), Image.Resampling.BILINEAR))
        if dihedral:
            crop = np.rot90(crop, plan["k"][i])
            if plan["flip"][i]:
                crop = crop[:, ::-1]
        out[i] = crop
        if with_texture:
            tex[i] = texture(out[i : i + 1])[0]
    return out, tex


# -- worker processes ---------------------------------------------------------------------------------------------
_WORKER: dict = {}
WORKER_START_TIMEOUT_S = 120.0  # how long the workers wait for each other at the start, at most


def _start_pool(workers: int, images, patch: int, dihedral: bool):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent runs JAX's threads, and a forked child may inherit a held lock.
    ctx = multiprocessing.get_context("spawn")
    all_started = ctx.Barrier(workers)
    pool = ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(images, patch, dihedral, all_started),
    )  # fmt: skip
    # The executor starts a process only when a task finds none idle, so under a steady demand the last workers
    # would start batches later, each start (an interpreter, its imports and a copy of the images) stalling the
    # batch that waits for it: seven workers took about 22 s to cut their first 10 batches (2 cores). Start them
    # all now: each of these tasks holds its worker until every worker holds one, so none is idle before all exist.
    for started in [pool.submit(_wait_for_all_workers) for _ in range(workers)]:
        started.result()
    return pool


def _init_worker(images, patch: int, dihedral: bool, all_started) -> None:
    import signal

    # Ctrl-C and SIGTERM go to the whole process group: the parent stops training cleanly and then ends the
    # workers, which must not die first. A worker whose parent is gone exits when its task queue closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _WORKER.update(images=images, patch=patch, dihedral=dihedral, all_started=all_started)


def _wait_for_all_workers() -> None:
    import threading

    try:
        _WORKER["all_started"].wait(timeout=WORKER_START_TIMEOUT_S)
    except threading.BrokenBarrierError:  # a start slower than the timeout: carry on, the workers only start later
        pass


def _cut_in_worker(plan: dict[str, np.ndarray], with_texture: bool):
    return _cut(_WORKER["images"], _WORKER["patch"], _WORKER["dihedral"], plan, with_texture)


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
