#!/usr/bin/env python3
"""Throughput of the FSE coder (l3ic_jax.fse) next to zstd level 1, on the same data, in one run.

Data (generated, deterministic):
  - lap32400: one 240x135 latent channel, 32,400 bytes, discrete Laplacian over 0..31 (scale 1.5, centre 15);
  - text1MiB: 1 MiB of pseudo-English text (Zipf-distributed pseudo-words).

Measured:
  - C level: fse_core.c compiled with gcc -O3 into a bench driver (test_fse_core.c --bench), no Python at all;
    this is the number that compares with the reference library's figures (C, one thread);
  - Python level: fse.compress / fse.decompress per call (binding overhead included), one thread;
  - batched: compress_batch / decompress_batch over 64 lap32400 channels, threads=1 and threads=0 (all CPUs);
  - zstd level 1 (python-zstandard, one thread, Python level), for scale.

Every figure is MB/s (10^6 bytes of *uncompressed* data per second): the median over timing windows of at least a
few ms, plus the best window (the machine may be shared; the load average is recorded). Prints a table, writes JSON.

    python tools/bench_fse.py [--seconds 1.0] [--out docs/bench_fse.json] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FSE_SRC = REPO / "csrc" / "fse"
REFERENCE = {  # reference FSE library, C, gcc -O3, one thread, this machine type (from the task brief)
    "lap32400": {"compress": 559.0, "decompress": 719.0},
    "text1MiB": {"compress": 590.0, "decompress": 766.0},
}


# -- data -----------------------------------------------------------------------------------------------------------
def laplacian_channel(n: int = 32_400, scale: float = 1.5, centre: int = 15, seed: int = 0) -> bytes:
    k = np.arange(32)
    p = np.exp(-np.abs(k - centre) / scale)
    rng = np.random.default_rng(seed)
    return rng.choice(32, size=n, p=p / p.sum()).astype(np.uint8).tobytes()


def pseudo_text(n: int = 1 << 20, seed: int = 0) -> bytes:
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    freq = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0,
                     1.9, 1.5, 1.0, 0.8, 0.15, 0.15, 0.1, 0.07])
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list(letters), size=int(rng.integers(1, 10)), p=freq / freq.sum()))
             for _ in range(8000)]
    zipf = 1.0 / np.arange(1, len(words) + 1)
    picks = rng.choice(len(words), size=n // 3, p=zipf / zipf.sum())
    text = " ".join(words[i] for i in picks)
    while len(text) < n:
        text += " " + text
    return text[:n].encode()


# -- timing ---------------------------------------------------------------------------------------------------------
def measure(fn, nbytes: int, seconds: float, cpu: bool = True) -> dict:
    """MB/s of fn() over windows of >= 2 ms: median and best window (wall clock), and the median of the windows'
    thread CPU time (time the scheduler gave to other processes excluded; one-thread figures only)."""
    reps = 1
    while True:
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        if time.perf_counter() - t > 0.002 or reps > 1 << 20:
            break
        reps *= 2
    per, cpus, t_end = [], [], time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(per) < 5:
        t, c = time.perf_counter(), time.thread_time()
        for _ in range(reps):
            fn()
        cpus.append((time.thread_time() - c) / reps)
        per.append((time.perf_counter() - t) / reps)
    out = {"median": nbytes / statistics.median(per) / 1e6, "best": nbytes / min(per) / 1e6, "windows": len(per)}
    if cpu:
        out["cpu_median"] = nbytes / statistics.median(cpus) / 1e6
    return out


def c_bench(datasets: dict, seconds: float) -> dict | None:
    cc = shutil.which(os.environ.get("CC", "gcc"))
    if cc is None:
        print("no C compiler: C-level figures skipped", file=sys.stderr)
        return None
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "fse_bench"
        subprocess.run([cc, "-std=c99", "-O3", f"-I{FSE_SRC}", "-o", str(exe), str(FSE_SRC / "test_fse_core.c"),
                        str(FSE_SRC / "fse_core.c"), "-lm"], check=True)
        for name, data in datasets.items():
            f = Path(tmp) / f"{name}.bin"
            f.write_bytes(data)
            res = subprocess.run([str(exe), "--bench", str(f), "--seconds", str(seconds)], check=True,
                                 capture_output=True, text=True)
            r = json.loads(res.stdout)
            out[name] = {
                "compress": {"median": r["compress_MBps_median"], "best": r["compress_MBps_best"],
                             "cpu_median": r["compress_MBps_cpu_median"]},
                "decompress": {"median": r["decompress_MBps_median"], "best": r["decompress_MBps_best"],
                               "cpu_median": r["decompress_MBps_cpu_median"]},
                "compressed_size": r["compressed_size"],
            }
    return out


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" in fields:
        cpu = f"{fields['model name']} (family {fields.get('cpu family')}, model {fields.get('model')})"
        if "hypervisor" in fields.get("flags", "").split():
            cpu += ", virtual machine"
    gcc = shutil.which("gcc")
    info = {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gcc": subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout.splitlines()[0] if gcc else None,
    }
    try:
        import zstandard

        info["zstandard"] = zstandard.__version__
        info["zstd"] = zstandard.ZSTD_VERSION if hasattr(zstandard, "ZSTD_VERSION") else None
    except ImportError:
        info["zstandard"] = None
    try:
        info["git_commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                            capture_output=True, text=True).stdout.strip() or None
    except OSError:
        info["git_commit"] = None
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="timing time per figure (default 1.0)")
    ap.add_argument("--channels", type=int, default=64, help="channels in the batched figures (default 64)")
    ap.add_argument("--out", default=str(REPO / "docs" / "bench_fse.json"), help="JSON output path")
    ap.add_argument("--markdown", action="store_true", help="print the docs/benchmarks.md section instead of the table")
    args = ap.parse_args(argv)

    try:
        from l3ic_jax import fse
    except ImportError:  # not installed: use the checkout (extension built in place)
        sys.path.insert(0, str(REPO))
        from l3ic_jax import fse

    datasets = {"lap32400": laplacian_channel(), "text1MiB": pseudo_text()}
    load_before = os.getloadavg()
    results: dict = {"reference_C": REFERENCE, "datasets": {}}

    c_level = c_bench(datasets, args.seconds)
    for name, data in datasets.items():
        n = len(data)
        stream = fse.compress(data)
        assert fse.decompress(stream, n) == data
        row = {"input_size": n, "fse_size": len(stream)}
        if c_level:
            row["fse_C"] = c_level[name]
        row["fse_python"] = {
            "compress": measure(lambda: fse.compress(data), n, args.seconds),
            "decompress": measure(lambda: fse.decompress(stream, n), n, args.seconds),
        }
        try:
            import zstandard

            zc, zd = zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor()
            zs = zc.compress(data)
            assert zd.decompress(zs) == data
            row["zstd1_size"] = len(zs)
            row["zstd1_python"] = {
                "compress": measure(lambda: zc.compress(data), n, args.seconds),
                "decompress": measure(lambda: zd.decompress(zs), n, args.seconds),
            }
        except ImportError:
            print("zstandard not installed: zstd figures skipped", file=sys.stderr)
        results["datasets"][name] = row

    # batched: a latent of 64 channels of 32,400 bytes
    chans = [laplacian_channel(seed=s, scale=0.5 + 2.5 * s / args.channels) for s in range(args.channels)]
    streams = fse.compress_batch(chans)
    total = sum(len(c) for c in chans)
    batch = {"channels": args.channels, "channel_size": 32_400}
    for threads in (1, 0):
        key = "threads=1" if threads == 1 else f"threads=0 ({os.cpu_count()} CPUs)"
        batch[key] = {
            "compress": measure(lambda: fse.compress_batch(chans, threads=threads), total, args.seconds, cpu=False),
            "decompress": measure(lambda: fse.decompress_batch(streams, 32_400, threads=threads), total,
                                  args.seconds, cpu=False),
        }
    results["batched_lap32400"] = batch
    results["machine"] = machine()
    results["machine"]["loadavg_before"] = [round(x, 2) for x in load_before]
    results["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    results["date"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results["command"] = "python tools/bench_fse.py " + " ".join(argv if argv is not None else sys.argv[1:])

    table = format_table(results)
    print(markdown_section(results) if args.markdown else table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


def markdown_section(r: dict) -> str:
    """The "## FSE entropy coder" section of docs/benchmarks.md: provenance, then the table."""
    m = r["machine"]
    return "\n".join([
        "## FSE entropy coder",
        "",
        f"- Machine: {m['cpu']}, {m['cpus']} CPUs; {m['platform']}; load average {m['loadavg_before'][0]} "
        f"before, {m['loadavg_after'][0]} after (shared machine)",
        f"- Versions: Python {m['python']}, numpy {m['numpy']}, {m['gcc']}, python-zstandard {m['zstandard']} "
        f"(zstd {'.'.join(map(str, m['zstd'])) if m.get('zstd') else '?'}), l3ic-jax commit {m['git_commit']}",
        f"- Date: {r['date']}; command: `{r['command']}` (raw figures: `docs/bench_fse.json`)",
        "",
        table_note(),
        "",
        format_table(r),
    ])


def table_note() -> str:
    return ("MB/s of uncompressed data, one thread unless stated. Each cell: wall-clock median / thread-CPU-time "
            "median / best window, over windows of >= 2 ms (the CPU-time median ignores time taken by other "
            "processes). \"C\" is the core called from C (what the reference figures measure), \"Python call\" "
            "goes through `l3ic_jax.fse`. Reference FSE figures: as given in the task brief for this machine.")


def format_table(r: dict) -> str:
    """Markdown table; each figure is "wall-clock median / thread-CPU-time median / best window" in MB/s."""

    def cell(d):
        cpu = f"{d['cpu_median']:.0f}" if "cpu_median" in d else "-"
        return f"{d['median']:.0f} / {cpu} / {d['best']:.0f}"

    lines = [
        "| data | coder | level | compress MB/s | decompress MB/s | size |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in r["datasets"].items():
        ref = r["reference_C"][name]
        lines.append(f"| {name} | reference FSE (brief) | C | {ref['compress']:.0f} | {ref['decompress']:.0f} | |")
        if "fse_C" in row:
            c = row["fse_C"]
            lines.append(f"| {name} | l3ic_jax.fse | C | {cell(c['compress'])} | {cell(c['decompress'])} "
                         f"| {row['fse_size']} / {row['input_size']} |")
        p = row["fse_python"]
        lines.append(f"| {name} | l3ic_jax.fse | Python call | {cell(p['compress'])} | {cell(p['decompress'])} "
                     f"| {row['fse_size']} / {row['input_size']} |")
        if "zstd1_python" in row:
            z = row["zstd1_python"]
            lines.append(f"| {name} | zstd -1 (python-zstandard) | Python call | {cell(z['compress'])} "
                         f"| {cell(z['decompress'])} | {row['zstd1_size']} / {row['input_size']} |")
    b = r["batched_lap32400"]
    for key, v in b.items():
        if key.startswith("threads"):
            lines.append(f"| {b['channels']} x lap32400 | l3ic_jax.fse batch, {key} | Python call "
                         f"| {cell(v['compress'])} | {cell(v['decompress'])} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
