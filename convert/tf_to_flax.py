"""Convert an original l3ic TwitterDCN (TensorFlow) to an l3ic-jax checkpoint (safetensors).

Two kinds of input are understood:

* **TF1 frozen graph** (``dcn_16c.pb``, ``dcn_32c.pb``, ``dcn_64c.pb``): a binary ``GraphDef`` as deployed with the
  original codec. Weights are ``Const`` nodes ``<scope>/weights`` (HWIO) and ``<scope>/biases``, read through
  ``.../read`` identities, plus the scalar ``twitterdcn/encoder/latent_scaling`` and the codebook
  ``twitterdcn/optimization/entropy/Const``.
* **TF2 toolbox Keras weights**: the h5 file written by Keras ``save_weights(..., save_format='h5')`` at
  ``<dir>/twitterdcn/twitterdcn.h5``, next to the JSON of hyper-parameters (``n_features``, ``latent_bpf``,
  ``rounding``, ``scale_latent``, ``entropy_weight``). Give the h5 file or the directory.

The converter works in four steps and writes nothing unless all of them pass:

1. **Structure.** A frozen graph is walked from its input to its last op. Every weight is found by name *and*
   checked against the ops that use it: ``Const -> Identity .../read -> Conv2D -> BiasAdd [-> LeakyRelu]`` with the
   strides, ``SAME`` padding and activations of the original (LeakyRelu alpha 0.2 where the original has one, no
   activation elsewhere), the residual ``Add`` ops, the three ``DepthToSpace`` ops (block size 2), the latent
   scaling ``Mul``, the quantizer between ``twitterdcn/latent`` and the decoder, the codebook values, the output
   ``(x + 1) / 2`` and either graph ending (identity ``y``, or the clip wrapper ``add``). Keras weights carry no
   ops: there the layer count, order, names and every shape are checked, and the JSON must agree with them.
   Anything that differs is refused with a message naming it, and so is anything left over (a weight or op the
   walk did not visit).
2. **Mapping.** An explicit rename table maps each source layer to the checkpoint's name (``encoder/conv_0``
   ... ``decoder/tconv_8``); one transform per layer kind (conv kernel, conv bias, scalar) asserts the shape of
   every tensor.
3. **Parity.** The converted model (``l3ic_jax.codec.Codec``) and TensorFlow run on a deterministic test image:
   the latent must agree within ``1e-4 * max(1, max|z|)``, and the decoded image, from the same quantized latent,
   within ``1e-4``. For a frozen graph, TensorFlow runs the graph itself; its decoder is fed the quantized values
   at the tensor the decoder reads (``twitterdcn/quantization/latent_quantized``) through ``input_map``, and the
   graph's own quantizer must agree with nearest-codebook quantization of its latent. For Keras weights,
   TensorFlow runs the toolbox network with ``tf.nn`` ops on the h5 arrays.
4. **Writing** with ``l3ic_jax.checkpoint.save``, with provenance: source file and its sha256, source kind,
   converter version, date, TensorFlow version and the parity figures.

Usage: ``python convert/tf_to_flax.py INPUT OUTPUT.safetensors`` (or ``python -m convert.tf_to_flax``).
TensorFlow is needed (the ``tf`` extra); it is imported here, never by ``l3ic_jax``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository's package importable
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from l3ic_jax import checkpoint as _ckpt  # noqa: E402
from l3ic_jax import model as _model  # noqa: E402
from l3ic_jax import quantize as _quantize  # noqa: E402

CONVERTER_VERSION = "1.0"
KIND_GRAPH = "tf1-frozen-graph"
KIND_KERAS = "tf2-keras-h5"

LATENT_RTOL = 1e-4  # latent: max|dz| <= 1e-4 * max(1, max|z|)
DECODED_ATOL = 1e-4  # decoded image, from the same quantized latent: max|dy| <= 1e-4
TEST_IMAGE_SHAPE = (96, 80)
SOFT_QUANTIZER_LIMIT = 31.0  # beyond ~31.17 the graph's soft quantizer underflows and returns the first entry

#: TF1 graph scope -> checkpoint layer. The JAX model names its layers after the graph, so this is the identity
#: up to the `twitterdcn/` prefix; it is spelled out so that nothing is mapped by accident.
GRAPH_RENAME = {
    "twitterdcn/encoder/conv_0": "encoder/conv_0",
    "twitterdcn/encoder/conv_1": "encoder/conv_1",
    "twitterdcn/encoder/conv_2": "encoder/conv_2",
    "twitterdcn/encoder/conv_3": "encoder/conv_3",
    "twitterdcn/encoder/conv_4": "encoder/conv_4",
    "twitterdcn/encoder/conv_5": "encoder/conv_5",
    "twitterdcn/encoder/conv_6": "encoder/conv_6",
    "twitterdcn/encoder/conv_7": "encoder/conv_7",
    "twitterdcn/encoder/conv_8": "encoder/conv_8",
    "twitterdcn/decoder/conv_0": "decoder/conv_0",
    "twitterdcn/decoder/conv_1": "decoder/conv_1",
    "twitterdcn/decoder/conv_2": "decoder/conv_2",
    "twitterdcn/decoder/conv_3": "decoder/conv_3",
    "twitterdcn/decoder/conv_4": "decoder/conv_4",
    "twitterdcn/decoder/conv_5": "decoder/conv_5",
    "twitterdcn/decoder/conv_6": "decoder/conv_6",
    "twitterdcn/decoder/tconv_7": "decoder/tconv_7",
    "twitterdcn/decoder/tconv_8": "decoder/tconv_8",
}
GRAPH_SCALING = "twitterdcn/encoder/latent_scaling"
GRAPH_CODEBOOK = "twitterdcn/optimization/entropy/Const"
GRAPH_INPUT = "x_twitterdcn"
GRAPH_LATENT = "twitterdcn/latent"
GRAPH_QUANTIZER_SCOPE = "twitterdcn/quantization/"

#: Keras conv layers by creation rank (default names `conv2d`, `conv2d_1`, ... sorted by their number; the
#: toolbox creates the encoder's convs first, then the decoder's) -> checkpoint layer.
KERAS_RENAME = {
    0: "encoder/conv_0",
    1: "encoder/conv_1",
    2: "encoder/conv_2",
    3: "encoder/conv_3",
    4: "encoder/conv_4",
    5: "encoder/conv_5",
    6: "encoder/conv_6",
    7: "encoder/conv_7",
    8: "encoder/conv_8",
    9: "decoder/conv_0",
    10: "decoder/conv_1",
    11: "decoder/conv_2",
    12: "decoder/conv_3",
    13: "decoder/conv_4",
    14: "decoder/conv_5",
    15: "decoder/conv_6",
    16: "decoder/tconv_7",
    17: "decoder/tconv_8",
}
KERAS_SCALING = "encoder/latent_scaling"

ADD_OPS = ("Add", "AddV2")
ACTIVATION_OPS = {"LeakyRelu", "Relu", "Relu6", "Elu", "Selu", "Tanh", "Sigmoid", "Softplus", "Softsign"}
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class ConversionError(Exception):
    """The input is not an original l3ic model this converter understands, or the converted model disagrees."""


# ------------------------------------------------------------------------------------------------------------
# One transform per layer kind (both sources store conv kernels in HWIO, as the checkpoint does)


def _assert_shape(where: str, value: np.ndarray, shape: tuple[int, ...]) -> None:
    if tuple(value.shape) != tuple(shape):
        raise ConversionError(f"{where}: shape {tuple(value.shape)}, expected {tuple(shape)}")


def _as_float32(where: str, value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind != "f":
        raise ConversionError(f"{where}: dtype {arr.dtype}, expected float32")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ConversionError(f"{where}: holds non-finite values")
    return arr


def transform_conv_kernel(where: str, value, shape: tuple[int, int, int, int]) -> np.ndarray:
    """HWIO (TF ``Conv2D`` filter and Keras ``Conv2D.kernel``) to HWIO: the layout is kept, the shape asserted."""
    arr = _as_float32(where, value)
    _assert_shape(where, arr, shape)
    return np.ascontiguousarray(arr)


def transform_conv_bias(where: str, value, shape: tuple[int]) -> np.ndarray:
    arr = _as_float32(where, value)
    _assert_shape(where, arr, shape)
    return np.ascontiguousarray(arr)


def transform_scalar(where: str, value) -> np.ndarray:
    """A scalar variable, stored as () or (1,), to a 0-d float32 array."""
    arr = _as_float32(where, value)
    if arr.shape not in ((), (1,)):
        raise ConversionError(f"{where}: shape {arr.shape}, expected a scalar")
    return arr.reshape(())


def _check_codebook(where: str, value) -> tuple[np.ndarray, int]:
    """The original's fixed codebook -2**(b-1)+1 .. 2**(b-1), shape (1, 2**b): (values, latent_bpf)."""
    arr = _as_float32(where, value)
    if arr.ndim != 2 or arr.shape[0] != 1:
        raise ConversionError(f"{where}: shape {arr.shape}, expected (1, K)")
    k = arr.shape[1]
    bpf = int(round(math.log2(k))) if k >= 2 else 0
    if not 1 <= bpf <= 8 or 2**bpf != k:
        raise ConversionError(f"{where}: {k} entries, expected a power of two between 2 and 256")
    expected = _quantize.default_codebook(bpf)
    if not np.array_equal(arr[0], expected):
        shown = np.array2string(arr[0], threshold=8, precision=4)
        raise ConversionError(
            f"{where}: values {shown}, expected the integers {expected[0]:g}..{expected[-1]:g} (latent_bpf {bpf})"
        )
    return expected, bpf


