"""Images to bytes and back: :func:`compress` and :func:`decompress`.

``compress`` pads the image to a multiple of 8 (:func:`pad_to_multiple`, edge pixels repeated at the bottom and
right), runs the encoder and the quantizer in one compiled call, and packs the indices with the image's size and
the model id (:mod:`l3ic_jax.bitstream`). ``decompress`` reads the stream, finds the model from its id among the
bundled ones (or checks the given codec against it), decodes and crops back to the original size exactly.

``legacy=True`` writes the original ``.l3i`` format. Like the original codec, it feeds the image unpadded (the
network's SAME padding), and the stream decodes to the padded size ``8 * ceil(H / 8)`` x ``8 * ceil(W / 8)``,
because the format does not store the image size.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from . import bitstream as _bs
from . import checkpoint as _ckpt
from . import tiling as _tiling
from .bitstream import BitstreamError, CorruptStreamError, ModelMismatchError
from .codec import Codec, as_image_batch
from .codec import load as _load_codec

__all__ = [
    "compress",
    "decompress",
    "decompress_with_info",
    "compress_batch",
    "decompress_batch",
    "resolve_codec",
    "codec_for_stream",
    "model_id",
    "pad_to_multiple",
    "BitstreamError",
    "CorruptStreamError",
    "ModelMismatchError",
]


def model_id(codec: Codec) -> str:
    """The id a stream records for this codec: its name and the first 16 bytes of its weights' SHA-256."""
    return _bs.make_model_id(codec.name, codec.weights_sha256)


def pad_to_multiple(images, multiple: int = _bs.STRIDE):
    """Pad NHWC (or HWC) images at the bottom and right, repeating the edge pixels, to a multiple of ``multiple``.

    Returns ``(padded, (pad_h, pad_w))``; the input is returned as it is when no padding is needed. Works on NumPy
    and JAX arrays.
    """
    h, w = images.shape[-3], images.shape[-2]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return images, (0, 0)
    widths = [(0, 0)] * (images.ndim - 3) + [(0, pad_h), (0, pad_w), (0, 0)]
    if isinstance(images, np.ndarray):
        return np.pad(images, widths, mode="edge"), (pad_h, pad_w)
    import jax.numpy as jnp

    return jnp.pad(images, widths, mode="edge"), (pad_h, pad_w)


#: Images larger than this (in pixels, after padding to 8) are coded tile by tile (l3ic_jax.tiling).
TILE_ABOVE_PIXELS = 2048 * 2048


@functools.lru_cache(maxsize=8)
def _cached_load(key: str) -> Codec:
    return _load_codec(key)


def resolve_codec(codec=None) -> Codec:
    """A :class:`Codec` from a Codec, a bundled name or a checkpoint path (``None``: the default model).

    Bundled names and paths are loaded once per process. Raises :class:`~l3ic_jax.CheckpointError`.
    """
    if isinstance(codec, Codec):
        return codec
    key = _ckpt.DEFAULT_MODEL if codec is None else os.fspath(codec)
    if key not in _ckpt.BUNDLED:
        key = str(_ckpt.resolve(key).resolve())  # raises CheckpointError for a missing path
    return _cached_load(key)


def compress(image, codec=None, *, legacy: bool = False, threads: int = 0, refine: int = 0) -> bytes:
    """An image (HxWx3 uint8, or float in [0, 1]) to a stream.

    ``codec``: a :class:`Codec`, a bundled name (``16c``, ``32c``, ``64c``) or a checkpoint path; default ``32c``.
    ``legacy=True`` writes the original ``.l3i`` format (:func:`l3ic_jax.bitstream.pack_legacy`, which raises
    :class:`~l3ic_jax.bitstream.LegacyFormatError` for images it cannot hold).
    ``refine``: steps of encoder-side refinement (:mod:`l3ic_jax.refine`; 40 is its default): the same format
    and decoder, a file usually smaller and closer to the image, at the cost of ``refine`` decoder passes
    forward and backward; 0 (the default): the encoder's latent rounded, as the original codec does.
    """
    codec = resolve_codec(codec)
    x = as_image_batch(image)
    if x.shape[0] != 1:
        raise ValueError(f"compress takes one image (HxWx3), got a batch of {x.shape[0]}")
    if int(refine) < 0:
        raise ValueError(f"refine must be a number of steps >= 0, got {refine}")
    height, width = int(x.shape[1]), int(x.shape[2])
    if refine:
        indices = _refined_indices(codec, x, int(refine), legacy)
    elif legacy:
        indices = np.asarray(codec.encode_indices(x))[0]
    else:
        padded, _ = pad_to_multiple(x)
        if padded.shape[1] * padded.shape[2] > TILE_ABOVE_PIXELS:  # bounded memory, same indices (tiling.py)
            indices = _tiling.encode_indices_tiled(codec, np.asarray(padded[0]))
        else:
            indices = np.asarray(codec.encode_indices(padded))[0]
    if legacy:
        return _bs.pack_legacy(indices, threads=threads)
    return _bs.pack(indices, height=height, width=width, model_id=model_id(codec), threads=threads)


