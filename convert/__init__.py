"""Converters from the original l3ic TensorFlow models to l3ic-jax checkpoints (needs the `tf` extra)."""