# ------------------------------------------------------------------------------------------------------------
# What a reader returns


@dataclass
class Source:
    """A model read from one of the two input kinds, mapped to checkpoint names, with its TF reference."""

    kind: str
    path: Path
    tensors: dict[str, np.ndarray]
    codebook: np.ndarray
    latent_bpf: int
    n_features: int
    details: dict = field(default_factory=dict)
    graph_def: object = None  # frozen graph: the GraphDef, and the tensor names below
    tensor_names: dict = field(default_factory=dict)
    raw_layers: dict = field(default_factory=dict)  # Keras: checkpoint layer -> (kernel, bias) as stored


# ------------------------------------------------------------------------------------------------------------
# (a) The TF1 frozen graph


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConversionError("TensorFlow is needed to convert (pip install 'l3ic-jax[tf]')") from e
    try:
        tf.config.set_visible_devices([], "GPU")  # the parity check runs on the CPU
    except (RuntimeError, ValueError):
        pass
    return tf


class _Scalar:
    """An input that must be a scalar ``Const`` of this value."""

    def __init__(self, value: float):
        self.value = float(value)

    def __repr__(self) -> str:
        return f"Const({self.value:g})"


def _split_input(name: str) -> tuple[str, int]:
    if name.startswith("^"):
        return name, 0
    node, _, index = name.partition(":")
    return node, int(index or 0)


