"""Quantization of the latent to the fixed codebook, and the differentiable training-side estimates.

Two worlds, as in the original (ORIGINAL_MODEL.md §3):

- the codec's hard quantizer: the nearest codebook entry, ties to the lower entry (scipy ``vq``'s strict ``<``),
  values outside the codebook clamped to its ends; it returns uint8 indices for the entropy coder;
- training's soft-codebook quantizer: t-Student weights over the codebook, a straight-through hard value with
  the soft value's gradient, and a soft-histogram entropy estimate in bits;
- :func:`identity_quantize`, the same hard value forward with the identity as its gradient (Theis et al. 2017),
  a lower-variance alternative for training (see its docstring).

The original computes the soft weights in float64. Here they are computed in the log domain and normalized with a
softmax, which is the same quantity without the float64 underflow (far entries have weights near 1e-100); the
original's ``+1e-72`` guard only mattered where every weight underflowed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

LATENT_BPF = 5
GAMMA = 25.0  # sharpness of the soft assignment
NU = 50.0  # t-Student degrees of freedom
HIST_FLOOR = 1e-9
LN2 = 0.6931  # the original divides by this rounded constant, not by ln(2)


def default_codebook(latent_bpf: int = LATENT_BPF) -> np.ndarray:
    """The original's fixed integer codebook: ``-2**(bpf-1) + 1 .. 2**(bpf-1)``, i.e. -15..16 for 5 bits."""
    qmin = -(2 ** (latent_bpf - 1)) + 1
    qmax = 2 ** (latent_bpf - 1)
    return np.arange(qmin, qmax + 1, dtype=np.float32)


def is_integer_range(codebook) -> bool:
    """True for a codebook of consecutive integers, which has the closed-form quantizer."""
    cb = np.asarray(codebook, dtype=np.float64).ravel()
    return cb.size >= 1 and bool(np.all(np.diff(cb) == 1.0)) and float(cb[0]).is_integer()


def quantize_indices(latent: jax.Array, codebook) -> jax.Array:
    """Index of the nearest codebook entry, ties to the lower entry, as uint8.

    For the integer codebook this is ``clip(ceil(z - 0.5), qmin, qmax) - qmin`` (1.5 -> 1, -0.5 -> -1;
    round-half-to-even would be wrong). Any other sorted codebook takes the first minimum distance.
    """
    cb = np.asarray(codebook, dtype=np.float32).ravel()
    if cb.size > 256:
        raise ValueError(f"a codebook of {cb.size} entries does not fit uint8 indices")
    z = jnp.asarray(latent, jnp.float32)
    if is_integer_range(cb):
        # ceil(z - 0.5) itself is not exact in float32 (z = -0.5 + 2**-25 gives -1.0, then -1 instead of 0);
        # round() and the difference r - z are exact, so ties are found exactly and moved to the lower entry.
        r = jnp.round(z)
        q = jnp.clip(jnp.where(r - z == 0.5, r - 1.0, r), cb[0], cb[-1])
        return (q - cb[0]).astype(jnp.uint8)
    if np.any(np.diff(cb) <= 0):
        raise ValueError("the codebook must be strictly increasing")
    dist = jnp.abs(z[..., None] - jnp.asarray(cb))
    return jnp.argmin(dist, axis=-1).astype(jnp.uint8)  # argmin takes the first: the lower entry on ties


def dequantize(indices: jax.Array, codebook) -> jax.Array:
    """Codebook values of uint8 indices (what the decoder receives)."""
    cb = jnp.asarray(np.asarray(codebook, dtype=np.float32).ravel())
    return jnp.take(cb, jnp.asarray(indices).astype(jnp.int32), mode="clip")


def soft_weights(latent: jax.Array, codebook, gamma: float = GAMMA, nu: float = NU) -> jax.Array:
    """Normalized t-Student weights of each latent value over the codebook, shape (numel, K).

    ``w = (1 + d**2 / nu) ** (-(nu + 1) / 2)`` with ``d = gamma (z - c)``, normalized over the codebook.
    """
    cb = jnp.asarray(np.asarray(codebook, dtype=np.float32).ravel())
    z = jnp.reshape(latent, (-1, 1)).astype(jnp.float32)
    d = gamma * (z - cb[None, :])
    log_w = -0.5 * (nu + 1.0) * jnp.log1p(d * d / nu)
    return jax.nn.softmax(log_w, axis=-1)


def soft_quantize(latent: jax.Array, codebook, gamma: float = GAMMA, nu: float = NU) -> jax.Array:
    """Straight-through soft-codebook quantizer: the hard value forward, the soft value's gradient backward.

    The hard value is the nearest entry (clamped), not the original graph's ``argmax(w)``, which maps values
    above about 31.17 to the first entry when every weight underflows.
    """
    cb = np.asarray(codebook, dtype=np.float32).ravel()  # stays NumPy: under jit a jnp copy would be traced
    w = soft_weights(latent, cb, gamma, nu)
    soft = jnp.reshape(w @ jnp.asarray(cb), jnp.shape(latent))
    hard = dequantize(quantize_indices(latent, cb), cb)
    return soft + jax.lax.stop_gradient(hard - soft)


def identity_quantize(latent: jax.Array, codebook) -> jax.Array:
    """Straight-through quantizer with the identity gradient: the hard value forward, ``d/dz = 1`` backward
    inside the codebook's range and 0 outside it.

    The forward value, and so the training objective, is exactly :func:`soft_quantize`'s. Its gradient differs:
    with ``gamma = 25`` the soft value is a staircase, so ``d soft / dz`` is below 1e-8 for about 90 % of latent
    values and up to ~39 within ~0.05 of a decision boundary. Its mean over a codebook step is 1, so the two
    estimators agree on average, but the soft one feeds the encoder the distortion gradient of a tenth of the
    latent values, scaled up. The identity (Theis et al. 2017, the architecture's source) passes all of them.

    Beyond half a step past either end of the codebook the forward value is clamped, so the gradient is 0 there
    too. A gradient of 1 there would keep pushing values the output cannot follow, and the entropy estimate has
    no grip on them (every soft weight underflows): in training the latent ran away (|z| to ~460, the entropy
    from 1.3 to 3.7 bits) within a few hundred steps.
    """
    cb = np.asarray(codebook, dtype=np.float32).ravel()
    hard = dequantize(quantize_indices(latent, cb), cb)
    inside = jnp.clip(latent, cb[0] - 0.5, cb[-1] + 0.5)
    return hard + (inside - jax.lax.stop_gradient(inside))  # exactly ``hard`` forward


def entropy_estimate(latent: jax.Array, codebook, gamma: float = GAMMA, nu: float = NU) -> jax.Array:
    """Soft-histogram entropy of the latent over the codebook, in bits per value (the rate term of the loss).

    ``hist = mean(w, axis=0)``, clipped to >= 1e-9 and renormalized; ``H = -sum(hist ln hist) / 0.6931``.
    The histogram pools all channels and positions, as the original does.
    """
    hist = jnp.mean(soft_weights(latent, codebook, gamma, nu), axis=0)
    hist = jnp.maximum(hist, HIST_FLOOR)
    hist = hist / jnp.sum(hist)
    return -jnp.sum(hist * jnp.log(hist)) / LN2
