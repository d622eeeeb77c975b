"""Tests of the FSE entropy coder (``l3ic_jax.fse``, C extension ``l3ic_jax._fse``).

Two layers, as for any coder here: exact bytes against the reference library's vectors (a subset is copied to
``tests/data/fse`` so these always run; the full set in ``<repo>/../shared/reference/fse`` is used when present), then
properties: hypothesis round trips over random and degenerate histograms, mutated streams that must give an
``FSEError`` or bytes within bounds (never a crash or another exception), batch == one-by-one, the GIL released,
``max_size`` respected. The C-level model-checked fuzzer (``test_fse_core.c``) runs under ``-m slow``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

fse = pytest.importorskip("l3ic_jax.fse", reason="the l3ic_jax._fse extension is not built (pip install -e .)")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOCAL_DIR = REPO / "tests" / "data" / "fse"
SHARED_DIR = Path(os.environ.get("L3IC_SHARED_DIR", REPO.parent / "shared")) / "reference" / "fse"

REFERENCE_ERRORS = {
    "GENERIC": "Error (generic)",
    "dstSize_tooSmall": "Destination buffer is too small",
    "srcSize_wrong": "Src size is incorrect",
    "corruption_detected": "Corrupted block detected",
    "tableLog_tooLarge": "tableLog requires too much memory : unsupported",
    "maxSymbolValue_tooSmall": "Specified maxSymbolValue is too small",
}


# -- vectors -----------------------------------------------------------------------------------------------------
def _load(directory: Path) -> list[dict]:
    index = directory / "vectors.json"
    if not index.exists():
        return []
    return [dict(v, _dir=str(directory)) for v in json.loads(index.read_text())["vectors"]]


LOCAL = _load(LOCAL_DIR)
SHARED = _load(SHARED_DIR)


def _vector_params(vectors: list[dict], source: str):
    if not vectors:
        return [pytest.param(None, id=f"{source}-absent")]
    return [pytest.param(v, id=f"{source}-{v['name']}") for v in vectors]


ALL_VECTORS = _vector_params(LOCAL, "local") + _vector_params(SHARED, "shared")
DATA_VECTORS = _vector_params([v for v in LOCAL if v["result"] == "data"], "local") + _vector_params(
    [v for v in SHARED if v["result"] == "data"], "shared"
)


def _need(v):
    if v is None:
        pytest.skip(f"{SHARED_DIR} is absent (the shared folder is expected at <repo>/../shared)")
    return v


def _read(v: dict, key: str) -> bytes:
    return (Path(v["_dir"]) / key).read_bytes()


def _apply(op: dict, stream: bytes) -> bytes:
    kind = op["op"]
    if kind == "truncate":
        return stream[: op["keep"]]
    if kind == "drop_first":
        return stream[1:]
    if kind == "append":
        return stream + bytes.fromhex(op["bytes_hex"])
    if kind == "flip":
        b = bytearray(stream)
        b[op["byte"]] ^= 1 << op["bit"]
        return bytes(b)
    assert kind == "capacity", kind
    return stream


def _outcome(fn, *args):
    """('data', bytes) or ('error', exception) -- anything else propagates and fails the test."""
    try:
        return "data", fn(*args)
    except fse.FSEError as e:
        return "error", e


def test_local_vectors_present():
    assert len(LOCAL) >= 20, f"the local vector subset in {LOCAL_DIR} is missing"
    assert sum((LOCAL_DIR / f).stat().st_size for f in os.listdir(LOCAL_DIR)) < 200_000


@pytest.mark.parametrize("v", ALL_VECTORS)
def test_vector_compress(v):
    v = _need(v)
    x = _read(v, v["input"])
    assert hashlib.sha256(x).hexdigest() == v["input_sha256"]
    if v["result"] == "special":
        expected = fse.SymbolRepetitionError if v["special_code"] == 1 else fse.NotCompressibleError
        for legacy in (False, True):
            with pytest.raises(expected):
                fse.compress(x, legacy=legacy)
        return
    out = fse.compress(x)
    assert out == _read(v, v["output"])
    assert len(out) == v["output_size"]


@pytest.mark.parametrize("v", DATA_VECTORS)
def test_vector_compress_pyfse_bundled(v):
    v = _need(v)
    x = _read(v, v["input"])
    want = _read(v, v["output"] if v["pyfse_bundled_identical"] else v["pyfse_bundled"]["output"])
    assert fse.compress(x, legacy=True) == want


@pytest.mark.parametrize("v", DATA_VECTORS)
def test_vector_decompress(v):
    v = _need(v)
    x = _read(v, v["input"])
    streams = [_read(v, v["output"])]
    if not v["pyfse_bundled_identical"]:
        streams.append(_read(v, v["pyfse_bundled"]["output"]))
    for s in streams:
        assert fse.decompress(s, len(x)) == x
        assert fse.decompress(s, len(x) + 1000) == x
        with pytest.raises(fse.FSEError) as ei:
            fse.decompress(s, len(x) - 1)
        assert ei.value.name == "dstSize_tooSmall"


def _corruption_params():
    params = []
    for source, vectors in (("local", LOCAL), ("shared", SHARED)):
        for v in vectors:
            for i, t in enumerate(v.get("corruption_tests", [])):
                params.append(pytest.param(v, t, id=f"{source}-{v['name']}-{i}-{t['op']}"))
    if not SHARED:
        params.append(pytest.param(None, None, id="shared-absent"))
    return params


@pytest.mark.parametrize("v,test", _corruption_params())
def test_corruption_matches_reference(v, test):
    v = _need(v)
    stream = _apply(test, _read(v, v["output"]))
    assert hashlib.sha256(stream).hexdigest() == test["corrupted_sha256"]
    header_truncated = test["op"] == "truncate" and test["keep"] < v["header_size"]
    for res in test["results"]:
        kind, got = _outcome(fse.decompress, stream, res["capacity"])
        if res["result"] == "error":
            assert kind == "error", f"expected {res['error']}, decoded {len(got)} bytes"
            if not header_truncated:  # FORMAT.md: which error a truncated header gives is an artefact
                assert got.name == res["error"]
                assert str(got) == res["message"] == REFERENCE_ERRORS[res["error"]]
        else:
            assert kind == "data", f"expected {res['length']} bytes, got {got.name}"
            assert len(got) == res["length"]
            assert hashlib.sha256(got).hexdigest() == res["sha256"]


def test_error_names_and_aliases():
    assert fse.ERROR_MESSAGES == REFERENCE_ERRORS
    assert fse.FSEException is fse.FSEError
    assert fse.FSENotCompressibleError is fse.NotCompressibleError
    assert fse.FSESymbolRepetitionError is fse.SymbolRepetitionError
    assert issubclass(fse.NotCompressibleError, fse.FSEError)
    assert issubclass(fse.SymbolRepetitionError, fse.FSEError)
    with pytest.raises(fse.FSEError) as ei:
        fse.decompress(b"", 10)
    assert (ei.value.name, str(ei.value), ei.value.index) == ("corruption_detected", "Corrupted block detected", None)
    with pytest.raises(fse.FSEError) as ei:
        fse.decompress(b"\x08\x00\x00\x00", 10)  # table-log nibble 8: L = 13
    assert ei.value.name == "tableLog_tooLarge"


# -- round trips over histograms ------------------------------------------------------------------------------------
def _check_roundtrip(data: bytes, legacy: bool = False) -> None:
    n = len(data)
    counts = np.bincount(np.frombuffer(data, np.uint8), minlength=256) if n else np.zeros(256, int)
    try:
        c = fse.compress(data, legacy=legacy)
    except fse.SymbolRepetitionError:
        assert n >= 2 and counts.max() == n
        return
    except fse.NotCompressibleError:
        assert not (n >= 2 and counts.max() == n)
        return
    assert counts.max() > 1 and counts.max() >= n // 128
    assert 4 <= len(c) <= n - 2
    assert fse.decompress(c, n) == data
    with pytest.raises(fse.FSEError) as ei:
        fse.decompress(c, n - 1)
    assert ei.value.name == "dstSize_tooSmall"


@st.composite
def histogram_data(draw, max_len=70_000):
    kind = draw(st.sampled_from(["empty", "one", "two", "32", "256", "sparse", "random"]))
    if kind == "empty":
        return b""
    n = draw(st.one_of(st.integers(0, 100), st.integers(0, max_len)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = {"one": 1, "two": 2, "32": 32, "256": 256, "sparse": 5}.get(kind) or int(rng.integers(1, 257))
    alphabet = np.arange(256) if k == 256 else rng.choice(256, size=k, replace=False)
    if kind == "32":
        alphabet = np.arange(32)
    concentration = draw(st.sampled_from([0.05, 0.3, 1.0, 10.0]))
    p = rng.dirichlet(np.full(k, concentration))
    return rng.choice(alphabet, size=n, p=p).astype(np.uint8).tobytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histogram_data(), st.booleans())
def test_roundtrip_histograms(data, legacy):
    _check_roundtrip(data, legacy)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_roundtrip_small_binary(data, legacy):
    _check_roundtrip(data, legacy)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\x00\x00",
        b"\x00\x01",
        bytes([7]) * 70_000,
        bytes(range(32)) * 1000,
        bytes(range(256)) * 200,
        bytes([1, 2]) * 35_000,
        bytes([0] * 69_999 + [255]),
        bytes([3, 3, 3, 3, 3, 4]),
    ],
    ids=["empty", "one", "two-same", "two-diff", "rle70k", "all32", "all256", "two-sym", "outlier", "six"],
)
def test_roundtrip_degenerate(data):
    for legacy in (False, True):
        _check_roundtrip(data, legacy)


def test_legacy_rule_differs_only_on_small_power_of_two_inputs():
    # FORMAT.md §3: 64 bytes with a value >= 32 (vector lap_outlier40_64) picks a smaller table log in the bundled copy.
    rng = np.random.default_rng(5)
    x = np.clip(np.round(rng.laplace(15, 1.0, 64)), 0, 31).astype(np.uint8)
    x[10] = 40
    a, b = fse.compress(x), fse.compress(x, legacy=True)
    assert a != b and (a[0] & 15) == (b[0] & 15) + 1
    assert fse.decompress(a, 64) == fse.decompress(b, 64) == x.tobytes()
    y = np.concatenate([x, x[:1]])  # 65 bytes: both rules agree
    assert fse.compress(y) == fse.compress(y, legacy=True)


# -- mutated streams ---------------------------------------------------------------------------------------------
def _some_streams() -> list[tuple[bytes, int, int]]:
    """(stream, decoded length, header size) for a few local vectors."""
    out = []
    for v in LOCAL:
        if v["result"] == "data" and v["name"] in {
            "lap_4096_b1.5_c15", "twosym_p99_10000", "text_like_256", "lap_outlier40_64", "dirichlet_m2_2245",
        }:
            out.append((_read(v, v["output"]), v["input_size"], v["header_size"]))
    assert len(out) == 5
    return out


def _assert_safe(stream: bytes, max_size: int):
    kind, got = _outcome(fse.decompress, stream, max_size)
    if kind == "data":
        assert isinstance(got, bytes) and 2 <= len(got) <= max_size
    else:
        assert got.name in REFERENCE_ERRORS and str(got) == REFERENCE_ERRORS[got.name]
    return kind, got


def test_truncation_at_every_length():
    for stream, n, hsize in _some_streams():
        cuts = [stream[:k] for k in range(len(stream) + 1)] if len(stream) < 700 else [
            stream[:k] for k in list(range(0, 64)) + list(range(64, len(stream), 7))
        ]
        batch = fse.decompress_batch(cuts, 4 * n + 8)
        for k, cut in enumerate(cuts):
            kind, got = _assert_safe(cut, 4 * n + 8)
            if len(cut) <= hsize:  # header cut (or nothing after it): always an error
                assert kind == "error"
            _same(batch[k], kind, got)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 4), st.data())
def test_random_bit_flips(which, data):
    stream, n, _ = _some_streams()[which]
    b = bytearray(stream)
    for _ in range(data.draw(st.integers(1, 4))):
        b[data.draw(st.integers(0, len(b) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    _assert_safe(bytes(b), data.draw(st.sampled_from([n, n - 1, 2 * n, 0, 1, 2])))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 5000))
def test_garbage_never_crashes(garbage, max_size):
    _assert_safe(garbage, max_size)
    if garbage:
        _assert_safe(bytes([garbage[0] & 7]) + garbage[1:], max_size)  # a valid table-log nibble


@pytest.mark.slow
def test_mutation_fuzz_heavy():
    rng = np.random.default_rng(1234)
    streams = _some_streams()
    for _ in range(20_000):
        stream, n, _ = streams[rng.integers(len(streams))]
        b = bytearray(stream)
        op = rng.integers(4)
        if op == 0:
            b = b[: rng.integers(len(b) + 1)]
        elif op == 1:
            for _ in range(rng.integers(1, 9)):
                b[rng.integers(len(b))] ^= 1 << int(rng.integers(8))
        elif op == 2:
            b += rng.integers(0, 256, size=int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
        else:
            b = bytearray(rng.integers(0, 256, size=int(rng.integers(0, 200)), dtype=np.uint8).tobytes())
        _assert_safe(bytes(b), int(rng.integers(0, 4 * n)))


# -- batch calls ---------------------------------------------------------------------------------------------------
def _same(item, kind, got):
    if kind == "data":
        assert item == got
    else:
        assert isinstance(item, type(got)) and type(item) is type(got)
        assert (item.name, item.code, str(item)) == (got.name, got.code, str(got))


def test_batch_equals_one_by_one():
    rng = np.random.default_rng(7)
    chans = [np.clip(np.round(rng.laplace(15, s, 32_400)), 0, 31).astype(np.uint8) for s in rng.uniform(0.3, 3, 24)]
    chans += [np.full(4096, 9, np.uint8), rng.integers(0, 256, 4096, dtype=np.uint8), np.zeros(0, np.uint8)]
    chans += [np.frombuffer(b"ab", np.uint8), np.frombuffer(b"a", np.uint8)]
    for legacy in (False, True):
        for threads in (0, 1, 3):
            batch = fse.compress_batch(chans, legacy=legacy, threads=threads)
            assert len(batch) == len(chans)
            for i, (c, item) in enumerate(zip(chans, batch)):
                kind, got = _outcome(lambda d: fse.compress(d, legacy=legacy), c)
                _same(item, kind, got)
                if kind == "error":
                    assert item.index == i
    streams = [item if isinstance(item, bytes) else b"\x00garbage" for item in fse.compress_batch(chans)]
    streams += [streams[0][:-1], streams[0][:5], b""]
    sizes = [len(c) for c in chans] + [32_400, 32_400, 10]
    for threads in (0, 1, 2, 5):
        for max_sizes in (sizes, 40_000):
            batch = fse.decompress_batch(streams, max_sizes, threads=threads)
            for i, (s, item) in enumerate(zip(streams, batch)):
                m = max_sizes[i] if isinstance(max_sizes, list) else max_sizes
                kind, got = _outcome(fse.decompress, s, m)
                _same(item, kind, got)
                if kind == "error":
                    assert item.index == i
    for i, c in enumerate(chans[:24]):
        assert fse.decompress_batch([streams[i]], [len(c)])[0] == c.tobytes()
    assert fse.compress_batch([]) == [] and fse.decompress_batch([], []) == []


def test_batch_argument_errors():
    with pytest.raises(ValueError):
        fse.decompress_batch([b"x", b"y"], [1])
    with pytest.raises(ValueError):
        fse.compress_batch([b"x"], threads=-1)
    with pytest.raises(TypeError):
        fse.compress_batch([b"abc", "text"])
    with pytest.raises(TypeError):
        fse.compress_batch(5)


# -- buffers, bounds, GIL --------------------------------------------------------------------------------------------
def test_buffer_types():
    rng = np.random.default_rng(3)
    x = np.clip(np.round(rng.laplace(15, 1.5, 5000)), 0, 31).astype(np.uint8)
    want = fse.compress(x.tobytes())
    big = np.concatenate([np.zeros(7, np.uint8), x])
    for obj in (x, x.view(np.int8), bytearray(x.tobytes()), memoryview(x.tobytes()), memoryview(big)[7:], big[7:]):
        assert fse.compress(obj) == want
        assert fse.decompress(bytearray(want), 5000) == x.tobytes()
        assert fse.decompress(memoryview(want), 5000) == x.tobytes()
        assert fse.decompress(np.frombuffer(want, np.uint8), 5000) == x.tobytes()
    with pytest.raises(TypeError):
        fse.compress(x.astype(np.uint16))  # wider items are refused, not coded as raw bytes
    with pytest.raises(TypeError):
        fse.compress(np.ascontiguousarray(np.stack([x, x]))[:, ::2])
    with pytest.raises(TypeError):
        fse.compress("text")
    with pytest.raises(TypeError):
        fse.compress([1, 2, 3])


def test_max_size_bound():
    rng = np.random.default_rng(4)
    x = (rng.random(50_000) < 0.02).astype(np.uint8).tobytes()
    c = fse.compress(x)
    assert fse.decompress(c, len(x)) == x
    for m in (0, 1, 2, 100, len(x) - 1):
        with pytest.raises(fse.FSEError) as ei:
            fse.decompress(c, m)
        assert ei.value.name == "dstSize_tooSmall"
    with pytest.raises(ValueError):
        fse.decompress(c, -1)
    # A header whose only symbol fills the table reads 0 bits per symbol forever: bounded by max_size, no hang.
    one_symbol = bytes([0xF0, 0x03, 0xFF, 0xFF])  # L = 5, norm[0] = 32; then 15 bits
    kind, got = _outcome(fse.decompress, one_symbol, 1 << 20)
    assert kind == "error" and got.name == "dstSize_tooSmall"


def _probe_gil(call, probe: bytearray, budget_s: float = 30.0) -> bool:
    """True if another thread ran while `call` held an export of `probe` (i.e. inside the C function).

    Resizing a bytearray fails with BufferError while a buffer export exists; the C call holds one from before it
    releases the GIL until after it takes it back. If the GIL were kept, the prober could never run in that window.
    The prober appends 0xFF (not 0, which would end a stream in a zero byte and make decoding fail at once) and pops
    it, so a call that starts in between still runs its full length. Not timing based: it loops until the event is
    seen (normally on the first call) or the budget runs out.
    """
    seen, stop = threading.Event(), threading.Event()

    def prober():
        while not stop.is_set():
            try:
                probe.append(0xFF)
                probe.pop()
            except BufferError:
                seen.set()
                return

    t = threading.Thread(target=prober, daemon=True)
    t.start()
    deadline = time.monotonic() + budget_s
    try:
        while not seen.is_set() and time.monotonic() < deadline:
            try:
                call()
            except fse.FSEError:
                pass  # a call that started between the prober's append and pop decodes other bytes
    finally:
        stop.set()
        t.join()
    return seen.is_set()


def test_gil_released():
    rng = np.random.default_rng(11)
    x = np.clip(np.round(rng.laplace(15, 1.5, 4_000_000)), 0, 31).astype(np.uint8)
    src = bytearray(x.tobytes())
    assert _probe_gil(lambda: fse.compress(src), src)
    stream = bytearray(fse.compress(x))
    assert _probe_gil(lambda: fse.decompress(stream, len(x) + 1), stream)
    probe = bytearray(b"\x00" * 64)
    assert _probe_gil(lambda: fse.compress_batch([x, probe], threads=2), probe)
    assert _probe_gil(lambda: fse.decompress_batch([bytes(stream), probe], len(x), threads=2), probe)


def test_threads_run_concurrently():
    # Several Python threads coding at once give the same bytes as one thread (no shared state in the core).
    rng = np.random.default_rng(12)
    chans = [np.clip(np.round(rng.laplace(15, s, 200_000)), 0, 31).astype(np.uint8) for s in (0.5, 1, 2, 4)]
    want = [fse.compress(c) for c in chans]
    results = [None] * 8

    def work(i):
        c = chans[i % 4]
        for _ in range(5):
            s = fse.compress(c)
            assert fse.decompress(s, len(c)) == c.tobytes()
        results[i] = s

    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert results == want + want


# -- the C driver ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_c_driver(tmp_path):
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    src = REPO / "csrc" / "fse"
    exe = tmp_path / "test_fse_core"
    subprocess.run(
        [cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{src}", "-o", str(exe),
         str(src / "test_fse_core.c"), str(src / "fse_core.c"), "-lm"],
        check=True,
    )
    dirs = [str(LOCAL_DIR)] + ([str(SHARED_DIR)] if SHARED else [])
    proc = subprocess.run([str(exe), "--iters", "400", *dirs], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