class _GraphChecker:
    """Walks a frozen TwitterDCN from its input to its last op, checking every op against the original.

    ``Identity`` nodes are looked through (``.../read``, ``latent_raw``, ``y``); the walk records every node it
    explains in ``visited``, and the weights it found in ``layers`` (TF scope -> (kernel, bias)).
    """

    def __init__(self, tf, graph_def):
        self.tf = tf
        self.nodes = {}
        for node in graph_def.node:
            if node.name in self.nodes:
                raise ConversionError(f"the graph holds two nodes named {node.name}")
            self.nodes[node.name] = node
        self.users: dict[str, list[str]] = defaultdict(list)
        for node in graph_def.node:
            for raw in node.input:
                if raw.startswith("^"):
                    raise ConversionError(f"{node.name}: control dependency on {raw[1:]}, the original has none")
                src, index = _split_input(raw)
                if index != 0:
                    raise ConversionError(f"{node.name}: reads output {index} of {src}, the original reads output 0")
                if src not in self.nodes:
                    raise ConversionError(f"{node.name}: input {src} is not in the graph")
                self.users[src].append(node.name)
        self.visited: set[str] = set()
        self.layers: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # -- basic lookups --------------------------------------------------------------------------------------
    def node(self, name: str, op: str | tuple | None = None, what: str | None = None):
        node = self.nodes.get(name)
        if node is None:
            raise ConversionError(f"{what or name}: the graph has no node {name}")
        ops = (op,) if isinstance(op, str) else op
        if ops and node.op not in ops:
            raise ConversionError(f"{what or name}: {name} is a {node.op}, expected {'/'.join(ops)}")
        self.visited.add(name)
        return node

    def resolve(self, name: str) -> str:
        """Follow Identity nodes back to the op that computes the value."""
        name = _split_input(name)[0]
        while name in self.nodes and self.nodes[name].op == "Identity":
            self.visited.add(name)
            name = _split_input(self.nodes[name].input[0])[0]
        return name

    def inputs(self, name: str) -> list[str]:
        return [self.resolve(i) for i in self.nodes[name].input]

    def consumers(self, name: str) -> list[str]:
        """The non-Identity ops that read ``name``, looking through Identity nodes."""
        out, stack = [], list(self.users.get(name, ()))
        while stack:
            user = stack.pop(0)
            if self.nodes[user].op == "Identity":
                stack.extend(self.users.get(user, ()))
            elif user not in out:
                out.append(user)
        return out

    def scalar_value(self, name: str) -> float | None:
        node = self.nodes.get(name)
        if node is None or node.op != "Const":
            return None
        value = self.tf.make_ndarray(node.attr["value"].tensor)
        return float(value.reshape(-1)[0]) if value.size == 1 else None

    def const(self, name: str, what: str) -> np.ndarray:
        node = self.node(name, "Const", what)
        return self.tf.make_ndarray(node.attr["value"].tensor)

    def describe(self, name: str) -> str:
        users = self.consumers(name)
        if not users:
            return f"{name} feeds nothing"
        parts = [f"{u} ({self.nodes[u].op} of {', '.join(self.inputs(u))})" for u in users]
        return f"{name} feeds " + "; ".join(parts)

    def _matches(self, actual: list[str], expected: list, commutative: bool) -> bool:
        if len(actual) != len(expected):
            return False
        orders = [expected, expected[::-1]] if commutative and len(expected) == 2 else [expected]
        for order in orders:
            ok = True
            for a, e in zip(actual, order):
                if isinstance(e, _Scalar):
                    v = self.scalar_value(a)
                    ok = ok and v is not None and v == np.float32(e.value)
                else:
                    ok = ok and a == e
            if ok:
                return True
        return False

    def find(self, ops, inputs: list, what: str, commutative: bool = False) -> str:
        """The op of one of these types that reads exactly these inputs (names, or scalar constants)."""
        ops = (ops,) if isinstance(ops, str) else tuple(ops)
        anchor = next(i for i in inputs if isinstance(i, str))
        for cand in self.consumers(anchor):
            if self.nodes[cand].op in ops and self._matches(self.inputs(cand), inputs, commutative):
                self.visited.add(cand)
                for raw in self.nodes[cand].input:  # the scalar constants it reads
                    src = self.resolve(raw)
                    if self.nodes[src].op == "Const":
                        self.visited.add(src)
                return cand
        expected = f"{'/'.join(ops)}({', '.join(map(str, inputs))})"
        raise ConversionError(f"{what}: expected {expected}, but {self.describe(anchor)}")

    # -- layers ---------------------------------------------------------------------------------------------
    def conv(self, x: str, scope: str, shape, stride: int, lrelu: bool, side_lrelu: str | None = None) -> str:
        """``Const weights -> (Identity read) -> Conv2D -> BiasAdd [-> LeakyRelu]``; returns the layer's output."""
        wname, bname = f"{scope}/weights", f"{scope}/biases"
        kernel = self.const(wname, f"{scope} kernel")
        bias = self.const(bname, f"{scope} bias")
        _assert_shape(wname, kernel, shape)
        _assert_shape(bname, bias, (shape[-1],))
        convs = [c for c in self.consumers(wname) if self.nodes[c].op == "Conv2D"]
        if len(convs) != 1:
            raise ConversionError(f"{scope}: {wname} should feed one Conv2D; {self.describe(wname)}")
        conv = convs[0]
        if self.inputs(conv) != [x, wname]:
            raise ConversionError(f"{conv}: convolves {', '.join(self.inputs(conv))}, expected {x}, {wname}")
        node = self.node(conv)
        strides = list(node.attr["strides"].list.i)
        if strides != [1, stride, stride, 1]:
            raise ConversionError(f"{conv}: strides {strides}, expected {[1, stride, stride, 1]}")
        padding = node.attr["padding"].s.decode()
        if padding != "SAME":
            raise ConversionError(f"{conv}: padding {padding}, expected SAME")
        self._nhwc(conv)
        dilations = list(node.attr["dilations"].list.i) if "dilations" in node.attr else [1, 1, 1, 1]
        if dilations != [1, 1, 1, 1]:
            raise ConversionError(f"{conv}: dilations {dilations}, expected none")
        out = self.find("BiasAdd", [conv, bname], f"{scope}: bias")
        self._nhwc(out)
        self.layers[scope] = (kernel, bias)
        acts = [c for c in self.consumers(out) if self.nodes[c].op in ACTIVATION_OPS and c != side_lrelu]
        if not lrelu:
            if acts:
                raise ConversionError(
                    f"{scope}: unexpected activation {self.nodes[acts[0]].op} ({acts[0]}); the original has none "
                    "after this conv"
                )
            return out
        if not acts:
            raise ConversionError(
                f"{scope}: expected LeakyRelu (alpha 0.2) after {out}, found none; {self.describe(out)}"
            )
        return self.lrelu(out, f"{scope}: activation", name=acts[0] if len(acts) == 1 else None)

    def lrelu(self, x: str, what: str, name: str | None = None) -> str:
        if name is None:
            acts = [c for c in self.consumers(x) if self.nodes[c].op in ACTIVATION_OPS]
            if not acts:
                raise ConversionError(f"{what}: expected LeakyRelu (alpha 0.2) of {x}, found none; {self.describe(x)}")
            name = acts[0]
        node = self.nodes[name]
        if node.op != "LeakyRelu":
            raise ConversionError(f"{what}: {name} is a {node.op}, expected LeakyRelu (alpha 0.2)")
        alpha = node.attr["alpha"].f if "alpha" in node.attr else 0.2
        if abs(alpha - 0.2) > 1e-7:
            raise ConversionError(f"{what}: {name} has alpha {alpha:g}, expected 0.2")
        self.visited.add(name)
        return name

    def depth_to_space(self, x: str, what: str) -> str:
        name = self.find("DepthToSpace", [x], what)
        block = self.nodes[name].attr["block_size"].i
        if block != 2:
            raise ConversionError(f"{what}: {name} has block_size {block}, expected 2")
        self._nhwc(name)
        return name

    def _nhwc(self, name: str) -> None:
        attr = self.nodes[name].attr
        if "data_format" in attr and attr["data_format"].s.decode() not in ("NHWC", ""):
            raise ConversionError(f"{name}: data_format {attr['data_format'].s.decode()}, expected NHWC")

    # -- the network ----------------------------------------------------------------------------------------
    def walk(self) -> dict:
        """Check the whole graph; returns n_features, codebook, latent_bpf and the tensor names parity needs."""
        conv8 = self.nodes.get("twitterdcn/encoder/conv_8/weights")
        if conv8 is None or conv8.op != "Const":
            raise ConversionError("not an l3ic TwitterDCN graph: no Const twitterdcn/encoder/conv_8/weights")
        conv8_shape = [d.size for d in conv8.attr["value"].tensor.tensor_shape.dim]
        if len(conv8_shape) != 4:
            raise ConversionError(f"twitterdcn/encoder/conv_8/weights: shape {conv8_shape}, expected 4-D HWIO")
        n_features = int(conv8_shape[-1])
        if not 4 <= n_features <= 128:
            raise ConversionError(f"n_features {n_features} (from twitterdcn/encoder/conv_8), expected 4..128")
        shapes = {scope: _model.kernel_shapes(n_features)[name] for scope, name in GRAPH_RENAME.items()}

        x = GRAPH_INPUT
        ph = self.node(x, "Placeholder", "input")
        if ph.attr["dtype"].type != self.tf.float32.as_datatype_enum:
            raise ConversionError(f"input {x}: dtype is not float32")
        dims = [d.size for d in ph.attr["shape"].shape.dim] if "shape" in ph.attr else []
        if dims and (len(dims) != 4 or dims[-1] not in (-1, 3)):
            raise ConversionError(f"input {x}: shape {dims}, expected (N, H, W, 3)")

        # Encoder (ORIGINAL_MODEL.md §1).
        e = "twitterdcn/encoder/"
        h = self.find("Sub", [x, _Scalar(0.5)], "input normalization 2 (x - 0.5)")
        h = self.find("Mul", [_Scalar(2.0), h], "input normalization 2 (x - 0.5)", commutative=True)
        h = self.conv(h, e + "conv_0", shapes[e + "conv_0"], 2, True)
        n = self.conv(h, e + "conv_1", shapes[e + "conv_1"], 2, False, side_lrelu=e + "conv_1/lrelu")
        a = self.lrelu(n, "encoder: the first residual block's input activation (conv_1/lrelu)")
        for i, (c1, c2) in enumerate((("conv_2", "conv_3"), ("conv_4", "conv_5"), ("conv_6", "conv_7"))):
            r = self.conv(a if i == 0 else n, e + c1, shapes[e + c1], 1, True)
            r = self.conv(r, e + c2, shapes[e + c2], 1, False)
            n = self.find(ADD_OPS, [n, r], f"encoder residual block {i} (sum_{i})", commutative=True)
        raw = self.conv(n, e + "conv_8", shapes[e + "conv_8"], 2, False)
        scaling = self.const(GRAPH_SCALING, "latent scaling")
        if scaling.size != 1:
            raise ConversionError(f"{GRAPH_SCALING}: shape {scaling.shape}, expected a scalar")
        scaled = self.find("Mul", [GRAPH_SCALING, raw], "latent scaling z = alpha * z", commutative=True)
        self.node(GRAPH_LATENT, "Identity", "latent")
        if self.resolve(GRAPH_LATENT) != scaled:
            raise ConversionError(f"latent: {GRAPH_LATENT} is {self.resolve(GRAPH_LATENT)}, expected {scaled}")

        # Quantizer and codebook.
        codebook, latent_bpf = _check_codebook(GRAPH_CODEBOOK, self.const(GRAPH_CODEBOOK, "codebook"))
        d = "twitterdcn/decoder/"
        first = [c for c in self.consumers(d + "conv_0/weights") if self.nodes[c].op == "Conv2D"]
        if len(first) != 1:
            raise ConversionError(f"{d}conv_0: {self.describe(d + 'conv_0/weights')}")
        decoder_input = _split_input(self.nodes[first[0]].input[0])[0]
        self._check_quantizer(decoder_input)

        # Decoder.
        h = self.conv(self.resolve(decoder_input), d + "conv_0", shapes[d + "conv_0"], 1, False)
        h = self.depth_to_space(h, "decoder d2s_0")
        for i, (c1, c2) in enumerate((("conv_1", "conv_2"), ("conv_3", "conv_4"), ("conv_5", "conv_6"))):
            r = self.conv(h, d + c1, shapes[d + c1], 1, True)
            r = self.conv(r, d + c2, shapes[d + c2], 1, False)
            h = self.find(ADD_OPS, [h, r], f"decoder residual block {i} (sum_{i})", commutative=True)
        h = self.depth_to_space(self.conv(h, d + "tconv_7", shapes[d + "tconv_7"], 1, True), "decoder d2s_7")
        h = self.depth_to_space(self.conv(h, d + "tconv_8", shapes[d + "tconv_8"], 1, False), "decoder d2s_8")
        h = self.find(ADD_OPS, [h, _Scalar(1.0)], "output denormalization (x + 1) / 2", commutative=True)
        h = self.find("RealDiv", [h, _Scalar(2.0)], "output denormalization (x + 1) / 2")
        self.node("y", "Identity", "output y")
        if self.resolve("y") != h:
            raise ConversionError(f"output: y is {self.resolve('y')}, expected {h}")

        # Either ending: `y`, or the clip wrapper add = StopGradient(clip(y, 0, 1) - y) + y.
        if not self.consumers(h):
            ending, output = "y", "y"
        else:
            what = "clip wrapper StopGradient(clip(y, 0, 1) - y) + y"
            c = self.find("Minimum", [h, _Scalar(1.0)], what)
            c = self.find("Maximum", [c, _Scalar(0.0)], what)
            c = self.find("Sub", [c, h], what)
            c = self.find("StopGradient", [c], what)
            output = self.find(ADD_OPS, [c, h], what, commutative=True)
            if self.consumers(output):
                raise ConversionError(f"{what}: {output} should be the last op, but {self.describe(output)}")
            ending = "clip"

        # Nothing may be left over: first the weights ("not visited"), then any other op.
        not_visited = sorted(set(self.nodes) - self.visited)
        weights = [
            n for n in not_visited if self.nodes[n].op in ("Const", "VariableV2", "VarHandleOp") and self._is_weight(n)
        ]
        if weights:
            raise ConversionError(f"weights the original network does not use: {', '.join(weights[:8])}")
        if not_visited:
            shown = ", ".join(f"{n} ({self.nodes[n].op})" for n in not_visited[:8])
            more = f" and {len(not_visited) - 8} more" if len(not_visited) > 8 else ""
            raise ConversionError(f"ops that are not part of the original network: {shown}{more}")
        return {
            "n_features": n_features,
            "codebook": codebook,
            "latent_bpf": latent_bpf,
            "scaling": scaling.reshape(()),
            "ending": ending,
            "names": {"input": x, "latent": GRAPH_LATENT, "decoder_input": decoder_input, "y": "y", "output": output},
        }

    def _is_weight(self, name: str) -> bool:
        node = self.nodes[name]
        if re.search(r"/(weights|biases|kernel|bias|latent_scaling)$", name):
            return True
        if node.op != "Const":
            return True
        dims = [d.size for d in node.attr["value"].tensor.tensor_shape.dim]
        return int(np.prod(dims)) > 1 if dims else False

    def _check_quantizer(self, decoder_input: str) -> None:
        """Between ``twitterdcn/latent`` and the decoder there must be the quantizer, and only the quantizer."""
        if self.resolve(decoder_input) == self.resolve(GRAPH_LATENT):
            raise ConversionError(f"the decoder reads {decoder_input}, the latent itself: the quantizer is missing")
        stops = {GRAPH_LATENT, GRAPH_CODEBOOK}
        seen, stack, reached = set(), [decoder_input], set()
        while stack:
            name = stack.pop()
            if name in stops:
                reached.add(name)
                continue
            if name in seen:
                continue
            if not name.startswith(GRAPH_QUANTIZER_SCOPE):
                raise ConversionError(
                    f"quantizer: {name} ({self.nodes[name].op}) lies between {GRAPH_LATENT} and the decoder, "
                    f"outside {GRAPH_QUANTIZER_SCOPE}"
                )
            seen.add(name)
            stack.extend(_split_input(i)[0] for i in self.nodes[name].input)
        if GRAPH_LATENT not in reached:
            raise ConversionError(f"quantizer: the decoder's input {decoder_input} does not depend on {GRAPH_LATENT}")
        self.visited |= seen


