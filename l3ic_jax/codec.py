"""`Codec`: a loaded l3ic model with jit-compiled encode, quantize, dequantize and decode.

This is the tensor-level API (images <-> latents <-> indices). Bytes on disk are the job of
:mod:`l3ic_jax.bitstream` and :mod:`l3ic_jax.pipeline`. Each stage is one ``jax.jit`` function of (weights,
input); a shape that has been seen is not compiled again.

On a CPU, inference (``encode``, ``decode``, ``encode_indices``, ``decode_indices``) runs by default on the AVX-512
kernels of :mod:`l3ic_jax.cpu_backend` (same graph, Winograd 3x3 convolutions; within the project's parity
tolerances of the XLA path) when JAX's default backend is the CPU and the kernels are supported here.
``L3IC_CPU_KERNELS=0`` or ``Codec(..., cpu_kernels=False)`` keeps the XLA path; GPUs, tracing (``jax.jit`` of a
codec call) and training always use XLA.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import checkpoint as _ckpt
from . import cpu_backend as _cpu_backend
from . import quantize as _q
from .model import TwitterDCN


def _param(model: TwitterDCN, name: str):
    obj = model
    for part in name.split("/"):
        obj = getattr(obj, part)
    return obj


def model_from_tensors(tensors: dict[str, np.ndarray], n_features: int | None = None, **kwargs) -> TwitterDCN:
    """A :class:`TwitterDCN` holding the given flat checkpoint tensors (validated first)."""
    n_features = _ckpt.infer_n_features(tensors) if n_features is None else int(n_features)
    _ckpt.validate(tensors, n_features)
    model = nnx.eval_shape(lambda: TwitterDCN(n_features, rngs=nnx.Rngs(0), **kwargs))
    for name in _ckpt.parameter_shapes(n_features):
        _param(model, name).set_value(jnp.asarray(tensors[name], jnp.float32))
    return model


def tensors_from_model(model: TwitterDCN) -> dict[str, np.ndarray]:
    """The flat ``/``-named float32 tensors of a model, as a checkpoint stores them."""
    return {
        name: np.asarray(_param(model, name).get_value(), dtype=np.float32)
        for name in _ckpt.parameter_shapes(model.n_features)
    }


def as_image_batch(images) -> jax.Array:
    """HWC or NHWC RGB images as an NHWC float32 batch; uint8 is scaled by 1/255.

    NumPy input is checked for finiteness and the [0, 1] range; device arrays are taken as they are, so a JAX
    pipeline is not forced to synchronize.
    """
    return jnp.asarray(_checked_images(images), jnp.float32)


def _checked_images(images) -> np.ndarray | jax.Array:
    """:func:`as_image_batch` without the final move to a JAX array (the CPU kernels take NumPy as it is)."""
    if isinstance(images, jax.Array):
        x = images
    else:
        x = np.asarray(images)
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / 255.0
        elif x.dtype.kind not in "fiu":
            raise TypeError(f"images must be float in [0, 1] or uint8, got dtype {x.dtype}")
        x = x.astype(np.float32, copy=False)
        if x.size and not np.all(np.isfinite(x)):
            raise ValueError("images contain NaN or infinite values")
        if x.size and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
            raise ValueError(f"images must be in [0, 1]; got values in [{x.min():.4g}, {x.max():.4g}]")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be HxWx3 or NxHxWx3 RGB, got shape {tuple(x.shape)}")
    if min(x.shape[:3]) < 1:
        raise ValueError(f"images must not be empty, got shape {tuple(x.shape)}")
    return x


def cpu_kernels_default() -> bool:
    """Whether a new :class:`Codec` runs inference on the C kernels: JAX's default backend is the CPU, the kernels
    are supported on this machine, and ``L3IC_CPU_KERNELS`` is not ``0``."""
    if os.environ.get("L3IC_CPU_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return jax.default_backend() == "cpu" and _cpu_backend.supported()


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


class Codec:
    """A model plus its codebook: ``encode`` -> ``quantize`` -> ``dequantize`` -> ``decode``.

    Attributes: ``model`` (the Flax NNX :class:`TwitterDCN`), ``n_features``, ``codebook`` (float32 numpy),
    ``name``, ``weights_sha256`` (identity of the weights, used as the bitstream's model id), ``metadata`` and
    ``cpu_kernels`` (inference on :mod:`l3ic_jax.cpu_backend`; ``None``, the default, decides by
    :func:`cpu_kernels_default`; ``True`` requires the kernels).
    """

    def __init__(
        self,
        model: TwitterDCN,
        codebook=None,
        *,
        name: str = "custom",
        metadata: dict | None = None,
        cpu_kernels: bool | None = None,
    ):
        self.model = model
        self.n_features = int(model.n_features)
        self.codebook = (
            _q.default_codebook() if codebook is None else np.asarray(codebook, dtype=np.float32).ravel()
        )
        self.name = str(name)
        self.metadata = dict(metadata or {})
        self.weights_sha256 = self.metadata.get("weights_sha256") or _ckpt.weights_hash(
            tensors_from_model(model), self.codebook
        )
        self._graphdef, self._state = nnx.split(model)
        graphdef, codebook_np = self._graphdef, self.codebook
        if cpu_kernels is None:
            cpu_kernels = cpu_kernels_default()
        elif cpu_kernels and not _cpu_backend.supported():
            raise RuntimeError("cpu_kernels=True, but the C kernels are not supported here (l3ic_jax._cpu, AVX-512F)")
        self.cpu_kernels = bool(cpu_kernels)
        self._cpu_net = None  # built on first use (weight transforms), dropped by update_weights

        def encode(state, x):
            return nnx.merge(graphdef, state).encoder(x)

        def decode(state, z):
            return jnp.clip(nnx.merge(graphdef, state).decoder(z), 0.0, 1.0)

        self._encode = jax.jit(encode)
        self._decode = jax.jit(decode)
        self._quantize = jax.jit(lambda z: _q.quantize_indices(z, codebook_np))
        self._dequantize = jax.jit(lambda i: _q.dequantize(i, codebook_np))
        self._encode_indices = jax.jit(lambda s, x: _q.quantize_indices(encode(s, x), codebook_np))
        self._decode_indices = jax.jit(lambda s, i: decode(s, _q.dequantize(i, codebook_np)))

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, name: str | None = None, *, cpu_kernels: bool | None = None
    ) -> "Codec":
        tensors, meta = _ckpt.load(path)
        model = model_from_tensors(tensors, meta["n_features"])
        return cls(model, meta["codebook"], name=name or Path(path).stem, metadata=meta, cpu_kernels=cpu_kernels)

    @classmethod
    def random(cls, n_features: int, seed: int = 0, *, cpu_kernels: bool | None = None) -> "Codec":
        """A randomly initialized model (tests, and the start of training)."""
        return cls(
            TwitterDCN(n_features, rngs=nnx.Rngs(seed)), name=f"random-{n_features}c-seed{seed}", cpu_kernels=cpu_kernels
        )

    def update_weights(self, model: TwitterDCN) -> None:
        """Take new weights (e.g. after a training step) without recompiling for seen shapes."""
        self.model = model
        _, self._state = nnx.split(model)
        self._cpu_net = None
        self.weights_sha256 = _ckpt.weights_hash(tensors_from_model(model), self.codebook)

    def save(self, path: str | os.PathLike, provenance: dict | None = None) -> Path:
        """Write this model as a checkpoint file."""
        return _ckpt.save(path, tensors_from_model(self.model), codebook=self.codebook, provenance=provenance)

    # -- the C kernels (CPU inference) -------------------------------------------------------------------
    def _use_cpu(self, x) -> bool:
        return self.cpu_kernels and not _is_tracer(x)

    def _cpu(self) -> "_cpu_backend.CpuNetwork":
        if self._cpu_net is None:
            self._cpu_net = _cpu_backend.CpuNetwork(tensors_from_model(self.model), self.n_features)
        return self._cpu_net

    # -- the four stages ----------------------------------------------------------------------------------
    def encode(self, images) -> jax.Array:
        """Images (HWC or NHWC, float32 in [0, 1]) to the real latent (N, ceil(H/8), ceil(W/8), C)."""
        x = _checked_images(images)
        if self._use_cpu(x):
            return jnp.asarray(self._cpu().encode(np.asarray(x, np.float32)))
        return self._encode(self._state, jnp.asarray(x, jnp.float32))

    def quantize(self, latent) -> jax.Array:
        """Nearest codebook index of each latent value (ties to the lower entry), uint8."""
        return self._quantize(jnp.asarray(latent, jnp.float32))

    def dequantize(self, indices) -> jax.Array:
        """Codebook values of uint8 indices, float32."""
        idx = jnp.asarray(indices)
        if idx.dtype != jnp.uint8:
            raise TypeError(f"indices must be uint8, got {idx.dtype}")
        return self._dequantize(idx)

    def decode(self, latent_values) -> jax.Array:
        """Quantized latent values (N, h, w, C) to images (N, 8h, 8w, 3), float32 clipped to [0, 1]."""
        z = jnp.asarray(latent_values, jnp.float32)
        if z.ndim == 3:
            z = z[None]
        if z.ndim != 4 or z.shape[-1] != self.n_features:
            raise ValueError(f"latent must be (N, h, w, {self.n_features}), got shape {tuple(z.shape)}")
        if self._use_cpu(z):
            return jnp.asarray(self._cpu().decode(np.asarray(z)))
        return self._decode(self._state, z)

    # -- fused paths used by the bitstream layer ---------------------------------------------------------------
    def encode_indices(self, images) -> jax.Array:
        """``quantize(encode(images))`` in one compiled call: only uint8 indices leave the device."""
        x = _checked_images(images)
        if self._use_cpu(x):
            return self._quantize(self._cpu().encode(np.asarray(x, np.float32)))
        return self._encode_indices(self._state, jnp.asarray(x, jnp.float32))

    def decode_indices(self, indices) -> jax.Array:
        """``decode(dequantize(indices))`` in one compiled call."""
        idx = jnp.asarray(indices)
        if idx.ndim == 3:
            idx = idx[None]
        if idx.dtype != jnp.uint8 or idx.ndim != 4 or idx.shape[-1] != self.n_features:
            raise ValueError(f"indices must be uint8 (N, h, w, {self.n_features}), got {idx.dtype} {tuple(idx.shape)}")
        if self._use_cpu(idx):
            return jnp.asarray(self._cpu().decode(np.asarray(self._dequantize(idx))))
        return self._decode_indices(self._state, idx)

    def __repr__(self) -> str:
        return f"Codec(name={self.name!r}, n_features={self.n_features}, weights={self.weights_sha256[:12]})"


def load(name_or_path: str | os.PathLike = _ckpt.DEFAULT_MODEL, *, cpu_kernels: bool | None = None) -> Codec:
    """A :class:`Codec` from a bundled name (``16c``, ``32c``, ``64c``) or a checkpoint path."""
    path = _ckpt.resolve(name_or_path)
    name = str(name_or_path) if str(name_or_path) in _ckpt.BUNDLED else None
    return Codec.from_checkpoint(path, name=name, cpu_kernels=cpu_kernels)
