"""TensorFlow reference builders for the parity and converter tests (a helper module, not a test module).

Two flavours of the original TwitterDCN, written here from the facts in ORIGINAL_MODEL.md and the shared
reference README (no code from the original projects):

- :func:`build_graph_def` / :func:`write_frozen_graph`: the original TF1 graph, built with ``tf.compat.v1`` in
  graph mode with the original op and variable names (``twitterdcn/encoder/conv_0/weights`` ...), the float64
  soft-codebook quantizer under ``twitterdcn/quantization/`` ending in ``latent_quantized``, the codebook
  ``twitterdcn/optimization/entropy/Const``, the top-level ``y`` and, optionally, the clip wrapper ``add``. The
  variables are frozen to ``Const`` nodes with their ``/read`` identities, keeping only the output's ancestors.
  ``change=`` produces a deliberately *different* graph for the converter's refusal tests.
- :func:`build_keras_model` / :func:`write_keras_h5`: the TF2 toolbox's Keras variant, its weights written in
  the layout of Keras 2's ``save_weights(..., save_format='h5')`` to ``<dir>/twitterdcn/twitterdcn.h5``, next to
  the JSON of hyper-parameters.

Weights come from :func:`random_weights` (seeded, in the checkpoint's ``/``-joined naming), so a converted
checkpoint can be compared with them exactly. TensorFlow is imported lazily and pinned to the CPU.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

GAMMA = 25.0
NU = 50.0
LRELU_GAIN = float(np.sqrt(2.0 / 1.04))
LATENT_SCALING = 2.5  # with these draws: latents of about +-12 on natural images, as in the shared reference
TCONV8_GAIN = 0.126
TCONV8_SHIFT = 8.93e-05

# (name, stride, activation) in graph order; "lrelu" activations are `<scope>/LeakyRelu` ops.
ENCODER = [
    ("conv_0", 2, True),
    ("conv_1", 2, False),  # followed by the separate `conv_1/lrelu` that feeds the first residual block only
    ("conv_2", 1, True),
    ("conv_3", 1, False),
    ("conv_4", 1, True),
    ("conv_5", 1, False),
    ("conv_6", 1, True),
    ("conv_7", 1, False),
    ("conv_8", 2, False),
]
DECODER = [
    ("conv_0", 1, False),
    ("conv_1", 1, True),
    ("conv_2", 1, False),
    ("conv_3", 1, True),
    ("conv_4", 1, False),
    ("conv_5", 1, True),
    ("conv_6", 1, False),
    ("tconv_7", 1, True),
    ("tconv_8", 1, False),
]
SECOND_OF_BRANCH = {
    "encoder/conv_3", "encoder/conv_5", "encoder/conv_7", "decoder/conv_2", "decoder/conv_4", "decoder/conv_6"
}

#: Changes accepted by ``build_graph_def(change=...)``: a graph that differs from the original in one place.
CHANGES = {
    "stride": "encoder/conv_1 with stride 1 instead of 2",
    "padding": "decoder/conv_3 with VALID padding",
    "no_lrelu": "the first residual block's input activation (encoder/conv_1/lrelu) left out",
    "missing_lrelu": "decoder/conv_3 without its LeakyRelu",
    "extra_lrelu": "a LeakyRelu after encoder/conv_3, which has none",
    "alpha": "decoder/tconv_7's LeakyRelu with alpha 0.1",
    "kernel_shape": "encoder/conv_2 with a 5x5 kernel instead of 3x3",
    "d2s_block": "decoder/d2s_7 with block size 4",
    "no_residual": "decoder/sum_1 left out (the block's input is not added back)",
    "scaling_add": "the latent scaling as an Add instead of a Mul",
    "codebook": "a codebook of 0..31 instead of -15..16",
    "extra_weight": "an extra weight tensor twitterdcn/encoder/conv_9/weights",
    "relu": "encoder/conv_0 with Relu instead of LeakyRelu",
}


def _tf():
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):  # already initialized: device placement pins to the CPU below
        pass
    return tf


# ------------------------------------------------------------------------------------------------------------
# Weights


def layer_shapes(n_features: int) -> dict[str, tuple[int, int, int, int]]:
    """HWIO kernel shape of every conv, in graph order, keyed like the checkpoint (``encoder/conv_0``)."""
    c, w = n_features, 128
    shapes = {"encoder/conv_0": (5, 5, 3, 64), "encoder/conv_1": (5, 5, 64, w)}
    shapes.update({f"encoder/conv_{i}": (3, 3, w, w) for i in range(2, 8)})
    shapes["encoder/conv_8"] = (5, 5, w, c)
    shapes["decoder/conv_0"] = (3, 3, c, 4 * w)
    shapes.update({f"decoder/conv_{i}": (3, 3, w, w) for i in range(1, 7)})
    shapes["decoder/tconv_7"] = (3, 3, w, 256)
    shapes["decoder/tconv_8"] = (3, 3, 64, 12)
    return shapes


def random_weights(n_features: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic He-normal-like weights, as the shared reference graph was made.

    std = gain / sqrt(fan_in), gain sqrt(2/1.04) before a leaky ReLU and 1 otherwise, halved for the second
    conv of each residual branch; biases N(0, 0.02^2); tconv_8 scaled by 0.126 and its bias shifted by 8.93e-5.
    The latent scaling is 2.5 (the reference's 4.96 was calibrated for its own draws): with these draws, natural
    images give latents of about +-12 over ~23 bins and ~3 % of decoded values outside [0, 1], as the
    reference's do. Keys are the checkpoint's (``encoder/conv_0/kernel`` HWIO, ``.../bias``,
    ``encoder/latent_scaling``).
    """
    rng = np.random.default_rng(seed)
    activated = {f"encoder/{n}" for n, _, a in ENCODER if a} | {f"decoder/{n}" for n, _, a in DECODER if a}
    activated.add("encoder/conv_1")  # n is followed by lrelu in the first residual block
    out: dict[str, np.ndarray] = {}
    for layer, shape in layer_shapes(n_features).items():
        fan_in = shape[0] * shape[1] * shape[2]
        gain = LRELU_GAIN if layer in activated else 1.0
        if layer in SECOND_OF_BRANCH:
            gain *= 0.5
        kernel = rng.standard_normal(shape) * (gain / np.sqrt(fan_in))
        bias = rng.normal(0.0, 0.02, size=shape[-1])
        if layer == "decoder/tconv_8":
            kernel = kernel * TCONV8_GAIN
            bias = bias + TCONV8_SHIFT
        out[f"{layer}/kernel"] = kernel.astype(np.float32)
        out[f"{layer}/bias"] = bias.astype(np.float32)
    out["encoder/latent_scaling"] = np.array(LATENT_SCALING, dtype=np.float32)
    return out