def read_frozen_graph(path: str | os.PathLike) -> Source:
    """Read and check an original frozen graph; the weights come back under checkpoint names."""
    tf = _tf()
    path = Path(path)
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as e:  # protobuf's DecodeError, which TF does not re-export
        raise ConversionError(f"{path} is not a binary GraphDef: {e}") from e
    if not graph_def.node:
        raise ConversionError(f"{path} is not a frozen graph (no nodes)")
    checker = _GraphChecker(tf, graph_def)
    found = checker.walk()
    n_features = found["n_features"]
    expected = _ckpt.parameter_shapes(n_features)
    tensors: dict[str, np.ndarray] = {}
    for scope, layer in GRAPH_RENAME.items():
        kernel, bias = checker.layers.pop(scope)
        tensors[f"{layer}/kernel"] = transform_conv_kernel(f"{scope}/weights", kernel, expected[f"{layer}/kernel"])
        tensors[f"{layer}/bias"] = transform_conv_bias(f"{scope}/biases", bias, expected[f"{layer}/bias"])
    if checker.layers:
        raise ConversionError(f"layers without a place in the model: {', '.join(sorted(checker.layers))}")
    tensors["encoder/latent_scaling"] = transform_scalar(GRAPH_SCALING, found["scaling"])
    return Source(
        kind=KIND_GRAPH,
        path=path,
        tensors=tensors,
        codebook=found["codebook"],
        latent_bpf=found["latent_bpf"],
        n_features=n_features,
        details={"graph_ending": found["ending"], "graph_nodes": len(graph_def.node)},
        graph_def=graph_def,
        tensor_names=found["names"],
    )


