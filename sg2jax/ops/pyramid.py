"""Resolution pyramid of progressive growing (configs A-D, REFERENCE.md §1.13, §3.3).

The growing path uses plain nearest-neighbour upsampling and box (block-mean) downsampling, not
the FIR resamplers of the StyleGAN2 layers.
"""

import jax.numpy as jnp


def upsample_nearest(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """Repeats every pixel `factor x factor` times: `[N, H, W, C] -> [N, fH, fW, C]`."""
  if factor == 1:
    return x
  n, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, factor, w, factor, c))
  return x.reshape(n, h * factor, w * factor, c)


def downsample_box(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """Mean of each `factor x factor` block: `[N, H, W, C] -> [N, H/f, W/f, C]`."""
  if factor == 1:
    return x
  n, h, w, c = x.shape
  return x.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def lerp(a: jnp.ndarray, b: jnp.ndarray, t) -> jnp.ndarray:
  """`a + (b - a) * t` (TF's `tflib.lerp`)."""
  return a + (b - a) * t


def lower_resolution_copy(images: jnp.ndarray, levels: int) -> jnp.ndarray:
  """The dataset's copy of uint8 images at `1 / 2^levels` of their size, as the official TF
  dataset tool stores it: 2x2 block means taken `levels` times in float32 (each level from the
  previous level's unrounded means), then rounded to uint8 (half to even).

  Args:
    images: uint8 `[N, H, W, C]`.
    levels: halvings.

  Returns:
    uint8 `[N, H / 2^levels, W / 2^levels, C]`.
  """
  if levels == 0:
    return images
  x = images.astype(jnp.float32)
  for _ in range(levels):
    x = (x[:, 0::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 0::2] + x[:, 1::2, 1::2]) * 0.25
  return jnp.clip(jnp.rint(x), 0, 255).astype(jnp.uint8)


def process_reals(images: jnp.ndarray, lod, resolution: int) -> jnp.ndarray:
  """Reals as D sees them during progressive growing (TF `training_loop.process_reals`).

  1. uint8 `[0, 255]` -> float `[-1, 1]` (`x * 2/255 - 1`).
  2. Fade: `x = lerp(x, nearest_up(box_down(x, 2), 2), lod - floor(lod))`.
  3. Nearest-upsample to `resolution`.
  (Mirroring, when on, is done per image by the input pipeline.)

  Args:
    images: uint8 `[N, r, r, C]` at the level's resolution `r = resolution / 2^floor(lod)`.
    lod: the level of detail (traced scalar allowed); its floor must match `r`.
    resolution: output size R.

  Returns:
    float32 `[N, R, R, C]`.
  """
  x = images.astype(jnp.float32) * (2 / 255) - 1
  fraction = lod - jnp.floor(lod)
  x = lerp(x, upsample_nearest(downsample_box(x, 2), 2), fraction)
  return upsample_nearest(x, resolution // images.shape[1])
