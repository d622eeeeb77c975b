"""Speed of l3ic-jax: the paper's table (E, D, CE, DE), measured against the TensorFlow reference in one run.

Sections (``--sections``, all by default; results are merged into ``--out`` so sections can run separately):

* ``table``: E and D (network only: image -> latent on the host; quantized latent -> clipped image on the host)
  and CE / DE (whole compression and decompression, bitstream in memory: ``pipeline.compress`` on the uint8
  image, ``pipeline.decompress`` back to the cropped image) at 512x512 and 1920x1080, for each model, batch 1,
  medians over several images and repeats after a warm-up; compile time separately. In the same run and on the
  same weights, the TensorFlow reference: the original TF1 graph built by ``tests/tf_reference.build_graph_def``
  from our weights (checked tensor by tensor through the converter's rename table), imported with an
  ``input_map`` into a ``tf.compat.v1.wrap_function`` and pruned to two ``tf.function`` s: image ->
  ``twitterdcn/latent`` (E) and quantized latent -> the graph's last op (D, clipped, fed at
  ``twitterdcn/quantization/latent_quantized``). TensorFlow's default CPU kernels (oneDNN where TF enables
  it). TF's CE = TF encoder + nearest-codebook quantization in NumPy (the codec's tie rule) + our
  ``bitstream.pack``; TF's DE = our ``bitstream.unpack`` + codebook lookup + TF decoder + crop: the same
  entropy/bitstream stage as ours, so the ratio compares the networks and their glue. Ours and TF's run
  interleaved image by image, so background load hits both alike. Also the share of the encoder's
  quantization + entropy stage in CE (device quantize of the latent + ``bitstream.pack``). "Ours" is the codec's
  default network path: on a CPU with AVX-512 the C kernels of ``l3ic_jax.cpu_backend``, said in the output and
  the JSON (``network``); the XLA path of the same weights is then timed as well (``xla_*`` columns, interleaved
  too; ``--no-xla`` skips it). ``L3IC_CPU_KERNELS=0`` makes XLA the default path.
* ``classic``: Pillow JPEG, WebP, JPEG 2000 and AVIF encode and decode times of the same 1080p image at the bpp
  our 32c model gives it (rate matched by bisection, ``tools/codecs_baseline.match_bpp``).
* ``entropy``: the entropy stage alone on the 32c latent indices of the 1080p image: our FSE one channel at a
  time and batched (threads=0), against zstandard level 1 (per channel and whole).
* ``batch``: images per second and peak RSS (VmHWM) of ``compress_batch`` + ``decompress_batch`` for 1, 4 and
  16 images per batch (each in a fresh subprocess).
* ``large``: peak RSS and time of compress + decompress of a 6000x4000 (24 MP) image in a subprocess (the
  pipeline tiles it).

Models: bundled checkpoints where they exist, else ``Codec.random(n, seed)`` (Glorot init), which is said in the
output. Inputs: Kodak / shared sample photos, resized and center-cropped to each size; synthetic if none.
Runs unchanged on a GPU (``--no-tf`` skips TensorFlow, which is pinned to the CPU).

Usage: ``python tools/bench_speed.py [--models 16c,32c,64c] [--sections ...] [--out docs/bench_speed.json]``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "tests", REPO / "tools"):
    if str(_p) not in sys.path:
        sys.path.append(str(_p))

import numpy as np  # noqa: E402

SIZES = {"512": (512, 512), "1080": (1080, 1920)}
SECTIONS = ("table", "classic", "entropy", "batch", "large")
PHOTO_DIRS = [REPO.parent / "shared" / "datasets" / "kodak", REPO.parent / "shared" / "samples"]


# -- machine and inputs ----------------------------------------------------------------------------------------------
def machine() -> dict:
    import jax
    import jaxlib
    import PIL

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "devices": [str(d) for d in jax.devices()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "loadavg": _loadavg(),
    }
    try:
        info["commit"] = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        pass
    return info


def _loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def photos(size: tuple[int, int], n: int) -> tuple[list[np.ndarray], str]:
    """``n`` uint8 RGB images of ``size`` (H, W): photos resized to cover and center-cropped, else synthetic."""
    from PIL import Image

    h, w = size
    files = sorted(p for d in PHOTO_DIRS if d.is_dir() for p in d.iterdir() if p.suffix.lower() in (".png", ".jpg"))
    out = []
    for path in files[:n]:
        im = Image.open(path).convert("RGB")
        s = max(h / im.height, w / im.width)
        im = im.resize((max(w, round(im.width * s)), max(h, round(im.height * s))), Image.BICUBIC)
        top, left = (im.height - h) // 2, (im.width - w) // 2
        out.append(np.asarray(im.crop((left, top, left + w, top + h))))
    source = f"photos ({', '.join(p.name for p in files[:n])})" if out else ""
    rng = np.random.default_rng(0)
    while len(out) < n:  # smooth synthetic images with texture
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        base = np.stack([np.sin(9 * xx + c) * np.cos(7 * yy - 2 * c) for c in range(3)], -1)
        out.append(np.clip(128 + 80 * base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8))
        source = source or "synthetic"
    return out, source


RANDOM_WEIGHTS = os.environ.get("L3IC_BENCH_RANDOM", "glorot")


def load_codec(name: str, seed: int, random_weights: str | None = None):
    """(codec, where its weights come from): the bundled checkpoint, else random weights, said so.

    ``random_weights``: ``glorot`` (``Codec.random``, Glorot init as TF layers start) or ``reference``
    (``tests/tf_reference.random_weights``: He-like draws scaled so that photos give latents of about +-12 over
    ~23 codebook bins, as the original models do; Glorot weights give near-constant latents, all channels RLE,
    so the entropy stage would be timed on almost nothing).
    """
    from l3ic_jax import checkpoint
    from l3ic_jax.codec import Codec, load, model_from_tensors

    mode = random_weights or RANDOM_WEIGHTS
    try:
        checkpoint.resolve(name)
        return load(name), f"bundled checkpoint {name}"
    except Exception as e:  # noqa: BLE001 - absent or invalid: fall back, and say so
        why = str(e).split(":")[0]
        n = int(name.rstrip("c"))
        if mode == "reference":
            import tf_reference

            model = model_from_tensors(tf_reference.random_weights(n, seed), n)
            return Codec(model, name=f"ref-random-{n}c-seed{seed}"), (
                f"random weights (tests/tf_reference.random_weights({n}, {seed}), photo-like latent statistics): "
                f"no checkpoint ({why})"
            )
        return Codec.random(n, seed), f"random weights (Codec.random({n}, {seed}), Glorot init): no checkpoint ({why})"


# -- timing helpers ----------------------------------------------------------------------------------------------------
def _t(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _med(xs):
    return float(statistics.median(xs)) if xs else None


# -- TensorFlow reference ----------------------------------------------------------------------------------------------
class TFReference:
    """The original graph for our weights as two pruned ``tf.function`` s (encoder, decoder)."""

    def __init__(self, tensors: dict, n_features: int):
        import tensorflow as tf
        import tf_reference
        from convert.tf_to_flax import GRAPH_INPUT, GRAPH_LATENT, GRAPH_RENAME

        try:
            tf.config.set_visible_devices([], "GPU")  # the reference runs TF's default CPU kernels
        except (RuntimeError, ValueError):
            pass
        self.tf = tf
        gd = tf_reference.build_graph_def(tensors)
        consts = {n.name: n for n in gd.node if n.op == "Const"}
        for scope, ours in GRAPH_RENAME.items():  # the graph holds exactly our weights, by the converter's table
            for tf_name, our_name in (("weights", "kernel"), ("biases", "bias")):
                value = tf.make_ndarray(consts[f"{scope}/{tf_name}"].attr["value"].tensor)
                if not np.array_equal(value, tensors[f"{ours}/{our_name}"]):
                    raise RuntimeError(f"TF graph tensor {scope}/{tf_name} differs from {ours}/{our_name}")
        consumed = {i.split(":")[0].lstrip("^") for n in gd.node for i in n.input}
        last = [n.name for n in gd.node if n.name not in consumed][0]

        def imports():
            x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="image")
            q = tf.compat.v1.placeholder(tf.float32, [None, None, None, n_features], name="quantized")
            tf.compat.v1.import_graph_def(
                gd, input_map={f"{GRAPH_INPUT}:0": x, "twitterdcn/quantization/latent_quantized:0": q}, name="g"
            )

        with tf.device("/CPU:0"):
            wrapped = tf.compat.v1.wrap_function(imports, [])
            self.encoder = wrapped.prune("image:0", f"g/{GRAPH_LATENT}:0")
            self.decoder = wrapped.prune("quantized:0", f"g/{last}:0")
        self.last_op = last

    def encode(self, x: np.ndarray) -> np.ndarray:
        with self.tf.device("/CPU:0"):
            return self.encoder(self.tf.convert_to_tensor(x)).numpy()

    def decode(self, q: np.ndarray) -> np.ndarray:
        with self.tf.device("/CPU:0"):
            return self.decoder(self.tf.convert_to_tensor(q)).numpy()


def quantize_np(z: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Nearest entry of the integer codebook, ties to the lower one (the codec's rule), as uint8 indices."""
    r = np.round(z)
    q = np.clip(np.where(r - z == 0.5, r - 1.0, r), codebook[0], codebook[-1])
    return (q - codebook[0]).astype(np.uint8)