# ------------------------------------------------------------------------------------------------------------
# (b) The TF2 toolbox's Keras weights


def locate_keras_files(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """(h5 path, hyper-parameter JSON or None) from the h5 file or the training directory."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "twitterdcn" / "twitterdcn.h5", path / "twitterdcn.h5"):
            if candidate.is_file():
                path = candidate
                break
        else:
            found = sorted(path.glob("*.h5")) + sorted(path.glob("twitterdcn/*.h5"))
            if len(found) != 1:
                raise ConversionError(
                    f"{path}: expected twitterdcn/twitterdcn.h5 (or a single .h5 file) in this directory, "
                    f"found {len(found)}"
                )
            path = found[0]
    for folder in (path.parent, path.parent.parent):
        for candidate in sorted(folder.glob("*.json")):
            try:
                data = json.loads(candidate.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and "n_features" in data:
                return path, candidate
    return path, None


def read_keras_h5(path: str | os.PathLike) -> Source:
    """Read and check the toolbox's Keras h5 weights (Keras 2 ``save_weights`` layout) and their JSON."""
    try:
        import h5py
    except ImportError as e:  # pragma: no cover
        raise ConversionError("h5py is needed to read Keras weights (pip install 'l3ic-jax[tf]')") from e
    h5_path, json_path = locate_keras_files(path)
    hyper = json.loads(json_path.read_text()) if json_path else {}
    datasets: dict[str, np.ndarray] = {}
    def collect(name, obj):
        if isinstance(obj, h5py.Dataset):
            datasets[name] = obj[()]

    try:
        with h5py.File(h5_path, "r") as f:
            f.visititems(collect)
    except OSError as e:
        raise ConversionError(f"{h5_path} is not a readable h5 file: {e}") from e
    not_visited = set(datasets)

    convs: dict[str, dict[str, str]] = defaultdict(dict)  # Keras layer -> {'kernel': dataset, 'bias': dataset}
    scaling, codebooks = [], []
    for name in sorted(datasets):
        parts = name.split("/")
        leaf = parts[-1].split(":")[0]
        layer = parts[-2] if len(parts) >= 2 else ""
        if re.fullmatch(r"conv2d(_\d+)?", layer) and leaf in ("kernel", "bias"):
            if leaf in convs[layer]:
                raise ConversionError(f"{h5_path}: two '{leaf}' weights for layer {layer}")
            convs[layer][leaf] = name
        elif leaf == "latent_scaling":
            scaling.append(name)
        elif leaf == "codebook":
            codebooks.append(name)

    order = sorted(convs, key=lambda n: int(n.rsplit("_", 1)[1]) if "_" in n else 0)
    if len(order) != len(KERAS_RENAME):
        raise ConversionError(
            f"{h5_path}: {len(order)} Conv2D layers ({', '.join(order) or 'none'}), expected {len(KERAS_RENAME)}"
        )
    for layer in order:
        for leaf in ("kernel", "bias"):
            if leaf not in convs[layer]:
                raise ConversionError(f"{h5_path}: layer {layer} has no {leaf}")
    kernel8 = datasets[convs[order[8]]["kernel"]]
    if kernel8.ndim != 4:
        raise ConversionError(f"{convs[order[8]]['kernel']}: shape {kernel8.shape}, expected 4-D HWIO")
    n_features = int(kernel8.shape[-1])
    if not 4 <= n_features <= 128:
        raise ConversionError(f"n_features {n_features} (from {order[8]}), expected 4..128")
    expected = _ckpt.parameter_shapes(n_features)

    tensors: dict[str, np.ndarray] = {}
    raw_layers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for rank, layer in enumerate(order):
        target = KERAS_RENAME[rank]
        kname, bname = convs[layer]["kernel"], convs[layer]["bias"]
        where = f"{kname} ({target})"
        tensors[f"{target}/kernel"] = transform_conv_kernel(where, datasets[kname], expected[f"{target}/kernel"])
        where = f"{bname} ({target})"
        tensors[f"{target}/bias"] = transform_conv_bias(where, datasets[bname], expected[f"{target}/bias"])
        raw_layers[target] = (datasets[kname], datasets[bname])
        not_visited -= {kname, bname}

    scale_latent = bool(hyper.get("scale_latent", True))
    if len(scaling) > 1:
        raise ConversionError(f"{h5_path}: several latent_scaling weights: {', '.join(scaling)}")
    if scaling:
        if not scale_latent:
            raise ConversionError(f"{json_path}: scale_latent is false, but the weights hold {scaling[0]}")
        tensors[KERAS_SCALING] = transform_scalar(scaling[0], datasets[scaling[0]])
        not_visited.discard(scaling[0])
    elif scale_latent:
        raise ConversionError(f"{h5_path}: no latent_scaling weight (the DiscreteLatent layer's), but scale_latent")
    else:
        tensors[KERAS_SCALING] = np.array(1.0, np.float32)

    if len(codebooks) != 1:
        raise ConversionError(f"{h5_path}: expected one codebook (the Quantization layer's), found {len(codebooks)}")
    codebook, latent_bpf = _check_codebook(codebooks[0], datasets[codebooks[0]])
    not_visited.discard(codebooks[0])

    if not_visited:
        shown = ", ".join(sorted(not_visited)[:8])
        raise ConversionError(f"{h5_path}: weights the original network does not have: {shown}")
    for key, value in (("n_features", n_features), ("latent_bpf", latent_bpf)):
        if key in hyper and int(hyper[key]) != value:
            raise ConversionError(f"{json_path}: {key} is {hyper[key]}, but the weights have {value}")
    details = {"hyperparameters": hyper, "keras_layers": order}
    if json_path is not None:
        details["hyperparameters_file"] = json_path.name
        details["hyperparameters_sha256"] = _ckpt.file_sha256(json_path)
    return Source(
        kind=KIND_KERAS,
        path=h5_path,
        tensors=tensors,
        codebook=codebook,
        latent_bpf=latent_bpf,
        n_features=n_features,
        details=details,
        raw_layers=raw_layers,
    )


# ------------------------------------------------------------------------------------------------------------
# TensorFlow references for the parity check


class _GraphReference:
    """The frozen graph in a TF1 session; its decoder input is remapped to a placeholder with ``input_map``.

    Feeding at the tensor the decoder reads (``twitterdcn/quantization/latent_quantized``) is the direct way.
    Feeding codebook values at ``twitterdcn/latent`` (as the original codec does) gives the same result, since
    the graph's quantizer returns exact codebook values unchanged.
    """

    def __init__(self, tf, source: Source):
        from tensorflow.core.protobuf import rewriter_config_pb2

        names = source.tensor_names
        self.graph = tf.Graph()
        with self.graph.as_default(), tf.device("/CPU:0"):
            self.x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="parity_image")
            self.q = tf.compat.v1.placeholder(tf.float32, [None, None, None, source.n_features], name="parity_q")
            input_map = {f"{names['input']}:0": self.x, f"{names['decoder_input']}:0": self.q}
            tf.compat.v1.import_graph_def(source.graph_def, input_map=input_map, name="src")
        get = self.graph.get_tensor_by_name
        self.latent = get(f"src/{names['latent']}:0")
        self.quantized = get(f"src/{names['decoder_input']}:0")
        self.y = get(f"src/{names['y']}:0")
        self.out = get(f"src/{names['output']}:0")
        config = tf.compat.v1.ConfigProto(device_count={"GPU": 0})
        # Grappler's remapper cannot fuse conv_1 (its BiasAdd has two users) and logs an error; it changes nothing.
        config.graph_options.rewrite_options.remapping = rewriter_config_pb2.RewriterConfig.OFF
        self.sess = tf.compat.v1.Session(graph=self.graph, config=config)

    def encode(self, x):
        return self.sess.run([self.latent, self.quantized], {self.x: x})

    def decode(self, q):
        y, out = self.sess.run([self.y, self.out], {self.q: q})
        return y, np.clip(out, 0.0, 1.0)

    def close(self):
        self.sess.close()


