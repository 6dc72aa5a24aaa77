"""sg2jax: StyleGAN2 in JAX/Flax, exact to the official networks."""

__version__ = '0.1.0'
