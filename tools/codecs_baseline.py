"""Classical image codecs for the rate-distortion baselines, behind one small interface.

Each :class:`Codec` encodes a uint8 ``HxWx3`` RGB image to the bytes of a real file (container headers included,
so bpp is what a user would store) and decodes them back to uint8. Its single rate parameter has a range, a
direction (does bpp grow with it?) and a default grid for the full curve; :func:`match_bpp` searches it for the
setting whose bpp is closest to a target.

Settings, chosen to be each library's usual "good" configuration, not its fastest:

* JPEG: Pillow/libjpeg(-turbo), baseline, 4:2:0 (``subsampling=2``), optimised Huffman tables; quality 1-100.
* WebP: Pillow/libwebp, lossy, ``method=6`` (slowest, best); quality 0-100.
* AVIF: Pillow >= 11 (libavif), 4:2:0, libavif's default ``speed=6``, one thread; quality 0-100.
* HEIC: pillow-heif (libheif + x265), 4:2:0; quality 0-100.
* JPEG 2000: Pillow/OpenJPEG, irreversible 9/7 wavelet with the colour transform (``irreversible=True, mct=1``),
  raw codestream (``no_jp2``), rate set by ``quality_mode='rates'``; the parameter is the requested bpp.
* JPEG XL: imagecodecs/libjxl, ``effort=7`` (the libjxl default), one thread; the parameter is the butteraugli
  ``distance`` (smaller is better quality).

Import this module from ``tools/`` (``rd_eval.py`` does); it is not part of the installed package.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["Codec", "all_codecs", "match_bpp", "bpp_of"]


def bpp_of(data: bytes, shape) -> float:
    """Bits per pixel of an encoded file for an image of ``shape`` (H, W, ...)."""
    return len(data) * 8.0 / (shape[0] * shape[1])


@dataclass
class Codec:
    """One classical codec: how to encode/decode, and how its rate parameter behaves."""

    name: str
    param: str  # name of the rate parameter, for labels
    lo: float
    hi: float
    integer: bool  # integer parameter (quality) or continuous (rate, distance)
    increasing: bool  # does bpp grow with the parameter?
    curve: list  # parameter values for the full rate-distortion curve
    settings: str  # one line for the report
    _encode: Callable[[np.ndarray, float], bytes] = field(repr=False, default=None)
    _decode: Callable[[bytes], np.ndarray] = field(repr=False, default=None)
    _check: Callable[[], tuple[bool, str]] = field(repr=False, default=None)
    _version: Callable[[], str] = field(repr=False, default=None)

    def available(self) -> tuple[bool, str]:
        """(True, "") if the codec can be used here, else (False, why)."""
        try:
            return self._check()
        except Exception as e:  # noqa: BLE001 - any import/feature failure means "not available"
            return False, f"{type(e).__name__}: {e}"

    def version(self) -> str:
        try:
            return self._version()
        except Exception:  # noqa: BLE001
            return "unknown"

    def encode(self, img: np.ndarray, p: float) -> bytes:
        return self._encode(np.ascontiguousarray(img, dtype=np.uint8), int(round(p)) if self.integer else float(p))

    def decode(self, data: bytes) -> np.ndarray:
        out = np.asarray(self._decode(data))
        if out.ndim == 2:
            out = np.repeat(out[..., None], 3, axis=-1)
        return out[..., :3].astype(np.uint8, copy=False)

    def label(self, p: float) -> str:
        return f"{self.param}={int(round(p))}" if self.integer else f"{self.param}={p:.4g}"


# ---------------------------------------------------------------------------------------------------------------
# Pillow codecs


def _pil_encode(fmt: str, kw):
    def enc(img, p):
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(img, "RGB").save(buf, format=fmt, **kw(p))
        return buf.getvalue()

    return enc


def _pil_decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _pil_feature(feature: str):
    def check():
        from PIL import features

        if not features.check(feature):
            return False, f"this Pillow was built without {feature}"
        return True, ""

    return check


def _pil_version(feature: str):
    def version():
        import PIL
        from PIL import features

        extra = ""
        if feature == "jpg" and features.check_feature("libjpeg_turbo"):
            extra = f" (libjpeg-turbo {features.version('libjpeg_turbo')})"
        names = {"jpg": "libjpeg API", "webp": "libwebp", "avif": "libavif", "jpg_2000": "OpenJPEG"}
        return f"Pillow {PIL.__version__}, {names.get(feature, feature)} {features.version(feature)}{extra}"

    return version


def _avif_check():
    import PIL
    from PIL import features

    if not features.check("avif"):
        return False, f"Pillow {PIL.__version__} has no AVIF support (needs Pillow >= 11 built with libavif)"
    return True, ""


# ---------------------------------------------------------------------------------------------------------------
# pillow-heif and imagecodecs


def _heic_encode(img, q):
    import pillow_heif
    from PIL import Image

    buf = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(img, "RGB")).save(buf, quality=q, chroma=420)
    return buf.getvalue()


def _heic_decode(data):
    import pillow_heif

    return np.asarray(pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True))


def _heic_check():
    try:
        import pillow_heif
    except ImportError:
        return False, "pillow-heif is not installed (pip install pillow-heif)"
    if not pillow_heif.libheif_info().get("HEIF"):
        return False, "pillow-heif has no HEVC encoder"
    return True, ""


def _heic_version():
    import pillow_heif

    info = pillow_heif.libheif_info()
    return f"pillow-heif {pillow_heif.__version__}, libheif {info.get('libheif')}, {info.get('HEIF')}"


def _jxl_encode(img, distance):
    import imagecodecs

    return bytes(imagecodecs.jpegxl_encode(img, distance=distance, effort=7, numthreads=1))


def _jxl_decode(data):
    import imagecodecs

    return imagecodecs.jpegxl_decode(data)


def _jxl_check():
    try:
        import imagecodecs
    except ImportError:
        return False, "imagecodecs is not installed (pip install imagecodecs)"
    if not imagecodecs.JPEGXL.available:
        return False, "this imagecodecs build has no JPEG XL"
    return True, ""


def _jxl_version():
    import imagecodecs

    libjxl = next((v for v in imagecodecs.version().split(", ") if v.startswith("libjxl")), "libjxl ?")
    return f"imagecodecs {imagecodecs.__version__}, {libjxl}"


# ---------------------------------------------------------------------------------------------------------------


def all_codecs() -> dict[str, Codec]:
    """The baseline codecs by short name, in plotting order."""
    q_grid = [5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 95]
    return {
        "jpeg": Codec(
            "JPEG", "q", 1, 100, True, True, q_grid,
            "Pillow/libjpeg, baseline, 4:2:0 (subsampling=2), optimize=True",
            _pil_encode("JPEG", lambda q: dict(quality=q, subsampling=2, optimize=True)),
            _pil_decode, _pil_feature("jpg"), _pil_version("jpg"),
        ),
        "webp": Codec(
            "WebP", "q", 0, 100, True, True, [0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100],
            "Pillow/libwebp, lossy, method=6",
            _pil_encode("WEBP", lambda q: dict(quality=q, method=6)),
            _pil_decode, _pil_feature("webp"), _pil_version("webp"),
        ),
        "avif": Codec(
            "AVIF", "q", 0, 100, True, True, [10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90],
            "Pillow/libavif, 4:2:0, speed=6, max_threads=1",
            _pil_encode("AVIF", lambda q: dict(quality=q, subsampling="4:2:0", speed=6, max_threads=1)),
            _pil_decode, _avif_check, _pil_version("avif"),
        ),
        "heic": Codec(
            "HEIC", "q", 0, 100, True, True, [10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90],
            "pillow-heif/libheif/x265, 4:2:0",
            _heic_encode, _heic_decode, _heic_check, _heic_version,
        ),
        "jpeg2000": Codec(
            "JPEG 2000", "rate", 0.02, 8.0, False, True, [0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0, 2.5],
            "Pillow/OpenJPEG, irreversible 9/7 + MCT (irreversible=True, mct=1), codestream, quality_mode='rates'",
            # quality_layers holds a compression ratio: 24 bits/px of RGB input over the requested bpp.
            _pil_encode("JPEG2000", lambda r: dict(no_jp2=True, irreversible=True, mct=1, quality_mode="rates",
                                                   quality_layers=[24.0 / r])),
            _pil_decode, _pil_feature("jpg_2000"), _pil_version("jpg_2000"),
        ),
        "jpegxl": Codec(
            "JPEG XL", "d", 0.1, 25.0, False, False, [0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 13.0],
            "imagecodecs/libjxl, effort=7, numthreads=1, distance-controlled",
            _jxl_encode, _jxl_decode, _jxl_check, _jxl_version,
        ),
    }


def match_bpp(codec: Codec, img: np.ndarray, target: float, cache: dict, rtol: float = 0.005, max_steps: int = 24):
    """The parameter whose encoding of ``img`` has the bpp closest to ``target`` (bisection, monotone rate).

    ``cache`` maps parameter -> bytes for this image and codec and is filled as we go (so curve points and
    several targets share encodes). Integer parameters are searched exactly; continuous ones (in log space) stop
    once within ``rtol`` of the target. Returns ``(param, bytes)``; the result is the closest of everything
    tried, so a locally non-monotone rate curve can only cost accuracy, never a wrong answer.
    """

    def bpp(p):
        if p not in cache:
            cache[p] = codec.encode(img, p)
        return bpp_of(cache[p], img.shape)

    def below(p):  # is the rate at p below the target, i.e. should we move toward more bits?
        return bpp(p) < target

    lo, hi = codec.lo, codec.hi
    if codec.integer:
        lo, hi = int(lo), int(hi)
        # Invariant: moving from lo to hi increases bpp; find the first parameter on the "enough bits" side.
        a, b = (lo, hi) if codec.increasing else (hi, lo)
        if not below(a) or below(b):
            pass  # target outside the reachable range: the ends are in the cache, pick the closest below
        else:
            while abs(b - a) > 1:
                mid = (a + b) // 2
                if below(mid):
                    a = mid
                else:
                    b = mid
    else:
        la, lb = math.log(lo), math.log(hi)
        if not codec.increasing:
            la, lb = lb, la
        pa, pb = math.exp(la), math.exp(lb)
        if below(pa) and not below(pb):
            for _ in range(max_steps):
                lm = 0.5 * (la + lb)
                pm = math.exp(lm)
                if abs(bpp(pm) - target) <= rtol * target:
                    break
                if below(pm):
                    la = lm
                else:
                    lb = lm
    best = min(cache, key=lambda p: (abs(bpp(p) - target), p))
    return best, cache[best]