def default_codebook(latent_bpf: int = 5) -> np.ndarray:
    return np.arange(-(2 ** (latent_bpf - 1)) + 1, 2 ** (latent_bpf - 1) + 1, dtype=np.float32)


# ------------------------------------------------------------------------------------------------------------
# (a) The TF1 frozen graph


def _quantizer(tf, latent, codebook):
    """The soft-codebook quantizer in float64, op for op as the original graph has it (ORIGINAL_MODEL.md §3)."""
    add = tf.raw_ops.Add
    flat = tf.reshape(latent, [-1, 1])
    cb = tf.cast(codebook, tf.float64)
    z = tf.cast(flat, tf.float64)
    d = GAMMA * (z - cb)
    one = tf.constant(1.0, tf.float64)
    t = tf.pow(d, 2.0) / NU
    w = tf.pow(add(x=one, y=t, name="add"), -(NU + 1.0) / 2.0)
    w = add(x=w, y=tf.constant(1e-72, tf.float64), name="add_1")
    w = w / tf.reduce_sum(w, axis=1, keepdims=True)
    soft = tf.reduce_mean(tf.matmul(w, tf.transpose(cb)), axis=1)
    soft = tf.reshape(tf.cast(soft, tf.float32), tf.shape(latent))
    hard = tf.gather(codebook, tf.argmax(w, axis=1), axis=1)
    hard = tf.reshape(hard, tf.shape(latent))
    return tf.identity(add(x=tf.stop_gradient(hard - soft), y=soft, name="add_2"), name="latent_quantized")