# -- sections ----------------------------------------------------------------------------------------------------------
def bench_table(args, results: dict) -> None:
    import jax

    from l3ic_jax import bitstream, pipeline

    rows = results.setdefault("table", {})
    for name in args.models:
        codec, source = load_codec(name, args.seed)
        path = _path(codec)
        print(f"[{name}] {source}; network: {path}", flush=True)
        xla = None
        if codec.cpu_kernels and not args.no_xla:  # the XLA path of the same weights, for its own columns
            from l3ic_jax.codec import Codec

            xla = Codec(codec.model, codec.codebook, name=codec.name, metadata=codec.metadata, cpu_kernels=False)
        tfref = None
        if not args.no_tf:
            from l3ic_jax.codec import tensors_from_model

            tfref = TFReference(tensors_from_model(codec.model), codec.n_features)
        for size_key in args.sizes:
            size = SIZES[size_key]
            images, img_source = photos(size, args.images)
            mid = pipeline.model_id(codec)
            cb = codec.codebook
            row = {"model": name, "weights": source, "size": f"{size[1]}x{size[0]}", "inputs": img_source,
                   "network": path}
            # compile: first calls of every jitted function at this shape
            x0 = images[0].astype(np.float32) / 255.0
            t_c_enc, z0 = _t(lambda: np.asarray(codec.encode(x0)))
            q0 = np.asarray(codec.dequantize(codec.quantize(z0)))
            t_c_dec, _ = _t(lambda: np.asarray(codec.decode(q0)))
            t_c_ce, data0 = _t(lambda: pipeline.compress(images[0], codec))
            t_c_de, _ = _t(lambda: pipeline.decompress(data0, codec))
            row["compile_s"] = {"E": t_c_enc, "D": t_c_dec, "CE": t_c_ce, "DE": t_c_de}
            if tfref is not None:
                t_tf_first, _ = _t(lambda: tfref.encode(x0[None]))
                t_tf_first_d, _ = _t(lambda: tfref.decode(q0))
                row["tf_first_call_s"] = {"E": t_tf_first, "D": t_tf_first_d}
            if xla is not None:  # compile the XLA path at this shape
                np.asarray(xla.encode(x0)), np.asarray(xla.decode(q0))
                pipeline.decompress(pipeline.compress(images[0], xla), xla)
            times = {k: [] for k in ("E", "D", "CE", "DE", "QE", "tf_E", "tf_D", "tf_CE", "tf_DE",
                                     "xla_E", "xla_D", "xla_CE", "xla_DE")}
            parity = {"latent": 0.0, "latent_scale": 0.0, "decoded": 0.0}
            bpp = []
            for img in images:
                x = img.astype(np.float32) / 255.0
                for _ in range(args.repeats):
                    t, z = _t(lambda: np.asarray(codec.encode(x)))
                    times["E"].append(t)
                    q = np.asarray(codec.dequantize(codec.quantize(z)))
                    t, y = _t(lambda: np.asarray(codec.decode(q)))
                    times["D"].append(t)
                    zd = jax.device_put(z)
                    zd.block_until_ready()
                    t, _ = _t(
                        lambda: bitstream.pack(
                            np.asarray(codec.quantize(zd))[0], height=size[0], width=size[1], model_id=mid
                        )
                    )
                    times["QE"].append(t)
                    t, data = _t(lambda: pipeline.compress(img, codec))
                    times["CE"].append(t)
                    t, _ = _t(lambda: pipeline.decompress(data, codec))
                    times["DE"].append(t)
                    if xla is not None:
                        times["xla_E"].append(_t(lambda: np.asarray(xla.encode(x)))[0])
                        times["xla_D"].append(_t(lambda: np.asarray(xla.decode(q)))[0])
                        t, data_x = _t(lambda: pipeline.compress(img, xla))
                        times["xla_CE"].append(t)
                        times["xla_DE"].append(_t(lambda: pipeline.decompress(data_x, xla))[0])
                    if tfref is None:
                        continue
                    t, zt = _t(lambda: tfref.encode(x[None]))
                    times["tf_E"].append(t)
                    t, yt = _t(lambda: tfref.decode(q))
                    times["tf_D"].append(t)

                    def tf_ce():
                        zz = tfref.encode((img.astype(np.float32) / 255.0)[None])
                        return bitstream.pack(quantize_np(zz[0], cb), height=size[0], width=size[1], model_id=mid)

                    def tf_de():
                        u = bitstream.unpack(data)
                        out = tfref.decode(cb[u.indices][None])[0]
                        return np.array(out[: u.height, : u.width])

                    t, _ = _t(tf_ce)
                    times["tf_CE"].append(t)
                    t, _ = _t(tf_de)
                    times["tf_DE"].append(t)
                    parity["latent"] = max(parity["latent"], float(np.abs(zt - z).max()))
                    parity["latent_scale"] = max(parity["latent_scale"], float(max(1.0, np.abs(z).max())))
                    parity["decoded"] = max(parity["decoded"], float(np.abs(yt - y).max()))
                bpp.append(8 * len(data) / (size[0] * size[1]))
            row["seconds"] = {k: _med(v) for k, v in times.items() if v}
            row["samples"] = len(times["E"])
            row["bpp"] = _med(bpp)
            sec = row["seconds"]
            row["entropy_share_of_CE"] = sec["QE"] / sec["CE"]
            if xla is not None:
                row["ours_over_xla"] = {k: sec[k] / sec[f"xla_{k}"] for k in ("E", "D", "CE", "DE")}
                row["ours_over_xla"]["CE+DE"] = (sec["CE"] + sec["DE"]) / (sec["xla_CE"] + sec["xla_DE"])
            if tfref is not None:
                row["ours_over_tf"] = {k: sec[k] / sec[f"tf_{k}"] for k in ("E", "D", "CE", "DE")}
                row["ours_over_tf"]["CE+DE"] = (sec["CE"] + sec["DE"]) / (sec["tf_CE"] + sec["tf_DE"])
                row["parity"] = parity
            rows[f"{name}-{size_key}"] = row
            _print_row(row)
            _save(args, results)


