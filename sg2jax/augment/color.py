"""Executes the per-sample colour matrices `C` on a batch (REFERENCE.md §7.4)."""

import jax.numpy as jnp


def apply_color(images: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
  """Applies each sample's homogeneous colour matrix to its pixels, in the images' own range.

  1. RGB: `out = C[:3, :3] rgb + C[:3, 3]` per pixel.
  2. One channel: average the first three rows of `C` into `m` (`[4]`), then
     `out = x * (m_0 + m_1 + m_2) + m_3`.
  No clamping (REFERENCE.md §7.4). The 3x3 product is written as broadcast multiply-adds, so it
  stays in full float32 on any backend.

  Args:
    images: `[B, H, W, C]`, `C` in {1, 3}.
    c: `[B, 4, 4]` (`color_matrix`).

  Returns:
    `[B, H, W, C]`, same dtype as `images`.

  Raises:
    ValueError: if the images have neither 1 nor 3 channels.
  """
  channels = images.shape[-1]
  c = c.astype(jnp.float32)
  x = images.astype(jnp.float32)
  if channels == 3:
    linear = c[:, None, None, :3, :3]  # [B, 1, 1, 3, 3]
    offset = c[:, None, None, :3, 3]  # [B, 1, 1, 3]
    out = (linear * x[..., None, :]).sum(axis=-1) + offset  # [B, H, W, 3]
  elif channels == 1:
    m = c[:, :3, :].mean(axis=1)  # [B, 4]
    out = x * m[:, None, None, :3].sum(axis=-1, keepdims=True) + m[:, None, None, 3:]
  else:
    raise ValueError(f'colour augmentation needs RGB (3 channels) or L (1 channel) images, got '
                     f'{channels} channels')
  return out.astype(images.dtype)
