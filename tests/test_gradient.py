"""Training signal: the loss of the original (ORIGINAL_MODEL.md §3) has a finite, non-zero gradient for every
parameter, through encode -> soft_quantize -> decode.

loss = l2_loss(x - y) + 250 * H, with l2_loss = sum(d**2) / 2 over the batch and H the entropy estimate of the
latent (before quantization).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from l3ic_jax import checkpoint, quantize
from l3ic_jax.model import TwitterDCN

ENTROPY_WEIGHT = 250.0


def loss_fn(params, graphdef, rest, x):
    codebook = quantize.default_codebook()  # a fixed numpy constant, as in the original
    model = nnx.merge(graphdef, params, rest)
    z = model.encoder(x)
    y = model.decoder(quantize.soft_quantize(z, codebook))
    return jnp.sum((x - y) ** 2) / 2 + ENTROPY_WEIGHT * quantize.entropy_estimate(z, codebook)


@pytest.mark.parametrize("n_features", [16])
def test_every_parameter_gets_a_finite_nonzero_gradient(n_features):
    model = TwitterDCN(n_features, rngs=nnx.Rngs(0))
    # Non-zero biases and a latent scaling that spreads the latent over several bins, as after some training.
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        if path[-1] == "bias":
            var.set_value(jax.random.normal(jax.random.key(len(path[1])), var.shape) * 0.02)
    model.encoder.latent_scaling.set_value(jnp.float32(3.0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.random.uniform(jax.random.key(1), (2, 32, 24, 3), jnp.float32)

    loss, grads = jax.jit(jax.value_and_grad(loss_fn), static_argnums=(1,))(params, graphdef, rest, x)
    assert np.isfinite(float(loss))

    flat = {"/".join(map(str, path)): np.asarray(v.get_value()) for path, v in nnx.to_flat_state(grads)}
    assert sorted(flat) == sorted(checkpoint.parameter_shapes(n_features))  # every kernel, bias and latent_scaling
    for name, g in flat.items():
        assert np.all(np.isfinite(g)), f"{name}: non-finite gradient"
        assert np.any(g != 0), f"{name}: zero gradient"
