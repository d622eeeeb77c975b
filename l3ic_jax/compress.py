"""The ``l3ic`` command line: images to ``.l3i`` streams and back (``python -m l3ic_jax.compress``).

As in the original ``l3ic.py``, the direction follows the input: a ``.l3i`` file (by extension, or by the
container's magic) is decoded to an image, anything else is read as an image and encoded. ``main(argv)`` returns
the exit code; every failure is one line on stderr (``L3IC_DEBUG=1`` adds the traceback).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

from . import atomic as _atomic
from . import bitstream as _bs
from .imageio import IMAGE_EXTENSIONS, ImageReadError

PROG = "l3ic"
STREAM_EXT = ".l3i"

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_NO_INPUT = 3
EXIT_BAD_IMAGE = 4
EXIT_CORRUPT = 5
EXIT_MODEL_MISMATCH = 6
EXIT_BAD_MODEL = 7
EXIT_EXISTS = 8
EXIT_WRITE = 9
EXIT_LEGACY_LIMIT = 10
EXIT_INTERRUPTED = 130

EPILOG = f"""\
examples:
  l3ic photo.png                     photo.png -> photo.l3i (model 32c, l3ic-jax container)
  l3ic photo.l3i                     photo.l3i -> photo.png (the model is found from the stream)
  l3ic -m 64c a.jpg b.webp -o out/   several inputs: outputs go into out/, with a progress bar
  l3ic photos/ -o streams/           every image (and .l3i) file in a directory
  l3ic --legacy -m 16c photo.png     the original .l3i format, byte-compatible with l3ic.py
  l3ic --info photo.l3i              header: format, model, size, channel sizes, bpp
  l3ic --stats photo.png             bpp of the real file, PSNR, SSIM, encode and decode times
  l3ic --refine -m 64c photo.png     a smaller, better file from a slower encoder search (same decoder)
  l3ic -m my_model.safetensors x.l3i decode with a checkpoint that is not bundled