def _refined_indices(codec: Codec, x, steps: int, legacy: bool) -> np.ndarray:
    """Indices of one image batch ``x`` (1, H, W, 3) after ``steps`` of refinement (l3ic_jax.refine).

    The search starts from the latent the plain path would round (the unpadded image's for ``legacy``, as the
    original feeds it; tile by tile above :data:`TILE_ABOVE_PIXELS`) and compares the decoded image with the
    edge-padded one, the padding itself not counted."""
    from . import refine as _refine

    height, width = int(x.shape[1]), int(x.shape[2])
    padded, _ = pad_to_multiple(x)
    source = x if legacy else padded
    if padded.shape[1] * padded.shape[2] > TILE_ABOVE_PIXELS:
        latent = _tiling.encode_tiled(codec, np.asarray(source[0]))
    else:
        latent = np.asarray(codec.encode(source))[0]
    return _refine.refine_indices(
        codec, np.asarray(padded[0], np.float32), height=height, width=width, steps=steps, latent=latent
    )


def codec_for_stream(facts: _bs.StreamInfo, codec=None) -> Codec:
    """The codec that decodes a stream: the given one, checked against the stream's model id and channel count,
    or (``codec=None``) the bundled model with the stream's weights (legacy streams: the bundled model with their
    channel count). Raises :class:`ModelMismatchError`."""
    if codec is not None:
        codec = resolve_codec(codec)
        _check_codec(facts, codec)
        return codec
    if facts.model_id is None:  # legacy: only the channel count is known
        name = f"{facts.n_channels}c"
        if name not in _ckpt.BUNDLED:
            raise ModelMismatchError(
                f"a legacy stream of {facts.n_channels} channels: no bundled model has that many; give the codec "
                "(-m PATH) it was made with"
            )
        try:
            return resolve_codec(name)
        except _ckpt.CheckpointError as e:
            raise ModelMismatchError(
                f"a legacy stream of {facts.n_channels} channels needs the model '{name}', which cannot be loaded "
                f"({e}); give the codec it was made with (-m)"
            ) from e
    wanted, digest = facts.model_name, facts.model_digest
    order = sorted(_ckpt.BUNDLED, key=lambda k: k != wanted)  # the stream's own name first
    for name in order:
        if not (_ckpt.checkpoints_dir() / _ckpt.BUNDLED[name]).is_file():
            continue
        try:
            candidate = resolve_codec(name)
        except _ckpt.CheckpointError:
            continue
        if candidate.weights_sha256.lower().startswith(digest):
            return candidate
    raise ModelMismatchError(
        f"the stream was made with model '{wanted}' (weights {digest[:12]}...), which is not among the bundled "
        "models; give its checkpoint (-m PATH / codec=...)"
    )


def _check_codec(facts: _bs.StreamInfo, codec: Codec) -> None:
    if facts.model_id is not None and not codec.weights_sha256.lower().startswith(facts.model_digest):
        raise ModelMismatchError(
            f"the stream was made with model '{facts.model_name}' (weights {facts.model_digest[:12]}...), not with "
            f"'{codec.name}' (weights {codec.weights_sha256[:12]}...); decoding it with other weights would give "
            "a wrong image"
        )
    if facts.n_channels != codec.n_features:
        raise ModelMismatchError(
            f"the stream has {facts.n_channels} channels, the model '{codec.name}' has {codec.n_features}"
        )


def decompress_with_info(data, codec=None, *, threads: int = 0) -> tuple[np.ndarray, _bs.Unpacked]:
    """:func:`decompress`, also returning the unpacked stream (header facts and indices)."""
    facts = _bs.info(data)
    codec = codec_for_stream(facts, codec)
    unpacked = _bs.unpack(data, threads=threads)
    if unpacked.indices.size and int(unpacked.indices.max()) >= codec.codebook.size:
        raise CorruptStreamError(
            f"the stream holds index {int(unpacked.indices.max())}, beyond the model's {codec.codebook.size}-entry "
            "codebook"
        )
    h, w = unpacked.indices.shape[:2]
    if 64 * h * w > TILE_ABOVE_PIXELS:
        image = _tiling.decode_indices_tiled(codec, unpacked.indices)
    else:
        image = np.asarray(codec.decode_indices(unpacked.indices[None]))[0]
    return np.array(image[: unpacked.height, : unpacked.width]), unpacked  # a writable, cropped copy


def decompress(data, codec=None, *, threads: int = 0) -> np.ndarray:
    """A stream (either format) to the image, float32 HxWx3 in [0, 1], cropped to the original size.

    ``codec``: ``None`` finds the model from the stream's id among the bundled models (a legacy stream, which
    has no id, takes the bundled model with its channel count); a given :class:`Codec`, name or path is checked
    against the id. Raises :class:`CorruptStreamError` for a damaged stream and :class:`ModelMismatchError`
    for a model that does not match.
    """
    return decompress_with_info(data, codec, threads=threads)[0]


