"""Second-moment normalization of latent vectors (mapping-network input, REFERENCE.md §1.5)."""

import jax.numpy as jnp
from jax import lax


def normalize_2nd_moment(x: jnp.ndarray, axis: int = -1, eps: float = 1e-8) -> jnp.ndarray:
  """`x / sqrt(mean(x^2) + eps)` along `axis`: the result has norm `sqrt(dim)`, not 1."""
  return x * lax.rsqrt(jnp.mean(jnp.square(x), axis=axis, keepdims=True) + eps)