def _path(codec) -> str:
    """Which network implementation the codec's inference runs on."""
    if getattr(codec, "cpu_kernels", False):
        from l3ic_jax import cpu_backend

        plan = cpu_backend.winograd_plan()
        return f"C kernels (l3ic_jax.cpu_backend, Winograd plan {plan}, {cpu_backend.default_threads()} threads)"
    import jax

    return f"XLA ({jax.default_backend()})"


def _print_row(row):
    s = row["seconds"]
    line = f"  {row['model']} {row['size']}: " + " ".join(f"{k}={s[k]:.4f}" for k in ("E", "D", "CE", "DE"))
    if "ours_over_xla" in row:
        line += " | XLA " + " ".join(f"{k}={s['xla_' + k]:.4f}" for k in ("E", "D", "CE", "DE"))
    if "ours_over_tf" in row:
        r = row["ours_over_tf"]
        line += " | TF " + " ".join(f"{k}={s['tf_' + k]:.4f}" for k in ("E", "D", "CE", "DE"))
        line += " | ours/TF " + " ".join(f"{k}={v:.2f}" for k, v in r.items())
    line += f" | quantize+entropy {100 * row['entropy_share_of_CE']:.1f}% of CE, bpp {row['bpp']:.3f}"
    print(line, flush=True)


