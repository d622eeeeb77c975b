"""Parity of the JAX model with the original TensorFlow graph (CPU), and with the shared reference files.

For n_features 16, 32 and 64, a TF1 graph is built once (``tf_reference``), converted with
``convert/tf_to_flax.py`` (which runs its own parity check first) and loaded back as a ``Codec``. Then, on each
image size:

- latent: max|dz| <= 1e-4 * max(1, max|z|);
- quantization indices: identical, except where the TF latent lies within 1e-4 of a decision boundary (counted
  and recorded);
- decoded image from the same quantized latent (unclipped ``y``): max|dy| <= 1e-4.

The shared reference (``<repo>/../shared/reference``, skipped when absent) is checked with the same tolerances.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="parity tests need TensorFlow (the `tf` extra)")

import jax  # noqa: E402
from flax import nnx  # noqa: E402

import tf_reference  # noqa: E402
from convert import tf_to_flax  # noqa: E402
from l3ic_jax.codec import Codec  # noqa: E402

pytestmark = pytest.mark.tf

LATENT_RTOL = 1e-4  # latent: max|dz| <= 1e-4 * max(1, max|z|)
BOUNDARY = 1e-4  # indices may differ only where the TF latent is this close to a decision boundary
DECODED_ATOL = 1e-4  # decoded image (same quantized latent): max|dy| <= 1e-4

N_FEATURES = (16, 32, 64)
SIZES = [(64, 64), (512, 512), (768, 512), (509, 381)]  # width x height
REFERENCE_SHA256 = "289c3dbd2efe33a995a959ef443308ce39201901449ccd8a5ac9303bafd3baca"  # shared README


def nearest_indices(latent: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """scipy ``vq`` semantics, brute force: the first entry at the smallest distance (ties to the lower)."""
    dist = np.abs(np.asarray(latent, np.float64)[..., None] - np.asarray(codebook, np.float64))
    return np.argmin(dist, axis=-1).astype(np.uint8)


class Converted:
    """A TF reference graph, its runner, and the converted Codec, for one n_features."""

    def __init__(self, n_features: int, tmp_path):
        pb, self.weights = tf_reference.cached_frozen_graph(n_features, 0, True, None)
        self.result = tf_to_flax.convert(pb, tmp_path / f"l3ic-{n_features}c.safetensors")
        self.codec = Codec.from_checkpoint(self.result.output)
        self.runner = tf_reference.FrozenGraphRunner(self.result.source.graph_def)
        graphdef, state = nnx.split(self.codec.model.decoder)
        self.decode_raw = jax.jit(lambda s, q: nnx.merge(graphdef, s)(q))  # unclipped, as the graph's `y`
        self.state = state


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    cache: dict[int, Converted] = {}

    def get(n_features: int) -> Converted:
        if n_features not in cache:
            for old in cache.values():  # one TF session at a time: the tests are grouped by n_features
                old.runner.close()
            cache.clear()
            cache[n_features] = Converted(n_features, tmp_path_factory.mktemp(f"parity{n_features}"))
        return cache[n_features]

    yield get
    for c in cache.values():
        c.runner.close()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("n_features", N_FEATURES, ids=lambda n: f"{n}c")
def test_parity_with_tf_graph(converted, n_features, size, record):
    m = converted(n_features)
    width, height = size
    image = tf_to_flax.parity_image(height, width, seed=n_features)
    codebook = m.codec.codebook

    z_tf, q_tf = m.runner.encode(image)
    z = np.asarray(m.codec.encode(image))
    assert z.shape == z_tf.shape == (1, -(-height // 8), -(-width // 8), n_features)
    latent_tol = LATENT_RTOL * max(1.0, float(np.abs(z_tf).max()))
    latent_diff = float(np.abs(z - z_tf).max())
    np.testing.assert_allclose(z, z_tf, rtol=0, atol=latent_tol)

    # Indices: ours from our latent, TF's from the graph's own quantizer (hard forward value), which must be the
    # nearest-codebook (vq) index of TF's latent; they may differ only next to a decision boundary.
    assert np.abs(z_tf).max() < 31, "beyond ~31.17 the graph's soft quantizer underflows"
    idx_tf = (q_tf - codebook[0]).astype(np.uint8)
    np.testing.assert_array_equal(idx_tf, nearest_indices(z_tf, codebook))
    idx = np.asarray(m.codec.quantize(z))
    near = tf_to_flax.boundary_mask(z_tf, codebook, BOUNDARY)
    np.testing.assert_array_equal(idx[~near], idx_tf[~near])
    flipped = int(np.sum(idx != idx_tf))

    q = codebook[idx_tf]
    y_tf, out_tf = m.runner.decode(q)
    y = np.asarray(m.decode_raw(m.state, q))
    assert y.shape == (1, 8 * z.shape[1], 8 * z.shape[2], 3)
    decoded_diff = float(np.abs(y - y_tf).max())
    np.testing.assert_allclose(y, y_tf, rtol=0, atol=DECODED_ATOL)
    np.testing.assert_array_equal(out_tf, np.clip(y_tf, 0, 1))  # the clip wrapper's forward value

    record(
        f"parity {n_features}c {width}x{height}",
        latent_max_abs_diff=latent_diff,
        latent_tol=latent_tol,
        boundary_values=int(near.sum()),
        boundary_flips=flipped,
        decoded_max_abs_diff=decoded_diff,
    )


# ------------------------------------------------------------------------------------------------------------
# The shared reference files


@pytest.fixture(scope="module")
def reference(shared, tmp_path_factory):
    pb = shared("reference", "dcn_16c_seed1.pb")
    assert hashlib.sha256(pb.read_bytes()).hexdigest() == REFERENCE_SHA256
    result = tf_to_flax.convert(pb, tmp_path_factory.mktemp("reference") / "dcn_16c_seed1.safetensors")
    assert result.source.details["graph_ending"] == "clip"
    assert result.provenance["source_sha256"] == REFERENCE_SHA256
    return result, Codec.from_checkpoint(result.output)


@pytest.mark.parametrize("name", ["kodim05", "md575e5a225f"])
def test_reference_files(reference, shared, name, record):
    from PIL import Image

    _, codec = reference
    image = np.asarray(Image.open(shared("samples", f"{name}.png")).convert("RGB"), dtype=np.uint8)
    image = image.astype(np.float32)[None] / 255
    z_ref = np.load(shared("reference", f"{name}.latent.npy"))
    decoded_ref = np.load(shared("reference", f"{name}.decoded.npy"))

    # Latent: max|dz| <= 1e-4 * max(1, max|z|).
    z = np.asarray(codec.encode(image))
    latent_tol = LATENT_RTOL * max(1.0, float(np.abs(z_ref).max()))
    np.testing.assert_allclose(z, z_ref, rtol=0, atol=latent_tol)

    # Indices from the stored latent (vq semantics); ours may differ only next to a boundary.
    idx_ref = nearest_indices(z_ref, codec.codebook)
    np.testing.assert_array_equal(np.asarray(codec.quantize(z_ref)), idx_ref)
    idx = np.asarray(codec.quantize(z))
    near = tf_to_flax.boundary_mask(z_ref, codec.codebook, BOUNDARY)
    np.testing.assert_array_equal(idx[~near], idx_ref[~near])

    # Decoded from the stored latent's indices, clipped to [0, 1] as the reference is: max|dy| <= 1e-4.
    decoded = np.asarray(codec.decode_indices(idx_ref))
    np.testing.assert_allclose(decoded, decoded_ref, rtol=0, atol=DECODED_ATOL)
    record(
        f"reference {name}",
        latent_max_abs_diff=float(np.abs(z - z_ref).max()),
        latent_tol=latent_tol,
        boundary_values=int(near.sum()),
        boundary_flips=int(np.sum(idx != idx_ref)),
        decoded_max_abs_diff=float(np.abs(decoded - decoded_ref).max()),
    )


def test_reference_feed_points_agree(reference, shared):
    """Codebook values fed at `twitterdcn/latent` (as the original codec does) pass the graph's quantizer
    unchanged, so both feed points decode identically; the converter feeds `latent_quantized`."""
    result, codec = reference
    z_ref = np.load(shared("reference", "kodim05.latent.npy"))[:, :12, :10]
    q = codec.codebook[nearest_indices(z_ref, codec.codebook)]
    outputs = []
    for feed in ("twitterdcn/quantization/latent_quantized", "twitterdcn/latent"):
        runner = tf_reference.FrozenGraphRunner(result.source.graph_def, feed=feed)
        try:
            outputs.append(runner.decode(q))
        finally:
            runner.close()
    np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
    np.testing.assert_allclose(np.asarray(codec.decode(q)), outputs[0][1], rtol=0, atol=DECODED_ATOL)
