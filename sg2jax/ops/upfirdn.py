"""FIR up/down-sampling (`upfirdn2d`) on NHWC images, as StyleGAN2 uses it (REFERENCE.md §1.3).

The filter is a float32 2-D array `[fh, fw]`. Padding follows the official argument order
`(x0, x1, y0, y1)`: pixels added before/after along the width, then along the height, counted on
the upsampled image; negative values crop.
"""

from typing import Sequence, Union

import jax.numpy as jnp
import numpy as np
from jax import lax

Padding = Union[int, Sequence[int]]


def setup_filter(taps: Sequence[float] = (1, 3, 3, 1), gain: float = 1.0) -> np.ndarray:
  """Builds the normalized 2-D FIR filter from 1-D (separable) or 2-D taps.

  1. A 1-D list `t` becomes `outer(t, t)`; a 2-D list is used as it is.
  2. The filter is divided by its sum (so it passes DC unchanged), then multiplied by `gain`.

  Args:
    taps: 1-D taps (e.g. `[1, 3, 3, 1]`) or a 2-D array.
    gain: overall gain applied after normalization.

  Returns:
    float32 array `[fh, fw]`; for `[1, 3, 3, 1]` it is `outer([1,3,3,1], [1,3,3,1]) / 64`.
  """
  f = np.asarray(taps, dtype=np.float32)
  if f.ndim == 1:
    f = np.outer(f, f)
  if f.ndim != 2:
    raise ValueError(f'FIR taps must be 1-D or 2-D, got shape {f.shape}')
  return (f / f.sum() * gain).astype(np.float32)


def parse_padding(padding: Padding) -> tuple[int, int, int, int]:
  """Returns `(x0, x1, y0, y1)` from an int (same on all sides), a pair `(x, y)` or a 4-tuple."""
  if isinstance(padding, (int, np.integer)):
    return (int(padding),) * 4
  padding = tuple(int(p) for p in padding)
  if len(padding) == 2:
    return (padding[0], padding[0], padding[1], padding[1])
  if len(padding) == 4:
    return padding
  raise ValueError(f'padding must be an int, (x, y) or (x0, x1, y0, y1), got {padding}')


def upfirdn2d(
    x: jnp.ndarray,
    f: np.ndarray,
    up: int = 1,
    down: int = 1,
    padding: Padding = 0,
    flip_filter: bool = False,
    gain: float = 1.0,
) -> jnp.ndarray:
  """Pads, upsamples, FIR-filters and downsamples a batch of images, channel by channel.

  Per channel, as the official `upfirdn2d` (REFERENCE.md §1.3):
  1. Upsample by inserting `up - 1` zeros after every pixel (`H -> H * up`).
  2. Pad with zeros (`padding`, may be negative = crop).
  3. Convolve with `f * gain` in valid mode: a true convolution, i.e. correlation with the
     spatially flipped filter; `flip_filter=True` correlates with `f` as it is.
  4. Keep every `down`-th pixel, starting at index 0.

  On CPU (`_upfirdn2d_slices`), steps 1-2 are one `lax.pad` (interior zeros + edge pads; XLA
  puts interior zeros only *between* pixels, so `up - 1` is added to the high pad to also get the
  trailing zeros of step 1, REFERENCE.md §1.3) and steps 3-4 a weighted sum of strided slices, one
  per tap (per axis when the filter is an exact outer product, as `[1, 3, 3, 1]`), which XLA fuses
  into one elementwise loop; a depthwise convolution computes the same, but XLA:CPU runs it
  15-100x slower. In programs for GPUs and TPUs (`_upfirdn2d_depthwise`) all four steps are one
  depthwise convolution (`feature_group_count=C`, the zeros as `lhs_dilation`, the stride as
  `down`), whose gradient is one too: the slices' gradient is a sum of padded copies of the
  image, several of them in memory at once (measured with the TPU compiler, docs/TPU.md).

  Args:
    x: images `[N, H, W, C]`.
    f: filter `[fh, fw]` (numpy; a static value).
    up: integer upsampling factor.
    down: integer downsampling factor.
    padding: `(x0, x1, y0, y1)`, `(x, y)` or an int.
    flip_filter: correlate instead of convolve (matters for non-symmetric filters only).
    gain: multiplies the filter.

  Returns:
    `[N, (H*up + y0 + y1 - fh) // down + 1, (W*up + x0 + x1 - fw) // down + 1, C]`.
  """
  x0, x1, y0, y1 = parse_padding(padding)
  f = np.asarray(f, dtype=np.float64)
  if f.ndim != 2:
    raise ValueError(f'upfirdn2d expects a 2-D filter, got shape {f.shape}')
  if not flip_filter:
    f = f[::-1, ::-1]  # true convolution = correlation with the flipped filter
  f = f * gain
  pads = (x0, x1, y0, y1)
  return lax.platform_dependent(
      x, cpu=lambda x: _upfirdn2d_slices(x, f, up, down, pads),
      default=lambda x: _upfirdn2d_depthwise(x, f, up, down, pads))


