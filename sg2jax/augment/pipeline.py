"""The ADA augmentation pipeline: draw, build the matrices, execute (REFERENCE.md §7)."""

import jax
import jax.numpy as jnp

from sg2jax.augment.color import apply_color
from sg2jax.augment.geometric import apply_geometric
from sg2jax.augment.params import color_matrix, geometric_matrix, sample_color, sample_geometric
from sg2jax.augment.spec import AugmentSpec


def augment_images(key: jax.Array, images: jnp.ndarray, p: jnp.ndarray,
                   spec: AugmentSpec = AugmentSpec.bgc()) -> jnp.ndarray:
  """Augments a batch with the ADA pipeline, independently per sample.

  1. Split `key` into `key_geometric` and `key_color`.
  2. If any geometric multiplier is > 0: draw `GeometricParams` (REFERENCE.md §7.2), build `G_inv`
     (`[B, 3, 3]`) and resample (REFERENCE.md §7.3). It runs even at `p = 0`, where it is the
     identity up to float error, as officially.
  3. If any colour multiplier is > 0 (hue and saturation count for RGB only): draw
     `ColorParams`, build `C` (`[B, 4, 4]`) and apply it (REFERENCE.md §7.4).
  Images stay in the network's range (e.g. [-1, 1]); nothing is clamped. Jit with `spec`
  static; `p` may be traced, so an adaptive `p` does not recompile. Differentiable w.r.t.
  `images` to any order (R1 through augmentation, REFERENCE.md §7.6).

  Args:
    key: a `jax.random` key, used once.
    images: `[B, H, W, C]` float32, `C` in {1, 3} when colour transforms are enabled.
    p: overall augmentation probability, a float32 scalar (may exceed 1; gates saturate).
    spec: per-transform multipliers and constants (static).

  Returns:
    `[B, H, W, C]` augmented images.
  """
  batch, height, width, channels = images.shape  # [B, H, W, C]
  key_geometric, key_color = jax.random.split(key)
  if spec.geometric_enabled:
    g_inv = geometric_matrix(sample_geometric(key_geometric, batch, p, spec), height, width)
    images = apply_geometric(images, g_inv)
  if spec.color_enabled(channels):
    c = color_matrix(sample_color(key_color, batch, p, spec), channels)
    images = apply_color(images, c)
  return images
