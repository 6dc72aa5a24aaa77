"""Executes the per-sample geometric transforms `G_inv` on a batch (REFERENCE.md §7.3).

The image is reflect-padded, upsampled 2x with the sym6 wavelet low-pass, resampled bilinearly
at the transformed output grid (zeros outside), then downsampled 2x and cropped back. All shapes
are static: the padding is by default the official clamp maximum, not the official batch-wide,
data-dependent margin (which `official_margin` computes on the host, to reproduce the official
output exactly).
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from sg2jax.augment import matrices
from sg2jax.ops.upfirdn import upfirdn2d

# sym6 orthogonal wavelet low-pass, 12 taps (public constants; REFERENCE.md §7.3). It sums to
# sqrt(2); the filter used is normalized to sum 1, as the official `setup_filter`.
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036,
        -0.007800708325034148)
HZ_PAD = len(SYM6) // 4  # 3: output margin, in pixels, kept around the image while resampling


def _sym6_1d() -> np.ndarray:
  taps = np.asarray(SYM6, np.float32)
  return taps / taps.sum()


def upsample_sym6(images: jnp.ndarray) -> jnp.ndarray:
  """2x upsampling with the normalized sym6 filter as a true convolution (A.3 step 3).

  Per axis: insert a zero after every pixel, zero-pad 6 before / 5 after, convolve with
  `2 * sym6` (gain 4 over both axes). Done as two 1-D passes (`[1, 12]` along x with the zero
  insertion on both axes, then `[12, 1]` along y): exact, and 12 instead of 144 taps per pixel.

  Args:
    images: `[B, H, W, C]`.

  Returns:
    `[B, 2H, 2W, C]`.
  """
  taps = _sym6_1d()
  x = upfirdn2d(images, taps[None, :], up=2, padding=(6, 5, 0, 0), gain=2.0)  # [B, 2H, 2W, C]
  return upfirdn2d(x, taps[:, None], padding=(0, 0, 6, 5), gain=2.0)


def downsample_sym6(images: jnp.ndarray) -> jnp.ndarray:
  """2x downsampling with the normalized sym6 filter as a correlation, cropping `HZ_PAD` (step 5).

  Per axis: pad -1 before and after (the official default `(5, 5)` plus the user's `-6`),
  correlate with `sym6`, keep every second pixel from the first. Two 1-D passes: along x at full
  rate, then along y with `down=2`, which also keeps every second column.

  Args:
    images: `[B, 2H + 4 HZ_PAD, 2W + 4 HZ_PAD, C]`.

  Returns:
    `[B, H, W, C]`.
  """
  taps = _sym6_1d()
  x = upfirdn2d(images, taps[None, :], padding=(-1, -1, 0, 0), flip_filter=True)
  return upfirdn2d(x, taps[:, None], down=2, padding=(0, 0, -1, -1), flip_filter=True)


def bilinear_sample(image: jnp.ndarray, ix: jnp.ndarray, iy: jnp.ndarray) -> jnp.ndarray:
  """Bilinear interpolation of one image at pixel coordinates, zero outside (one sample).

  As `grid_sample(mode='bilinear', padding_mode='zeros')`: each of the four neighbours of
  `(ix, iy)` contributes `weight * value`, and a neighbour outside the image contributes 0.
  Linear in `image`, so its gradients of any order w.r.t. `image` exist.

  Args:
    image: `[H, W, C]`.
    ix: `[Ho, Wo]` column coordinates (pixel centres at integers).
    iy: `[Ho, Wo]` row coordinates.

  Returns:
    `[Ho, Wo, C]`.
  """
  height, width, channels = image.shape
  flat = image.reshape(height * width, channels)  # [H * W, C]
  x0, y0 = jnp.floor(ix), jnp.floor(iy)
  wx1, wy1 = ix - x0, iy - y0
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  out = jnp.zeros(ix.shape + (channels,), image.dtype)
  for dy, wy in ((0, 1 - wy1), (1, wy1)):
    for dx, wx in ((0, 1 - wx1), (1, wx1)):
      xs, ys = x0 + dx, y0 + dy
      inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
      index = jnp.clip(ys, 0, height - 1) * width + jnp.clip(xs, 0, width - 1)  # [Ho, Wo]
      weight = jnp.where(inside, wx * wy, 0).astype(image.dtype)
      out = out + jnp.take(flat, index, axis=0) * weight[..., None]
  return out


def official_margin(g_inv: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
  """The official batch-wide padding `(mx0, mx1, my0, my1)` for concrete `G_inv` (A.3 step 1).

  Host-side numpy (the result is a shape, so it cannot be traced); for reproducing official
  outputs exactly with `apply_geometric(..., margin=...)`.
  1. Map the corners `(+-cx, +-cy)`, `cx = (W - 1)/2`, `cy = (H - 1)/2`, through every `G_inv`.
  2. Over the batch and the corners: `m = [max(-x), max(-y), max(x), max(y)]`.
  3. Add `2 HZ_PAD - cx` to the x entries and `2 HZ_PAD - cy` to the y entries, clamp to
     `[0, W - 1]` / `[0, H - 1]`, round up.

  Args:
    g_inv: `[B, 3, 3]`.
    height: `H`.
    width: `W`.

  Returns:
    `(mx0, mx1, my0, my1)`: columns left and right, rows above and below.
  """
  g_inv = np.asarray(g_inv, np.float32)
  cx, cy = np.float32((width - 1) / 2), np.float32((height - 1) / 2)
  corners = np.asarray([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], np.float32)
  mapped = np.einsum('bij,kj->bki', g_inv, corners)[..., :2].reshape(-1, 2)  # [B * 4, 2]
  m = np.concatenate([(-mapped).max(axis=0), mapped.max(axis=0)])  # [x0, y0, x1, y1]
  m = m + np.asarray([2 * HZ_PAD - cx, 2 * HZ_PAD - cy] * 2, np.float32)
  m = np.minimum(np.maximum(m, 0), np.asarray([width - 1, height - 1] * 2, np.float32))
  mx0, my0, mx1, my1 = (int(v) for v in np.ceil(m))
  return mx0, mx1, my0, my1


def sampling_matrix(g_inv: jnp.ndarray, margin: tuple[int, int, int, int],
                    upsampled_size: tuple[int, int], output_size: tuple[int, int]) -> jnp.ndarray:
  """`G_inv` in centred input pixels -> `theta` in normalized coordinates (A.3 steps 2-4).

  With `(mx0, mx1, my0, my1)` the padding, `(H_up, W_up)` the upsampled and `(H_o, W_o)` the
  output size:
  1. Re-centre for the padding: `T((mx0 - mx1)/2, (my0 - my1)/2) G_inv` (the identity for a
     symmetric padding).
  2. To the upsampled grid: `S(2, 2) G_inv S(1/2, 1/2)`, then
     `T(-1/2, -1/2) G_inv T(1/2, 1/2)`.
  3. To normalized coordinates: `S(2/W_up, 2/H_up) G_inv S(W_o/2, H_o/2)`.

  Args:
    g_inv: `[B, 3, 3]`.
    margin: `(mx0, mx1, my0, my1)`.
    upsampled_size: `(H_up, W_up)`.
    output_size: `(H_o, W_o)`.

  Returns:
    `[B, 3, 3]`; its first two rows are the official `affine_grid` `theta`.
  """
  mm = matrices.matmul
  mx0, mx1, my0, my1 = margin
  (h_up, w_up), (h_o, w_o) = upsampled_size, output_size
  g = mm(matrices.translate2d((mx0 - mx1) / 2, (my0 - my1) / 2), g_inv)
  g = mm(mm(matrices.scale2d(2, 2), g), matrices.scale2d(0.5, 0.5))
  g = mm(mm(matrices.translate2d(-0.5, -0.5), g), matrices.translate2d(0.5, 0.5))
  return mm(mm(matrices.scale2d(2 / w_up, 2 / h_up), g), matrices.scale2d(w_o / 2, h_o / 2))


def apply_geometric(images: jnp.ndarray, g_inv: jnp.ndarray,
                    margin: Optional[tuple[int, int, int, int]] = None) -> jnp.ndarray:
  """Resamples every image with its inverse transform `G_inv` (REFERENCE.md §7.3).

  With `B, H, W, C = images.shape`:
  1. Reflect-pad (mirror without repeating the edge pixel) by `margin`, by default the
     official clamp maximum `W - 1` columns and `H - 1` rows on each side:
     `[B, 3H - 2, 3W - 2, C]`.
     # Differs from official: the official pads by a batch-wide margin computed from the
     # transformed corners (`official_margin`), a data-dependent shape. The fixed maximum
     # changes the output only where the official zero border leaks in: in the outer pixels,
     # when a sample zooms out by about 2x or more while the margin stays under the clamp
     # (up to ~1e-3 there; float error elsewhere, measured in tests/test_augment.py).
  2. Upsample 2x with sym6 (`upsample_sym6`): `[B, H_up, W_up, C]`, `[B, 6H - 4, 6W - 4, C]`
     by default.
  3. Map the output grid `[H_o, W_o] = [2H + 12, 2W + 12]` (align_corners=False: pixel `j` at
     normalized `(2j + 1)/W_o - 1`) through `theta = sampling_matrix(G_inv)`, back to upsampled
     pixels `((x + 1) W_up - 1)/2`, and sample bilinearly, zeros outside: `[B, H_o, W_o, C]`.
  4. Downsample 2x with sym6 and crop 3 px per side (`downsample_sym6`): `[B, H, W, C]`.
  Linear in `images`; differentiable w.r.t. them to any order.

  Args:
    images: `[B, H, W, C]` float, any range (no clamping); `H, W >= 2`.
    g_inv: `[B, 3, 3]` output pixel -> input pixel, centred pixel coordinates
      (`geometric_matrix`).
    margin: static `(mx0, mx1, my0, my1)`, each in `[0, W - 1]` / `[0, H - 1]`; None for the
      maximum. Pass `official_margin(g_inv, H, W)` to reproduce the official output exactly.

  Returns:
    `[B, H, W, C]`, same dtype as `images`.

  Raises:
    ValueError: for images smaller than 2x2 or a margin outside the reflectable range.
  """
  _, height, width, _ = images.shape
  if height < 2 or width < 2:
    raise ValueError(f'apply_geometric needs images of at least 2x2 pixels, got {height}x{width}')
  if margin is None:
    margin = (width - 1, width - 1, height - 1, height - 1)
  mx0, mx1, my0, my1 = (int(m) for m in margin)
  if not (0 <= min(mx0, mx1) and max(mx0, mx1) < width and 0 <= min(my0, my1)
          and max(my0, my1) < height):
    raise ValueError(f'geometric margin {margin} outside [0, {width - 1}] x [0, {height - 1}]; '
                     'reflect padding cannot exceed the image size minus 1')
  x = jnp.pad(images, ((0, 0), (my0, my1), (mx0, mx1), (0, 0)), mode='reflect')  # [B, Hp, Wp, C]
  x = upsample_sym6(x)  # [B, H_up, W_up, C]
  h_up, w_up = x.shape[1:3]
  h_o, w_o = 2 * (height + 2 * HZ_PAD), 2 * (width + 2 * HZ_PAD)
  theta = sampling_matrix(g_inv.astype(jnp.float32), (mx0, mx1, my0, my1), (h_up, w_up),
                          (h_o, w_o))
  xn = (2 * jnp.arange(w_o, dtype=jnp.float32) + 1) / w_o - 1  # [W_o]
  yn = (2 * jnp.arange(h_o, dtype=jnp.float32) + 1) / h_o - 1  # [H_o]

  def sample_one(image, t):
    gx = t[0, 0] * xn[None, :] + t[0, 1] * yn[:, None] + t[0, 2]  # [H_o, W_o]
    gy = t[1, 0] * xn[None, :] + t[1, 1] * yn[:, None] + t[1, 2]
    ix = ((gx + 1) * w_up - 1) / 2
    iy = ((gy + 1) * h_up - 1) / 2
    return bilinear_sample(image, ix, iy)

  x = jax.vmap(sample_one)(x, theta)  # [B, H_o, W_o, C]
  return downsample_sym6(x).astype(images.dtype)
