"""Checkpoints: one flat safetensors file per model, validated on load, and the registry of bundled models.

A checkpoint holds the conv weights under stable ``/``-joined names (``encoder/conv_0/kernel`` in HWIO,
``encoder/conv_0/bias``, ``encoder/latent_scaling``, ..., ``decoder/tconv_8/bias``) and string metadata:
``format``, ``format_version``, ``n_features``, ``codebook`` (JSON), ``latent_bpf`` and ``provenance`` (JSON: where
the weights come from). Loading checks every name, shape, dtype and metadata field, so a wrong, truncated or
foreign file is a :class:`CheckpointError` with a message, never a crash or a silently wrong model.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from . import atomic as _atomic
from . import model as _model
from . import quantize as _quantize
from ._version import __version__

FORMAT = "l3ic-jax-checkpoint"
FORMAT_VERSION = 1

#: Bundled models: short name -> file name in the ``checkpoints/`` folder.
BUNDLED = {"16c": "l3ic-16c.safetensors", "32c": "l3ic-32c.safetensors", "64c": "l3ic-64c.safetensors"}
DEFAULT_MODEL = "32c"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, truncated, foreign, or inconsistent."""


def parameter_shapes(n_features: int) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor a checkpoint of this width must hold, and nothing else."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer, kshape in _model.kernel_shapes(n_features).items():
        shapes[f"{layer}/kernel"] = tuple(kshape)
        shapes[f"{layer}/bias"] = (kshape[-1],)
    shapes["encoder/latent_scaling"] = ()
    return shapes


def checkpoints_dir() -> Path:
    """Folder of the bundled checkpoints (``checkpoints/`` at the repository root, installed as package data)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "checkpoints", here.parent / "checkpoints"):
        if candidate.is_dir():
            return candidate
    return here.parent / "checkpoints"


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A bundled model name (``16c``, ``32c``, ``64c``) or a path, to an existing checkpoint file."""
    key = str(name_or_path)
    if key in BUNDLED:
        path = checkpoints_dir() / BUNDLED[key]
        if not path.is_file():
            raise CheckpointError(
                f"the bundled model '{key}' is not available: {path} does not exist. Trained checkpoints are "
                "shipped in checkpoints/; until then, pass the path of a checkpoint made by "
                "convert/tf_to_flax.py or by `python -m l3ic_jax.train`."
            )
        _verify_bundled(path)
        return path
    path = Path(name_or_path).expanduser()
    if not path.exists():
        known = ", ".join(BUNDLED)
        raise CheckpointError(f"no such checkpoint: '{key}' (not a file, and not one of the bundled names {known})")
    if path.is_dir():
        raise CheckpointError(f"'{key}' is a directory, not a checkpoint file")
    return path


SUMS_FILE = "SHA256SUMS"
_verified: dict[tuple[str, int, int], str] = {}


def bundled_sums(folder: Path | None = None) -> dict[str, str]:
    """File name -> sha256 of the bundled checkpoints, from ``checkpoints/SHA256SUMS`` (``sha256sum`` format)."""
    sums_path = (folder or checkpoints_dir()) / SUMS_FILE
    sums = {}
    if sums_path.is_file():
        for line in sums_path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _verify_bundled(path: Path) -> None:
    """A bundled file must have the sha256 the registry records: a damaged or swapped file is an error."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _verified:
        return
    expected = bundled_sums(path.parent).get(path.name)
    if expected is None:
        raise CheckpointError(f"{path} is not listed in {path.parent / SUMS_FILE}; reinstall the package")
    actual = file_sha256(path)
    if actual != expected:
        raise CheckpointError(
            f"{path} does not match its recorded sha256 ({actual[:12]}... instead of {expected[:12]}...): the file "
            "is damaged or was replaced; reinstall the package"
        )
    _verified[key] = actual


def weights_hash(tensors: dict[str, np.ndarray], codebook: np.ndarray) -> str:
    """SHA-256 over names, shapes and float32 bytes of every tensor, and the codebook: the model's identity.

    It does not depend on metadata or file layout, so re-saving the same weights keeps the identity.
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        arr = np.array(tensors[name], dtype="<f4", order="C")  # ascontiguousarray would make 0-d 1-d
        h.update(name.encode() + b"\0" + repr(arr.shape).encode() + b"\0" + arr.tobytes())
    h.update(b"codebook\0" + np.array(codebook, dtype="<f4", order="C").ravel().tobytes())
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def infer_n_features(tensors: dict[str, np.ndarray]) -> int:
    """Latent channels from the last encoder conv's kernel (its output channels)."""
    kernel = tensors.get("encoder/conv_8/kernel")
    if kernel is None or np.ndim(kernel) != 4:
        raise CheckpointError("cannot infer n_features: 'encoder/conv_8/kernel' is missing or not 4-D")
    return int(np.shape(kernel)[-1])