def _image_1080_indices(args):
    codec, source = load_codec("32c", args.seed)
    img = photos(SIZES["1080"], 1)[0][0]
    return codec, source, img, np.asarray(codec.encode_indices(img))[0]


def bench_classic(args, results: dict) -> None:
    import codecs_baseline as cb

    from l3ic_jax import pipeline

    codec, source, img, _ = _image_1080_indices(args)
    data = pipeline.compress(img, codec)
    target = 8 * len(data) / (img.shape[0] * img.shape[1])
    out = {"target_bpp": target, "weights": source, "codecs": {}}
    print(f"[classic] target {target:.3f} bpp (32c, {source})", flush=True)
    available = cb.all_codecs()
    for key in ("jpeg", "webp", "jpeg2000", "avif"):
        c = available.get(key)
        if c is None or not c.available()[0]:
            out["codecs"][key] = {"skipped": "not available"}
            continue
        param, blob = cb.match_bpp(c, img, target, {})
        enc = [_t(lambda: c.encode(img, param))[0] for _ in range(args.repeats + 1)]
        dec = [_t(lambda: c.decode(blob))[0] for _ in range(args.repeats + 1)]
        out["codecs"][key] = {
            "name": c.name, "settings": c.settings, "version": c.version(), "param": param,
            "bpp": 8 * len(blob) / (img.shape[0] * img.shape[1]), "encode_s": _med(enc), "decode_s": _med(dec),
        }
        print(f"  {c.name}: {c.param}={param} bpp={out['codecs'][key]['bpp']:.3f} "
              f"enc={_med(enc):.4f}s dec={_med(dec):.4f}s", flush=True)
    results["classic"] = out
    _save(args, results)