def _variable(tf, name, value):
    return tf.compat.v1.get_variable(name, initializer=np.asarray(value, np.float32), use_resource=False)


def _conv(tf, x, scope, weights, stride, lrelu, *, alpha=0.2, padding="SAME", act_op="LeakyRelu", side_lrelu=False):
    with tf.compat.v1.variable_scope(scope):
        w = _variable(tf, "weights", weights[f"{scope}/kernel"])
        b = _variable(tf, "biases", weights[f"{scope}/bias"])
        y = tf.nn.conv2d(x, w, strides=[1, stride, stride, 1], padding=padding, name="Conv2D")
        y = tf.nn.bias_add(y, b, name="BiasAdd")
        if lrelu:
            if act_op == "Relu":
                y = tf.nn.relu(y, name="Relu")
            else:
                y = tf.nn.leaky_relu(y, alpha=alpha, name="LeakyRelu")
        if side_lrelu:
            return y, tf.nn.leaky_relu(y, alpha=0.2, name="lrelu")
        return y


def build_graph_def(weights: dict[str, np.ndarray], *, clip: bool = True, change: str | None = None):
    """The original graph for these weights, frozen: a ``GraphDef`` whose last op is ``add`` (clip) or ``y``."""
    if change is not None and change not in CHANGES:
        raise ValueError(f"unknown change {change!r}; known: {', '.join(CHANGES)}")
    tf = _tf()
    n_features = int(weights["encoder/conv_8/kernel"].shape[-1])
    w = dict(weights)
    if change == "kernel_shape":
        w["encoder/conv_2/kernel"] = np.resize(w["encoder/conv_2/kernel"], (5, 5, 128, 128)) * 0.6
    codebook = default_codebook() if change != "codebook" else np.arange(32, dtype=np.float32)
    add = tf.raw_ops.Add
    g = tf.Graph()
    with g.as_default(), tf.device("/CPU:0"):
        x = tf.compat.v1.placeholder(tf.float32, [None, 128, 128, 3], name="x_twitterdcn")
        with tf.name_scope("twitterdcn/optimization/entropy/"):
            cb = tf.constant(codebook[None, :], name="Const")
        with tf.compat.v1.variable_scope("twitterdcn"):
            with tf.compat.v1.variable_scope("encoder"):
                w_ = {k[len("encoder/") :]: v for k, v in w.items() if k.startswith("encoder/")}
                with tf.name_scope("normalization"):
                    h = 2.0 * (x - 0.5)
                conv0_act = "Relu" if change == "relu" else "LeakyRelu"
                h = _conv(tf, h, "conv_0", w_, 2, True, act_op=conv0_act)
                n, a = _conv(tf, h, "conv_1", w_, 1 if change == "stride" else 2, False, side_lrelu=True)
                if change == "no_lrelu":
                    a = n
                r = _conv(tf, a, "conv_2", w_, 1, True)
                r = _conv(tf, r, "conv_3", w_, 1, change == "extra_lrelu")
                n = add(x=n, y=r, name="sum_0")
                for i, (c1, c2) in enumerate((("conv_4", "conv_5"), ("conv_6", "conv_7")), start=1):
                    r = _conv(tf, _conv(tf, n, c1, w_, 1, True), c2, w_, 1, False)
                    n = add(x=n, y=r, name=f"sum_{i}")
                raw = tf.identity(_conv(tf, n, "conv_8", w_, 2, False), name="latent_raw")
                scaling = _variable(tf, "latent_scaling", w_["latent_scaling"])
                if change == "scaling_add":
                    scaled = add(x=scaling, y=raw, name="latent_scaled")
                else:
                    scaled = tf.multiply(scaling, raw, name="latent_scaled")
            latent = tf.identity(scaled, name="latent")
            with tf.name_scope("quantization"):
                q = _quantizer(tf, latent, cb)
            with tf.compat.v1.variable_scope("decoder"):
                w_ = {k[len("decoder/") :]: v for k, v in w.items() if k.startswith("decoder/")}
                h = tf.nn.depth_to_space(_conv(tf, q, "conv_0", w_, 1, False), 2, name="d2s_0")
                for i, (c1, c2) in enumerate((("conv_1", "conv_2"), ("conv_3", "conv_4"), ("conv_5", "conv_6"))):
                    pad = "VALID" if change == "padding" and c1 == "conv_3" else "SAME"
                    act = not (change == "missing_lrelu" and c1 == "conv_3")
                    r = _conv(tf, _conv(tf, h, c1, w_, 1, act, padding=pad), c2, w_, 1, False)
                    if change == "padding" and c1 == "conv_3":
                        r = tf.pad(r, [[0, 0], [1, 1], [1, 1], [0, 0]])  # keep the graph buildable
                    h = r if (change == "no_residual" and i == 1) else add(x=h, y=r, name=f"sum_{i}")
                alpha = 0.1 if change == "alpha" else 0.2
                h = tf.nn.depth_to_space(_conv(tf, h, "tconv_7", w_, 1, True, alpha=alpha), 2, name="d2s_7")
                h = tf.nn.depth_to_space(_conv(tf, h, "tconv_8", w_, 1, False), 2, name="d2s_8")
                with tf.name_scope("normalization"):
                    with tf.name_scope("add") as scope:
                        h = add(x=h, y=tf.constant(1.0, name="y"), name=scope)
                    h = h / 2.0
        y = tf.identity(h, name="y")
        out = y
        if clip:
            out = add(x=tf.stop_gradient(tf.clip_by_value(y, 0.0, 1.0) - y), y=y, name="add")
        with tf.compat.v1.Session(graph=g) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            gd = tf.compat.v1.graph_util.convert_variables_to_constants(sess, g.as_graph_def(), [out.op.name])
    if change in ("d2s_block", "extra_weight"):
        _edit_graph_def(tf, gd, change, n_features)
    return gd


