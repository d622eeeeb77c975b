"""The bitstream layer: the legacy .l3i format (byte-exact with the original) and the checksummed container.

Exact byte comparisons only where the input is integer (STYLE 7): indices from the stored latents.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l3ic_jax import bitstream as bs

DATA = Path(__file__).parent / "data"
REFERENCES = ["kodim05", "md575e5a225f"]
MODEL_ID = "test-model:" + "0123456789abcdef" * 2


def reference_indices(name: str) -> np.ndarray:
    """Indices of a stored latent: nearest codebook entry of -15..16, ties to the lower entry."""
    z = np.load(DATA / f"{name}.latent.npy")[0]
    return (np.clip(np.ceil(z - 0.5), -15, 16) + 15).astype(np.uint8)


def laplace_indices(shape, seed=0, scale=2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.laplace(15, scale, size=shape)), 0, 31).astype(np.uint8)


# -- legacy: the original's bytes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", REFERENCES)
def test_legacy_pack_is_byte_identical_to_the_original(name):
    original = (DATA / f"{name}.l3i").read_bytes()
    assert bs.pack_legacy(reference_indices(name)) == original


@pytest.mark.parametrize("name", REFERENCES)
def test_legacy_unpack_of_the_original(name):
    original = (DATA / f"{name}.l3i").read_bytes()
    u = bs.unpack(original)
    assert u.format == bs.FORMAT_LEGACY and u.model_id is None
    assert (u.height, u.width, u.n_channels) == (512, 512, 16)
    assert u.indices.shape == (64, 64, 16) and u.indices.dtype == np.uint8
    np.testing.assert_array_equal(u.indices, reference_indices(name))
    assert sum(u.channel_sizes) + u.header_size == len(original) == u.total_size
    assert set(u.channel_modes) == {"fse"}


def test_legacy_header_as_observed():
    """README "Bitstream, as observed": sizes stored raw (L = 32), first payload starting 14 e0 07 80."""
    data = (DATA / "kodim05.l3i").read_bytes()
    assert data[:5] == bytes([64, 64, 16, 32, 0])
    facts = bs.info(data)
    assert facts.channel_sizes[:3] == (1571, 1422, 1543) and facts.header_size == 37
    assert data[37:41] == bytes.fromhex("14e00780")


@pytest.mark.parametrize(
    "shape",
    [(1, 2, 4), (2, 1, 3), (1, 3, 2), (2, 2, 5), (3, 7, 8), (64, 64, 16), (255, 255, 2), (255, 1, 3), (4, 6, 255)],
)
def test_legacy_round_trip(shape):
    idx = laplace_indices(shape, seed=sum(shape))
    if shape == (1, 3, 2):  # 3-symbol channels must be RLE here (3 raw bytes are refused, tested below)
        idx[...] = np.array([7, 9])
    idx[..., 0] = 11  # a constant channel: RLE
    data = bs.pack_legacy(idx)
    u = bs.unpack(data)
    np.testing.assert_array_equal(u.indices, idx)
    assert u.channel_modes[0] == "rle" and u.channel_sizes[0] == 3
    assert data[:3] == bytes(shape)


def test_legacy_raw_channels_and_raw_size_table():
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)  # uniform over 256 values: FSE declines
    data = bs.pack_legacy(idx)
    u = bs.unpack(data)
    assert u.channel_modes == ("raw",) * 3 and u.channel_sizes == (256,) * 3
    np.testing.assert_array_equal(u.indices, idx)


def test_legacy_size_table_fse_coded():
    """Many RLE channels make the size table compressible: L < 2C, and it still reads back."""
    idx = laplace_indices((32, 32, 64), seed=5)
    idx[..., ::2] = 3
    data = bs.pack_legacy(idx)
    (field_len,) = struct.unpack_from("<H", data, 3)
    assert field_len < 2 * 64
    np.testing.assert_array_equal(bs.unpack(data).indices, idx)


# -- legacy: limits are errors, never a wrong file ---------------------------------------------------------------
@pytest.mark.parametrize("shape", [(256, 2, 4), (2, 256, 4), (300, 300, 1)])
def test_legacy_side_above_255(shape):
    with pytest.raises(bs.LegacyFormatError, match="255.*container"):
        bs.pack_legacy(np.zeros(shape, np.uint8))


def test_legacy_1x1_latent():
    with pytest.raises(bs.LegacyFormatError, match="1x1"):
        bs.pack_legacy(np.zeros((1, 1, 16), np.uint8))


@pytest.mark.parametrize("shape", [(1, 3), (3, 1)])
def test_legacy_3_raw_bytes_would_read_as_rle(shape):
    idx = np.zeros(shape + (2,), np.uint8)
    idx[..., 1] = np.arange(3).reshape(shape)  # 3 distinct symbols: FSE declines, raw would be 3 bytes
    with pytest.raises(bs.LegacyFormatError, match="RLE"):
        bs.pack_legacy(idx)


def test_legacy_more_than_255_channels():
    with pytest.raises(bs.LegacyFormatError, match="channels"):
        bs.pack_legacy(np.zeros((2, 2, 256), np.uint8))


def test_legacy_channel_above_65535_bytes(monkeypatch):
    """Not reachable with sides <= 255 (a channel holds at most 65025 bytes), so the coder is stubbed."""

    def fake(channels, *, legacy, threads):
        return [(bs.MODE_FSE, bytes(70000)) for _ in channels]

    monkeypatch.setattr(bs, "_code_channels", fake)
    with pytest.raises(bs.LegacyFormatError, match="65535"):
        bs.pack_legacy(np.zeros((4, 4, 2), np.uint8))


def test_legacy_errors_are_bitstream_errors():
    assert issubclass(bs.LegacyFormatError, bs.BitstreamError)
    assert issubclass(bs.BitstreamError, ValueError)


# -- the container -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(1, 1), (7, 13), (8, 8), (2041, 9), (9, 2041), (3000, 2000)])
def test_container_round_trip(size):
    height, width = size
    h, w = bs.latent_size(height, width)
    idx = laplace_indices((h, w, 8), seed=height + width)
    idx[..., 2] = 30
    data = bs.pack(idx, height=height, width=width, model_id=MODEL_ID)
    assert data[:8] == bs.MAGIC
    u = bs.unpack(data)
    np.testing.assert_array_equal(u.indices, idx)
    assert (u.format, u.model_id, u.height, u.width) == (bs.FORMAT_CONTAINER, MODEL_ID, height, width)
    assert (u.latent_height, u.latent_width, u.n_channels) == (h, w, 8)
    assert u.model_name == "test-model" and u.model_digest == "0123456789abcdef" * 2
    assert u.channel_modes[2] == ("raw" if h * w == 1 else "rle") and u.channel_sizes[2] == 1
    assert u.header_size + sum(u.channel_sizes) == len(data) == u.total_size
    assert bs.info(data) == bs.StreamInfo(**{k: getattr(u, k) for k in bs.StreamInfo.__dataclass_fields__})


def test_container_modes_are_explicit():
    rng = np.random.default_rng(1)
    idx = np.stack(
        [
            np.full((8, 8), 5, np.uint8),  # RLE
            rng.integers(0, 256, (8, 8), dtype=np.uint8),  # raw: FSE declines
            laplace_indices((8, 8, 1), scale=0.3)[..., 0],  # FSE
        ],
        axis=-1,
    )
    data = bs.pack(idx, height=64, width=60, model_id=MODEL_ID)
    u = bs.unpack(data)
    assert u.channel_modes == ("rle", "raw", "fse")
    assert u.channel_sizes[:2] == (1, 64)
    np.testing.assert_array_equal(u.indices, idx)


def test_container_1x2_and_1x3_latents_have_no_ambiguity():
    for shape in [(1, 2), (1, 3), (3, 1)]:
        idx = np.zeros(shape + (3,), np.uint8)
        idx[..., 1] = np.arange(np.prod(shape)).reshape(shape)
        idx[..., 2] = 31
        data = bs.pack(idx, height=8 * shape[0], width=8 * shape[1] - 3, model_id=MODEL_ID)
        np.testing.assert_array_equal(bs.unpack(data).indices, idx)


def test_container_large_latent_random_symbols():
    """The bitstream layer at the latent size of a 3000x2000 image, 32 channels of random indices."""
    idx = laplace_indices((375, 250, 32), seed=9, scale=3.0)
    data = bs.pack(idx, height=3000, width=2000, model_id=MODEL_ID)
    np.testing.assert_array_equal(bs.unpack(data).indices, idx)


def test_container_model_id_unicode_name():
    mid = "modèle-δ:" + "ab" * 32  # a full sha256: cut to its first 16 bytes
    data = bs.pack(np.zeros((1, 1, 1), np.uint8), height=1, width=1, model_id=mid)
    assert bs.info(data).model_id == "modèle-δ:" + "ab" * 16


@pytest.mark.parametrize("bad", ["nocolon", "x:abc", "x:" + "g" * 32, "x" * 300 + ":" + "a" * 32])
def test_container_rejects_bad_model_ids(bad):
    with pytest.raises(ValueError):
        bs.pack(np.zeros((1, 1, 1), np.uint8), height=1, width=1, model_id=bad)


def test_container_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="latent"):
        bs.pack(np.zeros((2, 2, 1), np.uint8), height=8, width=16, model_id=MODEL_ID)
    with pytest.raises(TypeError):
        bs.pack(np.zeros((1, 1, 1), np.int32), height=8, width=8, model_id=MODEL_ID)


def test_container_golden_bytes():
    """The example of docs/format.md, byte for byte (framing only: both channels are raw)."""
    idx = np.array([[[0, 31]]], np.uint8)
    data = bs.pack(idx, height=5, width=3, model_id="32c:00112233445566778899aabbccddeeff")
    assert data.hex() == (
        "894c33490d0a1a0a0100033332630011" "2233445566778899aabbccddeeff0500"
        "00000300000002000001000000" "8def02d2" "000100000078e20a5f" "4eb53c95" "001f"
    )
    assert zlib.crc32(b"123456789") == 0xCBF43926


def test_magic_is_never_a_valid_legacy_stream():
    """Read as legacy, the magic announces 51 channels and a size table longer than 2 * 51 bytes."""
    h, w, c, field_len = struct.unpack_from("<BBBH", bs.MAGIC)
    assert field_len > 2 * c


# -- random access ---------------------------------------------------------------------------------------------
def _stream(seed=0, shape=(9, 14, 12)):
    idx = laplace_indices(shape, seed=seed)
    idx[..., 4] = 2
    data = bs.pack(idx, height=8 * shape[0] - 5, width=8 * shape[1], model_id=MODEL_ID)
    return idx, data


@pytest.mark.parametrize("channels", [[0], [11, 3], [4], [2, 2, 7], list(range(12))[::-1]])
def test_channel_subset_equals_slice_of_full(channels):
    idx, data = _stream()
    full = bs.unpack(data)
    part = bs.unpack(data, channels=channels)
    np.testing.assert_array_equal(part.indices, full.indices[..., channels])
    assert part.channels == tuple(channels) and part.indices.shape == idx.shape[:2] + (len(channels),)


def test_channel_subset_does_not_read_other_channels():
    idx, data = _stream()
    facts = bs.info(data)
    start = facts.header_size + sum(facts.channel_sizes[:5])
    damaged = bytearray(data)
    for k in range(facts.channel_sizes[5]):  # wipe channel 5's payload
        damaged[start + k] ^= 0xFF
    damaged = bytes(damaged)
    for c in [0, 4, 6, 11]:
        np.testing.assert_array_equal(bs.unpack(damaged, channels=[c]).indices[..., 0], idx[..., c])
    with pytest.raises(bs.CorruptStreamError, match="channel 5"):
        bs.unpack(damaged, channels=[0, 5])
    with pytest.raises(bs.CorruptStreamError):
        bs.unpack(damaged)


def test_channel_subset_out_of_range():
    _, data = _stream()
    with pytest.raises(IndexError):
        bs.unpack(data, channels=[12])


def test_legacy_channel_subset():
    data = (DATA / "kodim05.l3i").read_bytes()
    np.testing.assert_array_equal(bs.unpack(data, channels=[15, 0]).indices, reference_indices("kodim05")[..., [15, 0]])


# -- corruption: always the documented error -----------------------------------------------------------------------
def _small_stream():
    idx = laplace_indices((3, 5, 6), seed=4)
    idx[..., 1] = 9
    idx[..., 2] = np.random.default_rng(0).integers(0, 256, (3, 5))
    return idx, bs.pack(idx, height=20, width=33, model_id=MODEL_ID)


def test_every_truncation_is_detected():
    _, data = _small_stream()
    for n in range(len(data)):
        with pytest.raises(bs.CorruptStreamError):
            bs.unpack(data[:n])
        with pytest.raises(bs.CorruptStreamError):
            bs.info(data[:n])


def test_trailing_bytes_are_detected():
    _, data = _small_stream()
    with pytest.raises(bs.CorruptStreamError, match="trailing"):
        bs.unpack(data + b"\0")


def test_random_bit_flips_are_detected():
    idx, data = _small_stream()
    rng = np.random.default_rng(2024)
    positions = rng.integers(0, 8 * len(data), size=1000)
    for p in positions:
        damaged = bytearray(data)
        damaged[p // 8] ^= 1 << (p % 8)
        with pytest.raises(bs.CorruptStreamError):
            bs.unpack(bytes(damaged))
    for _ in range(200):  # several flips at once
        damaged = bytearray(data)
        for p in rng.integers(0, 8 * len(data), size=rng.integers(2, 9)):
            damaged[p // 8] ^= 1 << (p % 8)
        if bytes(damaged) != data:
            with pytest.raises(bs.CorruptStreamError):
                bs.unpack(bytes(damaged))


def test_every_single_bit_flip_of_a_small_stream():
    idx = laplace_indices((1, 2, 2), seed=1)
    data = bs.pack(idx, height=5, width=16, model_id="m:" + "ff" * 16)
    for p in range(8 * len(data)):
        damaged = bytearray(data)
        damaged[p // 8] ^= 1 << (p % 8)
        with pytest.raises(bs.CorruptStreamError):
            bs.unpack(bytes(damaged))


def test_a_crafted_stream_with_valid_crcs_is_still_checked():
    """Fields are validated after the header CRC: a self-consistent stream that lies is refused."""
    idx = np.zeros((1, 1, 1), np.uint8)
    data = bytearray(bs.pack(idx, height=1, width=1, model_id=MODEL_ID))
    mode_at = len(data) - 1 - 4 - 9  # the only channel entry
    data[mode_at] = 7  # unknown mode
    header = bytes(data[: len(data) - 1 - 4])
    data[len(data) - 1 - 4 : len(data) - 1] = struct.pack("<I", zlib.crc32(header))
    with pytest.raises(bs.CorruptStreamError, match="mode"):
        bs.unpack(bytes(data))


def test_unknown_version():
    _, data = _small_stream()
    with pytest.raises(bs.UnsupportedVersionError, match="version 9"):
        bs.unpack(data[:8] + bytes([9]) + data[9:])
    assert issubclass(bs.UnsupportedVersionError, bs.CorruptStreamError)


@pytest.mark.parametrize("blob", [b"", b"\x00", b"\x01\x01\x01\x02\x00\x00\x00", b"hello world", bytes(range(256))])
def test_garbage_is_not_a_stream(blob):
    with pytest.raises(bs.CorruptStreamError):
        bs.unpack(blob)


def test_legacy_truncations_never_crash():
    """The legacy format has no checksum: a damaged file may decode to other indices, but never crashes."""
    data = (DATA / "md575e5a225f.l3i").read_bytes()
    for n in list(range(0, 64)) + list(range(64, len(data), 97)):
        with pytest.raises(bs.CorruptStreamError):
            bs.unpack(data[:n])
    rng = np.random.default_rng(7)
    for p in rng.integers(0, 8 * len(data), size=200):
        damaged = bytearray(data)
        damaged[p // 8] ^= 1 << (p % 8)
        try:
            u = bs.unpack(bytes(damaged))
        except bs.CorruptStreamError:
            continue
        assert u.indices.dtype == np.uint8 and u.indices.shape[-1] == u.n_channels


# -- properties ----------------------------------------------------------------------------------------------------
def _channel(kind: str, h: int, w: int, rng) -> np.ndarray:
    if kind == "constant":
        return np.full((h, w), rng.integers(0, 32), np.uint8)
    if kind == "two":
        return rng.choice(np.array([3, 17], np.uint8), size=(h, w), p=[0.9, 0.1])
    if kind == "uniform256":
        return rng.integers(0, 256, (h, w), dtype=np.uint8)
    return laplace_indices((h, w), seed=int(rng.integers(1 << 30)), scale=float(rng.uniform(0.3, 4)))


@settings(max_examples=80, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    kinds=st.lists(st.sampled_from(["constant", "two", "uniform256", "laplace"]), min_size=1, max_size=6),
    seed=st.integers(0, 2**32 - 1),
    trim=st.tuples(st.integers(0, 7), st.integers(0, 7)),
)
def test_both_formats_round_trip_any_content(h, w, kinds, seed, trim):
    rng = np.random.default_rng(seed)
    idx = np.stack([_channel(k, h, w, rng) for k in kinds], axis=-1)
    height, width = 8 * h - trim[0], 8 * w - trim[1]
    u = bs.unpack(bs.pack(idx, height=height, width=width, model_id=MODEL_ID))
    np.testing.assert_array_equal(u.indices, idx)
    assert (u.height, u.width) == (height, width)

    ambiguous = h * w == 3 and any(len(np.unique(idx[..., c])) > 1 for c in range(idx.shape[-1]))
    if h * w == 1 or ambiguous:
        with pytest.raises(bs.LegacyFormatError):
            bs.pack_legacy(idx)
    else:
        legacy = bs.unpack(bs.pack_legacy(idx))
        np.testing.assert_array_equal(legacy.indices, idx)
        assert (legacy.height, legacy.width) == (8 * h, 8 * w)


@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=300), container=st.booleans())
def test_arbitrary_bytes_never_crash(blob, container):
    data = bs.MAGIC + blob if container else blob
    try:
        u = bs.unpack(data)
    except bs.CorruptStreamError:
        return
    assert not container  # without a valid CRC a container never decodes
    assert u.indices.dtype == np.uint8 and u.indices.shape == (u.latent_height, u.latent_width, u.n_channels)
