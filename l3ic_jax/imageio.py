"""Reading and writing images with Pillow, for the command line.

:func:`read_image` gives 8-bit RGB whatever the file holds: the EXIF orientation is applied, grayscale, palette,
CMYK and alpha images become RGB, 16-bit and float images become 8-bit, and each such change is reported as a
one-line notice. :func:`to_uint8` rounds a float image (the original tool truncated), and :func:`encode_image`
writes one to bytes in the format of a file extension.
"""

from __future__ import annotations

import io
import os
import struct
import warnings

import numpy as np

__all__ = ["ImageReadError", "read_image", "to_uint8", "encode_image", "IMAGE_EXTENSIONS", "output_format"]

#: Extensions read as images (anything Pillow opens also works when named explicitly).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")

_MODE_NAMES = {
    "1": "1-bit",
    "L": "grayscale",
    "LA": "grayscale with alpha",
    "P": "palette",
    "PA": "palette with alpha",
    "RGBA": "RGBA",
    "RGBX": "RGBX",
    "RGBa": "RGBA",
    "La": "grayscale with alpha",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
    "LAB": "Lab",
    "HSV": "HSV",
}


class ImageReadError(ValueError):
    """A file that is not an image Pillow can read, or one that is damaged."""


def _scale16(arr: np.ndarray) -> np.ndarray:
    """16-bit samples (0..65535) to 8 bits, rounded."""
    arr = np.clip(arr.astype(np.float64), 0, 65535)
    return np.round(arr / 257.0).astype(np.uint8)


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """An image file as (H, W, 3) uint8 RGB, and the notices about what was converted.

    Raises :class:`ImageReadError` for a file that is not a readable image, and ``OSError`` (e.g.
    ``FileNotFoundError``) when the file itself cannot be opened.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    notices: list[str] = []
    with open(path, "rb") as f:  # OSError (missing file, permissions) propagates as it is
        blob = f.read()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(blob))
            n_frames = getattr(img, "n_frames", 1)
            rawmodes = [t[3] if isinstance(t[3], str) else t[3][0] for t in (img.tile or []) if len(t) > 3 and t[3]]
            img = ImageOps.exif_transpose(img)
            img.load()
    except UnidentifiedImageError as e:
        raise ImageReadError("not an image (unknown or unsupported file format)") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"image too large ({_short(e)})") from e
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise ImageReadError(f"damaged or unsupported image ({_short(e)})") from e
    if n_frames > 1:
        notices.append(f"only the first of {n_frames} frames is used")

    mode = img.mode
    try:
        if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
            gray = _scale16(np.asarray(img))
            notices.append("16-bit grayscale converted to 8-bit RGB")
            rgb = np.repeat(gray[..., None], 3, axis=-1)
        elif mode == "F":
            arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
            scale = 255.0 if arr.size and arr.max() <= 1.0 else 1.0
            rgb = np.repeat(np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
            notices.append("floating-point grayscale converted to 8-bit RGB")
        elif mode == "RGB":
            rgb = np.asarray(img)
            if any(";16" in r for r in rawmodes):  # Pillow keeps the high byte of 16-bit RGB samples
                notices.append("16-bit RGB reduced to 8-bit")
        else:
            if mode in ("RGBA", "RGBa", "RGBX", "LA", "La", "PA") or (mode == "P" and "transparency" in img.info):
                what = "alpha channel dropped" if mode != "RGBX" else "padding channel dropped"
                notices.append(f"{_MODE_NAMES.get(mode, mode)} converted to RGB ({what})")
            else:
                notices.append(f"{_MODE_NAMES.get(mode, mode)} converted to RGB")
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as e:
        raise ImageReadError(f"unsupported image mode {mode!r} ({_short(e)})") from e
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or min(rgb.shape[:2]) < 1:
        raise ImageReadError(f"unsupported image layout {rgb.shape}")
    return rgb, notices


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def to_uint8(image) -> np.ndarray:
    """A float image in [0, 1] to uint8, rounded to the nearest level (``np.round(y * 255)``); uint8 as it is."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr
    return np.round(np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def output_format(path: str | os.PathLike) -> str:
    """Pillow's format name for an output file name's extension (PNG for ``.png``); ValueError if unknown."""
    from PIL import Image

    Image.init()
    ext = os.path.splitext(os.fspath(path))[1].lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise ValueError(f"cannot write images with the extension {ext or '(none)'!r}; use .png, .bmp, .tiff, ...")
    return fmt


def encode_image(image, fmt: str = "PNG") -> bytes:
    """An RGB image (float in [0, 1] or uint8) as the bytes of an image file (lossless formats keep it exact)."""
    from PIL import Image

    buf = io.BytesIO()
    kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    Image.fromarray(to_uint8(image), mode=None).save(buf, format=fmt, **kwargs)
    return buf.getvalue()