class _KerasReference:
    """The toolbox network in TensorFlow ops (``tf.nn``, eager, CPU) on the h5 arrays as stored."""

    def __init__(self, tf, source: Source):
        self.tf = tf
        self.layers = {k: (tf.constant(w), tf.constant(b)) for k, (w, b) in source.raw_layers.items()}
        self.scaling = tf.constant(source.tensors[KERAS_SCALING])

    def _conv(self, x, layer, stride=1):
        w, b = self.layers[layer]
        return self.tf.nn.bias_add(self.tf.nn.conv2d(x, w, stride, "SAME"), b)

    def encode(self, x):
        tf, c = self.tf, self._conv
        act = lambda t: tf.nn.leaky_relu(t, alpha=0.2)  # noqa: E731
        with tf.device("/CPU:0"):
            h = act(c(2.0 * (tf.constant(x) - 0.5), "encoder/conv_0", 2))
            n = c(h, "encoder/conv_1", 2)
            n = n + c(act(c(act(n), "encoder/conv_2")), "encoder/conv_3")
            n = n + c(act(c(n, "encoder/conv_4")), "encoder/conv_5")
            n = n + c(act(c(n, "encoder/conv_6")), "encoder/conv_7")
            return (self.scaling * c(n, "encoder/conv_8", 2)).numpy(), None

    def decode(self, q):
        tf, c = self.tf, self._conv
        act = lambda t: tf.nn.leaky_relu(t, alpha=0.2)  # noqa: E731
        with tf.device("/CPU:0"):
            h = tf.nn.depth_to_space(c(tf.constant(q), "decoder/conv_0"), 2)
            h = h + c(act(c(h, "decoder/conv_1")), "decoder/conv_2")
            h = h + c(act(c(h, "decoder/conv_3")), "decoder/conv_4")
            h = h + c(act(c(h, "decoder/conv_5")), "decoder/conv_6")
            h = tf.nn.depth_to_space(act(c(h, "decoder/tconv_7")), 2)
            y = ((tf.nn.depth_to_space(c(h, "decoder/tconv_8"), 2) + 1.0) / 2.0).numpy()
        return y, np.clip(y, 0.0, 1.0)

    def close(self):
        pass


