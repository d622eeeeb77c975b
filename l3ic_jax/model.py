"""The l3ic auto-encoder ("TwitterDCN") in Flax NNX.

The network is the convolutional auto-encoder of Theis et al., "Lossy image compression with compressive
auto-encoders" (ICLR 2017), in the form used by Korus & Memon, "Quantifying the cost of reliable photo
authentication via high-performance learned lossy representations" (ICLR 2020). Layer names follow the
original TF1 graph (`twitterdcn/encoder/conv_0` ... `twitterdcn/decoder/tconv_8`), so the converter's rename
table is almost the identity. What must match the original exactly, and does:

- TensorFlow ``SAME`` padding, including the asymmetric stride-2 case (1 before, 2 after on even sizes);
  `jax.lax`'s ``SAME`` uses the same rule (``pad_before = pad_total // 2``);
- TensorFlow's depth_to_space (DCR) channel order;
- leaky ReLU with alpha 0.2, and the extra one in front of the encoder's first residual block only;
- input normalization ``2 (x - 0.5)``, the scalar latent scaling, and output denormalization ``(y + 1) / 2``.

Tensors are NHWC float32; any batch size and any height and width work (the latent is ``ceil(H/8)`` by
``ceil(W/8)``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

LRELU_ALPHA = 0.2
N_RESIDUAL_BLOCKS = 3
WIDTH = 128  # channels of the residual trunk in both halves
MIN_FEATURES, MAX_FEATURES = 4, 128  # latent channels the model accepts

# HWIO kernel shape of every layer, as a function of the number of latent channels C.
ENCODER_LAYERS = {
    "conv_0": (5, 5, 3, 64),
    "conv_1": (5, 5, 64, WIDTH),
    **{f"conv_{i}": (3, 3, WIDTH, WIDTH) for i in range(2, 8)},
    "conv_8": lambda c: (5, 5, WIDTH, c),
}
ENCODER_STRIDES = {"conv_0": 2, "conv_1": 2, "conv_8": 2}
DECODER_LAYERS = {
    "conv_0": lambda c: (3, 3, c, 4 * WIDTH),
    **{f"conv_{i}": (3, 3, WIDTH, WIDTH) for i in range(1, 7)},
    "tconv_7": (3, 3, WIDTH, 256),
    "tconv_8": (3, 3, 64, 12),
}


def kernel_shapes(n_features: int) -> dict[str, tuple[int, int, int, int]]:
    """Every conv's HWIO kernel shape, keyed ``encoder/conv_0`` ... ``decoder/tconv_8``."""
    shapes = {}
    for half, table in (("encoder", ENCODER_LAYERS), ("decoder", DECODER_LAYERS)):
        for name, shape in table.items():
            shapes[f"{half}/{name}"] = shape(n_features) if callable(shape) else shape
    return shapes


def lrelu(x: jax.Array) -> jax.Array:
    """``tf.nn.leaky_relu`` with its default alpha 0.2."""
    return jnp.where(x > 0, x, LRELU_ALPHA * x)


def depth_to_space(x: jax.Array, block: int = 2) -> jax.Array:
    """TensorFlow's default (DCR) order: ``out[n, h*b+i, w*b+j, c] = in[n, h, w, (i*b + j) * C_out + c]``."""
    n, h, w, c = x.shape
    c_out = c // (block * block)
    x = x.reshape(n, h, w, block, block, c_out)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h * block, w * block, c_out)


def _check_features(n_features) -> None:
    if not MIN_FEATURES <= int(n_features) <= MAX_FEATURES:
        raise ValueError(f"n_features must be between {MIN_FEATURES} and {MAX_FEATURES}, got {n_features}")


def _conv(shape, stride: int, rngs: nnx.Rngs, precision) -> nnx.Conv:
    kh, kw, cin, cout = shape
    return nnx.Conv(
        cin,
        cout,
        kernel_size=(kh, kw),
        strides=(stride, stride),
        padding="SAME",  # TF rule: pad_before = pad_total // 2, the rest after
        use_bias=True,
        precision=precision,
        kernel_init=nnx.initializers.glorot_uniform(),  # TensorFlow layers' default; biases start at 0
        rngs=rngs,
    )


class Encoder(nnx.Module):
    """Image in [0, 1] (NHWC) to the real-valued latent ``twitterdcn/latent`` (after scaling, before quantization).

    Theis et al. (2017), Fig. 2, as in the original l3ic graph: two stride-2 5x5 convs, three residual blocks of
    3x3 convs, and a stride-2 5x5 conv to C channels, then a trainable scalar ``latent_scaling``.
    """

    def __init__(self, n_features: int, *, rngs: nnx.Rngs, precision=jax.lax.Precision.HIGHEST):
        _check_features(n_features)
        self.n_features = int(n_features)
        for name, shape in ENCODER_LAYERS.items():
            shape = shape(self.n_features) if callable(shape) else shape
            setattr(self, name, _conv(shape, ENCODER_STRIDES.get(name, 1), rngs, precision))
        self.latent_scaling = nnx.Param(jnp.ones((), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = 2.0 * (x - 0.5)
        x = lrelu(self.conv_0(x))
        n = self.conv_1(x)
        # Only the first residual block takes lrelu(n) (op `twitterdcn/encoder/conv_1/lrelu`).
        n = n + self.conv_3(lrelu(self.conv_2(lrelu(n))))
        n = n + self.conv_5(lrelu(self.conv_4(n)))
        n = n + self.conv_7(lrelu(self.conv_6(n)))
        return self.latent_scaling[...] * self.conv_8(n)


class Decoder(nnx.Module):
    """Quantized latent (codebook values, NHWC) to the image, ``(x + 1) / 2``, not clipped.

    Sub-pixel upsampling as in Theis et al. (2017): a 3x3 conv to 512 channels and depth_to_space to 128
    channels at H/4, three residual blocks, then two (conv, depth_to_space) stages to full resolution. The
    ``tconv_*`` layers are ordinary convolutions despite their names. Clipping to [0, 1] is the codec's job.
    """

    def __init__(self, n_features: int, *, rngs: nnx.Rngs, precision=jax.lax.Precision.HIGHEST):
        _check_features(n_features)
        self.n_features = int(n_features)
        for name, shape in DECODER_LAYERS.items():
            shape = shape(self.n_features) if callable(shape) else shape
            setattr(self, name, _conv(shape, 1, rngs, precision))

    def __call__(self, z: jax.Array) -> jax.Array:
        x = depth_to_space(self.conv_0(z))
        x = x + self.conv_2(lrelu(self.conv_1(x)))
        x = x + self.conv_4(lrelu(self.conv_3(x)))
        x = x + self.conv_6(lrelu(self.conv_5(x)))
        x = depth_to_space(lrelu(self.tconv_7(x)))
        x = depth_to_space(self.tconv_8(x))
        return (x + 1.0) / 2.0


class TwitterDCN(nnx.Module):
    """Encoder and decoder together; quantization lives in :mod:`l3ic_jax.quantize`."""

    def __init__(self, n_features: int, *, rngs: nnx.Rngs, precision=jax.lax.Precision.HIGHEST):
        self.n_features = int(n_features)
        self.encoder = Encoder(n_features, rngs=rngs, precision=precision)
        self.decoder = Decoder(n_features, rngs=rngs, precision=precision)

    def __call__(self, x: jax.Array, quantizer) -> jax.Array:
        return self.decoder(quantizer(self.encoder(x)))