def _edit_graph_def(tf, gd, change, n_features):
    """Changes that TensorFlow's shape inference would not let the builder make: edit the frozen GraphDef."""
    nodes = {n.name: n for n in gd.node}
    if change == "d2s_block":
        nodes["twitterdcn/decoder/d2s_7"].attr["block_size"].i = 4
    elif change == "extra_weight":
        node = gd.node.add()
        node.name = "twitterdcn/encoder/conv_9/weights"
        node.op = "Const"
        node.attr["dtype"].type = tf.float32.as_datatype_enum
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.zeros((3, 3, n_features, 8), np.float32)))


def write_frozen_graph(path, n_features: int = 16, seed: int = 0, *, clip: bool = True, change: str | None = None):
    """Build and write a frozen ``.pb``; returns (path, weights)."""
    weights = random_weights(n_features, seed)
    gd = build_graph_def(weights, clip=clip, change=change)
    path = Path(path)
    path.write_bytes(gd.SerializeToString())
    return path, weights


_CACHE_DIR: list[Path] = []


def _cache_dir() -> Path:
    if not _CACHE_DIR:
        d = Path(tempfile.mkdtemp(prefix="l3ic-tfref-"))
        atexit.register(shutil.rmtree, d, True)
        _CACHE_DIR.append(d)
    return _CACHE_DIR[0]


@functools.lru_cache(maxsize=None)
def cached_frozen_graph(n_features: int = 16, seed: int = 0, clip: bool = True, change: str | None = None):
    """:func:`write_frozen_graph` once per process and argument set (shared by the test modules)."""
    name = f"dcn_{n_features}c_seed{seed}_{'clip' if clip else 'y'}_{change or 'orig'}.pb"
    return write_frozen_graph(_cache_dir() / name, n_features, seed, clip=clip, change=change)


