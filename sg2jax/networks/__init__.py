"""Flax linen modules of StyleGAN2: thin wrappers that declare params and call `sg2jax.ops`."""

from sg2jax.networks.discriminator import Discriminator
from sg2jax.networks.generator import Generator, mix_styles, sample_mixing_cutoff
from sg2jax.networks.mapping import MappingNetwork, truncate
from sg2jax.networks.synthesis import SynthesisNetwork