def bench_entropy(args, results: dict) -> None:
    import zstandard

    from l3ic_jax import fse

    _, source, _, idx = _image_1080_indices(args)
    chans = [np.ascontiguousarray(idx[..., c]).ravel() for c in range(idx.shape[-1])]
    total = sum(c.size for c in chans)
    out = {"weights": source, "latent": list(idx.shape), "bytes": total}

    def fse_one(c):
        try:
            return fse.compress(c)
        except (fse.NotCompressibleError, fse.SymbolRepetitionError):
            return None

    zc = zstandard.ZstdCompressor(level=1)
    zd = zstandard.ZstdDecompressor()
    coded = [fse_one(c) for c in chans]
    zch = [zc.compress(c.tobytes()) for c in chans]
    whole = zc.compress(np.ascontiguousarray(np.moveaxis(idx, 2, 0)).tobytes())
    cases = {
        "fse_per_channel": (lambda: [fse_one(c) for c in chans],
                            lambda: [fse.decompress(b, c.size) for b, c in zip(coded, chans) if b is not None]),
        "fse_batch": (lambda: fse.compress_batch(chans),
                      lambda: fse.decompress_batch([b for b in coded if b is not None], chans[0].size)),
        "zstd1_per_channel": (lambda: [zc.compress(c.tobytes()) for c in chans],
                              lambda: [zd.decompress(b) for b in zch]),
        "zstd1_whole": (lambda: zc.compress(np.ascontiguousarray(np.moveaxis(idx, 2, 0)).tobytes()),
                        lambda: zd.decompress(whole)),
    }
    sizes = {
        "fse_per_channel": sum(len(b) if b is not None else c.size for b, c in zip(coded, chans)),
        "fse_batch": sum(len(b) if b is not None else c.size for b, c in zip(coded, chans)),
        "zstd1_per_channel": sum(len(b) for b in zch),
        "zstd1_whole": len(whole),
    }
    for key, (enc, dec) in cases.items():
        te = [_t(enc)[0] for _ in range(max(5, 3 * args.repeats))]
        td = [_t(dec)[0] for _ in range(max(5, 3 * args.repeats))]
        out[key] = {"encode_s": _med(te), "decode_s": _med(td), "size": sizes[key],
                    "encode_MBps": total / _med(te) / 1e6, "decode_MBps": total / _med(td) / 1e6}
        print(f"  {key}: enc {_med(te) * 1e3:.2f} ms dec {_med(td) * 1e3:.2f} ms size {sizes[key]}", flush=True)
    results["entropy"] = out
    _save(args, results)