class FrozenGraphRunner:
    """A frozen graph imported once, with its image input and its decoder input remapped to placeholders.

    ``encode(x)`` gives ``twitterdcn/latent`` and, when the decoder is fed at ``latent_quantized``, the graph's
    own ``latent_quantized`` (its soft-codebook quantizer on that latent). ``decode(q)`` feeds quantized values at
    ``feed`` (``twitterdcn/quantization/latent_quantized``, or ``twitterdcn/latent``, from where they pass through
    the graph's quantizer unchanged) and returns ``y`` (unclipped) and the last op's output.
    """

    def __init__(self, graph_def, feed: str = "twitterdcn/quantization/latent_quantized"):
        tf = _tf()
        self.graph = tf.Graph()
        consumed = {i.split(":")[0].lstrip("^") for n in graph_def.node for i in n.input}
        last = [n.name for n in graph_def.node if n.name not in consumed]
        with self.graph.as_default(), tf.device("/CPU:0"):
            self.x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name="image")
            self.q = tf.compat.v1.placeholder(tf.float32, [None, None, None, None], name="quantized")
            input_map = {"x_twitterdcn:0": self.x, f"{feed}:0": self.q}
            tf.compat.v1.import_graph_def(graph_def, input_map=input_map, name="g")
        get = self.graph.get_tensor_by_name
        self.latent = get("g/twitterdcn/latent:0")
        self.quantized = get("g/twitterdcn/quantization/latent_quantized:0") if "quantization" in feed else None
        self.y = get("g/y:0")
        self.out = get(f"g/{last[0]}:0")
        config = tf.compat.v1.ConfigProto(device_count={"GPU": 0})
        self.sess = tf.compat.v1.Session(graph=self.graph, config=config)

    def encode(self, x):
        x = np.asarray(x, np.float32)
        if self.quantized is None:
            return self.sess.run(self.latent, {self.x: x}), None
        return self.sess.run([self.latent, self.quantized], {self.x: x})

    def decode(self, q):
        return self.sess.run([self.y, self.out], {self.q: np.asarray(q, np.float32)})

    def close(self):
        self.sess.close()


# ------------------------------------------------------------------------------------------------------------
# (b) The TF2 toolbox's Keras variant

#: Keras default layer names in creation order: the encoder's convs, then the decoder's.
KERAS_CONV_NAMES = ["conv2d"] + [f"conv2d_{i}" for i in range(1, 18)]
KERAS_LAYERS = [f"encoder/{n}" for n, _, _ in ENCODER] + [f"decoder/{n}" for n, _, _ in DECODER]


