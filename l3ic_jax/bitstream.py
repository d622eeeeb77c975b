"""Bytes on disk: the original ``.l3i`` format (legacy) and the l3ic-jax container (the default).

Both carry the latent's codebook indices, one channel at a time (uint8, row-major h x w), each entropy-coded with
FSE (:mod:`l3ic_jax.fse`), or stored as one repeated symbol (RLE) or raw bytes when FSE declines. The channels are
coded in parallel (the batch calls of the FSE extension). ``docs/format.md`` documents both layouts byte by byte.

- **Container** (:func:`pack`): magic, version, model id (codec name + the first 16 bytes of its weights'
  SHA-256), the original image height and width (32-bit, any size from 1x1), a per-channel table (mode, 32-bit
  size, CRC-32 of the payload) and a CRC-32 of the whole header. A subset of channels decodes without reading the
  others (:func:`unpack` with ``channels=[...]``), and every byte is covered by a checksum, so corruption is a
  :class:`CorruptStreamError`, never a wrong image.
- **Legacy** (:func:`pack_legacy`): the original codec's format, byte-identical to it for the same indices. It
  has no magic, size, model id or checksum; its limits (latent side <= 255, a 1x1 latent, channels of 65535 bytes
  or more, 3-byte raw channels the original reader takes for RLE) are :class:`LegacyFormatError`.

:func:`unpack` and :func:`info` detect the format from the first bytes (the container's magic cannot start a
valid legacy stream).
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import Sequence

import numpy as np

__all__ = [
    "MAGIC",
    "VERSION",
    "FORMAT_CONTAINER",
    "FORMAT_LEGACY",
    "MODE_RAW",
    "MODE_RLE",
    "MODE_FSE",
    "STRIDE",
    "BitstreamError",
    "CorruptStreamError",
    "UnsupportedVersionError",
    "LegacyFormatError",
    "ModelMismatchError",
    "StreamInfo",
    "Unpacked",
    "pack",
    "pack_legacy",
    "unpack",
    "info",
    "is_container",
    "make_model_id",
    "parse_model_id",
]

#: First 8 bytes of a container stream (PNG-style: a high-bit byte, CR LF, ^Z, LF catch text-mode mangling).
#: Read as legacy, it would announce 51 channels and a size field of 3401 bytes > 2 * 51: never a valid legacy
#: stream, so the two formats cannot be confused.
MAGIC = b"\x89L3I\r\n\x1a\n"
VERSION = 1
STRIDE = 8  # image pixels per latent position, per axis

FORMAT_CONTAINER = "l3ic-jax/1"
FORMAT_LEGACY = "legacy"

#: Channel coding modes of the container (legacy streams tell them apart by length, see ``docs/format.md``).
MODE_RAW, MODE_RLE, MODE_FSE = 0, 1, 2
MODE_NAMES = {MODE_RAW: "raw", MODE_RLE: "rle", MODE_FSE: "fse"}

DIGEST_BYTES = 16  # model id: this many leading bytes of the weights' SHA-256
MAX_NAME_BYTES = 255
MAX_CHANNELS = 65535
#: Refuse to allocate more than this many index bytes for one stream (a header could announce anything).
MAX_INDEX_BYTES = 1 << 32

_FIXED = struct.Struct("<8sBBB")  # magic, version, flags, name length
_SIZE = struct.Struct("<IIH")  # height, width, channels
_ENTRY = struct.Struct("<BII")  # mode, size, crc32
_CRC = struct.Struct("<I")

LEGACY_MAX_SIDE = 255
LEGACY_MAX_CHANNELS = 255
LEGACY_MAX_CHANNEL_BYTES = 65535

_ADVICE = "the default l3ic-jax container has no such limit (write without legacy=True / --legacy)"


# -- errors ------------------------------------------------------------------------------------------------------
class BitstreamError(ValueError):
    """Base of every error of this module."""


class CorruptStreamError(BitstreamError):
    """The bytes are not a valid stream: truncated, altered (checksum mismatch), inconsistent, or not l3i at all."""


class UnsupportedVersionError(CorruptStreamError):
    """A container of a format version this library does not read (a newer file, or a corrupted version byte)."""


class LegacyFormatError(BitstreamError):
    """These indices cannot be written in the legacy format without producing a wrong or undecodable file."""


class ModelMismatchError(BitstreamError):
    """The stream was made with other weights than the codec given to decode it (or none is available)."""


# -- header facts --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StreamInfo:
    """What a stream's header says, read without decoding any channel.

    ``height`` and ``width`` are the image size the stream decodes to: the original size for the container, the
    padded size ``8 * latent`` for legacy streams, which do not store it. ``model_id`` is ``"name:hexdigest"``
    (None for legacy streams). ``channel_sizes`` and ``channel_modes`` describe every channel's payload.
    """

    format: str
    model_id: str | None
    height: int
    width: int
    latent_height: int
    latent_width: int
    n_channels: int
    channel_sizes: tuple[int, ...]
    channel_modes: tuple[str, ...]
    header_size: int
    total_size: int

    @property
    def model_name(self) -> str | None:
        return None if self.model_id is None else parse_model_id(self.model_id)[0]

    @property
    def model_digest(self) -> str | None:
        """Hex prefix of the weights' SHA-256 (32 hex digits), or None for legacy streams."""
        return None if self.model_id is None else parse_model_id(self.model_id)[1]

    @property
    def bpp(self) -> float:
        """Bits per pixel of the whole stream, over the image size it decodes to."""
        return 8.0 * self.total_size / (self.height * self.width)


