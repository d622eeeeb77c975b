"""Tiled encoding and decoding: large images in bounded memory, with the same result as one whole pass.

Each tile is computed on a window that adds a margin wider than the network's receptive field, and only the
tile's own part of the result is kept, so the zeros that SAME padding puts at a window's edge never reach a kept
value. The encoder has stride-2 convolutions whose SAME padding depends on the parity of their input size
(5x5, stride 2: 1 pixel before on an even size, 2 on an odd one). Windows therefore start on multiples of 8 and
have a size congruent to the image's modulo 8, so every layer samples the same grid as the whole image does.

Receptive fields (derived from the layer table in ORIGINAL_MODEL.md §1): a latent row ``i`` depends on input rows
``8i - 38 .. 8i + 37`` at most; a decoded row depends on latent rows within 4.75 rows of its own. The margins
below round these up.
"""

from __future__ import annotations

import numpy as np

STRIDE = 8
ENCODER_MARGIN = 48  # input pixels, a multiple of 8, >= 38
DECODER_MARGIN = 6  # latent rows, >= 5
DEFAULT_TILE = 1024  # pixels per tile side: windows of ~1120 px keep the encoder under ~0.5 GB


def _encoder_spans(size: int, tile: int) -> list[tuple[int, int, int, int]]:
    """(latent_start, latent_stop, window_start, window_stop) along one axis of an image of ``size`` pixels."""
    n_latent = -(-size // STRIDE)
    step = max(1, tile // STRIDE)
    rem = size % STRIDE
    spans = []
    for a in range(0, n_latent, step):
        b = min(n_latent, a + step)
        start = max(0, STRIDE * a - ENCODER_MARGIN)
        stop = STRIDE * b + ENCODER_MARGIN + rem  # window size = size (mod 8), so SAME padding matches
        if stop >= size:
            stop = size
        spans.append((a, b, start, stop))
    return spans


def _decoder_spans(n_latent: int, tile_latent: int) -> list[tuple[int, int, int, int]]:
    """(latent_start, latent_stop, window_start, window_stop) in latent rows along one axis."""
    spans = []
    for a in range(0, n_latent, tile_latent):
        b = min(n_latent, a + tile_latent)
        spans.append((a, b, max(0, a - DECODER_MARGIN), min(n_latent, b + DECODER_MARGIN)))
    return spans


def _encode_tiles(encode, image: np.ndarray, tile: int, n_features: int, dtype) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected one HxWx3 image, got shape {image.shape}")
    if tile < STRIDE:
        raise ValueError(f"tile must be at least {STRIDE} pixels, got {tile}")
    height, width = image.shape[:2]
    out = np.empty((-(-height // STRIDE), -(-width // STRIDE), n_features), dtype)
    for ya, yb, y0, y1 in _encoder_spans(height, tile):
        for xa, xb, x0, x1 in _encoder_spans(width, tile):
            window = np.asarray(encode(image[y0:y1, x0:x1]))[0]
            oy, ox = ya - y0 // STRIDE, xa - x0 // STRIDE
            out[ya:yb, xa:xb] = window[oy : oy + yb - ya, ox : ox + xb - xa]
    return out


def encode_indices_tiled(codec, image: np.ndarray, tile: int = DEFAULT_TILE) -> np.ndarray:
    """``codec.encode_indices`` of one HxWx3 image, computed tile by tile; returns (h, w, C) uint8."""
    return _encode_tiles(codec.encode_indices, image, tile, codec.n_features, np.uint8)


def encode_tiled(codec, image: np.ndarray, tile: int = DEFAULT_TILE) -> np.ndarray:
    """``codec.encode`` (the real latent, before quantization) of one HxWx3 image, tile by tile; (h, w, C)
    float32. Encoder-side refinement (l3ic_jax.refine) starts from it."""
    return _encode_tiles(codec.encode, image, tile, codec.n_features, np.float32)


def decode_indices_tiled(codec, indices: np.ndarray, tile: int = DEFAULT_TILE) -> np.ndarray:
    """``codec.decode_indices`` of one (h, w, C) index array, tile by tile; returns (8h, 8w, 3) float32."""
    indices = np.asarray(indices)
    if indices.ndim == 4 and indices.shape[0] == 1:
        indices = indices[0]
    if indices.ndim != 3:
        raise ValueError(f"expected (h, w, C) indices, got shape {indices.shape}")
    if tile < STRIDE:
        raise ValueError(f"tile must be at least {STRIDE} pixels, got {tile}")
    h, w = indices.shape[:2]
    step = max(1, tile // STRIDE)
    out = np.empty((STRIDE * h, STRIDE * w, 3), np.float32)
    for ya, yb, y0, y1 in _decoder_spans(h, step):
        for xa, xb, x0, x1 in _decoder_spans(w, step):
            window = np.asarray(codec.decode_indices(indices[y0:y1, x0:x1]))[0]
            oy, ox = STRIDE * (ya - y0), STRIDE * (xa - x0)
            out[STRIDE * ya : STRIDE * yb, STRIDE * xa : STRIDE * xb] = window[
                oy : oy + STRIDE * (yb - ya), ox : ox + STRIDE * (xb - xa)
            ]
    return out