def build_keras_model(weights: dict[str, np.ndarray], codebook=None):
    """The toolbox's Keras TwitterDCN holding these weights (Keras ``Conv2D`` + ``LeakyReLU(0.2)`` layers).

    ``model(x)`` returns the decoded image; ``model.encode(x)`` the latent before quantization;
    ``model.quantize_latent(z)`` the hard forward value of the soft-codebook quantizer; ``model.decode(q)`` the image.
    """
    tf = _tf()
    import keras

    cb = default_codebook() if codebook is None else np.asarray(codebook, np.float32)
    n_features = int(weights["encoder/conv_8/kernel"].shape[-1])

    class Quantization(keras.layers.Layer):
        def build(self, input_shape):
            self.codebook = self.add_weight(
                name="codebook", shape=(1, cb.size), initializer=keras.initializers.Constant(cb[None]), trainable=False
            )

        def call(self, z):
            with tf.name_scope("quantization"):
                return _quantizer(tf, z, tf.convert_to_tensor(self.codebook))

    class DiscreteLatent(keras.layers.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.quantization = Quantization(name="quantization")

        def build(self, input_shape):
            self.latent_scaling = self.add_weight(
                name="latent_scaling", shape=(), initializer=keras.initializers.Constant(1.0)
            )
            self.quantization.build(input_shape)

        def call(self, z):
            return self.quantization(self.latent_scaling * z)

    class TwitterDCN(keras.Model):
        def __init__(self):
            super().__init__(name="twitterdcn")
            convs = []
            for (layer, shape), name in zip(layer_shapes(n_features).items(), KERAS_CONV_NAMES):
                stride = 2 if layer in ("encoder/conv_0", "encoder/conv_1", "encoder/conv_8") else 1
                convs.append(keras.layers.Conv2D(shape[-1], shape[:2], strides=stride, padding="same", name=name))
            self.enc, self.dec = convs[:9], convs[9:]
            self.lrelu = keras.layers.LeakyReLU(negative_slope=0.2, name="leaky_re_lu")
            self.discrete_latent = DiscreteLatent(name="discrete_latent")

        def encode_raw(self, x):
            e, act = self.enc, self.lrelu
            x = 2.0 * (x - 0.5)
            x = act(e[0](x))
            n = e[1](x)
            n = n + e[3](act(e[2](act(n))))
            n = n + e[5](act(e[4](n)))
            n = n + e[7](act(e[6](n)))
            return e[8](n)

        def encode(self, x):
            return self.discrete_latent.latent_scaling * self.encode_raw(x)

        def quantize_latent(self, z):
            return self.discrete_latent.quantization(z)

        def decode(self, q):
            d, act = self.dec, self.lrelu
            x = tf.nn.depth_to_space(d[0](q), 2)
            x = x + d[2](act(d[1](x)))
            x = x + d[4](act(d[3](x)))
            x = x + d[6](act(d[5](x)))
            x = tf.nn.depth_to_space(act(d[7](x)), 2)
            x = tf.nn.depth_to_space(d[8](x), 2)
            return (x + 1.0) / 2.0

        def call(self, x):
            return self.decode(self.discrete_latent(self.encode_raw(x)))

    with tf.device("/CPU:0"):
        model = TwitterDCN()
        model(np.zeros((1, 16, 16, 3), np.float32))  # build
        for conv, layer in zip(model.enc + model.dec, KERAS_LAYERS):
            conv.set_weights([weights[f"{layer}/kernel"], weights[f"{layer}/bias"]])
        model.discrete_latent.latent_scaling.assign(weights["encoder/latent_scaling"])
    return model


def keras_weight_groups(model) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """(layer name, [(Keras 2 weight name, value)]) for every top-level layer, in creation order."""
    def conv(c):
        return (c.name, [(f"{c.name}/kernel:0", c.kernel.numpy()), (f"{c.name}/bias:0", c.bias.numpy())])

    groups = [conv(c) for c in model.enc]
    groups.append((model.lrelu.name, []))
    dl = model.discrete_latent
    groups.append(
        (
            dl.name,
            [
                (f"{dl.name}/latent_scaling:0", np.asarray(dl.latent_scaling.numpy(), np.float32)),
                (f"{dl.name}/quantization/codebook:0", dl.quantization.codebook.numpy()),
            ],
        )
    )
    groups += [conv(c) for c in model.dec]
    return groups


def write_keras_h5(directory, weights: dict[str, np.ndarray], *, hyperparameters: dict | None = None, mutate=None):
    """Write ``<directory>/twitterdcn/twitterdcn.h5`` (Keras 2 ``save_weights`` h5 layout) and the JSON.

    The h5 holds root attributes ``layer_names``, ``backend`` and ``keras_version``, one group per top-level
    layer with a ``weight_names`` attribute, and the datasets at ``<layer>/<weight name>``. ``mutate(groups)``
    may edit the (layer, weights) list first, for the refusal tests. Returns the h5 path.
    """
    import h5py

    model = build_keras_model(weights)
    groups = keras_weight_groups(model)
    if mutate is not None:
        groups = mutate(groups)
    n_features = int(weights["encoder/conv_8/kernel"].shape[-1])
    hp = {"n_features": n_features, "latent_bpf": 5, "rounding": "soft-codebook", "scale_latent": True}
    hp["entropy_weight"] = 250
    hp.update(hyperparameters or {})
    folder = Path(directory) / "twitterdcn"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "twitterdcn.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([name.encode() for name, _ in groups])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.11.0"
        for name, ws in groups:
            g = f.create_group(name)
            g.attrs["weight_names"] = np.array([wn.encode() for wn, _ in ws])
            for wn, value in ws:
                g.create_dataset(wn, data=value)
    (folder / "twitterdcn.json").write_text(json.dumps(hp, indent=2))
    return path
