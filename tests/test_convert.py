"""The converter: both input kinds and both graph endings, exact weights, provenance, the CLI, and refusals.

The refusal tests build graphs that differ from the original in one place (``tf_reference.CHANGES``) and check
that the converter names the difference and writes nothing.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the converter needs TensorFlow (the `tf` extra)")

import tf_reference  # noqa: E402
from convert import tf_to_flax  # noqa: E402
from convert.tf_to_flax import ConversionError  # noqa: E402
from l3ic_jax import checkpoint  # noqa: E402
from l3ic_jax.codec import Codec  # noqa: E402

pytestmark = pytest.mark.tf

LATENT_RTOL = 1e-4
DECODED_ATOL = 1e-4


def assert_same_weights(path, weights):
    tensors, meta = checkpoint.load(path)
    assert sorted(tensors) == sorted(weights)
    for name, value in weights.items():
        np.testing.assert_array_equal(tensors[name], value, err_msg=name)
    return tensors, meta


# ------------------------------------------------------------------------------------------------------------
# The builder is faithful to the original graph


def test_builder_matches_reference_graph(tf, shared):
    """The TF1 builder gives the shared reference graph's nodes: names, op types, inputs and order."""
    ref = tf.compat.v1.GraphDef()
    ref.ParseFromString(shared("reference", "dcn_16c_seed1.pb").read_bytes())
    pb, _ = tf_reference.cached_frozen_graph(16, 0, True, None)
    ours = tf.compat.v1.GraphDef()
    ours.ParseFromString(pb.read_bytes())

    def describe(gd):
        out = []
        for n in gd.node:
            attrs = {k: v for k, v in n.attr.items() if k in ("strides", "padding", "alpha", "block_size", "T")}
            out.append((n.name, n.op, list(n.input), {k: str(v) for k, v in attrs.items()}))
        return out

    assert describe(ours) == describe(ref)


# ------------------------------------------------------------------------------------------------------------
# Frozen graphs


@pytest.mark.parametrize("clip", [True, False], ids=["ending-add", "ending-y"])
def test_frozen_graph_both_endings(tmp_path, clip):
    pb, weights = tf_reference.cached_frozen_graph(16, 0, clip, None)
    result = tf_to_flax.convert(pb, tmp_path / "out.safetensors")
    _, meta = assert_same_weights(result.output, weights)
    assert result.source.details["graph_ending"] == ("clip" if clip else "y")
    assert meta["n_features"] == 16 and meta["latent_bpf"] == 5
    np.testing.assert_array_equal(meta["codebook"], np.arange(-15, 17, dtype=np.float32))
    prov = meta["provenance"]
    assert prov["source_file"] == pb.name
    assert prov["source_sha256"] == checkpoint.file_sha256(pb)
    assert prov["source_kind"] == "tf1-frozen-graph"
    assert prov["converter_version"] == tf_to_flax.CONVERTER_VERSION
    assert re.match(r"\d{4}-\d\d-\d\dT", prov["date"])
    parity = prov["parity"]
    assert parity["latent_max_abs_diff"] <= parity["latent_tolerance"]
    assert parity["decoded_max_abs_diff"] <= DECODED_ATOL


@pytest.mark.parametrize("n_features", [4, 24])
def test_infers_n_features(tmp_path, n_features):
    pb, weights = tf_reference.write_frozen_graph(tmp_path / "g.pb", n_features, seed=3, clip=False)
    result = tf_to_flax.convert(pb, tmp_path / "out.safetensors")
    assert result.source.n_features == n_features
    assert_same_weights(result.output, weights)