def validate(tensors: dict[str, np.ndarray], n_features: int, where: str = "checkpoint") -> None:
    """Every expected tensor present with its shape, finite float32, and nothing else."""
    expected = parameter_shapes(n_features)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else ""))
        if extra:
            parts.append("unexpected " + ", ".join(extra[:6]) + (" ..." if len(extra) > 6 else ""))
        raise CheckpointError(f"{where}: tensors do not match a {n_features}-channel l3ic model: " + "; ".join(parts))
    for name, shape in expected.items():
        arr = np.asarray(tensors[name])
        if tuple(arr.shape) != shape:
            raise CheckpointError(f"{where}: '{name}' has shape {tuple(arr.shape)}, expected {shape}")
        if arr.dtype != np.float32:
            raise CheckpointError(f"{where}: '{name}' is {arr.dtype}, expected float32")
        if not np.all(np.isfinite(arr)):
            raise CheckpointError(f"{where}: '{name}' holds non-finite values")


def save(
    path: str | os.PathLike,
    tensors: dict[str, np.ndarray],
    *,
    codebook=None,
    latent_bpf: int = _quantize.LATENT_BPF,
    provenance: dict | None = None,
) -> Path:
    """Write a validated checkpoint atomically (temp file + rename); returns the path."""
    from safetensors.numpy import save as st_save

    tensors = {k: np.array(v, dtype=np.float32, order="C") for k, v in tensors.items()}  # keeps 0-d
    n_features = infer_n_features(tensors)
    validate(tensors, n_features, where=str(path))
    cb = _quantize.default_codebook(latent_bpf) if codebook is None else np.asarray(codebook, np.float32).ravel()
    prov = {"library_version": __version__, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    prov.update(provenance or {})
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "n_features": str(n_features),
        "codebook": json.dumps([float(v) for v in cb]),
        "latent_bpf": str(int(latent_bpf)),
        "weights_sha256": weights_hash(tensors, cb),
        "provenance": json.dumps(prov, sort_keys=True),
    }
    blob = st_save(tensors, metadata=metadata)
    return _atomic.write_bytes(path, blob)


def load(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Read and validate a checkpoint: (tensors, metadata) with ``n_features``, ``codebook`` and the rest parsed."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from e
    try:
        tensors = st_load(blob)
        raw_meta = _read_metadata(blob)
    except (SafetensorError, ValueError, KeyError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors checkpoint (truncated or foreign file): {e}") from e
    if raw_meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an l3ic-jax checkpoint (metadata 'format' is {raw_meta.get('format')!r})")
    try:
        version = int(raw_meta["format_version"])
        n_features = int(raw_meta["n_features"])
        codebook = np.asarray(json.loads(raw_meta["codebook"]), dtype=np.float32)
        latent_bpf = int(raw_meta["latent_bpf"])
        provenance = json.loads(raw_meta.get("provenance", "{}"))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: incomplete or malformed metadata ({e})") from e
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is newer than this library supports")
    if codebook.ndim != 1 or not 2 <= codebook.size <= 256 or np.any(np.diff(codebook) <= 0):
        raise CheckpointError(f"{path}: the codebook must be 2..256 strictly increasing values")
    validate(tensors, n_features, where=str(path))
    digest = weights_hash(tensors, codebook)
    if raw_meta.get("weights_sha256", digest) != digest:
        raise CheckpointError(f"{path}: weights do not match the recorded weights_sha256 (corrupted file)")
    meta = {
        "format_version": version,
        "n_features": n_features,
        "codebook": codebook,
        "latent_bpf": latent_bpf,
        "provenance": provenance,
        "weights_sha256": digest,
        "path": str(path),
    }
    return tensors, meta


def _read_metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (the numpy loader does not return it)."""
    if len(blob) < 8:
        raise ValueError("file shorter than the safetensors header")
    n = int.from_bytes(blob[:8], "little")
    if n > len(blob) - 8:
        raise ValueError("header length runs past the end of the file")
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("__metadata__ is not a mapping")
    return meta