def _upfirdn2d_slices(x: jnp.ndarray, f: np.ndarray, up: int, down: int,
                      pads: tuple[int, int, int, int]) -> jnp.ndarray:
  """`upfirdn2d` with the correlation filter `f` (already flipped and scaled) as a padded copy
  and strided slices."""
  x0, x1, y0, y1 = pads
  x = lax.pad(
      x,
      jnp.zeros((), x.dtype),
      ((0, 0, 0), (y0, y1 + up - 1, up - 1), (x0, x1 + up - 1, up - 1), (0, 0, 0)),
  )
  rows, cols = separable_factors(f)
  if rows is not None:
    return _correlate_1d(_correlate_1d(x, rows, 1, down), cols, 2, down)
  fh, fw = f.shape
  out_h, out_w = (x.shape[1] - fh) // down + 1, (x.shape[2] - fw) // down + 1
  out = None
  for i in range(fh):
    for j in range(fw):
      if f[i, j] == 0:
        continue
      window = lax.slice(x, (0, i, j, 0),
                         (x.shape[0], i + (out_h - 1) * down + 1, j + (out_w - 1) * down + 1,
                          x.shape[3]), (1, down, down, 1))
      term = window * jnp.asarray(f[i, j], x.dtype)
      out = term if out is None else out + term
  return out


def _upfirdn2d_depthwise(x: jnp.ndarray, f: np.ndarray, up: int, down: int,
                         pads: tuple[int, int, int, int]) -> jnp.ndarray:
  """`upfirdn2d` with the correlation filter `f` (already flipped and scaled) as one depthwise
  convolution: `up - 1` zeros between pixels (`lhs_dilation`) and after the last one (in the high
  padding, which like the low one may be negative: a crop of the upsampled image); stride
  `down`."""
  x0, x1, y0, y1 = pads
  channels = x.shape[-1]
  kernel = jnp.broadcast_to(jnp.asarray(f, x.dtype)[:, :, None, None],
                            f.shape + (1, channels))
  return lax.conv_general_dilated(
      x, kernel, window_strides=(down, down),
      padding=((y0, y1 + up - 1), (x0, x1 + up - 1)),
      lhs_dilation=(up, up), dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=channels)


def separable_factors(f: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
  """`(a, b)` with `outer(a, b) == f` exactly (in float64), or `(None, None)`."""
  total = f.sum()
  if total == 0:
    return None, None
  a, b = f.sum(axis=1), f.sum(axis=0) / total
  if not np.array_equal(np.outer(a, b), f):
    return None, None
  return a, b


def _correlate_1d(x: jnp.ndarray, taps: np.ndarray, axis: int, down: int) -> jnp.ndarray:
  """Valid correlation with `taps` along `axis`, keeping every `down`-th output."""
  n = (x.shape[axis] - len(taps)) // down + 1
  out = None
  for i, tap in enumerate(taps):
    if tap == 0:
      continue
    window = lax.slice_in_dim(x, i, i + (n - 1) * down + 1, down, axis)
    term = window * jnp.asarray(tap, x.dtype)
    out = term if out is None else out + term
  return out


def upsample2d(x: jnp.ndarray, f: np.ndarray, up: int = 2, padding: Padding = 0,
               flip_filter: bool = False, gain: float = 1.0) -> jnp.ndarray:
  """Upsamples by `up` with the FIR filter, keeping the image centred (`H -> H * up`).

  Pads `(fw + up - 1) // 2` before and `(fw - up) // 2` after (2/1 for a 4-tap filter) and
  multiplies the gain by `up**2` to make up for the inserted zeros (REFERENCE.md §1.3).
  """
  x0, x1, y0, y1 = parse_padding(padding)
  fh, fw = np.asarray(f).shape
  pad = (x0 + (fw + up - 1) // 2, x1 + (fw - up) // 2, y0 + (fh + up - 1) // 2, y1 + (fh - up) // 2)
  return upfirdn2d(x, f, up=up, padding=pad, flip_filter=flip_filter, gain=gain * up * up)


def downsample2d(x: jnp.ndarray, f: np.ndarray, down: int = 2, padding: Padding = 0,
                 flip_filter: bool = False, gain: float = 1.0) -> jnp.ndarray:
  """Downsamples by `down` with the FIR filter (`H -> H / down`); pads 1/1 for a 4-tap filter."""
  x0, x1, y0, y1 = parse_padding(padding)
  fh, fw = np.asarray(f).shape
  pad = (x0 + (fw - down + 1) // 2, x1 + (fw - down) // 2,
         y0 + (fh - down + 1) // 2, y1 + (fh - down) // 2)
  return upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, gain=gain)


def filter2d(x: jnp.ndarray, f: np.ndarray, padding: Padding = 0, flip_filter: bool = False,
             gain: float = 1.0) -> jnp.ndarray:
  """Filters with `f` keeping the size (`same` padding for the filter); no resampling."""
  x0, x1, y0, y1 = parse_padding(padding)
  fh, fw = np.asarray(f).shape
  pad = (x0 + fw // 2, x1 + (fw - 1) // 2, y0 + fh // 2, y1 + (fh - 1) // 2)
  return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain)