inputs:
  Images are read with Pillow (PNG, JPEG, BMP, TIFF, WebP, ...). The EXIF orientation is applied;
  grayscale, palette, CMYK and alpha images become RGB and 16-bit images 8-bit, with a one-line notice.
  Decoded images are PNG (or the format of -o's extension), rounded to 8 bits.

outputs:
  x.png -> x.l3i and x.l3i -> x.png, next to the input, or into -o DIR. With one input, -o names the
  output file (or an existing directory). Files are written atomically; an existing file is never
  replaced without --force, and no partial file is left behind, also on errors or Ctrl-C.

statistics (--stats, on stdout):
  bytes and bpp of the real file (header included), PSNR and SSIM of the decoded 8-bit image against
  the input, and encode / decode times in seconds (the one-time jit compilation is excluded).

exit codes:
  {EXIT_OK}    success
  {EXIT_INTERNAL}    internal error (a bug: please report it; L3IC_DEBUG=1 shows the traceback)
  {EXIT_USAGE}    usage error (bad option, conflicting outputs)
  {EXIT_NO_INPUT}    an input file is missing or cannot be read
  {EXIT_BAD_IMAGE}    an input is not a readable image
  {EXIT_CORRUPT}    an .l3i stream is corrupt, truncated, or not an .l3i stream
  {EXIT_MODEL_MISMATCH}    the stream was made with another model than -m (or its model is not available)
  {EXIT_BAD_MODEL}    -m is not a bundled model name or a valid checkpoint
  {EXIT_EXISTS}    an output file exists (use --force)
  {EXIT_WRITE}    an output file cannot be written
  {EXIT_LEGACY_LIMIT}   the image does not fit the legacy format (--legacy)
  {EXIT_INTERRUPTED}  interrupted
  With several inputs, the others are still processed after a failure; the exit code is the first failure's.
"""


class CliError(Exception):
    """A failure with its exit code; its message is printed on one line."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Job:
    src: Path
    decode: bool
    dst: Path | None = None


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__
    from .checkpoint import BUNDLED, DEFAULT_MODEL
    from .refine import DEFAULT_STEPS as REFINE_STEPS

    p = argparse.ArgumentParser(
        prog=PROG,
        description="Lightweight learned lossy image codec (Korus & Memon, ICLR 2020), in JAX.\n"
        "An .l3i input is decoded to an image; an image input is encoded to an .l3i stream.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="images, .l3i streams, or directories of them")
    p.add_argument("-o", "--output", metavar="OUTPUT", help="output file (one input) or directory (several)")
    p.add_argument(
        "-m",
        "--model",
        metavar="MODEL",
        help=f"{'|'.join(BUNDLED)} or a checkpoint path. Encoding: default {DEFAULT_MODEL}. Decoding: default "
        "is the model recorded in the stream (legacy streams: the bundled model with their channel count)",
    )
    p.add_argument(
        "--refine",
        action="store_true",
        help="encoding: search near the encoder's latent for indices that code the image with less error and "
        "fewer bits (l3ic_jax.refine). Same format and decoder; encoding takes --refine-steps decoder passes "
        "(forward and backward) longer",
    )
    p.add_argument(
        "--refine-steps",
        type=int,
        default=None,
        metavar="N",
        help=f"gradient steps of --refine (default {REFINE_STEPS}); given alone it implies --refine, 0 turns it off",
    )
    p.add_argument("--legacy", action="store_true", help="write the original .l3i format (no size, model id or checksum)")
    p.add_argument("--info", action="store_true", help="print the header of .l3i inputs and exit")
    p.add_argument("--stats", action="store_true", help="print bpp, PSNR, SSIM and times per image (stdout)")
    p.add_argument("-f", "--force", action="store_true", help="replace existing output files")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no notices")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="entropy-coding threads (0: one per core)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


# -- console output --------------------------------------------------------------------------------------------
class Console:
    """stderr messages and a plain-text progress bar (redrawn in place on a terminal, one line per file else)."""

    def __init__(self, total: int, quiet: bool, stream=None):
        self.stream = stream or sys.stderr
        self.total = total
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.show_progress = total > 1 and not quiet
        self.done = 0
        self._bar_drawn = False

    def _clear(self):
        if self._bar_drawn:
            self.stream.write("\r\033[K")
            self._bar_drawn = False

    def message(self, text: str, *, notice: bool = False):
        if notice and self.quiet:
            return
        self._clear()
        self.stream.write(f"{PROG}: {text}\n")
        self.stream.flush()

    def step(self, label: str):
        self.done += 1
        if not self.show_progress:
            return
        if self.tty:
            width = 30
            filled = width * self.done // self.total
            self._clear()
            self.stream.write(f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {label}")
            self._bar_drawn = True
            if self.done == self.total:
                self.stream.write("\n")
                self._bar_drawn = False
        else:
            self.stream.write(f"[{self.done}/{self.total}] {label}\n")
        self.stream.flush()

    def close(self):
        if self._bar_drawn:
            self.stream.write("\n")
            self._bar_drawn = False
        self.stream.flush()


# -- planning --------------------------------------------------------------------------------------------------
def _is_stream_file(path: Path) -> bool:
    if path.suffix.lower() == STREAM_EXT:
        return True
    try:
        with open(path, "rb") as f:
            return _bs.is_container(f.read(len(_bs.MAGIC)))
    except OSError:
        return False


def _expand(inputs: list[str]) -> tuple[list[Path], list[CliError], bool]:
    """Files to process (directories expanded), errors for missing inputs, and whether a directory was given."""
    files, errors, had_dir = [], [], False
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            had_dir = True
            found = sorted(
                q
                for q in path.iterdir()
                if q.is_file()
                and not q.name.startswith(".")
                and (q.suffix.lower() in IMAGE_EXTENSIONS or q.suffix.lower() == STREAM_EXT)
            )
            if not found:
                errors.append(CliError(EXIT_NO_INPUT, f"{raw}: no images or .l3i files in this directory"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            errors.append(CliError(EXIT_NO_INPUT, f"{raw}: not a regular file"))
        else:
            errors.append(CliError(EXIT_NO_INPUT, f"{raw}: no such file or directory"))
    return files, errors, had_dir


def _plan(files: list[Path], output: str | None, to_dir: bool, info_only: bool) -> list[Job]:
    jobs = [Job(f, _is_stream_file(f)) for f in files]
    if info_only:
        return jobs
    out = Path(output) if output else None
    if out is not None and not to_dir and (out.is_dir() or output.endswith(("/", os.sep))):
        to_dir = True
    for job in jobs:
        ext = ".png" if job.decode else STREAM_EXT
        if out is None:
            job.dst = job.src.with_suffix(ext)
        elif to_dir:
            job.dst = out / (job.src.stem + ext)
        else:
            job.dst = out
    seen: dict[Path, Path] = {}
    inputs = {j.src.resolve() for j in jobs}
    for job in jobs:
        key = job.dst.resolve() if job.dst.parent.exists() else job.dst.absolute()
        if key in seen:
            raise CliError(EXIT_USAGE, f"{seen[key]} and {job.src} would both be written to {job.dst}; use -o DIR or rename")
        if key in inputs:
            raise CliError(EXIT_USAGE, f"{job.src}: the output {job.dst} is also an input of this run")
        seen[key] = job.src
    return jobs


# -- atomic writes ---------------------------------------------------------------------------------------------
def atomic_write(path: Path, data: bytes, force: bool) -> None:
    """Write ``data`` to ``path`` atomically (:mod:`l3ic_jax.atomic`); without ``force`` never replace a file."""
    try:
        _atomic.write_bytes(path, data, overwrite=force)
    except FileExistsError:
        raise CliError(EXIT_EXISTS, f"{path}: already exists (use --force to replace it)") from None
    except OSError as e:
        raise CliError(EXIT_WRITE, f"{path}: cannot write ({e.strerror or e})") from e


# -- the work --------------------------------------------------------------------------------------------------
class Runner:
    def __init__(self, args, console: Console):
        self.args = args
        self.console = console
        self._encoder = None
        self._decoder = None  # the codec of -m, for decoding
        self._warm: set = set()
        self._stats_header = False
        # steps of encoder-side refinement per image: --refine takes the default, --refine-steps alone implies it
        self.refine_steps = 0
        if args.refine or args.refine_steps is not None:
            from .refine import DEFAULT_STEPS

            self.refine_steps = DEFAULT_STEPS if args.refine_steps is None else args.refine_steps

    def load_model(self, name):
        from . import pipeline
        from .checkpoint import CheckpointError

        try:
            return pipeline.resolve_codec(name)
        except CheckpointError as e:
            raise CliError(EXIT_BAD_MODEL, f"model {name}: {e}") from e

    @property
    def encoder(self):
        from .checkpoint import DEFAULT_MODEL

        if self._encoder is None:
            self._encoder = self.load_model(self.args.model or DEFAULT_MODEL)
        return self._encoder

    @property
    def decoder(self):
        if self.args.model is None:
            return None
        if self._decoder is None:
            self._decoder = self.load_model(self.args.model)
        return self._decoder

    def _read(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as e:
            raise CliError(EXIT_NO_INPUT, f"{path}: cannot read ({e.strerror or e})") from e

    def info(self, job: Job) -> None:
        data = self._read(job.src)
        try:
            facts = _bs.info(data)
        except _bs.CorruptStreamError as e:
            raise CliError(EXIT_CORRUPT, f"{job.src}: {e}") from e
        print(format_info(job.src, facts), flush=True)

    def encode(self, job: Job) -> None:
        from . import pipeline
        from .imageio import read_image

        if job.dst.exists() and not self.args.force:
            raise CliError(EXIT_EXISTS, f"{job.dst}: already exists (use --force to replace it)")
        try:
            image, notices = read_image(job.src)
        except FileNotFoundError as e:
            raise CliError(EXIT_NO_INPUT, f"{job.src}: no such file") from e
        except OSError as e:
            raise CliError(EXIT_NO_INPUT, f"{job.src}: cannot read ({e.strerror or e})") from e
        except ImageReadError as e:
            raise CliError(EXIT_BAD_IMAGE, f"{job.src}: {e}") from e
        for note in notices:
            self.console.message(f"{job.src}: {note}", notice=True)
        codec = self.encoder
        height, width = image.shape[:2]
        if self.args.legacy and (height % 8 or width % 8):
            self.console.message(
                f"{job.src}: the legacy format does not store the image size: {width}x{height} will decode to "
                f"{-(-width // 8) * 8}x{-(-height // 8) * 8}",
                notice=True,
            )
        refine = self.refine_steps
        key = ("enc", codec.weights_sha256, image.shape, self.args.legacy, bool(refine))
        if self.args.stats and key not in self._warm:  # times exclude the one-time jit compilation
            self._compress(image, codec, job, refine=min(refine, 1))
        t0 = time.perf_counter()
        data = self._compress(image, codec, job, refine=refine)
        t_enc = time.perf_counter() - t0
        atomic_write(job.dst, data, self.args.force)
        self._warm.add(key)
        if self.args.stats:
            if key + ("dec",) not in self._warm:
                pipeline.decompress(data, codec, threads=self.args.threads)
                self._warm.add(key + ("dec",))
            t0 = time.perf_counter()
            decoded = pipeline.decompress(data, codec, threads=self.args.threads)
            t_dec = time.perf_counter() - t0
            self.print_stats(job.src, data, _bs.info(data), image, decoded, t_enc, t_dec)

    def _compress(self, image, codec, job: Job, refine: int) -> bytes:
        from . import pipeline

        try:
            return pipeline.compress(image, codec, legacy=self.args.legacy, threads=self.args.threads, refine=refine)
        except _bs.LegacyFormatError as e:
            raise CliError(EXIT_LEGACY_LIMIT, f"{job.src}: {e}") from e

    def decode(self, job: Job) -> None:
        from . import pipeline
        from .imageio import encode_image, output_format

        if job.dst.exists() and not self.args.force:
            raise CliError(EXIT_EXISTS, f"{job.dst}: already exists (use --force to replace it)")
        try:
            fmt = output_format(job.dst)
        except ValueError as e:
            raise CliError(EXIT_USAGE, f"{job.dst}: {e}") from e
        data = self._read(job.src)
        codec = self.decoder
        try:
            facts = _bs.info(data)
            codec = pipeline.codec_for_stream(facts, codec)
            key = ("dec", codec.weights_sha256, facts.latent_height, facts.latent_width)
            if self.args.stats and key not in self._warm:
                pipeline.decompress(data, codec, threads=self.args.threads)
            t0 = time.perf_counter()
            image = pipeline.decompress(data, codec, threads=self.args.threads)
            t_dec = time.perf_counter() - t0
            self._warm.add(key)
        except _bs.ModelMismatchError as e:
            raise CliError(EXIT_MODEL_MISMATCH, f"{job.src}: {e}") from e
        except _bs.CorruptStreamError as e:
            raise CliError(EXIT_CORRUPT, f"{job.src}: {e}") from e
        atomic_write(job.dst, encode_image(image, fmt), self.args.force)
        if self.args.stats:
            self.print_stats(job.src, data, facts, None, None, None, t_dec)

    def print_stats(self, src, data, facts, original, decoded, t_enc, t_dec) -> None:
        from . import metrics
        from .imageio import to_uint8

        if not self._stats_header:
            print(f"{'file':<28} {'bytes':>10} {'bpp':>8} {'PSNR dB':>8} {'SSIM':>7} {'enc s':>8} {'dec s':>8}")
            self._stats_header = True
        psnr = ssim = "-"
        if original is not None:
            h, w = original.shape[:2]
            a = original.astype("float32") / 255.0
            b = to_uint8(decoded[:h, :w]).astype("float32") / 255.0
            psnr = f"{float(metrics.psnr(a, b, max_val=1.0)):.2f}"
            ssim = f"{float(metrics.ssim(a, b, max_val=1.0)):.4f}"
            pixels = h * w
        else:
            pixels = facts.height * facts.width
        bpp = 8.0 * len(data) / pixels
        enc = "-" if t_enc is None else f"{t_enc:.3f}"
        print(f"{str(src):<28} {len(data):>10} {bpp:>8.4f} {psnr:>8} {ssim:>7} {enc:>8} {t_dec:>8.3f}", flush=True)


def format_info(path, facts: _bs.StreamInfo) -> str:
    modes = {m: facts.channel_modes.count(m) for m in ("fse", "rle", "raw") if m in facts.channel_modes}
    mode_text = ", ".join(f"{n} {m}" for m, n in modes.items())
    if facts.format == _bs.FORMAT_CONTAINER:
        fmt = f"l3ic-jax container, version {_bs.VERSION}"
        model = f"{facts.model_name} (weights sha256 {facts.model_digest}...)"
        size = f"{facts.width} x {facts.height} px"
    else:
        fmt = "legacy .l3i (original l3ic format; no model id, size or checksum)"
        model = f"not recorded ({facts.n_channels} channels)"
        size = f"{facts.width} x {facts.height} px (padded size; the original size is not stored)"
    lines = [
        f"{path}:",
        f"  format:   {fmt}",
        f"  model:    {model}",
        f"  image:    {size}",
        f"  latent:   {facts.latent_width} x {facts.latent_height} x {facts.n_channels} channels",
        f"  size:     {facts.total_size} bytes (header {facts.header_size}), {facts.bpp:.4f} bpp",
        f"  channels: {mode_text}; bytes: {' '.join(str(s) for s in facts.channel_sizes)}",
    ]
    return "\n".join(lines)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error (argparse printed it)
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    for flag, value in (("--threads", args.threads), ("--refine-steps", args.refine_steps or 0)):
        if value < 0:
            parser.print_usage(sys.stderr)
            print(f"{PROG}: error: {flag} must be >= 0", file=sys.stderr)
            return EXIT_USAGE

    old_term = None
    try:
        old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread
        pass
    console = None
    try:
        files, errors, had_dir = _expand(args.inputs)
        console = Console(0 if args.info else len(files), args.quiet)
        for err in errors:
            console.message(f"error: {err}")
        codes = [e.code for e in errors]
        try:
            jobs = _plan(files, args.output, to_dir=had_dir or len(files) > 1, info_only=args.info)
        except CliError as e:
            console.message(f"error: {e}")
            return e.code
        runner = Runner(args, console)
        if not args.info and any(not j.decode for j in jobs):
            try:
                runner.encoder  # a bad -m stops everything before any work
            except CliError as e:
                console.message(f"error: {e}")
                return e.code
        elif not args.info and args.model is not None:
            try:
                runner.decoder
            except CliError as e:
                console.message(f"error: {e}")
                return e.code
        for job in jobs:
            try:
                if args.info:
                    runner.info(job)
                elif job.decode:
                    runner.decode(job)
                else:
                    runner.encode(job)
            except CliError as e:
                console.message(f"error: {e}")
                codes.append(e.code)
                if e.code == EXIT_BAD_MODEL:
                    break
            console.step(f"{job.src}" + ("" if job.dst is None else f" -> {job.dst}"))
        return next((c for c in codes if c), EXIT_OK)
    except KeyboardInterrupt:
        if console:
            console.close()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug: one line, the traceback on request
        if os.environ.get("L3IC_DEBUG"):
            traceback.print_exc()
        print(f"{PROG}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if console:
            console.close()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


class _CallableModule(types.ModuleType):
    """Importing this module sets ``l3ic_jax.compress`` to it, hiding the function of the same name that
    ``l3ic_jax`` exposes; calling the module forwards to :func:`l3ic_jax.pipeline.compress`, so
    ``l3ic_jax.compress(image, codec)`` works whichever was imported first."""

    def __call__(self, image, codec=None, **kwargs):
        from .pipeline import compress

        return compress(image, codec, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
