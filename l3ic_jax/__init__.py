"""l3ic-jax: the Lightweight Learned Lossy Image Codec (Korus & Memon, ICLR 2020) in JAX/Flax.

``load`` gives a :class:`Codec` (tensor level: encode, quantize, dequantize, decode); ``compress`` and
``decompress`` go from an image to bytes and back (``compress_batch`` and ``decompress_batch`` for many).
"""

from ._version import __version__
from .checkpoint import CheckpointError
from .codec import Codec, load

__all__ = [
    "__version__",
    "Codec",
    "CheckpointError",
    "load",
    "compress",
    "decompress",
    "compress_batch",
    "decompress_batch",
]


def __getattr__(name):
    # The byte-level API lives in `pipeline` (bitstream + entropy coder); imported on first use.
    if name in ("compress", "decompress", "compress_batch", "decompress_batch"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'l3ic_jax' has no attribute {name!r}")