# -- batches -------------------------------------------------------------------------------------------------------
#: At most this many images go into one device call of the batch API (bounds the activations' memory).
MAX_BATCH = 16


def _chunks(items: list, size: int):
    for k in range(0, len(items), size):
        yield items[k : k + size]


def _pipelined(jobs, launch, finish) -> None:
    """``finish(job, launch(job))`` for each job, launching job k+1 before finishing job k.

    JAX dispatches asynchronously, so the device works on the next batch while this thread entropy-codes (or
    crops) the previous one; the FSE extension releases the GIL.
    """
    pending = None
    for job in jobs:
        handle = (job, launch(job))
        if pending is not None:
            finish(*pending)
        pending = handle
    if pending is not None:
        finish(*pending)


def compress_batch(
    images, codec=None, *, legacy: bool = False, threads: int = 0, max_batch: int = MAX_BATCH, refine: int = 0
) -> list[bytes]:
    """:func:`compress` of many images; item ``i`` is byte-identical to ``compress(images[i], codec, ...)``.

    Images of the same size are stacked into one device call (at most ``max_batch`` per call); different sizes
    are grouped, and images above :data:`TILE_ABOVE_PIXELS` are coded tile by tile, one at a time. The entropy
    coding of one batch overlaps the device work on the next. With ``refine`` each image is searched on its
    own (the search's objective is per image), one after the other.
    """
    codec = resolve_codec(codec)
    if int(max_batch) < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    images = list(images)
    if refine:
        return [compress(image, codec, legacy=legacy, threads=threads, refine=refine) for image in images]
    out: list = [None] * len(images)
    groups: dict[tuple, list] = {}
    for i, image in enumerate(images):
        x = as_image_batch(image)
        if x.shape[0] != 1:
            raise ValueError(f"compress_batch takes HxWx3 images, item {i} is a batch of {x.shape[0]}")
        padded = x if legacy else pad_to_multiple(x)[0]
        if not legacy and padded.shape[1] * padded.shape[2] > TILE_ABOVE_PIXELS:
            out[i] = compress(image, codec, threads=threads)
            continue
        groups.setdefault(tuple(padded.shape), []).append((i, int(x.shape[1]), int(x.shape[2]), padded))
    jobs = [chunk for group in groups.values() for chunk in _chunks(group, int(max_batch))]
    mid = model_id(codec)

    def launch(chunk):
        stack = chunk[0][3] if len(chunk) == 1 else _concat([item[3] for item in chunk])
        return codec.encode_indices(stack)

    def finish(chunk, result):
        indices = np.asarray(result)
        for (i, height, width, _), idx in zip(chunk, indices):
            if legacy:
                out[i] = _bs.pack_legacy(idx, threads=threads)
            else:
                out[i] = _bs.pack(idx, height=height, width=width, model_id=mid, threads=threads)

    _pipelined(jobs, launch, finish)
    return out


def _concat(arrays):
    import jax.numpy as jnp

    return jnp.concatenate(arrays, axis=0)


def decompress_batch(streams, codec=None, *, threads: int = 0, max_batch: int = MAX_BATCH) -> list[np.ndarray]:
    """:func:`decompress` of many streams; item ``i`` equals ``decompress(streams[i], codec)``.

    Streams with the same model and latent size are decoded in one device call (at most ``max_batch`` per
    call). ``codec=None`` finds each stream's model from its id, as :func:`decompress` does.
    """
    if int(max_batch) < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    streams = list(streams)
    out: list = [None] * len(streams)
    groups: dict[tuple, list] = {}
    codecs: dict[int, Codec] = {}
    for i, data in enumerate(streams):
        facts = _bs.info(data)
        c = codec_for_stream(facts, codec)
        h, w = facts.latent_height, facts.latent_width
        if 64 * h * w > TILE_ABOVE_PIXELS:
            out[i] = decompress(data, c, threads=threads)
            continue
        unpacked = _bs.unpack(data, threads=threads)
        if unpacked.indices.size and int(unpacked.indices.max()) >= c.codebook.size:
            raise CorruptStreamError(
                f"stream {i} holds index {int(unpacked.indices.max())}, beyond the model's "
                f"{c.codebook.size}-entry codebook"
            )
        codecs[id(c)] = c
        groups.setdefault((id(c), h, w), []).append((i, unpacked))
    jobs = [(key[0], chunk) for key, group in groups.items() for chunk in _chunks(group, int(max_batch))]

    def launch(job):
        cid, chunk = job
        return codecs[cid].decode_indices(np.stack([u.indices for _, u in chunk]))

    def finish(job, result):
        images = np.asarray(result)
        for (i, u), image in zip(job[1], images):
            out[i] = np.array(image[: u.height, : u.width])

    _pipelined(jobs, launch, finish)
    return out