_CHILD_BATCH = r"""
import json, os, sys, time, numpy as np
sys.path.append({tools!r})
import bench_speed as B
from l3ic_jax.pipeline import compress_batch, decompress_batch
codec, source = B.load_codec("32c", {seed})
n, size = {n}, tuple({size})
imgs = (B.photos(size, min(n, 4))[0] * n)[:n]
compress_batch(imgs[:1], codec); decompress_batch(compress_batch(imgs[:1], codec), codec)  # compile batch 1
streams = compress_batch(imgs, codec); decompress_batch(streams, codec)  # compile batch n
t0 = time.perf_counter(); streams = compress_batch(imgs, codec); t1 = time.perf_counter()
out = decompress_batch(streams, codec); t2 = time.perf_counter()
print(json.dumps(dict(n=n, compress_s=t1 - t0, decompress_s=t2 - t1, vmhwm_mb=B.vmhwm_mb(), source=source)))
"""

_CHILD_LARGE = r"""
import json, sys, time, numpy as np
sys.path.append({tools!r})
import bench_speed as B
from l3ic_jax.pipeline import compress, decompress
codec, source = B.load_codec("32c", {seed})
img = B.photos((4000, 6000), 1)[0][0]
base = B.vmhwm_mb()
t0 = time.perf_counter(); data = compress(img, codec); t1 = time.perf_counter()
out = decompress(data, codec); t2 = time.perf_counter()
assert out.shape == img.shape
print(json.dumps(dict(compress_s=t1 - t0, decompress_s=t2 - t1, vmhwm_mb=B.vmhwm_mb(), before_mb=base,
                      bytes=len(data), ru_maxrss_mb=__import__("resource").getrusage(0).ru_maxrss / 1024,
                      source=source)))
"""