def parity_image(height: int = TEST_IMAGE_SHAPE[0], width: int = TEST_IMAGE_SHAPE[1], seed: int = 0) -> np.ndarray:
    """A deterministic RGB image in [0, 1], (1, H, W, 3) float32: gradients, waves, edges and mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float64) / max(height, width, 1)
    chans = []
    for c in range(3):
        wave = np.sin(2 * np.pi * ((c + 1) * xx + (3 - c) * yy)) * np.cos(2 * np.pi * 3 * yy)
        edges = ((np.floor(6 * xx) + np.floor(5 * yy)) % 2) * 0.2
        chans.append(0.35 + 0.25 * wave + edges + 0.1 * (xx - yy) * (c - 1))
    img = np.stack(chans, axis=-1) + 0.03 * rng.standard_normal((height, width, 3))
    return np.clip(img, 0.0, 1.0).astype(np.float32)[None]


def boundary_mask(latent: np.ndarray, codebook: np.ndarray, margin: float = 1e-4) -> np.ndarray:
    """Latent values within ``margin`` of a decision boundary (a midpoint between two codebook entries)."""
    cb = np.asarray(codebook, np.float64).ravel()
    mids = (cb[1:] + cb[:-1]) / 2
    z = np.asarray(latent, np.float64)[..., None]
    return np.any(np.abs(z - mids) <= margin, axis=-1)


def check_parity(source: Source, image: np.ndarray | None = None) -> dict:
    """Run the converted model and TensorFlow on ``image``; raise ConversionError beyond tolerance.

    Returns the figures: latent and decoded max |difference| and their tolerances, and the number of latent
    values within 1e-4 of a decision boundary whose index differs.
    """
    import jax.numpy as jnp

    from l3ic_jax.codec import Codec, model_from_tensors

    tf = _tf()
    image = parity_image() if image is None else np.asarray(image, np.float32)
    if image.ndim == 3:
        image = image[None]
    codec = Codec(model_from_tensors(source.tensors, source.n_features), source.codebook, name="conversion-check")
    reference = (_GraphReference if source.kind == KIND_GRAPH else _KerasReference)(tf, source)
    try:
        z_tf, q_tf = reference.encode(image)
        z = np.asarray(codec.encode(image))
        if z.shape != z_tf.shape:
            raise ConversionError(f"parity: latent shape {z.shape}, TensorFlow gives {z_tf.shape}")
        latent_tol = LATENT_RTOL * max(1.0, float(np.max(np.abs(z_tf))))
        latent_diff = float(np.max(np.abs(z - z_tf)))
        if not latent_diff <= latent_tol:
            raise ConversionError(f"parity: latent max|diff| {latent_diff:.3g} exceeds {latent_tol:.3g}")

        idx_tf = np.asarray(codec.quantize(z_tf))
        idx = np.asarray(codec.quantize(z))
        near = boundary_mask(z_tf, source.codebook)
        differ = idx != idx_tf
        if np.any(differ & ~near):
            count = int(np.sum(differ & ~near))
            raise ConversionError(f"parity: {count} quantization indices differ away from a decision boundary")
        q = source.codebook[idx_tf]
        if q_tf is not None:  # the graph's own quantizer: nearest codebook value (where it does not underflow)
            ok = np.abs(z_tf) < SOFT_QUANTIZER_LIMIT
            bad = int(np.sum((q_tf != q) & ok))
            if bad:
                raise ConversionError(f"parity: the graph's quantizer differs from nearest-codebook at {bad} values")

        y_tf, out_tf = reference.decode(q)
        y = np.asarray(codec.model.decoder(jnp.asarray(q)))
        decoded = np.asarray(codec.decode(q))
        y_diff = float(np.max(np.abs(y - y_tf)))
        out_diff = float(np.max(np.abs(decoded - out_tf)))
        if not max(y_diff, out_diff) <= DECODED_ATOL:
            raise ConversionError(
                f"parity: decoded max|diff| {max(y_diff, out_diff):.3g} exceeds {DECODED_ATOL:g} "
                f"(unclipped {y_diff:.3g}, clipped {out_diff:.3g})"
            )
    finally:
        reference.close()
    return {
        "image_shape": list(image.shape),
        "latent_max_abs_diff": latent_diff,
        "latent_tolerance": latent_tol,
        "latent_max_abs": float(np.max(np.abs(z_tf))),
        "boundary_values": int(np.sum(near)),
        "boundary_index_differences": int(np.sum(differ)),
        "decoded_max_abs_diff": max(y_diff, out_diff),
        "decoded_tolerance": DECODED_ATOL,
        "tensorflow_version": tf.__version__,
    }


# ------------------------------------------------------------------------------------------------------------
# Putting it together


def detect_kind(path: str | os.PathLike) -> str:
    path = Path(path)
    if not path.exists():
        raise ConversionError(f"no such file or directory: {path}")
    if path.is_dir() or path.suffix.lower() in (".h5", ".hdf5", ".keras"):
        return KIND_KERAS
    with open(path, "rb") as f:
        head = f.read(8)
    return KIND_KERAS if head == HDF5_MAGIC else KIND_GRAPH


def read_source(path: str | os.PathLike, kind: str = "auto") -> Source:
    kind = detect_kind(path) if kind == "auto" else {"graph": KIND_GRAPH, "keras": KIND_KERAS}.get(kind, kind)
    if kind == KIND_GRAPH:
        return read_frozen_graph(path)
    if kind == KIND_KERAS:
        return read_keras_h5(path)
    raise ConversionError(f"unknown input kind {kind!r}")


@dataclass
class Result:
    output: Path
    source: Source
    parity: dict
    provenance: dict


def convert(input_path: str | os.PathLike, output_path: str | os.PathLike, *, kind: str = "auto") -> Result:
    """Read, check, map, verify against TensorFlow, and only then write the checkpoint."""
    source = read_source(input_path, kind)
    parity = check_parity(source)
    provenance = {
        "source_file": source.path.name,
        "source_sha256": _ckpt.file_sha256(source.path),
        "source_kind": source.kind,
        "converter": "convert/tf_to_flax.py",
        "converter_version": CONVERTER_VERSION,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "parity": parity,
        **source.details,
    }
    out = _ckpt.save(
        output_path, source.tensors, codebook=source.codebook, latent_bpf=source.latent_bpf, provenance=provenance
    )
    return Result(output=Path(out), source=source, parity=parity, provenance=provenance)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tf_to_flax.py",
        description=(
            "Convert an original l3ic TwitterDCN from TensorFlow to an l3ic-jax checkpoint (safetensors).\n"
            "The structure is checked against the original network op by op, the converted model is compared\n"
            "with TensorFlow on a test image, and nothing is written unless both pass."
        ),
        epilog=(
            "Input kinds:\n"
            "  frozen graph  a TF1 binary GraphDef as deployed with the original codec (dcn_16c.pb, dcn_32c.pb,\n"
            "                dcn_64c.pb): Const <scope>/weights + <scope>/biases read through .../read, the\n"
            "                codebook twitterdcn/optimization/entropy/Const, ending in y or the clip wrapper add.\n"
            "  Keras h5      the TF2 toolbox's save_weights(..., save_format='h5') file\n"
            "                <dir>/twitterdcn/twitterdcn.h5 with its JSON of hyper-parameters next to it;\n"
            "                give the h5 file or <dir>.\n"
            "n_features (16, 32, 64, or any 4..128) is inferred from the weights.\n\n"
            "Tolerances of the parity check: latent max|diff| <= 1e-4 * max(1, max|z|); decoded image, from the\n"
            "same quantized latent, max|diff| <= 1e-4. Exit status: 0 written, 1 refused, 2 usage error."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "input", metavar="INPUT", help="frozen graph (.pb), Keras weights (.h5), or the toolbox directory"
    )
    parser.add_argument("output", metavar="OUTPUT.safetensors", help="checkpoint to write")
    parser.add_argument(
        "--kind",
        choices=("auto", "graph", "keras"),
        default="auto",
        help="input kind (default: from the path: a directory or an HDF5 file is Keras, anything else a graph)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = convert(args.input, args.output, kind=args.kind)
    except ConversionError as e:
        print(f"tf_to_flax: refused: {e}", file=sys.stderr)
        return 1
    if not args.quiet:
        p, s = result.parity, result.source
        print(f"read {s.kind} {s.path} ({result.provenance['source_sha256'][:16]}...): n_features {s.n_features}")
        print(
            f"parity on a {p['image_shape'][1]}x{p['image_shape'][2]} image: latent max|diff| "
            f"{p['latent_max_abs_diff']:.3g} (tolerance {p['latent_tolerance']:.3g}), decoded max|diff| "
            f"{p['decoded_max_abs_diff']:.3g} (tolerance {p['decoded_tolerance']:g})"
        )
        print(f"wrote {result.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