def test_cli(tmp_path, capsys):
    pb, weights = tf_reference.cached_frozen_graph(16, 0, True, None)
    out = tmp_path / "cli.safetensors"
    assert tf_to_flax.main([str(pb), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert_same_weights(out, weights)
    assert Codec.from_checkpoint(out).n_features == 16


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        tf_to_flax.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for words in ("frozen graph", "Keras", "twitterdcn.h5", "JSON", "n_features", "1e-4"):
        assert words in text


def test_cli_refusal(tmp_path, capsys):
    pb, _ = tf_reference.cached_frozen_graph(16, 0, True, "alpha")
    out = tmp_path / "x.safetensors"
    assert tf_to_flax.main([str(pb), str(out)]) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "alpha 0.1, expected 0.2" in err
    assert not out.exists()


# What each change must be refused with: the message names the difference.
REFUSALS = {
    "stride": r"conv_1/Conv2D: strides \[1, 1, 1, 1\], expected \[1, 2, 2, 1\]",
    "padding": r"decoder/conv_3/Conv2D: padding VALID, expected SAME",
    "no_lrelu": r"first residual block's input activation .*expected LeakyRelu",
    "missing_lrelu": r"decoder/conv_3: expected LeakyRelu \(alpha 0.2\)",
    "extra_lrelu": r"encoder/conv_3: unexpected activation LeakyRelu",
    "alpha": r"tconv_7/LeakyRelu has alpha 0.1, expected 0.2",
    "kernel_shape": r"encoder/conv_2/weights: shape \(5, 5, 128, 128\), expected \(3, 3, 128, 128\)",
    "d2s_block": r"d2s_7 has block_size 4, expected 2",
    "no_residual": r"decoder residual block 1 \(sum_1\): expected Add",
    "scaling_add": r"latent scaling z = alpha \* z: expected Mul",
    "codebook": r"entropy/Const: values .* expected the integers -15..16",
    "extra_weight": r"weights the original network does not use: twitterdcn/encoder/conv_9/weights",
    "relu": r"encoder/conv_0/Relu is a Relu, expected LeakyRelu",
}


@pytest.mark.parametrize("change", sorted(REFUSALS))
def test_refuses_changed_graph(tmp_path, change):
    assert set(REFUSALS) == set(tf_reference.CHANGES)
    pb, _ = tf_reference.write_frozen_graph(tmp_path / f"{change}.pb", 8, seed=1, change=change)
    out = tmp_path / "out.safetensors"
    with pytest.raises(ConversionError, match=REFUSALS[change]):
        tf_to_flax.convert(pb, out)
    assert not out.exists()


def test_refuses_what_is_not_a_graph(tmp_path):
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\x0a\x05hello world, not a graph")
    with pytest.raises(ConversionError):
        tf_to_flax.convert(bad, tmp_path / "out.safetensors")
    with pytest.raises(ConversionError, match="no such file"):
        tf_to_flax.convert(tmp_path / "missing.pb", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_parity_gate_refuses_a_wrong_transform(tmp_path, monkeypatch):
    """A layout mistake that keeps every shape (kernels flipped in space) is caught by the parity check."""
    original = tf_to_flax.transform_conv_kernel
    monkeypatch.setattr(tf_to_flax, "transform_conv_kernel", lambda *a: original(*a)[::-1, ::-1].copy())
    pb, _ = tf_reference.cached_frozen_graph(16, 0, True, None)
    out = tmp_path / "out.safetensors"
    with pytest.raises(ConversionError, match="parity: latent max"):
        tf_to_flax.convert(pb, out)
    assert not out.exists()


# ------------------------------------------------------------------------------------------------------------
# Keras h5 weights (TF2 toolbox)


@pytest.fixture(scope="module")
def keras_dir(tmp_path_factory):
    weights = tf_reference.random_weights(16, seed=7)
    root = tmp_path_factory.mktemp("toolbox")
    tf_reference.write_keras_h5(root, weights)
    return root, weights


@pytest.mark.parametrize("given", ["directory", "h5"])
def test_keras_h5(tmp_path, keras_dir, given):
    root, weights = keras_dir
    source = root if given == "directory" else root / "twitterdcn" / "twitterdcn.h5"
    result = tf_to_flax.convert(source, tmp_path / "k.safetensors")
    _, meta = assert_same_weights(result.output, weights)
    prov = meta["provenance"]
    assert prov["source_kind"] == "tf2-keras-h5" and prov["source_file"] == "twitterdcn.h5"
    assert prov["hyperparameters"]["n_features"] == 16 and prov["hyperparameters_file"] == "twitterdcn.json"


def test_keras_model_parity(tmp_path, keras_dir, record):
    """The converted checkpoint against the toolbox's Keras model itself (the h5's other TF reference)."""
    root, weights = keras_dir
    codec = Codec.from_checkpoint(tf_to_flax.convert(root, tmp_path / "k.safetensors").output)
    model = tf_reference.build_keras_model(weights)
    image = tf_to_flax.parity_image(120, 88, seed=5)
    z_k = model.encode(image).numpy()
    z = np.asarray(codec.encode(image))
    tol = LATENT_RTOL * max(1.0, float(np.abs(z_k).max()))
    np.testing.assert_allclose(z, z_k, rtol=0, atol=tol)
    q_k = model.quantize_latent(z_k).numpy()
    idx = tf_to_flax.boundary_mask(z_k, codec.codebook)
    np.testing.assert_array_equal(np.asarray(codec.dequantize(codec.quantize(z_k)))[~idx], q_k[~idx])
    y_k = np.clip(model.decode(q_k).numpy(), 0, 1)
    y = np.asarray(codec.decode(q_k))
    np.testing.assert_allclose(y, y_k, rtol=0, atol=DECODED_ATOL)
    record(
        "keras 16c 88x120",
        latent_max_abs_diff=float(np.abs(z - z_k).max()),
        decoded_max_abs_diff=float(np.abs(y - y_k).max()),
    )


def _swap_first_two(groups):
    """conv2d and conv2d_1 exchange their weights (as if created in the wrong order)."""
    (n0, w0), (n1, w1) = groups[0], groups[1]
    rename = lambda ws, a, b: [(w.replace(f"{a}/", f"{b}/"), v) for w, v in ws]  # noqa: E731
    return [(n0, rename(w1, n1, n0)), (n1, rename(w0, n0, n1))] + groups[2:]


def _drop(leaf):
    return lambda groups: [(n, [(w, v) for w, v in ws if not w.endswith(leaf)]) for n, ws in groups]


KERAS_REFUSALS = {
    "extra conv layer": (
        lambda g: g + [("conv2d_18", [("conv2d_18/kernel:0", np.zeros((3, 3, 12, 3), np.float32)),
                                      ("conv2d_18/bias:0", np.zeros(3, np.float32))])],
        {},
        r"19 Conv2D layers",
    ),
    "unknown weight": (
        lambda g: g + [("dense", [("dense/kernel:0", np.zeros((4, 4), np.float32))])],
        {},
        r"weights the original network does not have: dense/dense/kernel:0",
    ),
    "layers out of order": (
        _swap_first_two, {}, r"conv2d/kernel:0 \(encoder/conv_0\): shape \(5, 5, 64, 128\), expected"
    ),
    "no latent scaling": (_drop("latent_scaling:0"), {}, r"no latent_scaling weight"),
    "no codebook": (_drop("codebook:0"), {}, r"expected one codebook"),
    "json n_features": (None, {"n_features": 32}, r"n_features is 32, but the weights have 8"),
    "json latent_bpf": (None, {"latent_bpf": 4}, r"latent_bpf is 4, but the weights have 5"),
}


@pytest.mark.parametrize("case", sorted(KERAS_REFUSALS))
def test_keras_refusals(tmp_path, case):
    mutate, hyper, message = KERAS_REFUSALS[case]
    weights = tf_reference.random_weights(8, seed=2)
    tf_reference.write_keras_h5(tmp_path, weights, hyperparameters=hyper, mutate=mutate)
    out = tmp_path / "out.safetensors"
    with pytest.raises(ConversionError, match=message):
        tf_to_flax.convert(tmp_path, out)
    assert not out.exists()


def test_keras_codebook_values_checked(tmp_path):
    def shift(groups):
        return [(n, [(w, v + 1 if w.endswith("codebook:0") else v) for w, v in ws]) for n, ws in groups]

    tf_reference.write_keras_h5(tmp_path, tf_reference.random_weights(8, seed=2), mutate=shift)
    with pytest.raises(ConversionError, match="expected the integers -15..16"):
        tf_to_flax.convert(tmp_path, tmp_path / "out.safetensors")


# ------------------------------------------------------------------------------------------------------------


def test_hyperparameter_json_is_found_next_to_the_h5(tmp_path):
    weights = tf_reference.random_weights(8, seed=2)
    h5 = tf_reference.write_keras_h5(tmp_path, weights)
    assert tf_to_flax.locate_keras_files(tmp_path) == (h5, h5.parent / "twitterdcn.json")
    assert json.loads((h5.parent / "twitterdcn.json").read_text())["n_features"] == 8