def vmhwm_mb() -> float:
    """Peak resident set size of this process (VmHWM), MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO))
    if proc.returncode != 0:
        raise RuntimeError(f"child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_batch(args, results: dict) -> None:
    size = SIZES[args.batch_size_key]
    out = {"size": f"{size[1]}x{size[0]}", "runs": []}
    for n in (1, 4, 16):
        r = _child(_CHILD_BATCH.format(tools=str(REPO / "tools"), seed=args.seed, n=n, size=list(size)))
        r["images_per_s"] = n / (r["compress_s"] + r["decompress_s"])
        r["compress_images_per_s"] = n / r["compress_s"]
        r["decompress_images_per_s"] = n / r["decompress_s"]
        out["runs"].append(r)
        print(f"  batch {n}: {r['images_per_s']:.2f} img/s (compress {r['compress_images_per_s']:.2f}, "
              f"decompress {r['decompress_images_per_s']:.2f}), peak RSS {r['vmhwm_mb']:.0f} MB", flush=True)
    results["batch"] = out
    _save(args, results)


def bench_large(args, results: dict) -> None:
    r = _child(_CHILD_LARGE.format(tools=str(REPO / "tools"), seed=args.seed))
    r["size"] = "6000x4000"
    r["limit_mb"] = 3072
    r["ok"] = r["vmhwm_mb"] < 3072
    print(f"  24 MP: compress {r['compress_s']:.1f}s decompress {r['decompress_s']:.1f}s peak RSS "
          f"{r['vmhwm_mb']:.0f} MB ({'<' if r['ok'] else '>='} 3 GB)", flush=True)
    results["large"] = r
    _save(args, results)


# -- output ------------------------------------------------------------------------------------------------------------
def _save(args, results: dict) -> None:
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1, default=float) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Sections: " + ", ".join(SECTIONS) + ". See the module docstring for what each measures.",
    )
    p.add_argument("--models", default="16c,32c,64c", help="comma-separated (default: 16c,32c,64c)")
    p.add_argument("--sizes", default="512,1080", help="table sizes: 512 and/or 1080 (default: both)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of the sections")
    p.add_argument("--images", type=int, default=3, help="images per size (default 3)")
    p.add_argument("--repeats", type=int, default=2, help="timed repeats per image (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights when no checkpoint exists")
    p.add_argument("--random-weights", default=RANDOM_WEIGHTS, choices=("glorot", "reference"),
                   help="weights when a model has no checkpoint (default glorot; see load_codec)")
    p.add_argument("--batch-size-key", default="512", choices=sorted(SIZES), help="image size of the batch section")
    p.add_argument("--no-tf", action="store_true", help="skip the TensorFlow reference")
    p.add_argument("--no-xla", action="store_true",
                   help="when the default path is the C kernels, skip the extra XLA-path columns")
    p.add_argument("--out", default=str(REPO / "docs" / "bench_speed.json"), help="JSON output ('' for none)")
    p.add_argument("--fresh", action="store_true", help="start a new JSON instead of merging into --out")
    args = p.parse_args(argv)
    os.environ["L3IC_BENCH_RANDOM"] = args.random_weights  # for the subprocesses
    globals()["RANDOM_WEIGHTS"] = args.random_weights
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    for s in sections:
        if s not in SECTIONS:
            p.error(f"unknown section {s!r}")
    results = {}
    if args.out and Path(args.out).is_file() and not args.fresh:
        results = json.loads(Path(args.out).read_text())
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    prov = {"machine": machine(), "date": now, "command": "python tools/bench_speed.py " + " ".join(argv or sys.argv[1:])}
    if not args.no_tf:
        try:
            import tensorflow as tf

            prov["machine"]["tensorflow"] = tf.__version__
        except ImportError:
            print("TensorFlow is not installed: --no-tf", flush=True)
            args.no_tf = True
    print(json.dumps(prov, indent=1), flush=True)
    fns = {"table": bench_table, "classic": bench_classic, "entropy": bench_entropy, "batch": bench_batch,
           "large": bench_large}
    for s in sections:
        print(f"== {s}", flush=True)
        results.setdefault("provenance", {})[s] = dict(prov)
        fns[s](args, results)
        results["provenance"][s]["loadavg_after"] = _loadavg()
        _save(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
