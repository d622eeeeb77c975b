"""FSE (tabled ANS) entropy coding of bytes, byte-identical to the reference FSE library.

Why this module: the original l3ic codec stores each latent channel with the one-shot ``FSE_compress`` /
``FSE_decompress`` calls of Yann Collet's FSE library (through pkorus/pyfse). Reproducing those bytes exactly keeps
our streams readable by the original tools and theirs by us. The coder is our own C implementation
(``csrc/fse``, written from the format description, not from the library), reached through a thin binding that
releases the GIL, so channels can also be coded in parallel (``compress_batch`` / ``decompress_batch``).

Results follow the reference: ``compress`` returns the stream, or raises :class:`NotCompressibleError` (the
reference's result 0: store the bytes raw) or :class:`SymbolRepetitionError` (result 1: one byte value repeated;
store the byte and the length). A stream carries no length, magic or checksum: ``decompress`` needs the exact stream
and a ``max_size``; corrupt input raises :class:`FSEError` or, as with the reference, decodes to wrong bytes.

Errors carry the reference error name in ``.name`` (``GENERIC``, ``dstSize_tooSmall``, ``srcSize_wrong``,
``corruption_detected``, ``tableLog_tooLarge``, ``maxSymbolValue_tooSmall``) and the reference message as their text.
The pyfse names (``FSEException``, ``FSENotCompressibleError``, ``FSESymbolRepetitionError``) are aliases.
"""

from __future__ import annotations

from typing import Sequence, Union

from ._native import load_extension

_fse = load_extension("_fse", required=True)

__all__ = [
    "compress",
    "decompress",
    "compress_batch",
    "decompress_batch",
    "FSEError",
    "NotCompressibleError",
    "SymbolRepetitionError",
    "FSEException",
    "FSENotCompressibleError",
    "FSESymbolRepetitionError",
    "ERROR_MESSAGES",
]

#: Base class of every error of this module; ``.name`` is the reference error name, ``.code`` its number and
#: ``.index`` the item of a batch call (``None`` otherwise).
FSEError = _fse.FSEError
#: ``compress`` would not save at least 2 bytes (reference result 0): store the input raw.
NotCompressibleError = _fse.NotCompressibleError
#: The input is a single byte value repeated (reference result 1, "RLE"): store the byte and the length.
SymbolRepetitionError = _fse.SymbolRepetitionError

# pkorus/pyfse spellings, so code written against pyfse keeps working.
FSEException = FSEError
FSENotCompressibleError = NotCompressibleError
FSESymbolRepetitionError = SymbolRepetitionError

#: Reference error names and their ``FSE_getErrorName`` messages (the text of the raised errors).
ERROR_MESSAGES = {
    "GENERIC": "Error (generic)",
    "dstSize_tooSmall": "Destination buffer is too small",
    "srcSize_wrong": "Src size is incorrect",
    "corruption_detected": "Corrupted block detected",
    "tableLog_tooLarge": "tableLog requires too much memory : unsupported",
    "maxSymbolValue_tooSmall": "Specified maxSymbolValue is too small",
}

BytesLike = Union[bytes, bytearray, memoryview, "numpy.ndarray"]  # noqa: F821 - any C-contiguous 1-byte buffer


def compress(data: BytesLike, *, legacy: bool = False) -> bytes:
    """FSE-compress ``data`` exactly as the reference ``FSE_compress`` does.

    ``data`` is any C-contiguous buffer of 1-byte items (bytes, bytearray, memoryview, uint8 array); wider arrays are
    refused rather than silently coded as raw bytes. ``legacy=True`` reproduces the older FSE copy bundled with pyfse
    (a different table-log rule for 32/64/128/256-byte inputs), i.e. the bytes the original l3ic writer produced.

    Raises :class:`NotCompressibleError`, :class:`SymbolRepetitionError`, or :class:`FSEError` on a real error.
    """
    return _fse.compress(data, legacy)


def decompress(data: BytesLike, max_size: int) -> bytes:
    """Decode one exact FSE stream; the stream alone sets the output length.

    ``max_size`` bounds the output (memory for it is reserved up front): a stream that decodes to more raises
    :class:`FSEError` named ``dstSize_tooSmall``. Malformed input raises :class:`FSEError`; it never crashes or reads
    outside ``data``. Like the reference (no checksum), some corruptions decode to wrong bytes instead.
    """
    return _fse.decompress(data, max_size)


def compress_batch(buffers: Sequence[BytesLike], *, legacy: bool = False, threads: int = 0) -> list:
    """Compress many buffers (e.g. the channels of a latent) in parallel, without the GIL.

    ``threads=0`` uses one thread per CPU. Item ``i`` of the result is exactly what ``compress(buffers[i])`` gives:
    the compressed ``bytes``, or the exception instance it would raise (:class:`NotCompressibleError`,
    :class:`SymbolRepetitionError`, or :class:`FSEError`), with ``.index == i``. Nothing is raised per item, so one
    channel's special case does not hide the others' results.
    """
    return _fse.compress_batch(buffers, legacy, threads)


def decompress_batch(buffers: Sequence[BytesLike], max_sizes: Union[int, Sequence[int]], *, threads: int = 0) -> list:
    """Decode many streams in parallel, without the GIL.

    ``max_sizes`` is one bound for all streams or one per stream; ``threads=0`` uses one thread per CPU. Item ``i`` is
    exactly what ``decompress(buffers[i], max_sizes[i])`` gives: ``bytes``, or the :class:`FSEError` instance it would
    raise, with ``.index == i`` (check with ``isinstance(item, FSEError)``).
    """
    return _fse.decompress_batch(buffers, max_sizes, threads)