@dataclasses.dataclass(frozen=True)
class Unpacked(StreamInfo):
    """:class:`StreamInfo` plus the decoded ``indices`` (uint8, (h, w, len(channels))) and which ``channels``."""

    indices: np.ndarray = dataclasses.field(default=None, repr=False)
    channels: tuple[int, ...] = ()


# -- model ids -----------------------------------------------------------------------------------------------------
def make_model_id(name: str, weights_sha256: str) -> str:
    """``"name:hex"``: the codec name and the first 16 bytes (32 hex digits) of its weights' SHA-256."""
    return f"{name}:{str(weights_sha256).lower()[: 2 * DIGEST_BYTES]}"


def parse_model_id(model_id: str) -> tuple[str, str]:
    """``(name, 32 hex digits)`` of a model id; a longer digest is cut to its first 16 bytes."""
    if not isinstance(model_id, str) or ":" not in model_id:
        raise ValueError(f"a model id is 'name:sha256hex', got {model_id!r}")
    name, _, digest = model_id.rpartition(":")
    digest = digest.lower()
    if len(digest) < 2 * DIGEST_BYTES or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"the model id's digest must be at least {2 * DIGEST_BYTES} hex digits, got {digest!r}")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(f"the model name is longer than {MAX_NAME_BYTES} bytes in UTF-8")
    return name, digest[: 2 * DIGEST_BYTES]


# -- entropy coding of channels (the FSE extension's batch calls) -----------------------------------------------------
def _fse():
    try:
        from . import fse
    except ImportError as e:  # pragma: no cover - depends on the build
        raise ImportError(
            "the FSE entropy coder (l3ic_jax.fse, a C extension) is not built; run `pip install -e .` "
            f"in the repository ({e})"
        ) from e
    return fse


def _code_channels(channels: Sequence[memoryview], *, legacy: bool, threads: int) -> list[tuple[int, bytes]]:
    """(mode, payload) of each channel: FSE, or RLE when it is one repeated byte, or raw when FSE declines.

    The RLE payload is the symbol alone (the legacy writer adds its count).
    """
    fse = _fse()
    results = fse.compress_batch(list(channels), legacy=legacy, threads=threads)
    out = []
    for buf, res in zip(channels, results):
        if isinstance(res, (bytes, bytearray, memoryview)):
            out.append((MODE_FSE, bytes(res)))
        elif isinstance(res, fse.SymbolRepetitionError):
            out.append((MODE_RLE, bytes(buf[:1])))
        elif isinstance(res, fse.NotCompressibleError):
            out.append((MODE_RAW, bytes(buf)))
        elif isinstance(res, BaseException):
            raise res
        else:  # pragma: no cover - defensive
            raise TypeError(f"unexpected result from fse.compress_batch: {type(res).__name__}")
    return out


