"""The bundled l3ic-jax weights (`l3ic-16c`, `l3ic-32c`, `l3ic-64c` .safetensors), loaded by name."""