def _decode_fse(payloads: Sequence, n: int, threads: int) -> list:
    """FSE-decode payloads of n bytes each; each item is bytes or the FSEError it raised."""
    if not payloads:
        return []
    fse = _fse()
    return list(fse.decompress_batch(list(payloads), [n] * len(payloads), threads=threads))


def _channel_major(indices) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 3:
        raise ValueError(f"indices must be (h, w, C), got shape {idx.shape}")
    if idx.dtype != np.uint8:
        raise TypeError(f"indices must be uint8, got {idx.dtype}")
    if min(idx.shape) < 1:
        raise ValueError(f"indices must not be empty, got shape {idx.shape}")
    return np.ascontiguousarray(np.moveaxis(idx, 2, 0))  # (C, h, w): each channel row-major, contiguous


# -- the container -----------------------------------------------------------------------------------------------------
def latent_size(height: int, width: int) -> tuple[int, int]:
    """Latent (h, w) of an image: ``ceil(H / 8), ceil(W / 8)``."""
    return -(-int(height) // STRIDE), -(-int(width) // STRIDE)


def pack(indices, *, height: int, width: int, model_id: str, threads: int = 0) -> bytes:
    """The container stream of (h, w, C) uint8 indices of an image of ``height`` x ``width`` pixels.

    ``(h, w)`` must be ``(ceil(height / 8), ceil(width / 8))``. ``model_id`` is ``"name:sha256hex"``
    (:func:`make_model_id`). ``threads`` goes to the FSE batch coder (0: one per core).
    """
    chans = _channel_major(indices)
    n_ch, h, w = chans.shape
    height, width = int(height), int(width)
    if not (1 <= height < 2**32 and 1 <= width < 2**32):
        raise ValueError(f"image size must be 1 .. 2**32-1 per side, got {height}x{width}")
    if (h, w) != latent_size(height, width):
        raise ValueError(
            f"indices of latent size {h}x{w} do not belong to a {height}x{width} image "
            f"(expected {latent_size(height, width)})"
        )
    if n_ch > MAX_CHANNELS:
        raise ValueError(f"at most {MAX_CHANNELS} channels, got {n_ch}")
    name, digest = parse_model_id(model_id)
    name_b = name.encode("utf-8")
    flat = chans.reshape(n_ch, h * w)
    coded = _code_channels([memoryview(row) for row in flat], legacy=False, threads=threads)

    parts = [_FIXED.pack(MAGIC, VERSION, 0, len(name_b)), name_b, bytes.fromhex(digest), _SIZE.pack(height, width, n_ch)]
    for mode, payload in coded:
        if len(payload) >= 2**32:
            raise ValueError("a channel of 4 GiB or more does not fit the container")
        parts.append(_ENTRY.pack(mode, len(payload), zlib.crc32(payload)))
    header = b"".join(parts)
    header += _CRC.pack(zlib.crc32(header))
    return b"".join([header] + [payload for _, payload in coded])


def is_container(data) -> bool:
    """True if the bytes start with the container's magic."""
    return bytes(data[: len(MAGIC)]) == MAGIC


def _parse_container(data: memoryview) -> tuple[StreamInfo, list[tuple[int, int, int, int]]]:
    """Header facts and, per channel, (mode, offset, size, crc32). Verifies the header CRC and all sizes."""
    n = len(data)
    if n < _FIXED.size:
        raise CorruptStreamError(f"truncated stream: {n} bytes, shorter than the container's fixed header")
    magic, version, flags, name_len = _FIXED.unpack_from(data, 0)
    if version != VERSION:
        raise UnsupportedVersionError(
            f"container format version {version} is not supported (this library reads version {VERSION}); "
            "the file is newer than this library, or corrupt"
        )
    pos = _FIXED.size + name_len + DIGEST_BYTES + _SIZE.size
    if n < pos:
        raise CorruptStreamError(f"truncated stream: {n} bytes, the header alone needs at least {pos + _CRC.size}")
    height, width, n_ch = _SIZE.unpack_from(data, pos - _SIZE.size)
    header_size = pos + n_ch * _ENTRY.size + _CRC.size
    if n < header_size:
        raise CorruptStreamError(f"truncated stream: {n} bytes, the header announces {header_size} header bytes")
    (stored_crc,) = _CRC.unpack_from(data, header_size - _CRC.size)
    if zlib.crc32(data[: header_size - _CRC.size]) != stored_crc:
        raise CorruptStreamError("header checksum mismatch: the stream is corrupt")
    # From here the header is intact; what remains wrong is a stream not written by this format's rules.
    if flags != 0:
        raise CorruptStreamError(f"unknown header flags 0x{flags:02x}")
    name_b = bytes(data[_FIXED.size : _FIXED.size + name_len])
    digest = bytes(data[_FIXED.size + name_len : _FIXED.size + name_len + DIGEST_BYTES]).hex()
    try:
        name = name_b.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorruptStreamError("the model name is not valid UTF-8") from e
    if height < 1 or width < 1 or n_ch < 1:
        raise CorruptStreamError(f"invalid header: image {height}x{width}, {n_ch} channels")
    h, w = latent_size(height, width)
    if h * w * n_ch > MAX_INDEX_BYTES:
        raise CorruptStreamError(f"image {height}x{width} with {n_ch} channels is beyond this decoder's limits")
    entries = []
    offset = header_size
    for c in range(n_ch):
        mode, size, crc = _ENTRY.unpack_from(data, pos + c * _ENTRY.size)
        expected = {MODE_RAW: h * w, MODE_RLE: 1}.get(mode)
        if mode not in MODE_NAMES:
            raise CorruptStreamError(f"channel {c}: unknown coding mode {mode}")
        if (expected is not None and size != expected) or (mode == MODE_FSE and size < 1):
            raise CorruptStreamError(f"channel {c}: a {MODE_NAMES[mode]} payload of {size} bytes is invalid")
        entries.append((mode, offset, size, crc))
        offset += size
    if n != offset:
        what = "truncated stream" if n < offset else "trailing bytes after the stream"
        raise CorruptStreamError(f"{what}: {n} bytes, the header announces {offset}")
    facts = StreamInfo(
        format=FORMAT_CONTAINER,
        model_id=f"{name}:{digest}",
        height=height,
        width=width,
        latent_height=h,
        latent_width=w,
        n_channels=n_ch,
        channel_sizes=tuple(e[2] for e in entries),
        channel_modes=tuple(MODE_NAMES[e[0]] for e in entries),
        header_size=header_size,
        total_size=n,
    )
    return facts, entries


def _unpack_container(data: memoryview, channels: list[int] | None, threads: int) -> Unpacked:
    facts, entries = _parse_container(data)
    chans = _select(channels, facts.n_channels)
    n = facts.latent_height * facts.latent_width
    out = np.empty((len(chans), n), dtype=np.uint8)
    fse_jobs = []
    for k, c in enumerate(chans):
        mode, offset, size, crc = entries[c]
        payload = data[offset : offset + size]
        if zlib.crc32(payload) != crc:
            raise CorruptStreamError(f"channel {c}: checksum mismatch: the stream is corrupt")
        if mode == MODE_RAW:
            out[k] = np.frombuffer(payload, dtype=np.uint8)
        elif mode == MODE_RLE:
            out[k] = payload[0]
        else:
            fse_jobs.append((k, c, payload))
    _fill_fse(out, fse_jobs, n, threads)
    return _unpacked(facts, out, chans)


def _fill_fse(out: np.ndarray, jobs, n: int, threads: int) -> None:
    decoded = _decode_fse([p for _, _, p in jobs], n, threads)
    for (k, c, _), res in zip(jobs, decoded):
        if isinstance(res, BaseException):
            raise CorruptStreamError(f"channel {c}: the FSE payload does not decode ({res})") from res
        if len(res) != n:
            raise CorruptStreamError(f"channel {c}: decodes to {len(res)} symbols, expected {n}")
        out[k] = np.frombuffer(res, dtype=np.uint8)


def _select(channels, n_ch: int) -> list[int]:
    if channels is None:
        return list(range(n_ch))
    chans = [int(c) for c in np.atleast_1d(np.asarray(channels)).ravel()] if not isinstance(channels, int) else [channels]
    for c in chans:
        if not 0 <= c < n_ch:
            raise IndexError(f"channel {c} out of range: the stream has {n_ch} channels")
    return chans


def _unpacked(facts: StreamInfo, flat: np.ndarray, chans: list[int]) -> Unpacked:
    h, w = facts.latent_height, facts.latent_width
    indices = np.ascontiguousarray(flat.reshape(len(chans), h, w).transpose(1, 2, 0))
    return Unpacked(**dataclasses.asdict(facts), indices=indices, channels=tuple(chans))


# -- the legacy format ----------------------------------------------------------------------------------------------
_LEGACY_HEAD = struct.Struct("<BBBH")  # latent height, width, channels; L


def pack_legacy(indices, *, threads: int = 0) -> bytes:
    """The original codec's ``.l3i`` stream of (h, w, C) uint8 indices, byte-identical to the original.

    Raises :class:`LegacyFormatError` where the format cannot hold the latent or the original reader would
    misread the stream: a side above 255, more than 255 channels, a 1x1 latent, a channel payload above 65535
    bytes, or a 3-byte raw channel (which the original reader takes for RLE).
    """
    chans = _channel_major(indices)
    n_ch, h, w = chans.shape
    if h > LEGACY_MAX_SIDE or w > LEGACY_MAX_SIDE:
        raise LegacyFormatError(
            f"a latent of {h}x{w} does not fit the legacy format (at most {LEGACY_MAX_SIDE} per side, i.e. images "
            f"up to {LEGACY_MAX_SIDE * STRIDE} px); {_ADVICE}"
        )
    if n_ch > LEGACY_MAX_CHANNELS:
        raise LegacyFormatError(f"{n_ch} channels do not fit the legacy format (at most 255); {_ADVICE}")
    if h * w == 1:
        raise LegacyFormatError(
            f"a 1x1 latent (an image of at most 8x8 px) cannot be written in the legacy format (the original codec "
            f"fails on it); {_ADVICE}"
        )
    flat = chans.reshape(n_ch, h * w)
    coded = _code_channels([memoryview(row) for row in flat], legacy=True, threads=threads)
    payloads = []
    for c, (mode, payload) in enumerate(coded):
        if mode == MODE_RLE:
            payload = struct.pack("<HB", h * w, payload[0])
        elif mode == MODE_RAW and h * w == 3:
            raise LegacyFormatError(
                f"channel {c} of a {h}x{w} latent would be stored as 3 raw bytes, which the original reader "
                f"mistakes for RLE; {_ADVICE}"
            )
        if len(payload) > LEGACY_MAX_CHANNEL_BYTES:
            raise LegacyFormatError(
                f"channel {c} takes {len(payload)} bytes, above the legacy format's 65535-byte limit; {_ADVICE}"
            )
        payloads.append(payload)
    sizes = np.array([len(p) for p in payloads], dtype="<u2").tobytes()
    (mode, field), = _code_channels([memoryview(sizes)], legacy=True, threads=1)
    if mode != MODE_FSE:  # not compressible, or one repeated byte: stored raw, which the reader knows by L == 2C
        field = sizes
    return _LEGACY_HEAD.pack(h, w, n_ch, len(field)) + field + b"".join(payloads)


def _parse_legacy(data: memoryview) -> tuple[StreamInfo, list[tuple[int, int, int]]]:
    """Header facts and, per channel, (mode, offset, size), with the original reader's rules, checked strictly."""
    n = len(data)
    if n < _LEGACY_HEAD.size:
        raise CorruptStreamError(f"not an l3i stream: {n} bytes is too short for a header")
    h, w, n_ch, field_len = _LEGACY_HEAD.unpack_from(data, 0)
    where = "not an l3i stream (no l3ic-jax magic, and not a valid legacy stream)"
    if h < 1 or w < 1 or n_ch < 1:
        raise CorruptStreamError(f"{where}: latent {h}x{w} with {n_ch} channels")
    if not 1 <= field_len <= 2 * n_ch:
        raise CorruptStreamError(f"{where}: a channel size table of {field_len} bytes for {n_ch} channels")
    start = _LEGACY_HEAD.size + field_len
    if n < start:
        raise CorruptStreamError(f"truncated legacy stream: {n} bytes, the header needs {start}")
    field = bytes(data[_LEGACY_HEAD.size : start])
    if field_len == 2 * n_ch:
        sizes_b = field
    else:
        (res,) = _decode_fse([field], 2 * n_ch, 1)
        if isinstance(res, BaseException) or len(res) != 2 * n_ch:
            raise CorruptStreamError(f"{where}: the channel size table does not decode")
        sizes_b = res
    sizes = np.frombuffer(sizes_b, dtype="<u2").astype(np.int64)
    total = start + int(sizes.sum())
    if n != total:
        what = "truncated legacy stream" if n < total else "trailing bytes after the legacy stream"
        raise CorruptStreamError(f"{what} (or not an l3i stream): {n} bytes, the header announces {total}")
    entries = []
    offset = start
    for c, size in enumerate(sizes.tolist()):
        if size == 3:
            mode = MODE_RLE  # the original reader's rule, also when h * w == 3 (the writer never stores 3 raw bytes)
        elif size == h * w:
            mode = MODE_RAW
        elif 1 <= size < h * w:
            mode = MODE_FSE
        else:
            raise CorruptStreamError(f"{where}: channel {c} has an invalid size of {size} bytes")
        entries.append((mode, offset, size))
        offset += size
    facts = StreamInfo(
        format=FORMAT_LEGACY,
        model_id=None,
        height=h * STRIDE,
        width=w * STRIDE,
        latent_height=h,
        latent_width=w,
        n_channels=n_ch,
        channel_sizes=tuple(int(s) for s in sizes),
        channel_modes=tuple(MODE_NAMES[e[0]] for e in entries),
        header_size=start,
        total_size=n,
    )
    return facts, entries


def _unpack_legacy(data: memoryview, channels, threads: int) -> Unpacked:
    facts, entries = _parse_legacy(data)
    chans = _select(channels, facts.n_channels)
    n = facts.latent_height * facts.latent_width
    out = np.empty((len(chans), n), dtype=np.uint8)
    fse_jobs = []
    for k, c in enumerate(chans):
        mode, offset, size = entries[c]
        payload = data[offset : offset + size]
        if mode == MODE_RLE:
            count, symbol = struct.unpack("<HB", payload)
            if count != n:
                raise CorruptStreamError(f"channel {c}: an RLE run of {count} symbols, expected {n}")
            out[k] = symbol
        elif mode == MODE_RAW:
            out[k] = np.frombuffer(payload, dtype=np.uint8)
        else:
            fse_jobs.append((k, c, payload))
    _fill_fse(out, fse_jobs, n, threads)
    return _unpacked(facts, out, chans)


# -- reading, either format ------------------------------------------------------------------------------------------
def _view(data) -> memoryview:
    try:
        view = memoryview(data)
    except TypeError as e:
        raise TypeError(f"a stream must be bytes-like, got {type(data).__name__}") from e
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def unpack(data, channels: Sequence[int] | int | None = None, *, threads: int = 0) -> Unpacked:
    """Decode a stream (either format, detected) to its indices and header facts.

    ``channels``: indices of the channels to decode (default: all). Only their payloads are read and, in the
    container, checksummed, so a damaged channel does not stop the others from decoding. The result's
    ``indices`` are uint8 of shape (h, w, len(channels)).

    Raises :class:`CorruptStreamError` for anything that is not an intact stream.
    """
    view = _view(data)
    if is_container(view):
        return _unpack_container(view, channels, threads)
    return _unpack_legacy(view, channels, threads)


def info(data) -> StreamInfo:
    """Header facts of a stream (either format) without decoding its channels; the container's header CRC and
    the total size are checked."""
    view = _view(data)
    return (_parse_container if is_container(view) else _parse_legacy)(view)[0]

